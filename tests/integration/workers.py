"""Worker subprocesses, Kafka offsets, and reading S3 back, for process-level tests."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from loader.config.settings import Settings
from loader.config.spec import EventSpec
from loader.store.layout import parse_key
from loader.store.s3 import S3Store
from loader.worker.worker import StreamWorker
from tests.integration.helpers import read_files
from tests.waiting import eventually, eventually_async


class WorkerProcess:
    """``loader worker run`` as a child process, its log in a file."""

    def __init__(
        self, event: str, specs_dir: Path, env: dict[str, str], log_path: Path, web_port: int = 0
    ) -> None:
        self.log_path = log_path
        self.web_port = web_port
        self._log = log_path.open("ab")
        command = [sys.executable, "-m", "loader", "worker", "run", event, "--specs", str(specs_dir)]
        self.process = subprocess.Popen(
            [*command, "--web-port", str(web_port)],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def signal(self, sig: signal.Signals) -> int:
        """Send ``sig`` and wait for the exit status."""
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)
        code = self.process.wait(timeout=120)
        self._log.close()
        return code

    def wait_until_assigned(self, timeout_s: float = 60) -> bool:
        """Wait until the worker logged a partition assignment (True), or exited or ``timeout_s``
        passed (False: the caller decides; the kill loop of the chaos test kills it anyway)."""

        def assigned() -> bool:
            return b"partitions_assigned" in self.log_path.read_bytes()

        try:
            eventually(lambda: assigned() or not self.alive, timeout_s, what="an assignment", interval_s=0.1)
        except AssertionError:
            return False
        return assigned()

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the worker's log, for failure messages."""
        return self.log_path.read_text()[-chars:]

    def probe(self, path: str) -> int | None:
        """HTTP status of one of the worker's endpoints, or None if it does not answer yet."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}{path}", timeout=2) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


def worker_env(settings: Settings, aws_endpoint: str) -> dict[str, str]:
    """Environment of a worker process pointing at the session's services (S3 through ``aws_endpoint``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOADER_")}
    aws = settings.aws
    assert settings.kafka.bootstrap_servers is not None
    env |= {
        "LOADER_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        # A killed worker's partitions move after this long; the broker's minimum.
        "LOADER_KAFKA__SESSION_TIMEOUT_MS": "6000",
        "LOADER_KAFKA__HEARTBEAT_INTERVAL_MS": "1000",
        "LOADER_AWS__ENDPOINT_URL": aws_endpoint,
        "LOADER_AWS__REGION": aws.region,
        "LOADER_AWS__ACCESS_KEY_ID": aws.access_key_id.get_secret_value() if aws.access_key_id else "testing",
        "LOADER_AWS__SECRET_ACCESS_KEY": (
            aws.secret_access_key.get_secret_value() if aws.secret_access_key else "testing"
        ),
        "LOADER_LOG_FORMAT": "json",
        "LOADER_LOG_LEVEL": os.environ.get("CHAOS_LOG_LEVEL", "INFO"),
        "LOADER_STATE_DIR": os.environ.get("LOADER_STATE_DIR", ""),
    }
    return env


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment for running ``loader`` commands against the session's services."""
    assert settings.aws.endpoint_url is not None
    sf = settings.snowflake
    return (
        worker_env(settings, settings.aws.endpoint_url)
        | {
            "LOADER_SNOWFLAKE__ACCOUNT": sf.account or "",
            "LOADER_SNOWFLAKE__USER": sf.user or "",
            "LOADER_SNOWFLAKE__PASSWORD": sf.password.get_secret_value() if sf.password else "",
            "LOADER_SNOWFLAKE__HOST": sf.host or "",
            "LOADER_SNOWFLAKE__PORT": str(sf.port),
            "LOADER_SNOWFLAKE__PROTOCOL": sf.protocol,
            "LOADER_SNOWFLAKE__LOCAL_STAGE_DIR": str(sf.local_stage_dir),
        }
        | extra
    )


def _partitions(spec: EventSpec) -> list[TopicPartition]:
    return [TopicPartition(spec.kafka.topic, p) for p in range(spec.kafka.partitions)]


async def _end_offsets(settings: Settings, spec: EventSpec) -> dict[int, int]:
    assert settings.kafka.bootstrap_servers is not None
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(_partitions(spec))
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}


def end_offsets(settings: Settings, spec: EventSpec) -> dict[int, int]:
    """Per partition: the log end offset (no group coordinator asked, which a fresh broker
    may not have elected yet)."""
    return asyncio.run(_end_offsets(settings, spec))


def end_and_committed(settings: Settings, spec: EventSpec) -> tuple[dict[int, int], dict[int, int]]:
    """Per partition: the log end offset, and the group's committed offset (-1 if none)."""

    async def _run() -> tuple[dict[int, int], dict[int, int]]:
        ends = await _end_offsets(settings, spec)
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
        await admin.start()
        partitions = _partitions(spec)
        try:
            committed = await admin.list_consumer_group_offsets(spec.consumer_group, partitions=partitions)
        finally:
            await admin.close()
        return ends, {tp.partition: (committed[tp].offset if tp in committed else -1) for tp in partitions}

    return asyncio.run(_run())


def wait_until_caught_up(
    settings: Settings,
    spec: EventSpec,
    timeout_s: float,
    *,
    what: str,
    check: Callable[[], None] = lambda: None,
) -> tuple[dict[int, int], dict[int, int]]:
    """Wait until the group has committed every partition to its end offset (an empty one
    needs no commit); the last
    (ends, committed). ``check`` runs at each poll that is not there yet (e.g. assert that the
    worker still runs), so a dead worker fails the wait at once."""
    offsets: list[tuple[dict[int, int], dict[int, int]]] = []

    def caught_up() -> bool:
        offsets.append(end_and_committed(settings, spec))
        ends, committed = offsets[-1]
        # An empty partition has nothing to commit (-1): caught up too.
        if all(committed.get(p) == end or (end == 0 and committed.get(p) == -1) for p, end in ends.items()):
            return True
        check()
        return False

    eventually(
        caught_up,
        timeout_s,
        what=what,
        interval_s=1.0,
        detail=lambda: f"committed={offsets[-1][1]} ends={offsets[-1][0]}",
    )
    return offsets[-1]


def run_worker_process_until_caught_up(
    settings: Settings, spec: EventSpec, worker: WorkerProcess, timeout_s: float, *, what: str
) -> None:
    """Wait until ``worker`` has its partitions and its group has committed every record (a
    dead worker fails at once, with its log), then stop it with SIGTERM: it must exit 0."""
    try:
        assert worker.wait_until_assigned(90), worker.log_tail()
        wait_until_caught_up(
            settings,
            spec,
            timeout_s,
            what=what,
            check=lambda: None if worker.alive else pytest.fail(f"the worker died: {worker.log_tail()}"),
        )
    finally:
        assert worker.signal(signal.SIGTERM) == 0, worker.log_tail()


def offsets_in_s3(
    store: S3Store, spec: EventSpec
) -> tuple[list[tuple[int, int]], list[tuple[int, int]], dict[tuple[int, int, int], list[str]]]:
    """(partition, offset) of every data row and every dead letter, and each file's range."""
    rows: list[tuple[int, int]] = []
    dead: list[tuple[int, int]] = []
    ranges: dict[tuple[int, int, int], list[str]] = {}
    for prefix, target in ((spec.data_prefix, rows), (spec.dead_letter_prefix, dead)):
        tables: dict[str, pa.Table] = read_files(store, prefix)
        for key, table in tables.items():
            parsed = parse_key(key)
            assert parsed is not None, f"unexpected key {key}"
            offsets = table.column("_OFFSET").to_pylist()
            partitions = set(table.column("_PARTITION").to_pylist())
            assert partitions <= {parsed.partition}, key
            assert all(parsed.first_offset <= o <= parsed.last_offset for o in offsets), key
            target.extend((parsed.partition, o) for o in offsets)
            ranges.setdefault((parsed.partition, parsed.first_offset, parsed.last_offset), []).append(key)
    return rows, dead, ranges


def run_worker_until(worker: StreamWorker, done: Callable[[], bool], timeout_s: float = 90) -> None:
    """Run an in-process worker until ``done()`` (or the timeout, or the worker ends), then stop
    it: like SIGTERM, that rolls and commits everything it took."""

    state: dict[str, object] = {}

    def doing() -> str:
        """What the worker was doing, for a failure that would otherwise read "0 == 300"."""
        return f"ready={worker.ready.is_set()}, partitions={worker.assigned_partitions()}, {worker.stats}"

    async def _main() -> None:
        task = asyncio.create_task(worker.run())
        try:
            await eventually_async(
                lambda: done() or task.done(), timeout_s, what="the worker to be done", detail=doing
            )
        finally:
            state.update(doing=doing())
            worker.stop()
            await task

    asyncio.run(_main())
    assert done(), f"the worker ended before it was done: {state['doing']}; after the stop: {worker.stats}"
