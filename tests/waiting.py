"""Waiting in tests: poll a condition until it holds, or fail saying what was awaited.

Every test that waits for something to happen goes through :func:`eventually` (or
:func:`eventually_async` inside an event loop), so a timeout reads "waited 60 s for
every row in the table; last: ..." instead of a bare ``0 == 300`` further down.
A test showing that something does *not* happen for a while uses :func:`stays`.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["eventually", "eventually_async", "stays"]

T = TypeVar("T")


def _failure(
    timeout_s: float,
    what: str,
    value: object,
    error: BaseException | None,
    detail: Callable[[], object] | None,
) -> AssertionError:
    """The timeout's message: what was awaited, the last value or error, and ``detail()``."""
    last = f"{type(error).__name__}: {error}" if error is not None else repr(value)
    message = f"waited {timeout_s:g} s for {what}; last: {last}"
    if detail is not None:
        try:
            message += f"; {detail()}"
        except Exception as exc:  # the timeout must still be reported
            message += f"; (detail failed: {exc!r})"
    failure = AssertionError(message)
    failure.__cause__ = error
    return failure


def eventually(
    condition: Callable[[], T],
    timeout_s: float,
    *,
    what: str,
    interval_s: float = 0.2,
    detail: Callable[[], object] | None = None,
    ignoring: tuple[type[Exception], ...] = (),
) -> T:
    """Call ``condition`` every ``interval_s`` until it returns something truthy, and return that.

    After ``timeout_s`` fail with an AssertionError naming ``what``, the last value (or the
    last of the ``ignoring`` exceptions, which count as "not yet"), and ``detail()``, the
    state worth seeing. Other exceptions, failed assertions included, end the wait at once.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value: T | None = None
        error: Exception | None = None
        try:
            value = condition()
        except ignoring as exc:
            error = exc
        else:
            if value:
                return value
        if time.monotonic() >= deadline:
            raise _failure(timeout_s, what, value, error, detail)
        time.sleep(interval_s)


async def eventually_async(
    condition: Callable[[], T | Awaitable[T]],
    timeout_s: float,
    *,
    what: str,
    interval_s: float = 0.2,
    detail: Callable[[], object] | None = None,
    ignoring: tuple[type[Exception], ...] = (),
) -> T:
    """:func:`eventually` for a test running in an event loop: sleeps without blocking it, and
    ``condition`` may be a coroutine function."""
    deadline = time.monotonic() + timeout_s
    while True:
        value: T | None = None
        error: Exception | None = None
        try:
            result = condition()
            value = await result if inspect.isawaitable(result) else result
        except ignoring as exc:
            error = exc
        else:
            if value:
                return value
        if time.monotonic() >= deadline:
            raise _failure(timeout_s, what, value, error, detail)
        await asyncio.sleep(interval_s)


def stays(
    condition: Callable[[], object],
    for_s: float,
    *,
    what: str,
    interval_s: float = 0.2,
    detail: Callable[[], object] | None = None,
) -> None:
    """Call ``condition`` every ``interval_s`` for ``for_s``; fail at once, naming ``what`` and
    ``detail()``, if it ever returns something falsy."""
    started = time.monotonic()
    while True:
        value = condition()
        if not value:
            message = (
                f"{what} held for only {time.monotonic() - started:.1f} s of {for_s:g} s; last: {value!r}"
            )
            raise AssertionError(message + (f"; {detail()}" if detail is not None else ""))
        if time.monotonic() - started >= for_s:
            return
        time.sleep(interval_s)
