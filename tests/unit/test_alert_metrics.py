"""The metrics added for the alerting rules: readiness asked at scrape time, each spec's
rolling.max_age_s, and the notifications queue's depth read by the loader's queue probe."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from moto import mock_aws
from prometheus_client.parser import text_string_to_metric_families

from loader.config.settings import AwsSettings, Settings, SnowflakeSettings
from loader.config.spec import load_specs
from loader.metrics import ReadyProbe, exposition, render
from loader.store.aws import aws_client
from loader.warehouse.sqs_loader import SqsLoader
from loader.worker.worker import StreamWorker

pytestmark = pytest.mark.unit

PIPELINES = Path(__file__).parents[2] / "pipelines"


def _samples(name: str, registry_text: bytes) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(registry_text.decode())
        for sample in family.samples
        if sample.name == name
    }


def test_loader_ready_follows_the_probe_at_each_scrape() -> None:
    """loader_ready is 1 while the probe (what /readyz answers) says ready, 0 once it does not,
    asked at each scrape; a process without a probe serves none."""
    ready = [True]
    registry = exposition(ready=ReadyProbe("worker", "orders_ready_test", lambda: ready[0]))
    labels = (("event", "orders_ready_test"), ("role", "worker"))
    assert _samples("loader_ready", render(registry)) == {labels: 1.0}
    ready[0] = False
    assert _samples("loader_ready", render(registry)) == {labels: 0.0}
    assert _samples("loader_ready", render(exposition())) == {}


def test_workers_and_the_loader_export_each_specs_max_age() -> None:
    """A worker and the SQS loader set loader_rolling_max_age_seconds to the spec's
    rolling.max_age_s: the freshness alerts' bound, wherever only one of them is scraped."""
    specs = load_specs(PIPELINES)
    settings = Settings(
        aws=AwsSettings(region="us-east-1", endpoint_url="http://127.0.0.1:9"),
        snowflake=SnowflakeSettings(account="acct", user="u", password="p"),
    )
    worker_spec = specs[0].model_copy(update={"name": "max_age_worker_test"})
    worker_spec = worker_spec.model_copy(
        update={"rolling": worker_spec.rolling.model_copy(update={"max_age_s": 42.0})}
    )
    StreamWorker(worker_spec, settings)
    SqsLoader(settings, specs, queue_url="http://127.0.0.1:9/123456789012/q").close()
    exported = _samples("loader_rolling_max_age_seconds", render(exposition()))
    assert exported[(("event", "max_age_worker_test"),)] == 42.0
    for spec in specs:
        assert exported[(("event", spec.name),)] == spec.rolling.max_age_s


@pytest.fixture
def queue_url() -> Iterator[str]:
    """A notifications queue in moto holding 3 messages, one of them received (in flight)."""
    with mock_aws():
        sqs = aws_client("sqs", AwsSettings(region="us-east-1"))
        url = sqs.create_queue(QueueName="depth-test-notifications")["QueueUrl"]
        for i in range(3):
            sqs.send_message(QueueUrl=url, MessageBody=f"m{i}")
        sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, VisibilityTimeout=300)
        yield url


def test_the_queue_probe_exports_the_queue_depth(queue_url: str) -> None:
    """The loader's queue probe reads SQS's counts into loader_notifications_queued_messages
    (visible and in flight), labelled with the queue's name, and reports the queue up."""
    settings = Settings(
        aws=AwsSettings(region="us-east-1"),
        snowflake=SnowflakeSettings(account="acct", user="u", password="p"),
    )
    loader = SqsLoader(settings, load_specs(PIPELINES), queue_url=queue_url)
    with loader.readiness.probing("sqs"):
        loader._probe_queue()
    loader.close()
    depth = _samples("loader_notifications_queued_messages", render(exposition()))
    queue = ("queue", "depth-test-notifications")
    assert depth[(queue, ("state", "visible"))] == 2
    assert depth[(queue, ("state", "in_flight"))] == 1
    assert "sqs" not in loader.readiness.report().down
