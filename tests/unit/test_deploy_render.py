"""``loader deploy render``: Helm values from the specs, and the least-privilege examples beside the chart."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlglot
import yaml
from click.testing import CliRunner
from sqlglot import exp

from loader.cli import cli
from loader.config.spec import EventSpec, load_specs
from loader.deploy import helm
from loader.deploy.render import MEMORY_OVERHEAD_MB, chart_values, event_values, values_yaml
from loader.errors import ConfigError
from loader.store.layout import spill_key

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "pipelines"
DEPLOY = ROOT / "deploy"


@pytest.fixture(scope="module")
def specs() -> list[EventSpec]:
    return load_specs(EXAMPLES)


def _raw_spec(tmp_path: Path, **deployment: int) -> Path:
    """A copy of the raw app_click example (no schema file) with other deployment settings."""
    data = yaml.safe_load((EXAMPLES / "app_click.yaml").read_text())
    data["deployment"].update(deployment)
    specs_dir = tmp_path / "pipelines"
    specs_dir.mkdir()
    (specs_dir / "app_click.yaml").write_text(yaml.safe_dump(data))
    return specs_dir


def _keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from _keys(item)


# --- values ----------------------------------------------------------------------------------


def test_event_values_follow_the_spec(specs: list[EventSpec]) -> None:
    """Each example's entry names its topic, group and partitions, and sizes memory from its budget."""
    for spec in specs:
        values = event_values(spec)
        assert values["name"] == spec.name
        assert values["topic"] == spec.kafka.topic
        assert values["consumerGroup"] == spec.consumer_group
        assert values["partitions"] == spec.kafka.partitions
        assert values["replicas"] == spec.deployment.replicas == 1
        memory = f"{spec.deployment.memory_budget_mb + MEMORY_OVERHEAD_MB}Mi"
        assert values["resources"]["requests"]["memory"] == memory
        assert values["resources"]["limits"]["memory"] == memory
        assert (values["schema"] is None) == (spec.schema_path is None)


def test_rendered_spec_loads_back_from_the_pods_layout(specs: list[EventSpec], tmp_path: Path) -> None:
    """Spec and schema texts, laid out as the chart mounts them, load as the same specs."""
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "schemas").mkdir()
    for values in chart_values(specs)["events"]:
        (tmp_path / "pipelines" / f"{values['name']}.yaml").write_text(values["spec"])
        if values["schema"] is not None:
            (tmp_path / "schemas" / f"{values['name']}.avsc").write_text(values["schema"])
    mounted = {s.name: s for s in load_specs(tmp_path / "pipelines")}
    for spec in specs:
        again = mounted[spec.name]
        assert again.model_dump(exclude={"schema_ref"}) == spec.model_dump(exclude={"schema_ref"})
        assert again.schema_ref.mode == spec.schema_ref.mode
        if spec.schema_path is not None:
            assert again.schema_path is not None
            assert again.schema_path.read_text() == spec.schema_path.read_text()


def test_values_yaml_round_trips(specs: list[EventSpec]) -> None:
    """The values file reads back as exactly the values (multi-line texts included)."""
    values = chart_values(specs, image="ghcr.io/acme/event-loader:1.4.0")
    text = values_yaml(values)
    assert yaml.safe_load(text) == values
    assert "spec: |" in text


def test_replicas_above_partitions_are_refused(tmp_path: Path) -> None:
    """More replicas than partitions is refused with the limit, since the extra ones would idle."""
    [spec] = load_specs(_raw_spec(tmp_path, replicas=7))
    with pytest.raises(
        ConfigError, match=r"deployment.replicas is 7 but topic clients.app_click has 6 partitions"
    ):
        event_values(spec)


def test_replicas_up_to_partitions_are_rendered(tmp_path: Path) -> None:
    """Replicas equal to the partition count are fine."""
    [spec] = load_specs(_raw_spec(tmp_path, replicas=6))
    assert event_values(spec)["replicas"] == 6


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("ghcr.io/acme/event-loader:1.4.0", {"repository": "ghcr.io/acme/event-loader", "tag": "1.4.0"}),
        ("registry:5000/event-loader:dev", {"repository": "registry:5000/event-loader", "tag": "dev"}),
        ("event-loader@sha256:abc", {"repository": "event-loader", "digest": "sha256:abc"}),
    ],
)
def test_image_is_split_into_repository_and_tag(
    specs: list[EventSpec], image: str, expected: dict[str, str]
) -> None:
    """--image becomes the chart's image value, registry ports and digests included."""
    assert chart_values(specs, image=image)["image"] == expected


# --- the CLI ---------------------------------------------------------------------------------


def test_cli_writes_values_for_the_asked_events(tmp_path: Path) -> None:
    """`deploy render EVENT --output FILE --image` writes that event's values and the image."""
    out = tmp_path / "values.yaml"
    result = CliRunner().invoke(
        cli,
        ["deploy", "render", "order_created", "--specs", str(EXAMPLES), "-o", str(out), "--image", "x/y:2"],
    )
    assert result.exit_code == 0, result.output
    values = yaml.safe_load(out.read_text())
    assert [e["name"] for e in values["events"]] == ["order_created"]
    assert values["events"][0]["topic"] == "orders.order_created"
    assert values["image"] == {"repository": "x/y", "tag": "2"}


def test_cli_refuses_too_many_replicas_with_a_message(tmp_path: Path) -> None:
    """Replicas above the partition count exit 2 with the fix, not a traceback."""
    specs_dir = _raw_spec(tmp_path, replicas=9)
    result = CliRunner().invoke(cli, ["deploy", "render", "--specs", str(specs_dir)])
    assert result.exit_code == 2
    assert "use at most 6" in result.output
    assert "Traceback" not in result.output


def test_cli_refuses_an_image_without_a_tag() -> None:
    """An image without a tag or digest is a usage message."""
    result = CliRunner().invoke(
        cli, ["deploy", "render", "--specs", str(EXAMPLES), "--image", "event-loader"]
    )
    assert result.exit_code == 2
    assert "expected REPOSITORY:TAG" in result.output


def test_output_carries_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials in the environment never reach the values; no key even names one."""
    secrets = {
        "LOADER_SNOWFLAKE__PASSWORD": "sf-pass-0xDEADBEEF",
        "LOADER_KAFKA__SASL_PASSWORD": "kafka-pass-0xFEEDFACE",
        "LOADER_AWS__SECRET_ACCESS_KEY": "aws-secret-0xC0FFEE",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(cli, ["deploy", "render", "--specs", str(EXAMPLES)])
    assert result.exit_code == 0, result.output
    for value in secrets.values():
        assert value not in result.output
    values = yaml.safe_load(result.output)
    assert len(values["events"]) == 3
    assert not [k for k in _keys(values) if any(w in k.lower() for w in ("password", "secret", "token"))]


def test_manifests_without_helm_say_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """--manifests with no helm anywhere exits 2 and names the install command."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(helm, "HELM_HOME_BIN", tmp_path / "missing" / "helm")
    result = CliRunner().invoke(cli, ["deploy", "render", "--specs", str(EXAMPLES), "--manifests"])
    assert result.exit_code == 2
    assert "needs helm" in result.output
    assert "go install helm.sh/helm/v3/cmd/helm@" in result.output


# --- least-privilege examples ----------------------------------------------------------------


def _policy(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((DEPLOY / name).read_text())
    assert document["Version"] == "2012-10-17"
    return document


def _actions(statements: list[dict[str, Any]]) -> set[str]:
    return {
        a for st in statements for a in ([st["Action"]] if isinstance(st["Action"], str) else st["Action"])
    }


def _s3_scopes(document: dict[str, Any]) -> tuple[set[str], set[str]]:
    """The object ARNs and the ListBucket prefixes a policy grants."""
    objects: set[str] = set()
    prefixes: set[str] = set()
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow"
        resources = statement["Resource"]
        resources = [resources] if isinstance(resources, str) else resources
        assert "*" not in resources
        if statement["Action"] == "s3:ListBucket":
            listed = statement["Condition"]["StringLike"]["s3:prefix"]  # never the whole bucket
            assert listed and set(statement["Condition"]) == {"StringLike"}
            prefixes.update(listed)
        else:
            objects.update(r for r in resources if r.startswith("arn:aws:s3:::"))
    return objects, prefixes


@pytest.mark.parametrize(
    ("policy", "scope"),
    [("iam-policy-worker.json", ""), ("iam-policy-loader.json", "data/"), ("iam-policy-audit.json", "")],
)
def test_iam_policies_cover_exactly_the_specs_prefixes(
    specs: list[EventSpec], policy: str, scope: str
) -> None:
    """The worker's, loader's and audit's S3 grants are the specs' prefixes: nothing wider, none missing."""
    objects, prefixes = _s3_scopes(_policy(policy))
    assert objects == {f"arn:aws:s3:::{s.s3.bucket}/{s.s3.prefix}/{scope}*" for s in specs}
    assert prefixes == {f"{s.s3.prefix}/{scope}*" for s in specs}


def test_gateway_policy_only_writes_spills(specs: list[EventSpec]) -> None:
    """The gateway's role may only create objects under each spec's spill folder (where its async mode
    spills undelivered records): no read, no list, no other prefix."""
    document = _policy("iam-policy-gateway.json")
    objects, prefixes = _s3_scopes(document)
    # The folder above the date folders of a spill key, as the spiller writes it.
    folders = {
        s.name: spill_key(s, datetime(2026, 11, 27, 8, tzinfo=UTC), "0" * 32).split("/dt=")[0] for s in specs
    }
    assert objects == {f"arn:aws:s3:::{s.s3.bucket}/{folders[s.name]}/*" for s in specs}
    assert not prefixes
    s3_actions = {a for a in _actions(document["Statement"]) if a.startswith("s3:")}
    assert s3_actions == {"s3:PutObject"}


def test_audit_policy_only_reads() -> None:
    """The audit's role reads and lists; it can write, delete or send nothing."""
    actions = _actions(_policy("iam-policy-audit.json")["Statement"])
    assert actions == {"s3:GetObject", "s3:ListBucket", "kms:Decrypt"}


def test_snowflake_role_reads_only_data_prefixes(specs: list[EventSpec]) -> None:
    """The storage integration's role may read the data files only, not dead letters."""
    document = _policy("iam-policy-snowflake.json")
    objects, prefixes = _s3_scopes(document)
    assert objects == {f"arn:aws:s3:::{s.s3.bucket}/{s.data_prefix}*" for s in specs}
    assert prefixes == {f"{s.data_prefix}*" for s in specs}
    actions = _actions(document["Statement"])
    assert actions == {"s3:GetObject", "s3:GetObjectVersion", "s3:ListBucket", "kms:Decrypt"}


def test_loader_policy_touches_one_queue_and_never_writes() -> None:
    """The loader consumes one queue and can neither write to S3 nor send messages."""
    statements = _policy("iam-policy-loader.json")["Statement"]
    sqs = [st for st in statements if str(st["Resource"]).startswith("arn:aws:sqs:")]
    assert len(sqs) == 1
    assert sorted(sqs[0]["Action"]) == [
        "sqs:ChangeMessageVisibility",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:ReceiveMessage",
    ]
    actions = _actions(statements)
    assert not {a for a in actions if a.startswith("s3:Put") or a.startswith("s3:Delete")}


@pytest.fixture(scope="module")
def role_sql() -> list[exp.Expression]:
    # sqlglot logs each statement it keeps as an opaque Command; the test inspects those itself.
    logging.getLogger("sqlglot").setLevel(logging.ERROR)
    parsed = sqlglot.parse((DEPLOY / "snowflake-role.sql").read_text(), read="snowflake")
    return [statement for statement in parsed if statement is not None]


def _grants_to(statements: list[exp.Expression], role: str) -> list[str]:
    """Every GRANT to ``role`` as normalised SQL text (parsed grants and opaque commands alike)."""
    texts = [" ".join(s.sql(dialect="snowflake", comments=False).split()).upper() for s in statements]
    return [t for t in texts if t.startswith("GRANT ") and t.endswith(f" TO ROLE {role}")]


def test_snowflake_sql_parses_and_allows_the_specs_locations(
    specs: list[EventSpec], role_sql: list[exp.Expression]
) -> None:
    """The script parses as Snowflake SQL; its integration allows exactly the specs' data prefixes."""
    assert len(role_sql) > 10
    [integration] = [s for s in role_sql if isinstance(s, exp.Create) and s.kind == "STORAGE INTEGRATION"]
    locations = {
        lit.this
        for prop in integration.find_all(exp.Property)
        if prop.name.upper() == "STORAGE_ALLOWED_LOCATIONS"
        for lit in prop.find_all(exp.Literal)
    }
    assert locations == {f"s3://{s.s3.bucket}/{s.data_prefix}" for s in specs}


def test_loader_role_gets_the_schema_privileges_and_no_ownership(
    specs: list[EventSpec], role_sql: list[exp.Expression]
) -> None:
    """LOADER may use and create in each spec's schema; nothing is granted with OWNERSHIP or ALL."""
    parsed = [s for s in role_sql if isinstance(s, exp.Grant)]
    assert parsed, "sqlglot should parse the object grants"
    grants = _grants_to(role_sql, "LOADER")
    for schema in {f"{s.snowflake.database}.{s.snowflake.schema_}" for s in specs}:
        assert f"GRANT USAGE ON SCHEMA {schema} TO ROLE LOADER" in grants
        creates = "CREATE TABLE, CREATE STAGE, CREATE FILE FORMAT, CREATE PIPE"
        assert f"GRANT {creates} ON SCHEMA {schema} TO ROLE LOADER" in grants
    everything = " ".join(_grants_to(role_sql, "LOADER") + _grants_to(role_sql, "ANALYST"))
    assert "OWNERSHIP" not in everything
    assert "ALL PRIVILEGES" not in everything


def test_analyst_role_is_read_only(role_sql: list[exp.Expression]) -> None:
    """ANALYST only gets USAGE and SELECT."""
    grants = _grants_to(role_sql, "ANALYST")
    assert len(grants) >= 5
    for grant in grants:
        privileges = grant.removeprefix("GRANT ").split(" ON ")[0]
        assert {p.strip() for p in privileges.split(",")} <= {"USAGE", "SELECT"}, grant
