"""The broker goes away while clients post to a running ``loader gateway``: nothing is lost or over-claimed.

- sync mode: every event answered 200 (acknowledged) is in the topic, read back after the broker returned;
- async mode: every event answered 202 (buffered) is in the topic or in a spill file of the event's
  dead-letter area, and the spill files hold exactly as many records as ``loader_gateway_spilled_total``.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from loader.config.settings import Settings
from loader.config.spec import EventSpec
from loader.devstack import DevStack
from loader.devstack import kafka as devkafka
from loader.devstack.process import stop as stop_service
from loader.devstack.provision import ensure_canary_topics
from loader.store.s3 import S3Store
from tests.integration.helpers import read_topic, sample_values, spec_on_disk
from tests.integration.workers import cli_env
from tests.waiting import eventually

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900)]

BATCH = 20
CLIENTS = 3
REPO = Path(__file__).parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@dataclass
class Gateway:
    """A ``loader gateway`` process on loopback ports."""

    process: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    log_path: Path

    def post(self, event: str, events: list[bytes]) -> tuple[int, dict[str, object]]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/v1/events/{event}",
            data=b"[" + b",".join(events) + b"]",
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def metric(self, name: str, event: str | None = None, *, cluster: str | None = None) -> float:
        _, text = get(f"http://127.0.0.1:{self.metrics_port}/metrics")
        labels = f'{{event="{event}"}}' if event else f'{{cluster="{cluster}"}}' if cluster else ""
        match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    def ready(self) -> bool:
        return get(f"http://127.0.0.1:{self.metrics_port}/readyz")[0] == 200

    def log(self) -> str:
        return self.log_path.read_text()[-4000:]


@contextmanager
def gateway(settings: Settings, specs: Path, tmp_path: Path, mode: str) -> Iterator[Gateway]:
    """``loader gateway`` in ``mode`` (deadline 6 s), ready; SIGTERM (its graceful stop) at the end."""
    port, metrics_port = free_port(), free_port()
    env = cli_env(
        settings,
        LOADER_GATEWAY__MODE=mode,
        LOADER_GATEWAY__ALLOW_ANONYMOUS="true",
        LOADER_GATEWAY__DELIVERY_TIMEOUT_S="6",
        LOADER_GATEWAY__METRICS_PORT=str(metrics_port),
        LOADER_GATEWAY__LINGER_MS="20",
    )
    log_path = tmp_path / f"gateway-{mode}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "loader", "gateway", "--specs", str(specs), "--port", str(port)],
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    running = Gateway(process, port, metrics_port, log_path)
    try:
        eventually(
            running.ready, 90, what=f"the {mode} gateway ready", ignoring=(OSError,), detail=running.log
        )
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Clients:
    """Threads posting batches of fresh events until stopped, recording each event's answer."""

    gateway: Gateway
    spec: EventSpec
    answered: dict[str, list[str]] = field(default_factory=lambda: {"ok": [], "failed": []})
    codes: list[int] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, seed: int) -> None:
        start = 0
        while not self.stop.is_set():
            ids, events = [], []
            for _, value in sample_values(self.spec, BATCH, seed=seed, start=start):
                envelope = json.loads(value)
                envelope["event_id"] = str(uuid.uuid4())
                ids.append(envelope["event_id"])
                events.append(json.dumps(envelope).encode())
            start += BATCH
            try:
                code, body = self.gateway.post(self.spec.name, events)
            except OSError:
                code, body = 0, {}
            ok = self._taken(code, body, len(ids))
            with self.lock:
                self.codes.append(code)
                self.answered["ok"] += [i for n, i in enumerate(ids) if n in ok]
                self.answered["failed"] += [i for n, i in enumerate(ids) if n not in ok]
            time.sleep(0.05)

    @staticmethod
    def _taken(code: int, body: dict[str, object], count: int) -> set[int]:
        """Indexes the gateway claims: acknowledged with an offset (sync: 200, or listed in a 503's
        results), buffered (async: 202, or a 503's records not listed as failed); nothing else."""
        if code == 0:
            return set()
        assert code in (200, 202, 503), (code, body)
        results, failed = body.get("results"), body.get("failed", [])
        assert isinstance(failed, list)
        not_taken = {int(f["index"]) for f in failed}
        if isinstance(results, list):  # sync
            taken = {int(r["index"]) for r in results if r.get("offset") is not None}
            assert len(results) == len(taken) == count - len(not_taken), body  # no claim without an offset
            return taken
        assert body.get("accepted") == count - len(not_taken), body
        return set(range(count)) - not_taken

    def recovered(self, code: int) -> bool:
        """Whether the last requests of every client were answered ``code``."""
        with self.lock:
            return len(self.codes) > 10 and set(self.codes[-2 * CLIENTS :]) == {code}

    @contextmanager
    def posting(self) -> Iterator[None]:
        threads = [threading.Thread(target=self.run, args=(seed,), daemon=True) for seed in range(CLIENTS)]
        for thread in threads:
            thread.start()
        try:
            yield
        finally:
            self.stop.set()
            for thread in threads:
                thread.join(timeout=180)
            assert not any(t.is_alive() for t in threads)


def broker_outage(dev_stack: DevStack, seconds: float) -> None:
    """Stop the session's broker for ``seconds``, then start it again (same port and data)."""
    service = dev_stack.service(devkafka.NAME)
    assert service is not None
    stop_service(service, sig=devkafka.STOP_SIGNAL, grace_s=30.0)
    time.sleep(seconds)
    dev_stack.restart_kafka()  # the stopped broker is not stopped again; a new one starts


def topic_ids(settings: Settings, spec: EventSpec) -> set[str]:
    return {dict(r.headers)["event_id"].decode() for r in read_topic(settings, spec, spec.kafka.topic)}


def spilled_ids(store: S3Store, spec: EventSpec) -> list[str]:
    ids = []
    for info in store.list_objects(f"{spec.dead_letter_prefix}gateway/"):
        table = pq.read_table(io.BytesIO(store.get_bytes(info.key)))
        assert (
            set(table.column("_REASON").to_pylist()) and table.column("_OFFSET").null_count == table.num_rows
        )
        for headers in table.column("_HEADERS").to_pylist():
            ids += [h["value"].decode() for h in headers if h["key"] == "event_id"]
    return ids


@pytest.fixture
def event(
    dev_stack: DevStack, tmp_path: Path, unique_name: Callable[..., str]
) -> tuple[EventSpec, S3Store, Path]:
    if dev_stack.service(devkafka.NAME) is None:
        pytest.skip("Kafka is configured externally; this test stops the broker it started")
    specs = tmp_path / "specs"
    spec, store = spec_on_disk(
        dev_stack.settings, specs, unique_name("gwout", sep="_"), bucket="gateway-outage", partitions=3
    )
    asyncio.run(ensure_canary_topics(dev_stack.settings, [spec]))
    return spec, store, specs


def test_sync_never_answers_200_without_the_broker(
    dev_stack: DevStack, event: tuple[EventSpec, S3Store, Path], tmp_path: Path
) -> None:
    """Sync mode across a broker outage: every event answered 200 is in the topic; the outage got 503s."""
    spec, _, specs = event
    settings = dev_stack.settings
    with gateway(settings, specs, tmp_path, "sync") as running:
        clients = Clients(running, spec)
        with clients.posting():
            time.sleep(3)
            broker_outage(dev_stack, 15)
            eventually(
                lambda: clients.recovered(200),
                120,
                what="200s again after the broker returned",
                detail=running.log,
            )
    assert 503 in clients.codes, "the outage never answered 503: it did not happen"
    in_topic = topic_ids(settings, spec)
    missing = set(clients.answered["ok"]) - in_topic
    assert not missing, f"{len(missing)} events answered 200 are not in the topic"
    assert len(clients.answered["ok"]) > 0 and len(clients.answered["failed"]) > 0


def test_async_delivers_or_spills_every_buffered_event(
    dev_stack: DevStack, event: tuple[EventSpec, S3Store, Path], tmp_path: Path
) -> None:
    """Async, broker out longer than the deadline: the topic or a spill file holds every buffered event."""
    spec, store, specs = event
    settings = dev_stack.settings
    with gateway(settings, specs, tmp_path, "async") as running:
        clients = Clients(running, spec)
        with clients.posting():
            time.sleep(3)
            broker_outage(dev_stack, 15)
            eventually(
                lambda: clients.recovered(202),
                120,
                what="202s again after the broker returned",
                detail=running.log,
            )
        eventually(
            lambda: running.metric("loader_gateway_in_flight_records", cluster="default") == 0,
            120,
            what="nothing in flight",
            detail=running.log,
        )
        # Failed records leave the in-flight count and wait for a retry or their deadline, so a
        # spill may still be under way: the files and the metric must come to agree (read around
        # the listing, so a spill finishing in between is not taken for a miscount).
        seen: list[tuple[float, int, float]] = []

        def files_match_the_metric() -> bool:
            before = running.metric("loader_gateway_spilled_total", spec.name)
            count = len(spilled_ids(store, spec))
            seen.append((before, count, running.metric("loader_gateway_spilled_total", spec.name)))
            return before == count == seen[-1][2]

        eventually(
            files_match_the_metric,
            120,
            what="the spill files to hold exactly the records the spill metric counts",
            interval_s=2,
            detail=lambda: f"(metric, records in files, metric) {seen[-3:]}",
        )
        spilled = spilled_ids(store, spec)
    assert spilled, "nothing spilled: the outage was not longer than the deadline"
    buffered = set(clients.answered["ok"])
    in_topic = topic_ids(settings, spec)
    missing = buffered - in_topic - set(spilled_ids(store, spec))
    assert not missing, (
        f"{len(missing)} of {len(buffered)} buffered events are neither in the topic nor spilled"
    )
    assert not (set(spilled) - buffered), "a spill holds an event never answered 202"
