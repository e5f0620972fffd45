"""The SQS loader's readiness: what its services answered last, and the endpoints that report it."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import botocore.exceptions
import pytest

from loader.errors import ConfigError, StorageError
from loader.metrics import exposition
from loader.retry import Backoff
from loader.store.aws import storage_errors
from loader.warehouse import endpoints
from loader.warehouse.readiness import NOT_CHECKED, Readiness, ReadinessReport, watch
from tests.waiting import eventually

pytestmark = pytest.mark.unit


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_not_ready_until_every_service_answered() -> None:
    """A service never reported counts as down: ready only once sqs, s3 and snowflake answered."""
    readiness = Readiness()
    assert readiness.report() == ReadinessReport(
        ready=False, down={"s3": NOT_CHECKED, "snowflake": NOT_CHECKED, "sqs": NOT_CHECKED}
    )
    readiness.answered("sqs")
    readiness.answered("s3")
    assert readiness.report().down == {"snowflake": NOT_CHECKED}
    readiness.answered("snowflake")
    assert readiness.report() == ReadinessReport(ready=True, down={})


def test_the_latest_report_wins_and_names_the_reason() -> None:
    """A failure makes the service down with its (clipped) reason; the next answer makes it up."""
    readiness = Readiness()
    for service in ("sqs", "s3", "snowflake"):
        readiness.answered(service)
    readiness.failed("sqs", "receive failed: connection reset " + "x" * 5_000)
    report = readiness.report()
    assert not report.ready
    assert list(report.down) == ["sqs"]
    assert report.down["sqs"].startswith("receive failed: connection reset")
    assert len(report.down["sqs"]) < 400
    readiness.answered("sqs")
    assert readiness.report().ready


def test_a_probe_without_an_answer_counts_as_down_after_a_while() -> None:
    """A probe that hangs (a service that accepts connections and never answers) reports its service
    down once it has run longer than stuck_after_s; its outcome is reported when it ends."""
    clock = _Clock()
    readiness = Readiness(stuck_after_s=20, clock=clock)
    for service in ("sqs", "s3", "snowflake"):
        readiness.answered(service)
    with readiness.probing("snowflake"):
        clock.now += 19
        assert readiness.report().ready
        clock.now += 2
        assert readiness.report().down == {"snowflake": "no answer to a probe for 21 s"}
    assert readiness.report().ready
    with pytest.raises(StorageError), readiness.probing("s3"):
        raise StorageError("list s3://b/p failed: SlowDown", transient=True)
    assert readiness.report().down == {"s3": "list s3://b/p failed: SlowDown"}


def test_watch_probes_until_stopped_then_finishes_on_its_thread() -> None:
    """watch() probes on its own thread (a failing probe is reported, not raised) and calls finish at
    the end."""
    readiness = Readiness()
    stop = threading.Event()
    calls: list[str] = []
    finished = threading.Event()

    def check() -> None:
        calls.append(threading.current_thread().name)
        if len(calls) == 1:
            raise ConfigError("bucket 'b' of e does not exist")

    thread = watch(readiness, "s3", check, stop, interval_s=0.01, finish=finished.set)
    eventually(lambda: len(calls) >= 3, 10, what="three probes")
    assert readiness.report().down.get("s3") is None
    stop.set()
    thread.join(10)
    assert finished.is_set() and not thread.is_alive()
    assert set(calls) == {"probe-s3"}


def test_backoff_pause_returns_at_once_when_stopped() -> None:
    """A retry's pause ends as soon as the stop event is set, and says so."""
    backoff = Backoff(first_s=30, max_s=60)
    stop = threading.Event()
    stop.set()
    started = time.monotonic()
    assert backoff.pause(stop) is True
    assert time.monotonic() - started < 1
    assert Backoff(first_s=0.01).pause(threading.Event()) is False


@pytest.mark.parametrize(
    ("code", "transient"),
    [
        ("AWS.SimpleQueueService.NonExistentQueue", False),
        ("QueueDoesNotExist", False),
        ("InvalidClientTokenId", False),
        ("UnrecognizedClientException", False),
        ("AccessDeniedException", False),
        ("KmsAccessDenied", False),
        ("InvalidAddress", False),
        ("RequestThrottled", True),
        ("InternalError", True),
        ("ServiceUnavailable", True),
    ],
)
def test_sqs_refusals_are_terminal_and_outages_transient(code: str, transient: bool) -> None:
    """SQS's answers for a wrong queue or credentials are terminal (pipes run ends, exit 2);
    throttling and server errors are transient (retried)."""
    cause = botocore.exceptions.ClientError({"Error": {"Code": code, "Message": "m"}}, "ReceiveMessage")
    with pytest.raises(StorageError) as caught, storage_errors("receive from the notifications queue"):
        raise cause
    assert caught.value.transient is transient


@pytest.fixture
def served() -> Iterator[tuple[int, Readiness, threading.Event]]:
    """The loader's endpoints on a free loopback port: (port, readiness, ended)."""
    readiness = Readiness()
    ended = threading.Event()
    server = endpoints.serve(
        "127.0.0.1", 0, exposition(), alive=lambda: not ended.is_set(), readiness=readiness.report
    )
    try:
        yield server.server_address[1], readiness, ended
    finally:
        server.shutdown()
        server.server_close()


def _get(port: int, path: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return int(response.status), response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def test_endpoints_answer_like_the_workers(served: tuple[int, Readiness, threading.Event]) -> None:
    """/healthz is {"alive"}, /readyz is {"ready", "down"} (503 naming each service down and why,
    200 once all answer), /metrics the Prometheus text format."""
    port, readiness, ended = served
    assert _get(port, "/healthz")[::2] == (200, b'{"alive": true}')
    status, content_type, body = _get(port, "/readyz")
    assert (status, content_type) == (503, "application/json")
    assert json.loads(body) == {
        "ready": False,
        "down": {"s3": NOT_CHECKED, "snowflake": NOT_CHECKED, "sqs": NOT_CHECKED},
    }
    for service in ("sqs", "s3", "snowflake"):
        readiness.answered(service)
    readiness.failed("snowflake", "cannot connect to Snowflake: connection refused")
    status, _, body = _get(port, "/readyz")
    assert status == 503
    assert json.loads(body)["down"] == {"snowflake": "cannot connect to Snowflake: connection refused"}
    readiness.answered("snowflake")
    assert _get(port, "/readyz")[::2] == (200, b'{"ready": true, "down": {}}')
    status, content_type, body = _get(port, "/metrics")
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    assert b"# TYPE loader_errors_total counter" in body
    ended.set()
    assert _get(port, "/healthz")[::2] == (503, b'{"alive": false}')
