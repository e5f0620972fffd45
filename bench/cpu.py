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


@dataclass(frozen=True)
class _Reading:
    at: float
    """``time.time()`` of the reading (wall clock: log lines are stamped with it)."""
    ticks: dict[str, int]
    machine_busy: int


class CpuMeter:
    """Measures the named processes and the whole machine between :meth:`start` and :meth:`stop`.

    A process that exits before :meth:`stop` counts with its ticks at the last :meth:`sample`
    (call it while waiting), since a finished process has no ``/proc`` entry to read."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = dict(pids)
        self._readings: list[_Reading] = []

    def start(self) -> None:
        self._readings = []
        self.sample()

    def sample(self) -> None:
        """Read each live process's ticks (a process that exited keeps its last reading)."""
        last = self._readings[-1].ticks if self._readings else {}
        ticks = {name: _process_ticks(pid) for name, pid in self.pids.items()}
        now = {name: t if t is not None else last.get(name, 0) for name, t in ticks.items()}
        self._readings.append(_Reading(time.time(), now, _machine_ticks()[0]))

    def stop(self, *, work_ended: float | None = None) -> CpuUsage:
        """Usage from :meth:`start` to now or, given ``work_ended`` (a ``time.time()``, such as
        the last log line of the measured work), to that moment: the readings on either side
        of it interpolated, so the wait to notice the end is not counted as idle cores."""
        self.sample()
        first, end = self._readings[0], self._readings[-1]
        if work_ended is not None and first.at < work_ended < end.at:
            index = next(i for i, r in enumerate(self._readings) if r.at >= work_ended)
            before, after = self._readings[index - 1], self._readings[index]
            share = (work_ended - before.at) / max(after.at - before.at, 1e-9)
            end = _Reading(
                work_ended,
                {n: round(before.ticks[n] + share * (after.ticks[n] - before.ticks[n])) for n in self.pids},
                round(before.machine_busy + share * (after.machine_busy - before.machine_busy)),
            )
        seconds = max(end.at - first.at, 1e-9)
        used = {name: (end.ticks[name] - first.ticks[name]) / _TICKS for name in self.pids}
        busy = (end.machine_busy - first.machine_busy) / _TICKS
        cores = {name: max(0.0, value) / seconds for name, value in used.items()}
        other = max(0.0, busy - sum(used.values())) / seconds
        return CpuUsage(seconds, cores, other, os.cpu_count() or 1)
