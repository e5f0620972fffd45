"""A fault-injecting HTTP proxy in front of moto's S3, for chaos tests.

Forwards every request to the upstream server unchanged. While a fault
window is open, a share of the requests get S3's own throttling answer
(``503 SlowDown``) instead, which botocore and the worker must retry.
:meth:`FaultyS3Proxy.hold` leaves one chosen request without an answer, before or
after it reached S3: the instant a worker is killed in, made exact.
"""

from __future__ import annotations

import http.client
import random
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

__all__ = ["FaultyS3Proxy"]

_SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


class FaultyS3Proxy:
    """A loopback proxy; ``failure_rate`` (0..1) is the share of requests answered 503."""

    def __init__(self, upstream: str, *, seed: int) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.failure_rate = 0.0
        self.injected = 0
        self.forwarded = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._hold: tuple[Callable[[str, str], bool], bool] | None = None
        self.held_path: str | None = None
        """The path of the request held, once one is."""
        self.held = threading.Event()
        self._closed = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if proxy.should_fail():
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(_SLOW_DOWN)))
                    self.end_headers()
                    self.wfile.write(_SLOW_DOWN)
                    return
                if proxy.holding(self.command, self.path, forwarded=False):
                    return
                upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    payload = response.read()
                finally:
                    upstream.close()
                if proxy.holding(self.command, self.path, forwarded=True):
                    return
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)
                with proxy._lock:
                    proxy.forwarded += 1

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle  # noqa: N815 - http.server names

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                return  # a killed worker drops its connections: expected here

        self._server = Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="faulty-s3", daemon=True)

    def should_fail(self) -> bool:
        with self._lock:
            if self.failure_rate and self._rng.random() < self.failure_rate:
                self.injected += 1
                return True
            return False

    def hold(self, matches: Callable[[str, str], bool], *, forwarded: bool) -> None:
        """Leave the next request that ``matches(method, path)`` without an answer until the proxy
        closes: after S3 handled it if ``forwarded``, else before it reaches S3. Once only."""
        with self._lock:
            self._hold = (matches, forwarded)

    def holding(self, method: str, path: str, *, forwarded: bool) -> bool:
        """Whether this request is the one to hold at this point (then it is held, here)."""
        with self._lock:
            if self._hold is None or self._hold[1] != forwarded or not self._hold[0](method, path):
                return False
            self._hold, self.held_path = None, path
        self.held.set()
        self._closed.wait()
        return True

    def __enter__(self) -> FaultyS3Proxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed.set()
        self._server.shutdown()
        self._server.server_close()
