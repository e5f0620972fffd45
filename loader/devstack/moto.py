"""moto's standalone server: S3 and SQS over the real AWS HTTP APIs, in memory.

Owns: finding ``moto_server``, starting it on a free loopback port and waiting
until its management API answers.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import sys
import threading
from pathlib import Path

import structlog

from loader.devstack.process import LOOPBACK, Service, free_port, launch, port_open
from loader.errors import DevStackError

__all__ = ["CMDLINE_MARKER", "NAME", "STOP_SIGNAL", "answers", "endpoint", "find_moto_server", "start"]

NAME = "moto"
STOP_SIGNAL = signal.SIGTERM
CMDLINE_MARKER = "moto_server"
_HINT = "install the local extras: pip install -e '.[local]' (moto[server])"

log = structlog.get_logger()


def endpoint(port: int) -> str:
    """The AWS endpoint URL of a moto server on ``port``."""
    return f"http://{LOOPBACK}:{port}"


def find_moto_server() -> Path:
    """``moto_server`` next to this interpreter (the same virtualenv) first, else on PATH."""
    beside = Path(sys.executable).parent / "moto_server"
    if beside.is_file():
        return beside
    if found := shutil.which("moto_server"):
        return Path(found)
    raise DevStackError(f"moto_server not found next to {sys.executable} nor on PATH: {_HINT}")


def answers(port: int, timeout_s: float = 2.0) -> bool:
    """Whether moto's management API on ``port`` answers with HTTP 200."""
    if not port_open(port):
        return False
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout_s)
    try:
        conn.request("GET", "/moto-api/")
        return conn.getresponse().status == 200
    finally:
        conn.close()


def start(work_dir: Path, *, timeout_s: float = 30.0, cancel: threading.Event | None = None) -> Service:
    """Start moto's server on a free loopback port; return it once it answers HTTP."""
    executable = find_moto_server()
    port = free_port()
    log_path = work_dir / "moto.log"
    service, seconds = launch(
        NAME,
        "moto_server",
        [str(executable), "-H", LOOPBACK, "-p", str(port)],
        port=port,
        log_path=log_path,
        probe=lambda: answers(port),
        stop_signal=STOP_SIGNAL,
        timeout_s=timeout_s,
        cancel=cancel,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    log.info("devstack.moto_ready", endpoint_url=endpoint(port), pid=service.pid, seconds=round(seconds, 2))
    return service
