"""Who used the CPU during a measured stage: the reader, Kafka, moto, and everything else.

Throughput on a small machine depends on what else runs on it (the broker and
moto share the cores, and so may other people's tests). Each stage's line
says how many cores each party used over the stage's window, from
``/proc/<pid>/stat`` and ``/proc/stat``, so that a slow figure can be told
apart from a busy machine.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CpuMeter", "CpuUsage"]

_TICKS = os.sysconf("SC_CLK_TCK")


def _process_ticks(pid: int) -> int | None:
    """utime + stime of ``pid`` (all its threads), None once it is gone."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return int(fields[11]) + int(fields[12])
    return None


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) ticks of all cores since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values) - idle, sum(values)


@dataclass(frozen=True)
class CpuUsage:
    """Cores used on average over a window, by party."""

    seconds: float
    cores: dict[str, float]
    other: float
    """Cores used by every process not named (other people's work, the kernel)."""
    available: int

    def describe(self) -> str:
        named = ", ".join(f"{name} {used:.2f}" for name, used in self.cores.items())
        return f"cores used: {named}, everything else {self.other:.2f} (of {self.available})"


class CpuMeter:
    """Measures the named processes and the whole machine between :meth:`start` and :meth:`stop`.

    A process that exits before :meth:`stop` counts with its ticks at the last :meth:`sample`
    (call it while waiting), since a finished process has no ``/proc`` entry to read."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = dict(pids)
        self._began = 0.0
        self._ticks: dict[str, int] = {}
        self._last: dict[str, int] = {}
        self._machine = (0, 0)

    def start(self) -> None:
        self._began = time.monotonic()
        self._ticks = {name: _process_ticks(pid) or 0 for name, pid in self.pids.items()}
        self._last = dict(self._ticks)
        self._machine = _machine_ticks()

    def sample(self) -> None:
        """Remember each live process's ticks (what :meth:`stop` uses for one that exits)."""
        for name, pid in self.pids.items():
            ticks = _process_ticks(pid)
            if ticks is not None:
                self._last[name] = ticks

    def stop(self) -> CpuUsage:
        seconds = max(time.monotonic() - self._began, 1e-9)
        self.sample()
        used = {name: (self._last[name] - self._ticks[name]) / _TICKS for name in self.pids}
        busy = (_machine_ticks()[0] - self._machine[0]) / _TICKS
        cores = {name: max(0.0, value) / seconds for name, value in used.items()}
        other = max(0.0, busy - sum(used.values())) / seconds
        return CpuUsage(seconds, cores, other, os.cpu_count() or 1)
