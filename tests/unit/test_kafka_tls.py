"""Kafka TLS settings reach the SSL context of every aiokafka client the product builds."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import ValidationError

from loader.config.settings import KafkaSettings, load_settings
from loader.consume.kafka import client_kwargs, make_consumer, make_producer
from loader.errors import ConfigError
from tests.integration.helpers import make_spec
from tests.unit.tls_files import TlsFiles, make_tls_files

pytestmark = pytest.mark.unit

SPEC = make_spec("tls_test", bucket="b-tls")
KEY_PASSWORD = "client-key-passphrase"


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return make_tls_files(tmp_path, key_password=KEY_PASSWORD)


def _settings(tls: TlsFiles, **overrides: Any) -> KafkaSettings:
    values: dict[str, Any] = {
        "bootstrap_servers": "127.0.0.1:9093",
        "security_protocol": "SSL",
        "ssl_cafile": tls.ca,
        "ssl_certfile": tls.client_cert,
        "ssl_keyfile": tls.client_key,
        "ssl_key_password": KEY_PASSWORD,
    }
    return KafkaSettings(**(values | overrides))


def _client_contexts(settings: KafkaSettings) -> list[ssl.SSLContext]:
    """The SSL context aiokafka holds in each client the product builds (consumer, producer, admin)."""

    async def build() -> list[ssl.SSLContext]:
        consumer = make_consumer(SPEC, settings)
        producer = make_producer(SPEC, settings)
        admin = AIOKafkaAdminClient(**client_kwargs(SPEC, settings))
        contexts = [consumer._client._ssl_context, producer.client._ssl_context, admin._client._ssl_context]
        await consumer.stop()
        await producer.stop()
        await admin.close()
        return contexts

    return asyncio.run(build())


def _common_name(certificate: dict[str, Any]) -> str:
    """The subject's common name of a certificate as the ssl module describes it."""
    return str(next(value for rdn in certificate["subject"] for key, value in rdn if key == "commonName"))


async def _handshake(context: ssl.SSLContext, tls: TlsFiles, server_hostname: str) -> str:
    """Connect with ``context`` to a TLS server on 127.0.0.1 that requires a client certificate
    signed by the test CA; returns the client certificate's common name as the server saw it."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=tls.ca)
    server_context.load_cert_chain(tls.server_cert, tls.server_key)
    server_context.verify_mode = ssl.CERT_REQUIRED
    seen: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.set_result(_common_name(writer.get_extra_info("peercert")))
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    try:
        _, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname=server_hostname
        )
        name = await asyncio.wait_for(seen, 10)
        writer.close()
        return name
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL"])
def test_tls_settings_reach_every_client(tls: TlsFiles, protocol: str) -> None:
    """Consumer, producer and admin client get one verified context with the CA file and client key."""
    extra = (
        {"sasl_mechanism": "PLAIN", "sasl_username": "u", "sasl_password": "p"}
        if protocol == "SASL_SSL"
        else {}
    )
    contexts = _client_contexts(_settings(tls, security_protocol=protocol, **extra))
    for context in contexts:
        assert isinstance(context, ssl.SSLContext)
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert context.check_hostname is True
        assert tls.ca_name in {_common_name(ca) for ca in context.get_ca_certs()}
        # The server trusts the client certificate and key loaded from the settings.
        assert asyncio.run(_handshake(context, tls, "localhost")) == tls.client_name


def test_check_hostname_is_settable(tls: TlsFiles) -> None:
    """A broker reached under a name its certificate lacks is refused unless ssl_check_hostname is off."""
    checked, unchecked = (
        _client_contexts(_settings(tls, ssl_check_hostname=flag))[0] for flag in (True, False)
    )
    with pytest.raises(ssl.SSLCertVerificationError, match="match"):
        asyncio.run(_handshake(checked, tls, "broker.elsewhere.test"))
    assert unchecked.check_hostname is False
    assert unchecked.verify_mode == ssl.CERT_REQUIRED  # the CA still vouches for the broker
    assert asyncio.run(_handshake(unchecked, tls, "broker.elsewhere.test")) == tls.client_name


def test_ssl_without_files_trusts_the_system_cas() -> None:
    """SSL with no CA file still builds clients, verifying brokers against the system's CAs."""
    settings = KafkaSettings(bootstrap_servers="127.0.0.1:9093", security_protocol="SSL")
    for context in _client_contexts(settings):
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname is True


def test_missing_ca_file_is_a_config_error(tls: TlsFiles, tmp_path: Path) -> None:
    """A CA file that does not exist stops client construction with the setting to fix."""
    settings = _settings(tls, ssl_cafile=tmp_path / "absent-ca.pem")
    with pytest.raises(ConfigError, match=r"LOADER_KAFKA__SSL_CAFILE: no such file .*absent-ca\.pem"):
        _client_contexts(settings)


def test_unreadable_key_is_a_config_error_without_the_password(tls: TlsFiles) -> None:
    """A wrong key passphrase (or a file that is not PEM) is a ConfigError that quotes no password."""
    wrong = "not-the-passphrase-7c1"
    with pytest.raises(ConfigError, match="cannot load the Kafka TLS files") as caught:
        _client_contexts(_settings(tls, ssl_key_password=wrong))
    assert wrong not in str(caught.value)
    tls.ca.write_text("not a certificate")
    with pytest.raises(ConfigError, match="LOADER_KAFKA__SSL_CAFILE"):
        _client_contexts(_settings(tls))


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"LOADER_KAFKA__SSL_CAFILE": "/etc/ca.pem"}, "LOADER_KAFKA__SECURITY_PROTOCOL=SSL"),
        (
            {"LOADER_KAFKA__SECURITY_PROTOCOL": "SSL", "LOADER_KAFKA__SSL_KEYFILE": "/etc/k.pem"},
            "LOADER_KAFKA__SSL_CERTFILE",
        ),
    ],
    ids=["tls-file-with-plaintext", "key-without-certificate"],
)
def test_tls_settings_that_would_go_unused_are_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    """TLS files beside a plaintext protocol, or a key without its certificate, say what to set."""
    monkeypatch.setenv("LOADER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("LOADER_CONFIG", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=expected):
        load_settings(use_dev_stack=False)
    with pytest.raises(ValidationError):
        KafkaSettings(**{name.removeprefix("LOADER_KAFKA__").lower(): value for name, value in env.items()})
