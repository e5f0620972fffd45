"""Handing connections from the gateway's supervisor to its processes, in turn.

With one listening socket per process (SO_REUSEPORT) the kernel picks a process by a hash
of the client's address and port: with the tens of keep-alive connections a client pool
opens, one process often got twice the other's share and its latency tail, while the other
idled. One shared socket is no better: whichever process wakes first takes the
connection. So the supervisor accepts, as Node's cluster module does, and deals each
connection to the next process over a Unix socket pair (the descriptor travels as
SCM_RIGHTS). A process that is not ready (its producer not connected, say) is passed over
while another is; a process whose channel is full or closed is passed over too. Each
connection then lives in the process it was dealt to: the supervisor touches no request
bytes.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Sequence

import structlog

__all__ = ["Dealer", "channel_pair", "receive"]

log = structlog.get_logger("loader.gateway")

_TAG = b"c"
"""The byte each descriptor travels with (a message cannot be empty)."""
ACCEPT_PAUSE_S = 0.5
"""How long accepting pauses after it failed (out of descriptors, say): the waiting
connection would fail the same way at once, in a busy loop."""


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """The supervisor's end and the process's end of one process's channel: datagrams, so
    each descriptor arrives alone and whole."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


class Dealer:
    """Accepts on ``listener`` and deals each connection to the next of ``channels`` (one per
    process), preferring the processes ``ready`` says can serve."""

    def __init__(
        self, listener: socket.socket, channels: Sequence[socket.socket], ready: Callable[[int], bool]
    ) -> None:
        self._listener = listener
        self._channels = channels
        self._ready = ready
        self._next = 0
        listener.setblocking(False)
        for channel in channels:
            channel.setblocking(False)

    def start(self) -> None:
        """Deal from the running event loop until :meth:`stop`."""
        if self._listener.fileno() != -1:
            asyncio.get_running_loop().add_reader(self._listener.fileno(), self._accept)

    def stop(self) -> None:
        """Stop accepting and close the listening socket (new connections are refused), and
        the channels (a process's queued, not yet taken connections close with them)."""
        if self._listener.fileno() != -1:
            asyncio.get_running_loop().remove_reader(self._listener.fileno())
        self._listener.close()
        for channel in self._channels:
            channel.close()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors, say: pause, the connection waits
                log.warning("gateway.accept_failed", error=exc.strerror or str(exc), pause_s=ACCEPT_PAUSE_S)
                loop = asyncio.get_running_loop()
                loop.remove_reader(self._listener.fileno())
                loop.call_later(ACCEPT_PAUSE_S, self.start)
                return
            with connection:
                connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if not self._deal(connection):
                    log.warning("gateway.connection_refused", reason="no gateway process took it")

    def _deal(self, connection: socket.socket) -> bool:
        """Send ``connection`` to the next ready process (any process if none is ready);
        False if no channel took it."""
        count = len(self._channels)
        order = [(self._next + step) % count for step in range(count)]
        preferred = [i for i in order if self._ready(i)] or order
        for index in preferred:
            try:
                socket.send_fds(self._channels[index], [_TAG], [connection.fileno()])
            except OSError:  # full (that process lags) or closed (it exited): the next one
                continue
            self._next = (index + 1) % count
            return True
        return False


def receive(channel: socket.socket, take: Callable[[socket.socket], None]) -> Callable[[], None]:
    """Call ``take`` with each connection dealt on ``channel`` (from the running loop); the
    function that stops receiving."""
    loop = asyncio.get_running_loop()
    channel.setblocking(False)

    def stop() -> None:
        if channel.fileno() != -1:
            loop.remove_reader(channel.fileno())
            channel.close()

    def readable() -> None:
        while True:
            try:
                message, descriptors, _, _ = socket.recv_fds(channel, len(_TAG), 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                stop()
                return
            if not message and not descriptors:  # the supervisor closed its end
                stop()
                return
            for descriptor in descriptors:
                take(socket.socket(fileno=descriptor))

    loop.add_reader(channel.fileno(), readable)
    return stop
