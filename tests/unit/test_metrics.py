"""Metrics: freshness derived at scrape time, bounded labels, the exposition, the pool's merge."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import uuid
from datetime import UTC, datetime
from pathlib import Path

import botocore.exceptions
import pytest
from aiokafka import TopicPartition
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from loader import metrics
from loader.checkpoint.committer import Generation
from loader.cli import cli
from loader.config.settings import AwsSettings, KafkaSettings, Settings, SnowflakeSettings
from loader.config.spec import load_specs
from loader.devstack.samples import SampleEvents
from loader.encode.decode import BatchDecoder
from loader.metrics import EventMetrics, count_error, exposition, render
from loader.schema import load_avro_schema
from loader.store.s3 import attempt_error_kind
from loader.worker.partition import PartitionState
from loader.worker.worker import StreamWorker
from tests.unit.fakes import FakeRecord

pytestmark = pytest.mark.unit

SPECS = Path(__file__).parents[2] / "pipelines"


def _event() -> str:
    return f"ev_{uuid.uuid4().hex[:8]}"


def _samples(text: bytes, name: str, **labels: str) -> list[float]:
    """Values of the samples called ``name`` whose labels include ``labels``."""
    return [
        sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    ]


def test_freshness_is_derived_when_scraped_and_grows_while_nothing_arrives() -> None:
    """Freshness is now minus the newest _CREATED_AT, per event and place, recomputed per scrape."""
    event = _event()
    now = [1_000_000.0]
    registry = exposition(clock=lambda: now[0])
    assert _samples(render(registry), "loader_freshness_seconds", event=event) == []  # unknown yet
    bound = EventMetrics(event)
    bound.newest_created_at("s3", 999_990.0)
    bound.newest_created_at("table", 999_900.0)
    assert _samples(render(registry), "loader_freshness_seconds", event=event, where="s3") == [10.0]
    assert _samples(render(registry), "loader_freshness_seconds", event=event, where="table") == [100.0]
    now[0] += 30
    assert _samples(render(registry), "loader_freshness_seconds", event=event, where="s3") == [40.0]


def test_newest_created_at_never_moves_back() -> None:
    """A late file with older rows does not make the data look staler than it is."""
    event = _event()
    bound = EventMetrics(event)
    bound.newest_created_at("s3", 2_000.0)
    bound.newest_created_at("s3", 1_000.0)
    text = render(exposition())
    assert _samples(text, "loader_newest_created_at_seconds", event=event, where="s3") == [2_000.0]


def test_error_kinds_are_cleaned_and_capped_per_component() -> None:
    """Error kinds are label-safe and, past the cap, counted as `other`: cardinality stays bounded."""
    event = _event()
    count_error(event, "kafka", 'Bad "kind"\nwith {braces}')
    for index in range(metrics.MAX_ERROR_KINDS + 5):
        count_error(event, "kafka", f"Kind{uuid.uuid4().hex[:6]}{index}")
    families = {
        sample.labels["kind"]: sample.value
        for family in text_string_to_metric_families(render(exposition()).decode())
        for sample in family.samples
        if sample.name == "loader_errors_total"
        and sample.labels["component"] == "kafka"
        and sample.labels["event"] == event
    }
    assert "Bad__kind__with__braces_" in families
    assert len(families) <= metrics.MAX_ERROR_KINDS + 1
    assert families["other"] >= 5


def test_exposition_is_prometheus_text_with_base_units() -> None:
    """Counters end in _total, histograms carry their buckets in bytes, gauges carry partitions."""
    event = _event()
    bound = EventMetrics(event)
    bound.records_consumed.inc(7)
    bound.file_size.observe(3 * 1024 * 1024)
    bound.lag(3, 12)
    text = render(exposition())
    assert _samples(text, "loader_records_consumed_total", event=event) == [7.0]
    assert _samples(text, "loader_file_size_bytes_count", event=event) == [1.0]
    buckets = {
        float(sample.labels["le"]): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
        if sample.name == "loader_file_size_bytes_bucket" and sample.labels["event"] == event
    }
    assert (buckets[1024 * 1024], buckets[4 * 1024 * 1024]) == (0.0, 1.0)
    assert _samples(text, "loader_consumer_lag_records", event=event, partition="3") == [12.0]


def test_partition_rolls_carry_newest_created_at_and_bytes() -> None:
    """A roll knows its rows' newest _CREATED_AT (one Arrow reduction per batch) and the bytes taken."""
    [spec] = load_specs(SPECS, ["order_created"])
    assert spec.schema_path is not None
    schema = load_avro_schema(spec.schema_path)
    samples = SampleEvents("order_created", schema, seed=5)
    events = [samples.encoded(i) for i in range(40)]
    records = [FakeRecord("t", 0, i, 1_764_230_400_000 + i, *events[i]) for i in range(40)]
    state = PartitionState(
        TopicPartition("t", 0),
        spec,
        BatchDecoder(schema),
        next_offset=None,
        pending=None,
        generation=Generation(1, "m"),
        spool_dir=None,
        row_group_records=lambda: 10,
    )
    state.ingest(records[:25], 0.0)
    state.ingest(records[25:], 0.0)
    rolls: list = []
    state.close_into(rolls)
    [roll] = rolls
    try:
        newest = max(datetime.fromisoformat(json.loads(value)["created_at"]) for _, value in events)
        assert roll.newest_created_at_us == int(newest.astimezone(UTC).timestamp() * 1_000_000)
        assert state.bytes_taken == sum(len(v) for _, v in events)
        assert roll.flush_s > 0
    finally:
        roll.closed.discard()


def test_s3_attempts_are_named_by_kind() -> None:
    """Throttling and timeouts get their own kind, other failures their AWS code; a 404 is no error."""
    timeout = botocore.exceptions.ReadTimeoutError(endpoint_url="http://127.0.0.1:1")
    refused = botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
    assert [
        attempt_error_kind(None, 503, {"Error": {"Code": "SlowDown"}}),
        attempt_error_kind(None, 403, {"Error": {"Code": "AccessDenied"}}),
        attempt_error_kind(None, 500, {}),
        attempt_error_kind(timeout, None, None),
        attempt_error_kind(refused, None, None),
        attempt_error_kind(None, 404, {"Error": {"Code": "404"}}),
        attempt_error_kind(None, 200, {}),
    ] == ["throttling", "AccessDenied", "500", "timeout", "connection", None, None]


def test_pool_children_are_merged_and_dead_ones_drop_their_gauges(tmp_path: Path) -> None:
    """Multiprocess mode: counters of every child add up; a dead child's live gauges disappear."""
    child = textwrap.dedent(
        f"""
        from pathlib import Path
        from loader import metrics
        metrics.enable_multiprocess(Path({str(tmp_path)!r}))
        bound = metrics.EventMetrics("pooled")
        bound.records_consumed.inc(5)
        bound.buffer_memory.set(100)
        bound.newest_created_at("s3", 1_000.0)
        """
    )
    for _ in range(2):
        subprocess.run([sys.executable, "-c", child], check=True, timeout=60)
    pids = sorted(int(path.stem.rsplit("_", 1)[1]) for path in tmp_path.glob("counter_*.db"))
    assert len(pids) == 2
    registry = exposition(tmp_path, clock=lambda: 1_060.0)
    text = render(registry)
    assert _samples(text, "loader_records_consumed_total", event="pooled") == [10.0]
    assert _samples(text, "loader_buffer_memory_bytes", event="pooled") == [200.0]
    assert _samples(text, "loader_freshness_seconds", event="pooled", where="s3") == [60.0]
    metrics.mark_process_dead(pids[0], tmp_path)
    text = render(registry)
    assert _samples(text, "loader_buffer_memory_bytes", event="pooled") == [100.0]
    assert _samples(text, "loader_records_consumed_total", event="pooled") == [10.0]


def test_busy_metrics_port_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """`pipes run` on a port already taken says which and how to fix it, without a traceback."""
    monkeypatch.setenv("LOADER_AWS__NOTIFICATIONS_QUEUE_URL", "http://127.0.0.1:9/queue/none")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(
            cli, ["pipes", "run", "order_created", "--specs", str(SPECS), "--metrics-port", str(port)]
        )
    assert result.exit_code != 0
    assert f"cannot serve metrics on 127.0.0.1:{port}" in result.output
    assert "--metrics-port" in result.output
    assert "Traceback" not in result.output


def test_worker_exports_its_buffer_budget() -> None:
    """A worker exports its buffer budget: a pool child's share, else the spec's memory_budget_mb."""
    base = {s.name: s for s in load_specs(SPECS)}["order_created"]
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"),
        aws=AwsSettings(region="us-east-1"),
        snowflake=SnowflakeSettings(account="acct", user="u"),
    )
    registry = exposition()
    for event, share_mb, expected_mb in (
        (_event(), None, base.deployment.memory_budget_mb),
        (_event(), 96, 96),
    ):
        worker = StreamWorker(
            base.model_copy(update={"name": event}),
            settings,
            store=object(),  # type: ignore[arg-type]
            memory_budget_mb=share_mb,
        )
        worker._processing_pool.shutdown()
        worker._io_pool.shutdown()
        assert _samples(render(registry), "loader_buffer_memory_budget_bytes", event=event) == [
            expected_mb * 1024 * 1024
        ]
