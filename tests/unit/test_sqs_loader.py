"""The SQS loader's judgement of a failing service: retried while transient, a configuration error
when terminal (see loader.warehouse.sqs_loader's docstring)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from loader.config.settings import AwsSettings, Settings, SnowflakeSettings
from loader.config.spec import load_specs
from loader.errors import ConfigError, StorageError, WarehouseError
from loader.warehouse import sqs_loader
from loader.warehouse.sqs_loader import SqsLoader

pytestmark = pytest.mark.unit

PIPELINES = Path(__file__).parents[2] / "pipelines"


@pytest.fixture
def loader() -> SqsLoader:
    """A loader of the example specs whose services are never reached (no call leaves the test)."""
    settings = Settings(
        aws=AwsSettings(region="us-east-1", endpoint_url="http://127.0.0.1:9"),
        snowflake=SnowflakeSettings(account="acct", user="u", password="p"),
    )
    return SqsLoader(settings, load_specs(PIPELINES), queue_url="http://127.0.0.1:9/123456789012/q")


def test_a_transient_failure_is_retried_until_the_service_answers(
    loader: SqsLoader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a call fails transiently the service is reported down and the call retried (backoff);
    once it answers, the result is returned and the service is up."""
    monkeypatch.setattr(sqs_loader, "RETRY_FIRST_S", 0.01)
    outcomes: list[Exception | int] = [
        StorageError("receive from the notifications queue failed: connection reset", transient=True),
        StorageError("receive from the notifications queue failed: Throttling", transient=True),
        7,
    ]
    seen_down: list[dict[str, str]] = []

    def call() -> int:
        seen_down.append(loader.readiness.report().down)
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert loader._retrying("sqs", call) == 7
    assert loader.stats.retries == 2
    assert seen_down[2]["sqs"] == "receive from the notifications queue failed: Throttling"
    assert "sqs" not in loader.readiness.report().down


@pytest.mark.parametrize(
    ("service", "error", "hint"),
    [
        (
            "snowflake",
            WarehouseError(
                "cannot connect to Snowflake: Incorrect username or password", transient=False, errno=390100
            ),
            "LOADER_SNOWFLAKE__USER",
        ),
        (
            "sqs",
            StorageError("receive failed: AWS.SimpleQueueService.NonExistentQueue", transient=False),
            "--queue-url",
        ),
        ("s3", StorageError("bucket 'b' of e does not exist", transient=False), "s3.bucket"),
    ],
)
def test_a_terminal_failure_is_a_configuration_error_naming_what_to_fix(
    loader: SqsLoader, service: str, error: Exception, hint: str
) -> None:
    """A refusal no retry fixes (a login refused, no such queue or bucket) ends the loader with a
    ConfigError (exit 2) that quotes the error and names what to check; /readyz says why."""

    def call() -> None:
        raise error

    with pytest.raises(ConfigError) as caught:
        loader._retrying(service, call)  # type: ignore[arg-type]
    assert str(caught.value).startswith(str(error))
    assert hint in str(caught.value)
    assert loader.readiness.report().down[service] == str(error)


def test_a_stop_ends_the_retries_at_once(loader: SqsLoader) -> None:
    """A stop set while a service is down ends the wait (the batch comes back later), not after it."""
    stop = threading.Event()
    loader._stop = stop
    calls = 0

    def call() -> None:
        nonlocal calls
        calls += 1
        stop.set()
        raise WarehouseError("cannot connect to Snowflake: connection refused", transient=True)

    started = time.monotonic()
    with pytest.raises(sqs_loader._Stopped):
        loader._retrying("snowflake", call)
    assert calls == 1
    assert time.monotonic() - started < 1


def test_a_session_kept_open_does_not_make_snowflake_ready(
    loader: SqsLoader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With answers=False a call that returns at once (an open session, which may be cut) leaves
    Snowflake down; one that succeeds after failures (a new login) marks it up."""
    monkeypatch.setattr(sqs_loader, "RETRY_FIRST_S", 0.01)
    loader.readiness.failed("snowflake", "statement failed: connection reset")
    loader._retrying("snowflake", lambda: None, answers=False)
    assert "snowflake" in loader.readiness.report().down
    attempts = iter([WarehouseError("cannot connect to Snowflake: reset", transient=True), None])

    def login() -> None:
        if error := next(attempts):
            raise error

    loader._retrying("snowflake", login, answers=False)
    assert "snowflake" not in loader.readiness.report().down
