"""Session fixtures: the real local services, and small helpers for tests that use them.

The stack (Kafka, moto, fakesnow, the schema registry) starts once per session,
and only when a test asks for ``dev_stack``; unit tests may not. The session's
state dir is a temporary folder, so tests never pick up a developer's ``loader
dev up`` endpoints from ``.loader/dev-stack.json``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
import structlog

from loader import metrics
from loader.config.settings import STATE_DIR_ENV, load_settings
from loader.devstack import DevStack

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_SESSION_STATE_DIR: str | None = None


def pytest_configure(config: pytest.Config) -> None:
    """Point LOADER_STATE_DIR at a fresh folder before any test (or import) reads settings."""
    global _SESSION_STATE_DIR  # noqa: PLW0603 - one value per session, set before collection
    _SESSION_STATE_DIR = tempfile.mkdtemp(prefix="loader-test-state-")
    os.environ[STATE_DIR_ENV] = _SESSION_STATE_DIR


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the session's state folder."""
    if _SESSION_STATE_DIR:
        shutil.rmtree(_SESSION_STATE_DIR, ignore_errors=True)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Unit tests must stay hermetic: refuse the real services to them."""
    if item.get_closest_marker("unit") and "dev_stack" in getattr(item, "fixturenames", ()):
        pytest.fail("unit tests must not use the dev_stack fixture; mark the test integration")


@pytest.fixture(autouse=True)
def _fresh_error_kinds(monkeypatch: pytest.MonkeyPatch) -> None:
    """The error kinds seen per component are capped process-wide (then counted as ``other``):
    each test starts from none, so what earlier tests counted cannot change its labels."""
    monkeypatch.setattr(metrics, "_kinds", {})


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """A CLI invocation configures logging onto the test's captured stream: undo it after
    the test, so later tests do not log into a closed file."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.configure(**saved)
    root.handlers = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def dev_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    """The real local services not configured in env/LOADER_CONFIG, started once for the session.

    ``dev_stack.settings`` is a Settings pointing at them (the registry's Confluent API:
    ``dev_stack.settings.schema_registry.url``); ``dev_stack.endpoints`` maps each started
    service to its endpoint. Everything is stopped at the end.
    """
    settings = load_settings(use_dev_stack=False)
    # Twice in CI an in-process worker was assigned its partition and then read nothing for
    # 90 s, with no warning from aiokafka (not reproduced since): keep the fetcher's decisions
    # (no leader, reset, in flight) for the report of a test that fails that way.
    logging.getLogger("aiokafka.consumer.fetcher").setLevel(logging.DEBUG)
    with DevStack.start(settings, work_dir=tmp_path_factory.mktemp("devstack")) as stack:
        yield stack


@pytest.fixture
def unique_name() -> Callable[..., str]:
    """Make names no other test uses: ``unique_name("orders")`` -> ``orders-1f2e3d4c``.

    Lowercase letters, digits and ``sep`` only, so the name is valid for a Kafka
    topic, an S3 bucket (pass a prefix of 3+ characters) and, with ``sep="_"``,
    an unquoted Snowflake identifier.
    """

    def make(prefix: str = "test", sep: str = "-") -> str:
        clean = re.sub(r"[^a-z0-9]+", sep, prefix.lower()).strip(sep) or "test"
        return f"{clean}{sep}{uuid.uuid4().hex[:8]}"

    return make


@pytest.fixture
def s3_client(dev_stack: DevStack) -> Iterator[S3Client]:
    """A boto3 S3 client for the session's S3 (moto unless configured otherwise), closed afterwards."""
    import boto3  # noqa: PLC0415 - only integration tests need it

    aws = dev_stack.settings.aws
    kwargs: dict[str, Any] = {"region_name": aws.region}
    if aws.endpoint_url:
        kwargs["endpoint_url"] = aws.endpoint_url
    if aws.access_key_id and aws.secret_access_key:
        kwargs["aws_access_key_id"] = aws.access_key_id.get_secret_value()
        kwargs["aws_secret_access_key"] = aws.secret_access_key.get_secret_value()
    client = boto3.client("s3", **kwargs)
    try:
        yield client
    finally:
        client.close()
