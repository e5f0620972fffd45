"""The event loop the stream worker runs on: uvloop.

A worker's loop reads every fetched byte from the broker's sockets: with
asyncio's own loop, its Python-level transport (reading, pausing and resuming
the socket around each buffer, waking up for thread results) took about a
sixth of a worker's busy time in the benchmark's profile. uvloop does the same
in libuv, in C. The gateway already runs on it (uvicorn's ``loop="uvloop"``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

__all__ = ["run"]

_T = TypeVar("_T")


def run(main: Coroutine[Any, Any, _T]) -> _T:
    """``asyncio.run(main)`` on a uvloop event loop."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
