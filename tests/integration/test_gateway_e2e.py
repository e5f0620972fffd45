"""The event gateway end to end: `loader gateway` as a process posting to the real Kafka, then
a real worker process, S3, `loader pipes apply` and the SQS loader, into the table; and the
REST Proxy v2 API as Confluent's clients speak it."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from click.testing import CliRunner

from loader.cli import cli
from loader.config.settings import Settings
from loader.config.spec import EventSpec
from loader.devstack import DevStack
from loader.devstack.process import free_port
from loader.devstack.provision import ensure_canary_topics
from loader.devstack.samples import SampleEvents
from loader.notify.provision import ensure_queue
from loader.schema import load_avro_schema
from loader.store.s3 import S3Store
from loader.warehouse.connection import Warehouse
from loader.warehouse.objects import EventObjects
from loader.warehouse.sqs_loader import SqsLoader
from tests.integration.helpers import read_topic, spec_on_disk
from tests.integration.loading import run_loader_until
from tests.integration.workers import (
    WorkerProcess,
    cli_env,
    offsets_in_s3,
    run_worker_process_until_caught_up,
)
from tests.waiting import eventually

pytestmark = pytest.mark.integration

KEY = "integration-gateway-key-0123456789abcdef"
PROXY_TYPE = "application/vnd.kafka.json.v2+json"
PROXY_ACCEPT = "application/vnd.kafka.v2+json, application/vnd.kafka+json, application/json"


@dataclass
class Gateway:
    """A running ``loader gateway`` process and what it serves."""

    spec: EventSpec
    specs_dir: Path
    store: S3Store
    env: dict[str, str]
    url: str
    settings: Settings
    log_path: Path
    pid: int
    metrics_url: str

    def post(self, path: str, body: bytes, content_type: str, **headers: str) -> httpx2.Response:
        return httpx2.post(
            f"{self.url}{path}",
            content=body,
            headers={"Authorization": f"Bearer {KEY}", "Content-Type": content_type, **headers},
            timeout=60,
        )


@pytest.fixture(scope="module")
def gateway(dev_stack: DevStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """One event type on disk, its pipe applied, and `loader gateway --processes 2` serving it until
    /readyz is 200 (every process ready)."""
    tmp = tmp_path_factory.mktemp("gateway")
    settings = dev_stack.settings
    suffix = uuid.uuid4().hex[:8]
    name = f"gw_{suffix}"
    specs_dir = tmp / "specs"
    spec, store = spec_on_disk(settings, specs_dir, name, bucket="it-gateway", partitions=2)
    canary = f"gw-canary-{suffix}"
    gateway_settings = settings.gateway.model_copy(update={"canary_topic": canary})
    asyncio.run(ensure_canary_topics(settings.model_copy(update={"gateway": gateway_settings}), [spec]))
    queue_url = ensure_queue(settings, f"gw-{suffix}")
    port, metrics_port = free_port(), free_port()
    entry = {"name": "it-app", "sha256": hashlib.sha256(KEY.encode()).hexdigest(), "events": [name]}
    env = cli_env(
        settings,
        LOADER_AWS__NOTIFICATIONS_QUEUE_URL=queue_url,
        LOADER_GATEWAY__API_KEYS=json.dumps([entry]),
        LOADER_GATEWAY__PORT=str(port),
        LOADER_GATEWAY__METRICS_PORT=str(metrics_port),
        LOADER_GATEWAY__CANARY_TOPIC=canary,
        LOADER_GATEWAY__LINGER_MS="5",
        LOADER_GATEWAY__MAX_BATCH_RECORDS="500",
    )
    applied = CliRunner().invoke(cli, ["pipes", "apply", name, "--specs", str(specs_dir)], env=env)
    assert applied.exit_code == 0, applied.output
    log_path = tmp / "gateway.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "loader", "gateway", "--specs", str(specs_dir), "--processes", "2"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def ready() -> bool:
            assert process.poll() is None, f"the gateway exited: {log_path.read_text()[-3000:]}"
            try:
                return httpx2.get(f"http://127.0.0.1:{metrics_port}/readyz", timeout=5).status_code == 200
            except httpx2.TransportError:
                return False

        eventually(ready, 120, what="the gateway's /readyz to answer 200", interval_s=0.5)
        yield Gateway(
            spec,
            specs_dir,
            store,
            env,
            f"http://127.0.0.1:{port}",
            settings,
            log_path,
            process.pid,
            f"http://127.0.0.1:{metrics_port}",
        )
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log_path.read_text()[-3000:]


def _events(spec: EventSpec, count: int, seed: int) -> list[dict[str, Any]]:
    assert spec.schema_path is not None
    samples = SampleEvents(spec.name, load_avro_schema(spec.schema_path), seed=seed)
    return [samples.envelope(i) for i in range(count)]


def test_posted_events_land_in_the_table_and_bad_ones_are_named(gateway: Gateway, tmp_path: Path) -> None:
    """A mixed batch (array) and a mixed NDJSON batch: the gateway accepts exactly the good
    events and names each bad one by index; the worker makes a row of every accepted record
    and dead-letters none; the loader puts exactly those events in the table."""
    spec = gateway.spec
    good = _events(spec, 230, seed=21)
    bad_type = {**good[0], "event_id": "bad-type", "payload": {**good[0]["payload"], "item_count": "x"}}
    missing = {**good[1], "event_id": "bad-missing", "payload": {"order_id": "o"}}
    batch = [*good[:100], bad_type, *good[100:150], missing, "not an object"]
    first = gateway.post(f"/v1/events/{spec.name}", json.dumps(batch).encode(), "application/json")
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["accepted"] == 150
    assert [r["index"] for r in body["rejected"]] == [100, 151, 152]
    assert len({(r["partition"], r["offset"]) for r in body["results"]}) == 150
    lines = [json.dumps(e).encode() for e in good[150:]] + [
        b'{"event_id": "cut',
        json.dumps(missing).encode(),
    ]
    second = gateway.post(f"/v1/events/{spec.name}", b"\n".join(lines), "application/x-ndjson")
    assert second.status_code == 200, second.text
    assert second.json()["accepted"] == 80 and len(second.json()["rejected"]) == 2

    worker = WorkerProcess(spec.name, gateway.specs_dir, gateway.env, tmp_path / "worker.log", free_port())
    run_worker_process_until_caught_up(
        gateway.settings, spec, worker, 180, what="the worker to commit every record"
    )
    rows, dead, _ranges = offsets_in_s3(gateway.store, spec)
    assert dead == [], "the gateway accepted a record the worker dead-lettered"
    produced = {(r["partition"], r["offset"]) for answer in (first,) for r in answer.json()["results"]}
    assert produced <= set(rows) and len(rows) == len(set(rows)) == 230

    queue_url = gateway.env["LOADER_AWS__NOTIFICATIONS_QUEUE_URL"]
    run_loader_until(
        SqsLoader(gateway.settings, [spec], queue_url=queue_url, wait_time_s=1, visibility_timeout_s=10),
        lambda loader: loader.stats.rows_loaded >= 230,
        120,
        what="230 rows loaded",
        join_timeout_s=30,
    )
    table = EventObjects.for_spec(spec, gateway.settings.snowflake).table
    with Warehouse(gateway.settings.snowflake) as warehouse:
        loaded = warehouse.execute(f'SELECT "_EVENT_ID", "ORDER_ID", "_SOURCE" FROM {table}')
    assert sorted(row[0] for row in loaded) == sorted(e["event_id"] for e in good)
    assert {row[1] for row in loaded} == {e["payload"]["order_id"] for e in good}
    assert {row[2] for row in loaded} == {e["source"] for e in good}


def test_a_rest_proxy_v2_client_request_gets_confluents_answer(gateway: Gateway) -> None:
    """Exactly what a REST Proxy v2 client sends (embedded JSON, its Accept header, keys and a
    partition) gets the documented answer: null schema ids and one offset per record, which holds
    that record on Kafka; a bad record is error_code 1 without stopping the others."""
    spec = gateway.spec
    events = _events(spec, 3, seed=33)
    broken = {**events[2], "payload": {**events[2]["payload"], "is_scheduled": "maybe"}}
    body = {
        "records": [
            {"key": "store-1", "value": events[0]},
            {"value": events[1], "partition": 1},
            {"key": "store-2", "value": broken},
        ]
    }
    answer = gateway.post(
        f"/topics/{spec.kafka.topic}", json.dumps(body).encode(), PROXY_TYPE, Accept=PROXY_ACCEPT
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/vnd.kafka.v2+json")
    result = answer.json()
    assert set(result) == {"key_schema_id", "value_schema_id", "offsets"}
    assert result["key_schema_id"] is None and result["value_schema_id"] is None
    first, second, third = result["offsets"]
    assert set(first) == set(second) == set(third) == {"partition", "offset", "error_code", "error"}
    assert first["error_code"] is None and second["error_code"] is None and second["partition"] == 1
    assert third["error_code"] == 1 and third["offset"] is None and "is_scheduled" in third["error"]
    on_kafka = {(r.partition, r.offset): r for r in read_topic(gateway.settings, spec, spec.kafka.topic)}
    held = on_kafka[(first["partition"], first["offset"])]
    assert held.key == b'"store-1"'
    assert dict(held.headers)["event_id"] == events[0]["event_id"].encode()
    assert json.loads(held.value) == events[0]["payload"]
    assert dict(on_kafka[(1, second["offset"])].headers)["event_id"] == events[1]["event_id"].encode()


def test_access_and_limits_over_http(gateway: Gateway) -> None:
    """Over real HTTP: no key 401, another event's key 403 (none here: unknown event 404 first),
    an over-limit batch 413, an unsupported type 415; nothing is produced by any of them."""
    spec = gateway.spec
    event = json.dumps([_events(spec, 1, seed=44)[0]]).encode()
    no_key = httpx2.post(f"{gateway.url}/v1/events/{spec.name}", content=event, timeout=30)
    unknown = gateway.post("/v1/events/no_such_event", event, "application/json")
    too_many = gateway.post(f"/v1/events/{spec.name}", b"\n".join([b"{}"] * 501), "application/x-ndjson")
    xml = gateway.post(f"/v1/events/{spec.name}", b"<a/>", "application/xml")
    assert no_key.status_code == 401
    assert unknown.status_code == 404
    assert too_many.status_code == 413
    assert xml.status_code == 415


def _requests_answered(gateway: Gateway, code: str) -> float:
    text = httpx2.get(f"{gateway.metrics_url}/metrics", timeout=10).text
    line = rf'^loader_gateway_requests_total{{api="events",code="{code}"}} (\S+)$'
    found = re.search(line, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_two_processes_share_the_port_and_one_metrics_endpoint(gateway: Gateway) -> None:
    """`--processes 2` runs two gateway processes under the command's process; new connections
    are dealt to them in turn (each holds every other keep-alive connection, so neither gets
    the other's share), and the one /metrics counts every request."""
    children = [
        int(pid) for pid in Path(f"/proc/{gateway.pid}/task/{gateway.pid}/children").read_text().split()
    ]
    assert len(children) == 2
    refused = b"\n".join([json.dumps({"payload": {"a": "x"}}).encode()] * 5)  # no event_id: 400
    before = _requests_answered(gateway, "400")
    port = int(gateway.url.rsplit(":", 1)[1])
    holders: list[int] = []
    connections = []
    try:
        for _ in range(8):  # keep-alive connections, opened one after another
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            connections.append(connection)
            connection.request(
                "POST",
                f"/v1/events/{gateway.spec.name}",
                refused,
                {"Authorization": f"Bearer {KEY}", "Content-Type": "application/x-ndjson"},
            )
            answer = connection.getresponse()
            assert answer.status == 400 and json.loads(answer.read())["accepted"] == 0
            assert connection.sock is not None
            holders.append(_holder(children, port, connection.sock.getsockname()[1]))
    finally:
        for connection in connections:
            connection.close()
    assert all(a != b for a, b in itertools.pairwise(holders)), holders
    assert sorted(holders.count(pid) for pid in children) == [4, 4], holders
    eventually(lambda: _requests_answered(gateway, "400") - before == 8, 30, what="8 requests counted")


def _holder(pids: list[int], server_port: int, client_port: int) -> int:
    """The process whose descriptors hold the server side of the connection from ``client_port``."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if (
                int(local.rsplit(":", 1)[1], 16) == server_port
                and int(remote.rsplit(":", 1)[1], 16) == client_port
            ):
                inodes.add(f"socket:[{inode}]")
    assert inodes, f"no server-side socket for client port {client_port}"
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) in inodes:
                    return pid
    raise AssertionError(f"no gateway process holds the connection from port {client_port}")
