"""Serving the gateway's app with uvicorn (uvloop and httptools), stopped gracefully by signals."""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Callable
from types import FrameType

import structlog
import uvicorn
from starlette.applications import Starlette

from loader.gateway import handoff

__all__ = ["listening_socket", "serve", "serve_dealt"]

log = structlog.get_logger("loader.gateway")


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, dealt_on: socket.socket | None = None) -> None:
        super().__init__(config)
        self._dealt_on = dealt_on
        self._stop_receiving: Callable[[], None] | None = None
        self._opening: set[asyncio.Task[object]] = set()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Listen on ``sockets``, or (a pool's process) take the connections the supervisor
        deals on the channel (:mod:`loader.gateway.handoff`) once the lifespan has started."""
        await super().startup(sockets)
        if self.started and self._dealt_on is not None:
            self._stop_receiving = handoff.receive(self._dealt_on, self._take)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._stop_receiving is not None:
            self._stop_receiving()
        await super().shutdown(sockets)

    def _take(self, connection: socket.socket) -> None:
        """Serve a dealt connection as uvicorn serves the ones it accepts: the same protocol,
        registered in the same server state (graceful shutdown drains it too)."""

        def protocol() -> asyncio.Protocol:
            return self.config.http_protocol_class(  # type: ignore[call-arg]
                config=self.config, server_state=self.server_state, app_state=self.lifespan.state
            )

        loop = asyncio.get_running_loop()
        opening = asyncio.create_task(loop.connect_accepted_socket(protocol, connection))
        self._opening.add(opening)
        opening.add_done_callback(self._opened)

    def _opened(self, opening: asyncio.Task[object]) -> None:
        self._opening.discard(opening)
        if not opening.cancelled() and (error := opening.exception()) is not None:
            log.warning("gateway.connection_dropped", error=str(error))

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Stop gracefully on SIGTERM or Ctrl-C (a second Ctrl-C: at once). Unlike uvicorn's own
        handler, do not raise the signal again once drained: the command then exits 0, as the
        worker does, and an orchestrator sees a clean stop."""
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True


def listening_socket(host: str, port: int) -> socket.socket:
    """The API's listening socket (IPv6 for an address with a colon), bound before serving;
    an OSError says why it cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def serve(app: Starlette, sock: socket.socket) -> bool:
    """Serve ``app`` on the listening ``sock`` until a signal stops it; False if it never
    started (its lifespan failed: uvicorn logged why)."""
    server = _Server(_config(app))
    server.run(sockets=[sock])
    return server.started


def serve_dealt(app: Starlette, channel: socket.socket) -> bool:
    """Serve ``app`` on the connections dealt on ``channel`` (a pool's process) until a signal
    stops it; False if it never started."""
    server = _Server(_config(app), dealt_on=channel)
    server.run(sockets=[])
    return server.started


def _config(app: Starlette) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
    )
