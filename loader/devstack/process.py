"""Process plumbing shared by the local services: ports, spawning, readiness, stopping.

Every service runs as its own session leader (so its process group is its pid
and a signal to the group reaches every process it forked), with stdin from
/dev/null and stdout/stderr in a log file. Processes are spawned with
``os.posix_spawn`` rather than :class:`subprocess.Popen`: a detached stack
(``loader dev up``) must outlive the Popen object, which would otherwise warn
that its child "is still running" when it is garbage-collected.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from loader.errors import DevStackError

__all__ = [
    "LOOPBACK",
    "Service",
    "cmdline",
    "free_port",
    "is_running",
    "launch",
    "log_tail",
    "port_open",
    "spawn",
    "stop",
    "wait_until_ready",
]

LOOPBACK = "127.0.0.1"
"""The only address local services bind to."""

_POLL_S = 0.1
log = structlog.get_logger()


@dataclass(frozen=True)
class Service:
    """A service process started by the dev stack, as recorded in its state file."""

    name: str
    pid: int
    pgid: int
    port: int
    log: Path
    version: str | None = None
    """What it runs, when it says (e.g. ``Apache Kafka 4.4.0``); not recorded in the state file."""

    def to_json(self) -> dict[str, Any]:
        """The state-file record: name, pid, pgid, port and log."""
        return {
            "name": self.name,
            "pid": self.pid,
            "pgid": self.pgid,
            "port": self.port,
            "log": str(self.log),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Service:
        """Read a state-file record back."""
        try:
            return cls(
                name=str(data["name"]),
                pid=int(data["pid"]),
                pgid=int(data["pgid"]),
                port=int(data["port"]),
                log=Path(data["log"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DevStackError(f"unreadable service record in the dev stack state: {data!r}") from exc


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now, below the kernel's ephemeral
    range when there is room: a service that binds it seconds later (a JVM starting) must not
    find it taken by some client's outgoing connection meanwhile, which the ephemeral range
    is for (a schema registry failed to start so in CI)."""
    low = _ephemeral_low()
    for _ in range(50):
        # Not a secret: any port in the range will do.
        port = random.randrange(_FIRST_PICKED_PORT, low) if low > _FIRST_PICKED_PORT + 1000 else 0  # noqa: S311
        with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                continue
            picked: int = sock.getsockname()[1]
            return picked
    raise DevStackError("no free TCP port on 127.0.0.1 after 50 tries")


_FIRST_PICKED_PORT = 20_000


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux; 32768 if it cannot be read)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def port_open(port: int, host: str = LOOPBACK, timeout_s: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port (a cheap first readiness check)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def spawn(argv: Sequence[str], *, log_path: Path, env: Mapping[str, str] | None = None) -> int:
    """Start ``argv`` (argv[0] an absolute path) in a new session, output to ``log_path``; return its pid.

    The log is truncated so that its tail is about this run. The pid is also
    the process group id, because the child is a session leader.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    merged_env = dict(os.environ if env is None else env)
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log_path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    try:
        return os.posix_spawn(argv[0], list(argv), merged_env, file_actions=actions, setsid=True)
    except OSError as exc:
        raise DevStackError(f"cannot start {argv[0]}: {exc}") from exc


def _reaped(pid: int) -> bool:
    """Reap ``pid`` if it is our exited child; True when it has exited."""
    try:
        done, _status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False  # not our child (a detached stack started by another process)
    return done == pid


def is_running(pid: int) -> bool:
    """Whether ``pid`` is a live process (exited children are reaped, zombies count as gone)."""
    if _reaped(pid):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError, IndexError):
        # The state is the field after the parenthesised command name.
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def cmdline(pid: int) -> str | None:
    """The command line of ``pid`` (space-joined), or None when it cannot be read."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        raw = b""
    if raw:
        return raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
    if not Path("/proc").is_dir():  # macOS and friends: ask ps
        import subprocess  # noqa: PLC0415 - only where /proc is missing

        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(  # noqa: S603 - fixed argv, no shell
                ["ps", "-o", "command=", "-p", str(pid)],  # noqa: S607 - ps is in every PATH
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            ).stdout.strip()
            return out or None
    return None


def log_tail(log_path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file, for error messages."""
    try:
        with log_path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def wait_until_ready(
    name: str,
    probe: Callable[[], bool],
    *,
    pid: int,
    log_path: Path,
    timeout_s: float,
    cancel: threading.Event | None = None,
) -> float:
    """Call ``probe`` until it returns True; return the seconds it took.

    Raises DevStackError, with the tail of the service's log, when the process
    exits, the deadline passes, or ``cancel`` is set. A probe that raises counts
    as "not yet" and its last error is reported on timeout.
    """
    started = time.monotonic()
    deadline = started + timeout_s
    last_error: BaseException | None = None
    while True:
        if cancel is not None and cancel.is_set():
            raise DevStackError(f"{name}: start-up cancelled")
        if not is_running(pid):
            raise DevStackError(
                f"{name} exited during start-up; last lines of {log_path}:\n{log_tail(log_path)}"
            )
        try:
            if probe():
                return time.monotonic() - started
        except Exception as exc:  # any probe failure means "not ready yet"
            last_error = exc
        if time.monotonic() >= deadline:
            why = f" (last probe error: {last_error!r})" if last_error else ""
            raise DevStackError(
                f"{name} did not become ready within {timeout_s:.0f}s{why}; "
                f"last lines of {log_path}:\n{log_tail(log_path)}"
            )
        time.sleep(_POLL_S)


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while is_running(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)
    return True


def stop(service: Service, *, sig: signal.Signals = signal.SIGTERM, grace_s: float = 15.0) -> None:
    """Ask the service's process group to stop with ``sig``; SIGKILL it after ``grace_s`` seconds."""
    if not is_running(service.pid):
        return
    try:
        os.killpg(service.pgid, sig)
    except ProcessLookupError:
        return
    if _wait_gone(service.pid, grace_s):
        log.info("devstack.service_stopped", service=service.name, pid=service.pid, signal=sig.name)
        return
    log.warning("devstack.service_killed", service=service.name, pid=service.pid, grace_s=grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(service.pgid, signal.SIGKILL)
    if not _wait_gone(service.pid, 5.0):
        raise DevStackError(f"{service.name} (pid {service.pid}) survived SIGKILL")


def launch(
    name: str,
    what: str,
    argv: Sequence[str],
    *,
    port: int,
    log_path: Path,
    probe: Callable[[], bool],
    stop_signal: signal.Signals,
    timeout_s: float,
    cancel: threading.Event | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[Service, float]:
    """Spawn ``argv`` as the service ``name`` and wait until ``probe`` answers; return it and
    the seconds it took. A service that does not come up (``what`` names it in the error) is
    stopped before the error is raised, so nothing is left behind."""
    pid = spawn(argv, log_path=log_path, env=env)
    service = Service(name=name, pid=pid, pgid=pid, port=port, log=log_path)
    try:
        seconds = wait_until_ready(
            what, probe, pid=pid, log_path=log_path, timeout_s=timeout_s, cancel=cancel
        )
    except BaseException:
        stop(service, sig=stop_signal, grace_s=5.0)
        raise
    return service, seconds
