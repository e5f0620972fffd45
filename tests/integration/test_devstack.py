"""Integration tests of the local stack: real Kafka, moto and fakesnow, over real connections."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import snowflake.connector
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from loader.config.settings import dev_state_path, load_settings
from loader.devstack import DevStack, Service
from loader.devstack import kafka as kafka_mod
from loader.devstack.process import is_running
from loader.devstack.provision import provision_dev_stack
from loader.store.aws import aws_client
from tests.integration.helpers import REPO, make_spec
from tests.waiting import eventually_async

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytestmark = pytest.mark.integration

_Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


def _started(dev_stack: DevStack, name: str) -> Service:
    service = dev_stack.service(name)
    if service is None:
        pytest.skip(f"{name} is configured externally, not started by the dev stack")
    return service


def test_kafka_is_apache_kafka_4_4_0_from_maven_jars(dev_stack: DevStack) -> None:
    """The broker answers a metadata request and runs Apache Kafka 4.4.0 from the Maven Central jars."""
    service = _started(dev_stack, "kafka")
    assert service.version == "Apache Kafka 4.4.0"
    assert kafka_mod.version_from_log(service.log) == "4.4.0"
    libs = kafka_mod.ensure_kafka_libs()
    assert (libs / "kafka_2.13-4.4.0.jar").is_file()
    log4j = {jar.name.rsplit("-", 1)[1] for jar in libs.glob("log4j-*.jar") if jar.name.count("-") >= 2}
    assert len(log4j) == 1, f"log4j jars disagree on the version: {sorted(libs.glob('log4j-*.jar'))}"
    assert (libs / f"log4j-slf4j-impl-{log4j.pop()}").is_file()

    async def describe() -> dict[str, object]:
        admin = AIOKafkaAdminClient(bootstrap_servers=dev_stack.settings.kafka.bootstrap_servers)
        await admin.start()
        try:
            cluster: dict[str, object] = await admin.describe_cluster()
            return cluster
        finally:
            await admin.close()

    cluster = asyncio.run(describe())
    assert cluster["brokers"] == [{"node_id": 1, "host": "127.0.0.1", "port": service.port, "rack": None}]
    assert "INFO" in service.log.read_text()  # broker logging reaches its log file


def test_kafka_produce_consume_roundtrip(dev_stack: DevStack, unique_name: Callable[..., str]) -> None:
    """Records produced with aiokafka to a new 6-partition topic come back with keys and headers."""
    bootstrap = dev_stack.settings.kafka.bootstrap_for("default")
    topic = unique_name("roundtrip")

    async def roundtrip() -> tuple[int, list[_Record]]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, num_partitions=6, replication_factor=1)])
            partitions = len((await admin.describe_topics([topic]))[0]["partitions"])
        finally:
            await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            for i in range(3):
                await producer.send_and_wait(
                    topic, f"value-{i}".encode(), key=b"k", headers=[("source", b"test")]
                )
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, group_id=unique_name("group"), auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            got: list[_Record] = []

            async def all_three() -> bool:
                batch = await consumer.getmany(timeout_ms=1000)
                got.extend((r.key, r.value, list(r.headers)) for records in batch.values() for r in records)
                return len(got) >= 3

            await eventually_async(all_three, 30, what="the 3 produced records back", detail=lambda: got)
        finally:
            await consumer.stop()
        return partitions, got

    partitions, got = asyncio.run(roundtrip())
    assert partitions == 6
    assert got == [(b"k", f"value-{i}".encode(), [("source", b"test")]) for i in range(3)]


def test_moto_s3_bucket_put_get(s3_client: S3Client, unique_name: Callable[..., str]) -> None:
    """moto's server creates a bucket, stores an object and returns the same bytes."""
    bucket = unique_name("bucket")
    s3_client.create_bucket(Bucket=bucket)
    s3_client.put_object(Bucket=bucket, Key="a/b.parquet", Body=b"\x00parquet-bytes")
    body = s3_client.get_object(Bucket=bucket, Key="a/b.parquet")["Body"].read()
    assert body == b"\x00parquet-bytes"
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == ["a/b.parquet"]


def test_fakesnow_select_1_with_the_real_connector(dev_stack: DevStack) -> None:
    """The Snowflake connector logs in to fakesnow with the stack's settings and runs SELECT 1."""
    settings = dev_stack.settings.snowflake
    _started(dev_stack, "fakesnow")
    assert settings.local_stage_dir is not None
    assert settings.local_stage_dir.is_dir()
    conn = snowflake.connector.connect(**settings.connect_kwargs())
    try:
        cursor = conn.cursor()
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
    finally:
        conn.close()


def _loader(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from loader.cli import main; main()", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_cli_dev_up_status_down_leaves_nothing_running(tmp_path: Path) -> None:
    """`loader dev up` detaches the four services and provisions the specs (the queue URL recorded),
    `status` sees them answer, `down` leaves no process."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(
            (
                "LOADER_KAFKA__",
                "LOADER_AWS__",
                "LOADER_SNOWFLAKE__",
                "LOADER_SCHEMA_REGISTRY__",
                "LOADER_CONFIG",
            )
        )
    }
    env["LOADER_STATE_DIR"] = str(tmp_path / "state")
    state_file = tmp_path / "state" / "dev-stack.json"
    services: list[Service] = []
    try:
        up = _loader("dev", "up", "--specs", str(REPO / "pipelines"), env=env)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "Apache Kafka 4.4.0" in up.stdout
        assert "provisioned on the dev stack for 3 event type(s)" in up.stdout
        state = json.loads(state_file.read_text())
        assert state["settings"]["aws"]["notifications_queue_url"].endswith("/loader-notifications")
        services = [Service.from_json(s) for s in state["services"]]
        assert sorted(s.name for s in services) == ["fakesnow", "kafka", "moto", "schema-registry"]
        assert all(is_running(s.pid) for s in services), "services must outlive `loader dev up`"
        assert state["settings"]["kafka"]["bootstrap_servers"].startswith("127.0.0.1:")
        assert state["settings"]["schema_registry"]["url"].startswith("http://127.0.0.1:")

        status = _loader("dev", "status", env=env)
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.count("answers") == 4

        again = _loader("dev", "up", env=env)
        assert again.returncode == 0
        assert "already running" in again.stdout
        assert json.loads(state_file.read_text())["services"] == state["services"]

        down = _loader("dev", "down", env=env)
        assert down.returncode == 0, down.stdout + down.stderr
        assert down.stdout.count(": stopped") == 4
        assert not state_file.exists()
        assert [s.name for s in services if is_running(s.pid)] == []
    finally:
        for service in services:  # never leave a broker behind, even when an assertion failed
            if is_running(service.pid):
                os.killpg(service.pgid, 9)


def test_dev_provision_is_idempotent_and_records_the_queue(
    dev_stack: DevStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unique_name: Callable[..., str]
) -> None:
    """On the stack's own services: topic with the spec's partitions, bucket, queue with its DLQ and the
    notification rule, the queue URL recorded for `pipes run`; a second run changes nothing."""
    for name in ("kafka", "moto"):
        _started(dev_stack, name)
    monkeypatch.setenv("LOADER_STATE_DIR", str(tmp_path / "state"))
    state = dev_state_path()
    state.parent.mkdir()
    state.write_text(
        json.dumps(dev_stack.to_state())
    )  # as if `loader dev up` had started the session's stack
    spec = make_spec(unique_name("provisioned", sep="_"), partitions=3, bucket=unique_name("provision"))
    settings = dev_stack.settings

    def provisioned() -> tuple[object, ...]:
        """Everything provisioning makes, read back from Kafka, S3 and SQS."""

        async def partitions() -> int:
            admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
            await admin.start()
            try:
                return len((await admin.describe_topics([spec.kafka.topic]))[0]["partitions"])
            finally:
                await admin.close()

        queue_url = load_settings().aws.notifications_queue_url
        assert queue_url is not None
        sqs = aws_client("sqs", settings.aws)
        attributes = sqs.get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["QueueArn", "RedrivePolicy"]
        )
        redrive = json.loads(attributes["Attributes"]["RedrivePolicy"])
        rules = aws_client("s3", settings.aws).get_bucket_notification_configuration(Bucket=spec.s3.bucket)
        targets = [
            (q["QueueArn"], q["Filter"]["Key"]["FilterRules"][0]["Value"])
            for q in rules["QueueConfigurations"]
        ]
        assert targets == [(attributes["Attributes"]["QueueArn"], spec.data_prefix)]
        return queue_url, asyncio.run(partitions()), redrive["deadLetterTargetArn"], targets

    first = provision_dev_stack([spec])
    assert first.topics == [spec.kafka.topic]
    assert first.buckets == [spec.s3.bucket]
    assert first.left_alone == []
    once = provisioned()
    assert once[0] == first.queue_url
    assert once[1] == 3
    assert str(once[2]).endswith(":loader-notifications-dlq")
    second = provision_dev_stack([spec])
    assert second.queue_url == first.queue_url
    assert provisioned() == once
