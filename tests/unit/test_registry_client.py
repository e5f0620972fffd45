"""The registry client's HTTP side, against a tiny HTTP(S) server on loopback: basic auth, TLS,
timeouts, the cache bound, and how each kind of answer maps onto the loader's errors.

The end-to-end behaviour against a real registry is in tests/integration/test_schema_registry.py.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from loader.config.settings import load_settings
from loader.errors import ConfigError, RegistryError
from loader.schema.registry_client import RegistryClient, WriterSchemaError
from tests.unit.tls_files import make_tls_files

pytestmark = pytest.mark.unit

AVRO = '{"type": "record", "name": "A", "fields": [{"name": "z", "type": "int"}]}'


@dataclass
class Answer:
    status: int
    body: object
    delay_s: float = 0.0


@dataclass
class FakeRegistry:
    """Answers each path with what ``answers`` says (404 with code 40403 by default); logs requests."""

    url: str = ""
    answers: dict[str, Answer] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    """(method, path, Authorization header) of each request, in order."""


def _serve(tls: ssl.SSLContext | None = None) -> Iterator[FakeRegistry]:
    fake = FakeRegistry()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            return

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            fake.requests.append((self.command, self.path, self.headers.get("Authorization")))
            answer = fake.answers.get(self.path, Answer(404, {"error_code": 40403, "message": "not found"}))
            time.sleep(answer.delay_s)
            payload = answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body).encode()
            self.send_response(answer.status)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _answer  # noqa: N815 - http.server's naming

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    fake.url = f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"
    # A short poll: shutdown() waits for it (the default, 0.5 s, was most of each test's time).
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()


@pytest.fixture
def registry() -> Iterator[FakeRegistry]:
    yield from _serve()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_schema_by_id_reads_the_type_and_defaults_to_avro(registry: FakeRegistry) -> None:
    """GET /schemas/ids/{id}: no schemaType means Avro; PROTOBUF and JSON are taken as given."""
    registry.answers["/schemas/ids/1"] = Answer(200, {"schema": AVRO})
    registry.answers["/schemas/ids/2"] = Answer(
        200, {"schema": "syntax = 'proto3';", "schemaType": "PROTOBUF"}
    )
    registry.answers["/schemas/ids/3"] = Answer(200, {"schema": '{"type": "object"}', "schemaType": "JSON"})
    with RegistryClient(registry.url) as client:
        assert client.schema(1).schema_type == "AVRO"
        assert client.writer_schema(1) == AVRO
        assert client.schema(2).schema_type == "PROTOBUF"
        assert client.schema(3).schema_type == "JSON"
    assert [path for _, path, _ in registry.requests] == [
        "/schemas/ids/1",
        "/schemas/ids/2",
        "/schemas/ids/3",
    ]


def test_writer_schema_refuses_other_types_and_references_as_the_records_problem(
    registry: FakeRegistry,
) -> None:
    """An id of a non-Avro schema, of an unknown type, or with references is a WriterSchemaError."""
    registry.answers["/schemas/ids/2"] = Answer(
        200, {"schema": "syntax = 'proto3';", "schemaType": "PROTOBUF"}
    )
    registry.answers["/schemas/ids/4"] = Answer(200, {"schema": "x", "schemaType": "THRIFT"})
    registry.answers["/schemas/ids/5"] = Answer(
        200, {"schema": AVRO, "references": [{"name": "com.acme.Money", "subject": "money", "version": 1}]}
    )
    with RegistryClient(registry.url) as client:
        for schema_id, reason in (
            (2, "PROTOBUF schema, not Avro"),
            (4, "unsupported schema type"),
            (5, "Money"),
        ):
            with pytest.raises(WriterSchemaError, match=reason) as caught:
                client.writer_schema(schema_id)
            assert caught.value.schema_id == schema_id
            assert not caught.value.transient


def test_protobuf_schema_gives_protobuf_text_and_allows_only_well_known_references(
    registry: FakeRegistry,
) -> None:
    """The Protobuf lookup returns a PROTOBUF schema's text, with references to well-known types
    only; an Avro id or another reference is a WriterSchemaError for the record."""
    well_known = [{"name": "google/protobuf/timestamp.proto", "subject": "ts", "version": 1}]
    registry.answers["/schemas/ids/2"] = Answer(
        200, {"schema": "Cg==", "schemaType": "PROTOBUF", "references": well_known}
    )
    registry.answers["/schemas/ids/1"] = Answer(200, {"schema": AVRO})
    other = [*well_known, {"name": "acme/money.proto", "subject": "money", "version": 1}]
    registry.answers["/schemas/ids/3"] = Answer(
        200, {"schema": "Cg==", "schemaType": "PROTOBUF", "references": other}
    )
    with RegistryClient(registry.url) as client:
        assert client.protobuf_schema(2) == "Cg=="
        for schema_id, reason in ((1, "AVRO schema, not Protobuf"), (3, r"\(acme/money\.proto\)")):
            with pytest.raises(WriterSchemaError, match=reason) as caught:
                client.protobuf_schema(schema_id)
            assert caught.value.schema_id == schema_id
            assert not caught.value.transient


def test_unknown_id_is_the_records_problem_not_the_registrys(registry: FakeRegistry) -> None:
    """A 404 with Confluent's 40403 is a WriterSchemaError naming the id, terminal, not a ConfigError."""
    with RegistryClient(registry.url) as client, pytest.raises(WriterSchemaError) as caught:
        client.schema(77)
    assert caught.value.schema_id == 77
    assert "no such schema" in caught.value.reason
    assert isinstance(caught.value, RegistryError)
    assert not caught.value.transient


def test_a_404_from_elsewhere_says_the_url_is_wrong(registry: FakeRegistry) -> None:
    """A 404 without the registry's code (a wrong base path) is a configuration error, not a dead letter."""
    registry.answers["/schemas/ids/1"] = Answer(404, {"error_code": 404, "message": "no resource"})
    with RegistryClient(registry.url) as client, pytest.raises(ConfigError, match="apis/ccompat/v7"):
        client.schema(1)


@pytest.mark.parametrize("status", [500, 502, 503, 408, 429])
def test_server_errors_are_transient(registry: FakeRegistry, status: int) -> None:
    """5xx, 408 and 429 are transient RegistryErrors: the caller retries, nothing is dropped."""
    registry.answers["/schemas/ids/1"] = Answer(status, {"error_code": 50001, "message": "store down"})
    with RegistryClient(registry.url) as client, pytest.raises(RegistryError, match=str(status)) as caught:
        client.schema(1)
    assert caught.value.transient
    assert not isinstance(caught.value, WriterSchemaError)


@pytest.mark.parametrize("status", [401, 403])
def test_refused_login_is_a_configuration_error(registry: FakeRegistry, status: int) -> None:
    """401 and 403 are ConfigErrors (terminal) that say which settings to check."""
    registry.answers["/schemas/ids/1"] = Answer(status, {"error_code": status, "message": "Unauthorized"})
    with (
        RegistryClient(registry.url, username="u", password="p") as client,
        pytest.raises(ConfigError, match="LOADER_SCHEMA_REGISTRY__PASSWORD") as caught,
    ):
        client.schema(1)
    assert not caught.value.transient


def test_garbage_answer_is_a_terminal_registry_error(registry: FakeRegistry) -> None:
    """A 200 that is not a schema document is a terminal RegistryError, not a schema."""
    registry.answers["/schemas/ids/1"] = Answer(200, b"<html>proxy</html>")
    with RegistryClient(registry.url) as client, pytest.raises(RegistryError, match="unexpected") as caught:
        client.schema(1)
    assert not caught.value.transient


def test_unreachable_and_slow_registries_are_transient(registry: FakeRegistry) -> None:
    """Connection refused, and an answer slower than timeout_s, are transient RegistryErrors."""
    with (
        RegistryClient(f"http://127.0.0.1:{_closed_port()}") as client,
        pytest.raises(RegistryError, match="unreachable") as refused,
    ):
        client.schema(1)
    assert refused.value.transient
    registry.answers["/schemas/ids/1"] = Answer(200, {"schema": AVRO}, delay_s=3.0)
    began = time.monotonic()
    with (
        RegistryClient(registry.url, timeout_s=0.5) as client,
        pytest.raises(RegistryError, match=r"unreachable.*ReadTimeoutError") as slow,
    ):
        client.schema(1)
    assert slow.value.transient
    assert time.monotonic() - began < 2.5


def test_basic_auth_on_every_request_and_none_without_a_user(registry: FakeRegistry) -> None:
    """With a username, GET and POST carry Basic auth (user:password); without one, no Authorization."""
    registry.answers["/schemas/ids/1"] = Answer(200, {"schema": AVRO})
    registry.answers["/subjects/t-value/versions"] = Answer(200, {"id": 1})
    with RegistryClient(registry.url, username="svc", password="pa:ss") as client:
        client.schema(1)
        assert client.register("t-value", "AVRO", AVRO) == 1
    with RegistryClient(registry.url) as client:
        client.register("t-value", "AVRO", AVRO)
    expected = "Basic " + base64.b64encode(b"svc:pa:ss").decode()
    assert [auth for _, _, auth in registry.requests] == [expected, expected, None]


def test_cache_serves_repeats_and_stays_bounded(registry: FakeRegistry) -> None:
    """A repeated id costs no request; past cache_size the least recently used id is fetched again."""
    for schema_id in (1, 2, 3):
        registry.answers[f"/schemas/ids/{schema_id}"] = Answer(200, {"schema": AVRO})
    with RegistryClient(registry.url, cache_size=2) as client:
        for schema_id in (1, 2, 1, 3, 1, 2):
            client.schema(schema_id)
    assert [path[-1] for _, path, _ in registry.requests] == ["1", "2", "3", "2"]


def test_errors_are_not_cached(registry: FakeRegistry) -> None:
    """An id that failed (unknown, or the registry down) is asked again next time."""
    with RegistryClient(registry.url) as client:
        with pytest.raises(WriterSchemaError):
            client.schema(1)
        registry.answers["/schemas/ids/1"] = Answer(200, {"schema": AVRO})
        assert client.writer_schema(1) == AVRO
    assert len(registry.requests) == 2


def test_tls_checks_the_certificate_against_the_ca_file(tmp_path: Path) -> None:
    """Over https the registry's certificate must chain to ca_file; without it, a ConfigError says so."""
    files = make_tls_files(tmp_path, key_password="unused")
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(files.server_cert, files.server_key)
    for fake in _serve(server_tls):
        fake.answers["/schemas/ids/1"] = Answer(200, {"schema": AVRO})
        with RegistryClient(fake.url, ca_file=files.ca) as client:
            assert client.writer_schema(1) == AVRO
        with (
            RegistryClient(fake.url) as client,
            pytest.raises(ConfigError, match="LOADER_SCHEMA_REGISTRY__CA_FILE") as caught,
        ):
            client.schema(1)
        assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
        assert len(fake.requests) == 1


def test_unusable_ca_file_and_credentials_in_the_url_are_refused(tmp_path: Path) -> None:
    """A missing CA file, and a URL with user:password, are ConfigErrors that never quote the password."""
    with pytest.raises(ConfigError, match="CA file"):
        RegistryClient("https://registry:8081", ca_file=tmp_path / "absent.pem")
    for url in ("https://svc:hunter2-secret@registry:8081", "svc:hunter2-secret@registry:8081"):
        with pytest.raises(ConfigError, match="holds credentials") as caught:
            RegistryClient(url)
        assert "hunter2-secret" not in str(caught.value)
    with pytest.raises(ConfigError, match="http"):
        RegistryClient("ftp://registry")


def test_settings_section_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """LOADER_SCHEMA_REGISTRY__* fill the section; the password is a SecretStr; from_settings uses them."""
    ca = tmp_path / "ca.pem"
    monkeypatch.setenv("LOADER_SCHEMA_REGISTRY__URL", "https://registry:8081")
    monkeypatch.setenv("LOADER_SCHEMA_REGISTRY__USERNAME", "svc")
    monkeypatch.setenv("LOADER_SCHEMA_REGISTRY__PASSWORD", "pw-secret-1")
    monkeypatch.setenv("LOADER_SCHEMA_REGISTRY__CA_FILE", str(ca))
    monkeypatch.setenv("LOADER_SCHEMA_REGISTRY__TIMEOUT_S", "2.5")
    section = load_settings(use_dev_stack=False).schema_registry
    assert (section.url, section.username, section.ca_file, section.timeout_s) == (
        "https://registry:8081",
        "svc",
        ca,
        2.5,
    )
    assert section.password is not None
    assert section.password.get_secret_value() == "pw-secret-1"
    assert "pw-secret-1" not in repr(section)
    with pytest.raises(ConfigError, match="CA file"):  # the client reads the CA file when it is made
        RegistryClient.from_settings(section)


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ({"url": "registry:8081"}, "must start with http"),
        ({"url": "https://svc:pw-secret-2@registry"}, "holds credentials"),
        ({"url": "https://registry", "password": "pw-secret-2"}, "without a username"),
        ({"url": "http://registry", "ca_file": "/etc/ca.pem"}, "not https"),
        ({"timeout_s": 0}, "greater than 0"),
    ],
)
def test_settings_refuse_what_would_go_wrong(section: dict[str, object], problem: str) -> None:
    """Settings that cannot work are refused when loaded, never quoting a password."""
    with pytest.raises(ConfigError, match=problem) as caught:
        load_settings(use_dev_stack=False, schema_registry=section)
    assert "pw-secret-2" not in str(caught.value)


def test_unset_registry_says_how_to_set_one() -> None:
    """Without a URL (empty counts as unset), from_settings names the setting and `loader dev up`."""
    section = load_settings(use_dev_stack=False, schema_registry={"url": ""}).schema_registry
    assert section.url is None
    with pytest.raises(ConfigError, match=r"LOADER_SCHEMA_REGISTRY__URL.*loader dev up"):
        RegistryClient.from_settings(section)
