"""`loader pipes run` outlives its services: SQS, then Snowflake, cut for a minute each.

The loader runs as a subprocess. Its AWS endpoint is a TCP outage proxy in front of moto, its
Snowflake port another in front of fakesnow; the test writes data files to moto directly (moto
sends their notifications to the queue), so files keep arriving through both outages.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from loader.config.spec import EventSpec
from loader.devstack import DevStack
from loader.devstack.process import free_port
from loader.notify.provision import ensure_notification_rules, ensure_queue, queue_arn
from loader.store.aws import aws_client
from loader.store.s3 import S3Store
from loader.warehouse.connection import Warehouse
from loader.warehouse.manager import PipeManager
from tests.chaos.tcp_outage import TcpOutageProxy
from tests.integration.helpers import make_spec, upload_sample_file
from tests.integration.workers import cli_env
from tests.waiting import eventually, stays

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.timeout(1200)]

OUTAGE_S = 60.0
ROWS_PER_FILE = 40
FILE_EVERY_S = 1.5


class _LoaderProcess:
    """``loader pipes run`` as a child process, its log in a file, its endpoints on ``port``."""

    def __init__(self, command: list[str], env: dict[str, str], log_path: Path, port: int) -> None:
        self.log_path = log_path
        self.port = port
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            command, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def assert_alive(self) -> None:
        assert self.alive, f"pipes run exited with {self.process.returncode}:\n{self.log_tail()}"

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def get(self, path: str) -> tuple[int, bytes] | None:
        """Status and body of one endpoint; None if it does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as response:
                return int(response.status), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None

    def readiness(self) -> tuple[int, dict[str, str]] | None:
        """``/readyz``'s status and the services it names as down."""
        answer = self.get("/readyz")
        if answer is None:
            return None
        return answer[0], json.loads(answer[1])["down"]

    def errors(self, component: str) -> float:
        """``loader_errors_total`` of ``component``, summed over events and kinds."""
        answer = self.get("/metrics")
        assert answer is not None and answer[0] == 200, answer
        return sum(
            sample.value
            for family in text_string_to_metric_families(answer[1].decode())
            for sample in family.samples
            if sample.name == "loader_errors_total" and sample.labels["component"] == component
        )

    def stop(self) -> int:
        if self.alive:
            os.kill(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        finally:
            if self.alive:
                self.process.kill()
                self.process.wait()
            self._log.close()


@dataclass
class _Producer:
    """Writes a data file of ROWS_PER_FILE rows (partition 0, the next offsets) every FILE_EVERY_S."""

    store: S3Store
    spec: EventSpec
    files: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    @property
    def rows(self) -> int:
        return self.files * ROWS_PER_FILE

    def run(self) -> None:
        try:
            while not self.stop.wait(FILE_EVERY_S):
                upload_sample_file(self.store, self.spec, self.files * ROWS_PER_FILE, ROWS_PER_FILE)
                self.files += 1
        except BaseException as exc:  # reported by the test's thread
            self.error = exc


def _setup(dev_stack: DevStack, unique_name: Callable[..., str], specs_dir: Path) -> tuple[EventSpec, str]:
    """An applied event type notifying a queue of its own (with a dead-letter queue); (spec, queue)."""
    settings = dev_stack.settings
    spec = make_spec(unique_name("lout", sep="_"), bucket="it-loader-outage")
    S3Store(settings.aws, spec.s3.bucket).create_bucket()
    queue_url = ensure_queue(settings, unique_name("lq"))
    ensure_notification_rules(settings, spec.s3.bucket, {spec.data_prefix: queue_arn(settings, queue_url)})
    sqs = aws_client("sqs", settings.aws)  # moto's s3:TestEvent, sent as the rules were set
    for message in sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1).get("Messages", []):
        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    with Warehouse(settings.snowflake) as warehouse:
        PipeManager(warehouse, settings).apply(spec)
    specs_dir.mkdir()
    document = spec.model_dump(by_alias=True, mode="json", exclude={"source_path"})
    (specs_dir / f"{spec.name}.yaml").write_text(yaml.safe_dump(document))
    return spec, queue_url


def _through_an_outage(
    loader: _LoaderProcess, proxy: TcpOutageProxy, service: str, producer: _Producer
) -> list[tuple[float, int | None]]:
    """Cut ``proxy`` for OUTAGE_S while files keep arriving; /readyz must turn 503 naming
    ``service`` and stay so until the end of the cut. The readings, (seconds into the cut, status)."""
    readings: list[tuple[float, int | None]] = []
    proxy.down()
    cut = time.monotonic()
    try:
        while (elapsed := time.monotonic() - cut) < OUTAGE_S:
            loader.assert_alive()
            assert producer.error is None, producer.error
            answer = loader.readiness()
            readings.append((round(elapsed, 1), None if answer is None else answer[0]))
            if answer is not None and answer[0] == 503:
                assert service in answer[1], answer
            time.sleep(1.0)
    finally:
        proxy.up()
    first_503 = next((i for i, (_, status) in enumerate(readings) if status == 503), None)
    assert first_503 is not None, f"/readyz never answered 503 while {service} was cut: {readings}"
    assert readings[first_503][0] < OUTAGE_S / 2, f"503 came late in the {service} cut: {readings}"
    assert all(status == 503 for _, status in readings[first_503:]), (
        f"/readyz did not stay 503 while {service} was cut: {readings}"
    )
    return readings


def _ready_again(loader: _LoaderProcess, what: str) -> None:
    def ready() -> bool:
        loader.assert_alive()
        answer = loader.readiness()
        return answer is not None and answer[0] == 200

    eventually(ready, 120, what=what, interval_s=1.0, detail=lambda: (loader.readiness(), loader.log_tail()))


def test_pipes_run_rides_out_sqs_and_snowflake_outages_and_loads_every_row_once(
    dev_stack: DevStack, unique_name: Callable[..., str], tmp_path: Path
) -> None:
    """With SQS (moto) and then Snowflake cut for a minute each while files keep arriving, `pipes run`
    keeps running, /readyz is 503 naming the service during each cut and 200 after, each outage
    grows loader_errors_total, and every row lands exactly once (no notification dead-lettered)."""
    settings = dev_stack.settings
    if dev_stack.service("fakesnow") is None or settings.snowflake.port is None:
        pytest.skip("needs the local fakesnow server started by the dev stack")
    assert settings.aws.endpoint_url is not None
    moto_port = urlsplit(settings.aws.endpoint_url).port
    assert moto_port is not None
    spec, queue_url = _setup(dev_stack, unique_name, tmp_path / "specs")
    producer = _Producer(S3Store(settings.aws, spec.s3.bucket), spec)
    producing = threading.Thread(target=producer.run, name="test-producer", daemon=True)
    with (
        Warehouse(settings.snowflake) as direct,
        TcpOutageProxy(moto_port) as sqs_proxy,
        TcpOutageProxy(settings.snowflake.port) as snowflake_proxy,
    ):
        objects = PipeManager(direct, settings).objects(spec)

        def rows() -> int:
            return int(direct.execute(objects.count_statement())[0][0])

        env = cli_env(
            settings,
            LOADER_AWS__ENDPOINT_URL=f"http://127.0.0.1:{sqs_proxy.port}",
            LOADER_SNOWFLAKE__PORT=str(snowflake_proxy.port),
        )
        command = [
            sys.executable,
            "-m",
            "loader",
            "pipes",
            "run",
            spec.name,
            "--specs",
            str(tmp_path / "specs"),
        ]
        port = free_port()
        loader = _LoaderProcess(
            [*command, "--queue-url", queue_url, "--metrics-port", str(port)], env, tmp_path / "run.log", port
        )
        try:
            _ready_again(loader, "/readyz to answer 200 once started")
            producing.start()
            eventually(lambda: rows() > 0, 120, what="the first rows loaded", detail=loader.log_tail)

            sqs_errors = loader.errors("sqs")
            _through_an_outage(loader, sqs_proxy, "sqs", producer)
            _ready_again(loader, "/readyz to answer 200 after the SQS outage")
            assert loader.errors("sqs") > sqs_errors
            in_table = rows()
            eventually(lambda: rows() > in_table, 120, what="loads to resume after the SQS outage")

            snowflake_errors = loader.errors("snowflake")
            _through_an_outage(loader, snowflake_proxy, "snowflake", producer)
            _ready_again(loader, "/readyz to answer 200 after the Snowflake outage")
            assert loader.errors("snowflake") > snowflake_errors

            producer.stop.set()
            producing.join(30)
            assert producer.error is None, producer.error
            produced = producer.rows
            assert producer.files > 2 * OUTAGE_S / FILE_EVERY_S / 2  # files kept arriving throughout
            eventually(
                lambda: rows() >= produced,
                300,
                what=f"all {produced} rows in the table",
                interval_s=2.0,
                detail=lambda: f"rows={rows()}; {loader.log_tail()}",
            )
            stays(lambda: rows() == produced, 10, what="no row loaded twice", interval_s=1.0)
            loader.assert_alive()
            loaded = direct.execute(f'SELECT "_PARTITION", "_OFFSET" FROM {objects.table}')
        finally:
            producer.stop.set()
            code = loader.stop()
    assert len(loaded) == len(set(loaded)) == produced
    assert set(loaded) == {(0, offset) for offset in range(produced)}
    dead = aws_client("sqs", settings.aws).get_queue_attributes(
        QueueUrl=f"{queue_url}-dlq", AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    assert dead["ApproximateNumberOfMessages"] == "0"  # no notification was given up on
    assert code == 0, loader.log_tail()
