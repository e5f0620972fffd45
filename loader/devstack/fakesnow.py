"""fakesnow's server: a Snowflake look-alike that snowflake-connector-python talks to over HTTP.

Owns: starting ``python -m fakesnow -s`` on a free loopback port, waiting until
it accepts a real connector login, and the local stage folder (fakesnow's
DuckDB cannot read s3://, so the loader downloads files there and COPYs from a
``file://`` stage).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import sys
import threading
from pathlib import Path

import structlog

from loader.devstack.process import LOOPBACK, Service, free_port, launch, port_open
from loader.errors import DevStackError

__all__ = [
    "ACCOUNT",
    "CMDLINE_MARKER",
    "NAME",
    "PASSWORD",
    "STOP_SIGNAL",
    "USER",
    "answers",
    "endpoint",
    "stage_dir",
    "start",
]

NAME = "fakesnow"
STOP_SIGNAL = signal.SIGINT
"""fakesnow's CLI waits for SIGINT to shut its server down cleanly."""
CMDLINE_MARKER = "fakesnow"
ACCOUNT = "fakesnow"
USER = "fake"
PASSWORD = "snow"  # noqa: S105 - fakesnow accepts any login; this is not a secret
_HINT = "install the local extras: pip install -e '.[local]' (fakesnow[server])"

log = structlog.get_logger()


def endpoint(port: int) -> str:
    """The URL of a fakesnow server on ``port``."""
    return f"http://{LOOPBACK}:{port}"


def stage_dir(work_dir: Path) -> Path:
    """The folder that stands in for the external stage (``snowflake.local_stage_dir``)."""
    return work_dir / "stage"


def answers(port: int, timeout_s: float = 5.0) -> bool:
    """Whether fakesnow on ``port`` accepts a connector login and runs ``SELECT 1``."""
    if not port_open(port):
        return False
    import snowflake.connector  # noqa: PLC0415 - heavy import, only when probing

    conn = snowflake.connector.connect(
        user=USER,
        password=PASSWORD,
        account=ACCOUNT,
        host=LOOPBACK,
        port=port,
        protocol="http",
        session_parameters={"CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False},
        login_timeout=timeout_s,
        network_timeout=timeout_s,
    )
    try:
        cursor = conn.cursor()
        cursor.execute("SELECT 1")
        row = cursor.fetchone()
    finally:
        conn.close()
    return row is not None and row[0] == 1


def start(work_dir: Path, *, timeout_s: float = 30.0, cancel: threading.Event | None = None) -> Service:
    """Start fakesnow's server with an empty stage folder; return it once it accepts a login."""
    for module in ("fakesnow", "uvicorn"):
        if importlib.util.find_spec(module) is None:
            raise DevStackError(f"python module {module!r} not found in {sys.executable}: {_HINT}")
    stage = stage_dir(work_dir)
    shutil.rmtree(stage, ignore_errors=True)  # files of an earlier run would look loadable
    stage.mkdir(parents=True)
    port = free_port()
    log_path = work_dir / "fakesnow.log"
    service, seconds = launch(
        NAME,
        "fakesnow",
        [sys.executable, "-m", "fakesnow", "-s", "-p", str(port), "--host", LOOPBACK],
        port=port,
        log_path=log_path,
        probe=lambda: answers(port),
        stop_signal=STOP_SIGNAL,
        timeout_s=timeout_s,
        cancel=cancel,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    log.info("devstack.fakesnow_ready", endpoint=endpoint(port), pid=service.pid, seconds=round(seconds, 2))
    return service
