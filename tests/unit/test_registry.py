"""`loader schemas register` against a fake Confluent-compatible registry on loopback."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from loader.cli import cli

pytestmark = pytest.mark.unit

SPECS = Path(__file__).parents[2] / "pipelines"


class FakeRegistry:
    """Answers POST /subjects/<s>/versions like Schema Registry; 409 for subjects in ``refuse``."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any], str | None]] = []
        self.refuse: set[str] = set()
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                subject = self.path.split("/")[2]
                registry.received.append((subject, body, self.headers.get("Authorization")))
                status, answer = (
                    (409, {"error_code": 409, "message": "incompatible"})
                    if subject in registry.refuse
                    else (200, {"id": len(registry.received)})
                )
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def registry() -> Iterator[FakeRegistry]:
    fake = FakeRegistry()
    # A short poll: shutdown() waits for it (the default is 0.5 s).
    thread = threading.Thread(target=fake.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def test_registers_typed_schemas_under_topic_value(registry: FakeRegistry) -> None:
    """Each typed schema is posted as AVRO under <topic>-value; raw event types are skipped."""
    result = CliRunner().invoke(
        cli,
        ["schemas", "register", "--specs", str(SPECS), "--url", registry.url],
        env={"LOADER_SCHEMA_REGISTRY__USERNAME": "deployer", "LOADER_SCHEMA_REGISTRY__PASSWORD": "s3cret-pw"},
    )
    assert result.exit_code == 0, result.output
    subjects = {subject for subject, _, _ in registry.received}
    assert subjects == {"orders.order_created-value", "stores.store_updated-value"}
    assert "app_click: raw event type" in result.output
    _, body, auth = registry.received[0]
    assert body["schemaType"] == "AVRO"
    assert json.loads(body["schema"])["type"] == "record"
    assert auth == "Basic " + base64.b64encode(b"deployer:s3cret-pw").decode()
    assert "s3cret-pw" not in result.output


def test_incompatible_schema_is_a_clear_error(registry: FakeRegistry) -> None:
    """A 409 from the registry is reported as an incompatible schema, exit 1, no traceback."""
    registry.refuse.add("orders.order_created-value")
    result = CliRunner().invoke(
        cli, ["schemas", "register", "order_created", "--specs", str(SPECS), "--url", registry.url]
    )
    assert result.exit_code == 1
    assert "refused the schema as incompatible" in result.output
    assert "Traceback" not in result.output
