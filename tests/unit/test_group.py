"""The private aiokafka API that loader.checkpoint.group relies on is still there, as it was.

These tests read the installed aiokafka, not a fake: after an upgrade they fail naming the
attribute or method that changed, before a commit under a pinned generation fails in
production. Fix loader/checkpoint/group.py for the new version, then widen aiokafka's pin
in pyproject.toml.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import aiokafka
import aiokafka.errors
import pytest
from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.protocol.commit import OffsetCommitRequest

pytestmark = pytest.mark.unit

_CHANGED = f"aiokafka {aiokafka.__version__} changed"


def _call_shape(function: Callable[..., Any], *args: object) -> str | None:
    """Why ``function`` cannot be called with ``args`` (after self), or None if it can."""
    try:
        inspect.signature(function).bind(None, *args)
    except TypeError as exc:
        return f"{function.__qualname__}{inspect.signature(function)}: {exc}"
    return None


@pytest.mark.parametrize(
    ("name", "args", "coroutine"),
    [
        ("ensure_coordinator_known", (), True),
        ("_send_req", ("request",), True),
        ("request_rejoin", (), False),
        ("coordinator_dead", (), False),
    ],
)
def test_group_coordinator_methods_are_there_with_the_same_shape(
    name: str, args: tuple[object, ...], coroutine: bool
) -> None:
    """GroupCoordinator still has each method the adapter calls, taking the same arguments."""
    method = getattr(GroupCoordinator, name, None)
    assert method is not None, f"{_CHANGED}: GroupCoordinator.{name} is gone"
    assert inspect.iscoroutinefunction(method) is coroutine, (
        f"{_CHANGED}: GroupCoordinator.{name} is {'no longer' if coroutine else 'now'} a coroutine"
    )
    problem = _call_shape(method, *args)
    assert problem is None, f"{_CHANGED}: {problem}"


@pytest.mark.parametrize("attribute", ["generation", "member_id"])
def test_group_coordinator_keeps_generation_and_member_id(attribute: str) -> None:
    """GroupCoordinator still sets the attributes the generation is read from."""
    source = inspect.getsource(GroupCoordinator.__init__)
    assert f"self.{attribute} =" in source, (
        f"{_CHANGED}: GroupCoordinator.__init__ no longer sets self.{attribute}"
    )


def test_consumer_keeps_its_coordinator_in_the_private_attribute() -> None:
    """AIOKafkaConsumer.start still makes a GroupCoordinator and keeps it as ``_coordinator``."""
    source = inspect.getsource(aiokafka.AIOKafkaConsumer.start)
    assert "self._coordinator = GroupCoordinator(" in source, (
        f"{_CHANGED}: AIOKafkaConsumer.start no longer sets self._coordinator to a GroupCoordinator"
    )


def test_offset_commit_request_and_its_answer_keep_their_shape() -> None:
    """The request is built from (group, generation, member, retention, topics); codes map to classes."""
    problem = _call_shape(OffsetCommitRequest.__init__, "group", 7, "m-1", -1, [("t", [(0, 1, "")])])
    assert problem is None, f"{_CHANGED}: {problem}"
    assert hasattr(OffsetCommitRequest, "DEFAULT_RETENTION_TIME"), (
        f"{_CHANGED}: OffsetCommitRequest.DEFAULT_RETENTION_TIME is gone"
    )
    assert aiokafka.errors.for_code(0) is aiokafka.errors.NoError, f"{_CHANGED}: for_code(0) is not NoError"
