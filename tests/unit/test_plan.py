"""`loader plan EVENT`: what one spec implies, worked out offline, as text and as JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlglot
import yaml
from click.testing import CliRunner

from loader.cli import cli
from loader.config.settings import AwsSettings, Settings, SnowflakeSettings
from loader.config.spec import MIB, EventSpec, load_specs
from loader.ops.new_event import scaffold
from loader.ops.plan import plan_event, roll_rules
from loader.store.layout import parse_key
from loader.worker.rolling import MAX_LATENESS_MS

pytestmark = pytest.mark.unit

REPO = Path(__file__).parents[2]
NOW = datetime(2026, 11, 27, 8, 42, 10, tzinfo=UTC)
# Nothing listens on port 9 of loopback: a plan that tried to reach Snowflake would fail.
UNREACHABLE = {"account": "acct", "user": "loader", "host": "127.0.0.1", "port": 9, "protocol": "http"}


def _scaffolded(tmp_path: Path, *, raw: bool = False) -> EventSpec:
    scaffold("payment_captured", specs_dir=tmp_path / "pipelines", schemas_dir=tmp_path / "schemas", raw=raw)
    [spec] = load_specs(tmp_path / "pipelines")
    return spec


def _settings(**snowflake: object) -> Settings:
    return Settings(snowflake=SnowflakeSettings.model_validate({**UNREACHABLE, **snowflake}))


@pytest.mark.parametrize("load_mode", ["copy", "auto-ingest"])
@pytest.mark.parametrize("raw", [False, True])
def test_every_statement_parses_as_snowflake_sql(tmp_path: Path, load_mode: str, raw: bool) -> None:
    """The plan's statements parse with sqlglot's Snowflake dialect, for either load mode."""
    plan = plan_event(_scaffolded(tmp_path, raw=raw), _settings(load_mode=load_mode), now=NOW)
    assert plan.snowflake.statements
    for statement in plan.snowflake.statements:
        sqlglot.parse_one(statement, read="snowflake")


def test_copy_mode_creates_the_table_and_records_the_pipe(tmp_path: Path) -> None:
    """In copy mode a fresh apply creates database, schema, typed table, format and stage, and records
    the pipe's COPY in LOADER_PIPES; no Snowpipe."""
    statements = plan_event(_scaffolded(tmp_path), _settings(), now=NOW).snowflake.statements
    assert statements[:2] == [
        'CREATE DATABASE IF NOT EXISTS "ANALYTICS"',
        'CREATE SCHEMA IF NOT EXISTS "ANALYTICS"."EVENTS"',
    ]
    table = next(
        s for s in statements if s.startswith('CREATE TABLE IF NOT EXISTS "ANALYTICS"."EVENTS"."PAYMENT')
    )
    assert '"ID" VARCHAR NOT NULL' in table
    assert '"NOTE" VARCHAR,' in table
    assert '"CREATED_AT" TIMESTAMP_TZ NOT NULL' in table
    assert '"_OFFSET" NUMBER(38,0) NOT NULL' in table
    assert any(
        s.startswith('CREATE FILE FORMAT IF NOT EXISTS "ANALYTICS"."EVENTS"."PAYMENT_CAPTURED_PARQUET"')
        for s in statements
    )
    [stage] = [s for s in statements if s.startswith("CREATE STAGE")]
    assert "URL = 's3://delivery-events/events/payment_captured/data/'" in stage
    assert any(s.startswith('INSERT INTO "ANALYTICS"."EVENTS"."LOADER_PIPES"') for s in statements)
    assert not any("CREATE PIPE" in s for s in statements)


def test_auto_ingest_mode_creates_a_snowpipe(tmp_path: Path) -> None:
    """With auto-ingest the pipe is a Snowpipe with AUTO_INGEST, and the stage uses the integration."""
    settings = _settings(load_mode="auto-ingest", storage_integration="S3_EVENTS")
    plan = plan_event(_scaffolded(tmp_path), settings, now=NOW)
    [pipe] = [s for s in plan.snowflake.statements if s.startswith("CREATE PIPE")]
    assert '"PAYMENT_CAPTURED_PIPE" AUTO_INGEST = TRUE AS COPY INTO' in pipe
    assert "ON_ERROR = ABORT_STATEMENT" in pipe
    assert any('STORAGE_INTEGRATION = "S3_EVENTS"' in s for s in plan.snowflake.statements)
    assert not any("LOADER_PIPES" in s for s in plan.snowflake.statements)
    assert "notification channel" in plan.s3.notification


def test_example_keys_are_for_the_given_moment(tmp_path: Path) -> None:
    """The example keys sit in the time partition of ``now``, for partition 0's first full file."""
    plan = plan_event(_scaffolded(tmp_path), _settings(), now=NOW)
    assert plan.s3.example_data_key == (
        "events/payment_captured/data/dt=2026-11-27/hour=08/payment_captured/"
        "p0000-00000000000000000000-00000000000001999999.parquet"
    )
    assert plan.s3.example_dead_letter_key.startswith(
        "events/payment_captured/dead-letter/dt=2026-11-27/hour=08/"
    )
    parsed = parse_key(plan.s3.example_data_key)
    assert parsed is not None
    assert (parsed.partition, parsed.first_offset, parsed.last_offset) == (0, 0, 1_999_999)


def test_day_partitioned_keys_have_no_hour_folder() -> None:
    """A spec with day folders gets day keys."""
    spec = load_specs(REPO / "pipelines", ["order_created"])[0]
    daily = spec.model_copy(update={"s3": spec.s3.model_copy(update={"time_partition": "day"})})
    key = plan_event(daily, _settings(), now=NOW).s3.example_data_key
    assert key.startswith("events/order_created/data/dt=2026-11-27/orders.order_created/p0000-")


def test_kafka_and_deployment_come_from_the_spec(tmp_path: Path) -> None:
    """Topic, partitions, group and the worker's Helm values follow the spec."""
    spec = load_specs(REPO / "pipelines", ["store_updated"])[0]
    plan = plan_event(spec, _settings(), now=NOW)
    assert (plan.kafka.topic, plan.kafka.partitions, plan.kafka.consumer_group) == (
        "stores.store_updated",
        6,
        "loader.store_updated",
    )
    assert plan.deployment["name"] == "store_updated"
    assert plan.deployment["replicas"] == spec.deployment.replicas
    assert plan.deployment["memoryBudgetMb"] == spec.deployment.memory_budget_mb
    assert plan.deployment["resources"]["limits"]["memory"].endswith("Mi")


def test_copy_mode_names_the_notifications_queue() -> None:
    """The queue that triggers the loader is named when it is configured, and asked for when not."""
    spec = load_specs(REPO / "pipelines", ["order_created"])[0]
    queue = "http://127.0.0.1:9/123456789012/loader-notifications"
    configured = Settings(
        aws=AwsSettings(notifications_queue_url=queue),
        snowflake=SnowflakeSettings.model_validate(UNREACHABLE),
    )
    assert queue in plan_event(spec, configured, now=NOW).s3.notification
    assert (
        "LOADER_AWS__NOTIFICATIONS_QUEUE_URL (not set)"
        in plan_event(spec, _settings(), now=NOW).s3.notification
    )


def test_local_stage_dir_points_the_stage_at_files(tmp_path: Path) -> None:
    """With a local stage folder (fakesnow), the stage's URL is its file:// mirror."""
    plan = plan_event(_scaffolded(tmp_path), _settings(local_stage_dir=str(tmp_path / "stage")), now=NOW)
    [stage] = [s for s in plan.snowflake.statements if s.startswith("CREATE STAGE")]
    assert f"URL = 'file://{tmp_path / 'stage'}/delivery-events/events/payment_captured/data/'" in stage


def test_plan_command_prints_every_section(tmp_path: Path) -> None:
    """`loader plan` prints the Kafka, S3, Snowflake and deployment sections with their content."""
    _scaffolded(tmp_path)
    result = CliRunner().invoke(
        cli,
        ["plan", "payment_captured", "--specs", str(tmp_path / "pipelines")],
        env={"LOADER_SNOWFLAKE__LOAD_MODE": "auto-ingest"},
    )
    assert result.exit_code == 0, result.output
    out = result.output
    for expected in (
        "event type payment_captured",
        "Kafka\n  cluster         default\n  topic           payment_captured (6 partitions)",
        "consumer group  loader.payment_captured",
        "S3\n  data                  s3://delivery-events/events/payment_captured/data/ (hour folders)",
        "example data key      events/payment_captured/data/dt=",
        "Snowflake (load mode auto-ingest)",
        'CREATE TABLE IF NOT EXISTS "ANALYTICS"."EVENTS"."PAYMENT_CAPTURED" (',
        "CREATE PIPE IF NOT EXISTS",
        "Deployment (Helm values)\n",
        "  - name: payment_captured\n",
    ):
        assert expected in out, expected


def test_plan_command_json(tmp_path: Path) -> None:
    """`loader plan --json` prints one JSON object with every section, statements included."""
    _scaffolded(tmp_path)
    result = CliRunner().invoke(
        cli, ["plan", "payment_captured", "--json", "--specs", str(tmp_path / "pipelines")]
    )
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert set(plan) >= {"event", "kafka", "s3", "snowflake", "deployment"}
    assert plan["kafka"]["topic"] == "payment_captured"
    assert plan["s3"]["rolling"]["max_records"] == 2_000_000
    assert plan["snowflake"]["load_mode"] == "copy"
    assert {c["name"]: c["nullable"] for c in plan["snowflake"]["columns"]}["ID"] is False
    for statement in plan["snowflake"]["statements"]:
        sqlglot.parse_one(statement, read="snowflake")
    assert plan["deployment"]["topic"] == "payment_captured"


def test_plan_command_unknown_event_lists_known_ones() -> None:
    """Asking for an event without a spec is a message naming the ones there are."""
    result = CliRunner().invoke(cli, ["plan", "nope", "--specs", str(REPO / "pipelines")])
    assert result.exit_code == 2
    assert "known: app_click, order_created, store_updated" in result.output
    assert "Traceback" not in result.output


def test_plan_lists_every_roll_rule_from_the_workers_numbers() -> None:
    """The plan names every reason to roll (count, size, time partition with lateness, age, memory)
    from the spec and the worker's constants, as text and as added JSON fields."""
    spec = load_specs(REPO / "pipelines", ["order_created"])[0]
    plan = plan_event(spec, _settings(), now=NOW)
    assert plan.s3.roll_rules == roll_rules(spec)
    assert plan.s3.max_lateness_s == MAX_LATENESS_MS / 1000
    text = plan.render()
    for expected in (
        f"roll a file at        {spec.rolling.max_records:,} records,",
        f"{spec.rolling.max_file_bytes / MIB:g} MiB",
        f"the {spec.s3.time_partition} partition moving forward",
        f"more than {MAX_LATENESS_MS / 3_600_000:g} h older",
        f"{spec.rolling.max_age_s:g} s after its first record,",
        f"or memory pressure (the biggest open file, once buffered rows exceed the "
        f"{spec.deployment.memory_budget_mb} MB budget)",
        "whichever comes first",
    ):
        assert expected in text, expected
    as_json = plan.to_json()["s3"]
    assert as_json["rolling"] == spec.rolling.model_dump(mode="json")
    assert len(as_json["roll_rules"]) == 5


def _edited(tmp_path: Path, section: str, **changes: object) -> EventSpec:
    """The scaffolded spec with ``changes`` made to its ``section``."""
    _scaffolded(tmp_path)
    path = tmp_path / "pipelines" / "payment_captured.yaml"
    document = yaml.safe_load(path.read_text())
    document[section].update(changes)
    path.write_text(yaml.safe_dump(document))
    [spec] = load_specs(tmp_path / "pipelines")
    return spec


def test_plan_command_shows_the_gateway_endpoints_and_envelope(tmp_path: Path) -> None:
    """`loader plan` names the event's gateway endpoint, its topic's REST Proxy endpoint, the port and
    mode from the settings, and the record form of its kafka.envelope (headers by default)."""
    _scaffolded(tmp_path)
    result = CliRunner().invoke(
        cli,
        ["plan", "payment_captured", "--specs", str(tmp_path / "pipelines")],
        env={"LOADER_GATEWAY__PORT": "9999", "LOADER_GATEWAY__MODE": "async"},
    )
    assert result.exit_code == 0, result.output
    for expected in (
        "Gateway (`loader gateway`, port 9999, async mode)\n",
        "  events API          POST /v1/events/payment_captured (",
        "  REST Proxy          POST /topics/payment_captured (application/vnd.kafka.json.v2+json)",
        "  envelope (headers)  Kafka headers event_id, event_name, created_at, source, schema_version;"
        " the value is the payload's JSON",
    ):
        assert expected in result.output, expected
    as_json = CliRunner().invoke(
        cli, ["plan", "payment_captured", "--json", "--specs", str(tmp_path / "pipelines")]
    )
    gateway = json.loads(as_json.output)["gateway"]
    assert gateway["endpoint"] == "POST /v1/events/payment_captured"
    assert gateway["rest_proxy"] == "POST /topics/payment_captured"
    assert (gateway["envelope"], gateway["served"], gateway["port"], gateway["mode"]) == (
        "headers",
        True,
        8088,
        "sync",
    )


def test_plan_gateway_follows_the_envelope_setting_and_a_header_match(tmp_path: Path) -> None:
    """kafka.envelope: json shows the JSON-envelope form; a header match shows the header the gateway adds."""
    spec = _edited(tmp_path, "kafka", envelope="json", match={"header": "type", "equals": "payment"})
    gateway = plan_event(spec, _settings(), now=NOW).gateway
    assert gateway.envelope == "json"
    assert gateway.record_form.startswith("the value is one JSON object")
    assert gateway.adds_header == "type: payment"
    text = plan_event(spec, _settings(), now=NOW).render()
    assert "  envelope (json)  the value is one JSON object" in text
    assert "  adds header      type: payment" in text


def test_plan_gateway_does_not_serve_registry_formats(tmp_path: Path) -> None:
    """An avro-registry event is shown as not served by the gateway, with what to do instead."""
    plan = plan_event(_edited(tmp_path, "schema", format="avro-registry"), _settings(), now=NOW)
    assert plan.gateway.served is False
    assert "not served  format avro-registry: produce with a registry serializer" in plan.render()
    assert "POST /v1/events" not in plan.render()
