"""The SQS loader on a thread, as integration and chaos tests run it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from loader.warehouse.sqs_loader import SqsLoader
from tests.waiting import eventually

__all__ = ["RunningLoader", "run_loader_until", "running"]

T = TypeVar("T")


class RunningLoader:
    """A loader whose :meth:`SqsLoader.run` is on a thread; see :func:`running`."""

    def __init__(self, loader: SqsLoader) -> None:
        self.loader = loader
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="test-sqs-loader", daemon=True)

    def _run(self) -> None:
        try:
            self.loader.run(self.stop)
        except BaseException as exc:  # reported by until() on the test's thread
            self.error = exc

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    def until(self, condition: Callable[[SqsLoader], T], timeout_s: float, *, what: str) -> T:
        """Wait until ``condition(loader)`` is truthy while the loader keeps running; a timeout
        reports the loader's stats, and a loader that stopped fails at once."""

        def check() -> T:
            assert self.alive, (
                f"the loader stopped while waiting for {what}: {self.error!r}; {self.loader.stats}"
            )
            return condition(self.loader)

        return eventually(check, timeout_s, what=what, detail=lambda: self.loader.stats)


@contextmanager
def running(loader: SqsLoader, *, join_timeout_s: float = 60) -> Iterator[RunningLoader]:
    """Run ``loader`` on a thread for the block; then stop it, join it and close it."""
    handle = RunningLoader(loader)
    handle.thread.start()
    try:
        yield handle
    finally:
        handle.stop.set()
        handle.thread.join(timeout=join_timeout_s)
        loader.close()
    if handle.error is not None:
        raise AssertionError(f"the loader failed: {handle.error!r}") from handle.error


def run_loader_until(
    loader: SqsLoader,
    condition: Callable[[SqsLoader], object],
    timeout_s: float,
    *,
    what: str,
    join_timeout_s: float = 60,
) -> SqsLoader:
    """Run ``loader`` on a thread until ``condition(loader)`` holds, stop and close it, return it.

    The loader must still be running when the condition holds; a timeout names ``what``
    and shows the loader's stats."""
    with running(loader, join_timeout_s=join_timeout_s) as handle:
        handle.until(condition, timeout_s, what=what)
    return loader
