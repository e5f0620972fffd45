"""Serving the gateway's app with uvicorn (uvloop and httptools), stopped gracefully by signals."""

from __future__ import annotations

import signal
import socket
from types import FrameType

import uvicorn
from starlette.applications import Starlette

__all__ = ["listening_socket", "serve"]


class _Server(uvicorn.Server):
    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Stop gracefully on SIGTERM or Ctrl-C (a second Ctrl-C: at once). Unlike uvicorn's own
        handler, do not raise the signal again once drained: the command then exits 0, as the
        worker does, and an orchestrator sees a clean stop."""
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True


def listening_socket(host: str, port: int, *, shared: bool = False) -> socket.socket:
    """The API's listening socket (IPv6 for an address with a colon), bound before serving;
    an OSError says why it cannot be bound. ``shared``: one of several sockets on the same
    port (SO_REUSEPORT), one per gateway process, among which the kernel spreads the
    connections evenly (one shared socket leaves most connections to whichever process
    happens to accept first)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def serve(app: Starlette, sock: socket.socket) -> bool:
    """Serve ``app`` on the listening ``sock`` until a signal stops it; False if it never
    started (its lifespan failed: uvicorn logged why)."""
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
    )
    server = _Server(config)
    server.run(sockets=[sock])
    return server.started
