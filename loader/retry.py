"""The loader's one retry pace: capped exponential backoff.

Transient failures (``LoaderError.transient``) are retried by the caller's
loop; this class only decides how long to wait between tries, so every loop
paces itself the same way.
"""

from __future__ import annotations

import asyncio
import random

__all__ = ["Backoff"]


class Backoff:
    """Delays that double from ``first_s`` up to ``max_s``, optionally jittered (0.5-1.5x)."""

    def __init__(self, first_s: float = 0.5, max_s: float = 30.0, *, jitter: bool = False) -> None:
        self.next_s = first_s
        self._max_s = max_s
        self._jitter = jitter

    async def wait(self) -> None:
        """Sleep for the current delay, then double it (up to the cap)."""
        delay = self.next_s * (0.5 + random.random()) if self._jitter else self.next_s  # noqa: S311 - jitter
        await asyncio.sleep(delay)
        self.next_s = min(self.next_s * 2, self._max_s)
