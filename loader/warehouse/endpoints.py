"""The SQS loader's web endpoints: ``/healthz`` and ``/readyz`` next to ``/metrics``.

Answered as the worker's are (:mod:`loader.worker.app`): ``/healthz`` is
``{"alive": …}`` (the loading loop still runs), ``/readyz`` is ``{"ready": …,
"down": {service: why}}`` (:mod:`loader.warehouse.readiness`); each is 200 when
true and 503 when not. Every other path serves the Prometheus text format, as
``prometheus_client``'s own server does.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from loader.warehouse.readiness import ReadinessReport

__all__ = ["serve"]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes and scrapes every few seconds are not worth a log line each."""


def _app(
    registry: CollectorRegistry, alive: Callable[[], bool], readiness: Callable[[], ReadinessReport]
) -> Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]:
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            ok = alive()
            body: dict[str, Any] = {"alive": ok}
        elif path == "/readyz":
            report = readiness()
            ok, body = report.ready, report.to_json()
        else:
            answer: Iterable[bytes] = metrics_app(environ, start_response)
            return answer
        start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "application/json")])
        return [json.dumps(body).encode()]

    return app


def serve(
    host: str,
    port: int,
    registry: CollectorRegistry,
    *,
    alive: Callable[[], bool],
    readiness: Callable[[], ReadinessReport],
) -> WSGIServer:
    """Serve the endpoints on ``host:port`` from a daemon thread; ``shutdown()`` the server to stop.
    An OSError says the address cannot be bound."""
    server_class = _Server6 if ":" in host else _Server
    server = make_server(
        host, port, _app(registry, alive, readiness), server_class, handler_class=_QuietHandler
    )
    threading.Thread(target=server.serve_forever, name="loader-endpoints", daemon=True).start()
    return server
