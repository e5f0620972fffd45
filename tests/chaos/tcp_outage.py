"""A loopback TCP proxy that can take its upstream 'down': the warehouse outage of chaos tests.

fakesnow's server keeps nothing across a restart, so a test cannot stop and restart it and
keep the tables; cutting every connection and refusing new ones is the same outage as seen
from the loader, with the data still there when it comes back.
"""

from __future__ import annotations

import contextlib
import socket
import threading

__all__ = ["TcpOutageProxy"]


class TcpOutageProxy:
    """Forwards 127.0.0.1:<port> to the upstream port until :meth:`down`; :meth:`up` restores it."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._available = threading.Event()
        self._available.set()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name="tcp-outage", daemon=True)

    def __enter__(self) -> TcpOutageProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed = True
        self._listener.close()
        self._cut()

    def down(self) -> None:
        """Cut every open connection and reset new ones."""
        self._available.clear()
        self._cut()

    def up(self) -> None:
        self._available.set()

    def _cut(self) -> None:
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._available.is_set():
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                client.close()  # a reset: the warehouse is unreachable
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets |= {client, upstream}
            threading.Thread(target=self._forward, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _forward(self, client: socket.socket, upstream: socket.socket) -> None:
        """The client's bytes to the upstream (a subclass may hold some back)."""
        self._pump(client, upstream)

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.close()
