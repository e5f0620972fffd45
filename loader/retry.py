"""The loader's one retry pace: capped exponential backoff.

Transient failures (``LoaderError.transient``) are retried by the caller's
loop; this class only decides how long to wait between tries, so every loop
paces itself the same way: in an event loop (:meth:`Backoff.wait`) or on a
thread that a stop event must be able to interrupt (:meth:`Backoff.pause`).
"""

from __future__ import annotations

import asyncio
import random
import threading

__all__ = ["Backoff"]


class Backoff:
    """Delays that double from ``first_s`` up to ``max_s``, optionally jittered (0.5-1.5x)."""

    def __init__(self, first_s: float = 0.5, max_s: float = 30.0, *, jitter: bool = False) -> None:
        self.next_s = first_s
        self._max_s = max_s
        self._jitter = jitter

    def take(self) -> float:
        """The current delay (jittered if asked); the next one is twice as long (up to the cap)."""
        delay = self.next_s * (0.5 + random.random()) if self._jitter else self.next_s  # noqa: S311 - jitter
        self.next_s = min(self.next_s * 2, self._max_s)
        return delay

    async def wait(self) -> None:
        """Sleep for the current delay, then double it (up to the cap)."""
        await asyncio.sleep(self.take())

    def pause(self, stop: threading.Event) -> bool:
        """Block for the current delay, or until ``stop`` is set (then True: stop retrying)."""
        return stop.wait(self.take())
