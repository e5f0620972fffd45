"""Serving the gateway's app with uvicorn (uvloop and httptools), stopped gracefully by signals."""

from __future__ import annotations

import signal
from types import FrameType

import uvicorn
from starlette.applications import Starlette

__all__ = ["serve"]


class _Server(uvicorn.Server):
    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Stop gracefully on SIGTERM or Ctrl-C (a second Ctrl-C: at once). Unlike uvicorn's own
        handler, do not raise the signal again once drained: the command then exits 0, as the
        worker does, and an orchestrator sees a clean stop."""
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True


def serve(app: Starlette, host: str, port: int) -> bool:
    """Serve ``app`` on ``host:port`` until a signal stops it; False if it never started (its
    lifespan failed or the address could not be bound: uvicorn logged why)."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
    )
    server = _Server(config)
    server.run()
    return server.started
