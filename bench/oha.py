"""``oha``, the compiled HTTP load generator the gateway benchmark drives (crates.io, Rust).

An independent client: it is not Python, so the gateway's figures are not limited by a
Python client sharing its interpreter. It is built once from crates.io with cargo into
``~/.cache/event-loader/oha`` (like helm under ``~/.cache/event-loader/bin``) and reused.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.cpu import CpuMeter, CpuUsage

__all__ = ["OHA_ROOT", "OhaRun", "ensure_oha", "run_oha"]

OHA_ROOT = Path.home() / ".cache" / "event-loader" / "oha"
OHA_VERSION = "1.16.0"
"""The release the benchmark was written against (its JSON output's field names)."""


def ensure_oha() -> Path:
    """The oha binary: the cached build, or a new ``cargo install --locked`` into the cache (a few
    minutes on two cores); RuntimeError without cargo."""
    binary = OHA_ROOT / "bin" / "oha"
    if binary.exists():
        return binary
    cargo = shutil.which("cargo") or str(Path.home() / ".cargo" / "bin" / "cargo")
    if not Path(cargo).exists():
        raise RuntimeError(
            "oha is not built and cargo is not installed: install Rust (https://rustup.rs), or build it "
            f"yourself: cargo install oha --version {OHA_VERSION} --locked --root {OHA_ROOT}"
        )
    print(f"[bench] building oha {OHA_VERSION} from crates.io into {OHA_ROOT} (once)", file=sys.stderr)
    command = [cargo, "install", "oha", "--version", OHA_VERSION, "--locked", "--root", str(OHA_ROOT)]
    subprocess.run(command, check=True, stdout=sys.stderr)
    return binary


@dataclass(frozen=True)
class OhaRun:
    """One oha run: what it sent, what came back, and how fast."""

    concurrency: int
    rate: float | None
    """Requests per second oha was limited to (None: as fast as it could)."""
    seconds: float
    statuses: dict[int, int]
    """Responses by HTTP status."""
    errors: dict[str, int]
    """Requests without a response (connection errors, timeouts), by oha's message."""
    p50_s: float
    p99_s: float
    cpu: CpuUsage | None
    """Cores used during the run by the metered processes and oha itself."""

    @property
    def ok(self) -> int:
        """Requests answered 2xx."""
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    @property
    def not_ok(self) -> int:
        """Requests answered with another status, or not answered."""
        return sum(n for status, n in self.statuses.items() if not 200 <= status < 300) + sum(
            self.errors.values()
        )

    def events_per_s(self, batch: int) -> float:
        """Events of the 2xx requests per second."""
        return self.ok * batch / self.seconds if self.seconds > 0 else 0.0


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _seconds(value: Any) -> float:
    return float(value) if value is not None else float("nan")


def run_oha(
    oha: Path,
    url: str,
    body: Path,
    *,
    concurrency: int,
    duration_s: float,
    rate: float | None = None,
    content_type: str = "application/json",
    meter: CpuMeter | None = None,
) -> OhaRun:
    """POST ``body`` to ``url`` for ``duration_s`` with ``concurrency`` connections (at ``rate``
    requests/s if given). Requests still open at the deadline are waited for, so every request
    oha made is counted with its answer. ``meter``'s processes and oha are measured meanwhile."""
    command = [
        str(oha),
        "--no-tui",
        "--output-format",
        "json",
        "-z",
        f"{duration_s}s",
        "-c",
        str(concurrency),
        "-m",
        "POST",
        "-H",
        f"Content-Type: {content_type}",
        "-D",
        str(body),
        "--wait-ongoing-requests-after-deadline",
        *(["-q", f"{rate:.1f}"] if rate is not None else []),
        url,
    ]
    children = _children_cpu_s()
    if meter is not None:
        meter.start()
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=duration_s + 120)
    cpu = meter.stop() if meter is not None else None
    if cpu is not None:
        # oha is gone by now (no /proc entry): its time is what this process's reaped children used.
        oha_cores = (_children_cpu_s() - children) / cpu.seconds
        cpu = CpuUsage(
            cpu.seconds, {**cpu.cores, "oha": oha_cores}, max(0.0, cpu.other - oha_cores), cpu.available
        )
    if done.returncode != 0:
        raise RuntimeError(f"oha failed ({done.returncode}): {done.stderr.strip()[:500]}")
    report = json.loads(done.stdout)
    percentiles = report.get("latencyPercentiles") or {}
    return OhaRun(
        concurrency=concurrency,
        rate=rate,
        seconds=float(report["summary"]["total"]),
        statuses={int(code): int(n) for code, n in (report.get("statusCodeDistribution") or {}).items()},
        errors={str(e): int(n) for e, n in (report.get("errorDistribution") or {}).items()},
        p50_s=_seconds(percentiles.get("p50")),
        p99_s=_seconds(percentiles.get("p99")),
        cpu=cpu,
    )
