"""A loopback HTTP proxy in front of the local Snowflake server that never answers a COPY.

A warehouse that does not answer, as the loader sees it: every other request is forwarded,
but a query request whose SQL is a COPY is read and then left without a reply, its
connection open (its cancellation is answered, as a slow warehouse would). A real proxy
and a real server, not a mock of the connector.
"""

from __future__ import annotations

import gzip
import socket

from tests.chaos.tcp_outage import TcpOutageProxy

__all__ = ["CopyBlackHole"]


class CopyBlackHole(TcpOutageProxy):
    """Forwards 127.0.0.1:<port> to the upstream port; COPY requests get no answer."""

    def __init__(self, upstream_port: int) -> None:
        super().__init__(upstream_port)
        self.copies_held = 0

    def _forward(self, client: socket.socket, upstream: socket.socket) -> None:
        """Forward whole HTTP requests (the connector sends Content-Length bodies, gzipped)."""
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    if not (data := client.recv(65536)):
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                headers = {
                    name.strip().lower(): value.strip()
                    for name, _, value in (line.partition(b":") for line in head.split(b"\r\n")[1:])
                }
                length = int(headers.get(b"content-length", b"0"))
                while len(buffer) < length:
                    if not (data := client.recv(65536)):
                        return
                    buffer += data
                body, buffer = buffer[:length], buffer[length:]
                sql = gzip.decompress(body) if headers.get(b"content-encoding") == b"gzip" else body
                # Only the COPY itself: its cancellation (abort-request, same SQL) is answered.
                is_query = b"/queries/v1/query-request" in head.split(b"\r\n", 1)[0]
                if is_query and (b'"sqlText": "COPY INTO' in sql or b'"sqlText":"COPY INTO' in sql):
                    with self._lock:
                        self.copies_held += 1
                    continue  # read, never answered; the connection stays open
                upstream.sendall(head + b"\r\n\r\n" + body)
        except OSError:
            return
