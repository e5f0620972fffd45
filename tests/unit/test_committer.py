"""Committer: the roll protocol's commits against a scripted group coordinator."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import aiokafka.errors as kafka_errors
import pytest
from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata

from loader import retry
from loader.checkpoint import Committed, Committer, decode_marker
from loader.checkpoint.committer import Generation
from loader.checkpoint.marker import Position
from loader.config.spec import load_specs
from loader.errors import FencedError, KafkaError
from loader.store.layout import FileRange
from loader.worker.partition import pending_for
from tests.unit.fakes import FakeAdmin, FakeConsumer, FakeMetrics, ScriptedCoordinator, SentCommit

pytestmark = pytest.mark.unit

_T = TypeVar("_T")

SPEC = {s.name: s for s in load_specs(Path(__file__).parents[2] / "pipelines")}["order_created"]
GROUP = "loader.order_created"
TP = TopicPartition("orders", 3)
PENDING = pending_for(SPEC, FileRange("orders", 3, 1000, 1999, 490_000), 500)
PINNED = Generation(7, "m-1")


def _run(coro: Coroutine[Any, Any, _T]) -> _T:
    return asyncio.run(coro)


def _committer(
    coordinator: ScriptedCoordinator, admin: FakeAdmin | None = None
) -> tuple[Committer, FakeMetrics]:
    metrics = FakeMetrics()
    committer = Committer(FakeConsumer(coordinator), admin or FakeAdmin(), GROUP, metrics=metrics)  # type: ignore[arg-type]
    return committer, metrics


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The delays Backoff asks for, without waiting them out."""
    delays: list[float] = []
    real_sleep = asyncio.sleep

    async def record(delay: float) -> None:
        delays.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(retry.asyncio, "sleep", record)
    return delays


def test_record_pending_commits_the_first_offset_with_the_marker() -> None:
    """A roll is recorded at its first offset, its marker as metadata, under the group and generation."""
    coordinator = ScriptedCoordinator()
    committer, metrics = _committer(coordinator)
    _run(committer.record_pending(TP, PENDING, PINNED))
    assert coordinator.commits == [SentCommit(GROUP, 7, "m-1", "orders", 3, 1000, PENDING.encode())]
    assert decode_marker(coordinator.commits[0].metadata) == PENDING
    assert coordinator.calls == ["ensure_coordinator_known", "send"]
    assert metrics.errors == []


def test_record_done_commits_past_the_last_offset_with_the_loaders_position_marker() -> None:
    """A file in S3 moves the position to last + 1 and replaces the roll's marker with a position
    marker, which tells the loader's own offset from one someone else set."""
    coordinator = ScriptedCoordinator()
    committer, _ = _committer(coordinator)
    _run(committer.record_done(TP, 1999, PINNED))
    assert coordinator.commits == [SentCommit(GROUP, 7, "m-1", "orders", 3, 2000, '{"v":1,"next":2000}')]
    assert decode_marker(coordinator.commits[0].metadata) == Position(2000)


def test_commits_carry_the_generation_pinned_at_assignment_not_the_current_one() -> None:
    """After aiokafka resets the member (generation -1), commits still go out under the pinned one."""
    coordinator = ScriptedCoordinator(generation=7, member_id="m-1")
    committer, _ = _committer(coordinator)
    pinned = committer.current_generation()
    assert pinned == Generation(7, "m-1")
    coordinator.generation, coordinator.member_id = -1, ""
    _run(committer.record_pending(TP, PENDING, pinned))
    coordinator.generation, coordinator.member_id = 8, "m-2"
    _run(committer.record_done(TP, PENDING.last, pinned))
    assert [(c.generation_id, c.member_id) for c in coordinator.commits] == [(7, "m-1"), (7, "m-1")]


@pytest.mark.parametrize("generation", [Generation(-1, "m-1"), Generation(7, "")])
def test_no_generation_to_commit_under_is_fenced_without_sending(generation: Generation) -> None:
    """Without a generation (or member id) nothing is sent: the roll is fenced."""
    coordinator = ScriptedCoordinator()
    committer, _ = _committer(coordinator)
    with pytest.raises(FencedError, match="no group generation"):
        _run(committer.record_pending(TP, PENDING, generation))
    assert coordinator.commits == []


@pytest.mark.parametrize(
    "refusal",
    [
        kafka_errors.IllegalGenerationError,
        kafka_errors.UnknownMemberIdError,
        kafka_errors.RebalanceInProgressError,
    ],
)
def test_a_commit_the_group_refuses_is_fenced_and_asks_to_rejoin(
    refusal: type[kafka_errors.BrokerResponseError],
) -> None:
    """A stale-generation refusal raises FencedError after one try, requests a rejoin and is counted."""
    coordinator = ScriptedCoordinator([refusal.errno])
    committer, metrics = _committer(coordinator)
    with pytest.raises(FencedError, match=refusal.__name__):
        _run(committer.record_pending(TP, PENDING, PINNED))
    assert coordinator.calls == ["ensure_coordinator_known", "send", "request_rejoin"]
    assert len(coordinator.commits) == 1
    assert metrics.errors == [("kafka", refusal.__name__)]


@pytest.mark.parametrize(
    "failure",
    [
        kafka_errors.GroupCoordinatorNotAvailableError.errno,
        kafka_errors.RequestTimedOutError.errno,
        kafka_errors.GroupLoadInProgressError.errno,
        kafka_errors.KafkaConnectionError("connection reset"),
    ],
    ids=["coordinator-unavailable", "timed-out", "group-loading", "connection-error"],
)
def test_retryable_failures_are_retried_with_backoff_until_the_commit_lands(
    failure: int | BaseException, slept: list[float]
) -> None:
    """Two transient failures, then success: the same commit is sent three times, 0.1 s then 0.2 s apart."""
    coordinator = ScriptedCoordinator([failure, failure])
    committer, metrics = _committer(coordinator)
    _run(committer.record_done(TP, 1999, PINNED))
    assert coordinator.script == []
    assert [c.offset for c in coordinator.commits] == [2000, 2000, 2000]
    assert coordinator.calls.count("ensure_coordinator_known") == 3
    assert slept == [0.1, 0.2]
    assert len(metrics.errors) == 2


def test_a_moved_coordinator_is_marked_dead_before_the_retry(slept: list[float]) -> None:
    """NotCoordinatorForGroup makes the client look the coordinator up again, then the commit is resent."""
    coordinator = ScriptedCoordinator([kafka_errors.NotCoordinatorForGroupError.errno])
    committer, _ = _committer(coordinator)
    _run(committer.record_pending(TP, PENDING, PINNED))
    assert coordinator.calls == [
        "ensure_coordinator_known",
        "send",
        "coordinator_dead",
        "ensure_coordinator_known",
        "send",
    ]
    assert slept == [0.1]


@pytest.mark.parametrize(
    "failure",
    [kafka_errors.OffsetMetadataTooLargeError.errno, kafka_errors.GroupAuthorizationFailedError()],
    ids=["metadata-too-large", "not-authorized-raised"],
)
def test_a_terminal_failure_is_a_terminal_kafka_error_after_one_try(
    failure: int | BaseException, slept: list[float]
) -> None:
    """A non-retriable error code or exception is not retried and not mistaken for a fence."""
    coordinator = ScriptedCoordinator([failure])
    committer, metrics = _committer(coordinator)
    with pytest.raises(KafkaError, match="commit failed") as raised:
        _run(committer.record_pending(TP, PENDING, PINNED))
    assert not isinstance(raised.value, FencedError)
    assert raised.value.transient is False
    assert len(coordinator.commits) == 1
    assert "request_rejoin" not in coordinator.calls
    assert slept == []
    assert len(metrics.errors) == 1


def test_fetch_reads_offsets_and_pending_rolls() -> None:
    """Offsets come back with their pending roll; empty or foreign metadata means nothing pending,
    and only the loader's position marker at that very offset makes it the loader's own."""
    tps = [TopicPartition("orders", p) for p in range(7)]
    admin = FakeAdmin(
        {
            tps[0]: OffsetAndMetadata(1000, PENDING.encode()),
            tps[1]: OffsetAndMetadata(500, ""),
            tps[2]: OffsetAndMetadata(42, "committed by kafka-consumer-groups --reset-offsets"),
            tps[4]: OffsetAndMetadata(-1, ""),
            tps[5]: OffsetAndMetadata(2000, Position(2000).encode()),
            tps[6]: OffsetAndMetadata(10, Position(2000).encode()),  # moved, metadata kept
        }
    )
    committer, metrics = _committer(ScriptedCoordinator(), admin)
    found = _run(committer.fetch(tps))
    assert admin.asked == [(GROUP, tps)]
    assert {tp.partition: (c.offset, c.pending, c.by_loader) for tp, c in found.items()} == {
        0: (1000, PENDING, False),
        1: (500, None, False),
        2: (42, None, False),
        3: (None, None, False),
        4: (None, None, False),
        5: (2000, None, True),
        6: (10, None, False),
    }
    assert all(isinstance(c, Committed) for c in found.values())
    assert metrics.errors == []


def test_a_failed_fetch_is_a_transient_kafka_error_and_counted() -> None:
    """An admin-client failure while reading offsets surfaces as a transient KafkaError."""
    admin = FakeAdmin(error=kafka_errors.KafkaConnectionError("no broker"))
    committer, metrics = _committer(ScriptedCoordinator(), admin)
    with pytest.raises(KafkaError, match="cannot read committed offsets") as raised:
        _run(committer.fetch([TP]))
    assert raised.value.transient is True
    assert metrics.errors == [("kafka", "KafkaConnectionError")]
