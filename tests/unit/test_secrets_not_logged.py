"""No secret of the settings ever appears in a log line, an error message or a traceback.

Every secret setting gets a sentinel value; then the code paths that log or
raise with settings in hand run against closed ports on 127.0.0.1 (nothing
leaves the machine), and every captured text is searched for the sentinels.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import socket
import threading
import traceback
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import click
import pytest
import structlog
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from loader.cli import cli
from loader.config.settings import CONFIG_FILE_ENV, STATE_DIR_ENV, Settings, load_settings
from loader.errors import ConfigError, LoaderError, RegistryError, StorageError, WarehouseError
from loader.logs import MASK, configure_logging
from loader.ops.status import consumer_lag
from loader.schema.registry_client import RegistryClient
from loader.store.aws import aws_client, storage_errors
from loader.warehouse.connection import Warehouse
from tests.integration.helpers import make_spec
from tests.unit.tls_files import make_tls_files

pytestmark = pytest.mark.unit

SENTINELS = {
    "LOADER_KAFKA__SASL_PASSWORD": "kafka-sentinel-5d0c2e",
    "LOADER_AWS__ACCESS_KEY_ID": "AKIASENTINEL5D0C2E77",
    "LOADER_AWS__SECRET_ACCESS_KEY": "aws-secret-sentinel-5d0c2e",
    "LOADER_SNOWFLAKE__PASSWORD": "snowflake-sentinel-5d0c2e",
}
PIPELINES = Path(__file__).parents[2] / "pipelines"

LOGIN_PASSPHRASE = "passphrase-sentinel-5d0c2e"
_LOGIN_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
LOGIN_KEY_PEM = _LOGIN_KEY.private_bytes(
    serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8,
    serialization.BestAvailableEncryption(LOGIN_PASSPHRASE.encode()),
).decode()
_DECRYPTED_PEM = _LOGIN_KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()
LOGIN_SENTINELS = {
    "LOADER_SNOWFLAKE__PRIVATE_KEY_PASSPHRASE": LOGIN_PASSPHRASE,
    "LOADER_SNOWFLAKE__TOKEN": "oauth-token-sentinel-5d0c2e",
    # Any one base64 line of the key, as given or decrypted, would be key material.
    **{
        f"the private key (line {i} of {which})": line
        for which, pem in (("the PEM given", LOGIN_KEY_PEM), ("the decrypted key", _DECRYPTED_PEM))
        for i, line in enumerate(pem.splitlines())
        if not line.startswith("-----")
    },
}
"""The secrets of the other Snowflake logins (a key pair, an OAuth token): no text may hold them."""


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for name, sentinel in (SENTINELS | LOGIN_SENTINELS).items():
            assert sentinel not in text, f"the value of {name} leaked: …{text[:300]}…"


def _everything(exc: BaseException) -> str:
    """An exception as a person or a log could see it: message, repr and full traceback."""
    return "\n".join([str(exc), repr(exc), "".join(traceback.format_exception(exc))])


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Sentinel secrets, and every service on a closed loopback port."""
    for name in list(os.environ):
        if name.startswith("LOADER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path / "state"))
    for name, value in SENTINELS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LOADER_KAFKA__BOOTSTRAP_SERVERS", f"127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("LOADER_KAFKA__SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("LOADER_KAFKA__SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("LOADER_KAFKA__SASL_USERNAME", "loader")
    monkeypatch.setenv("LOADER_AWS__ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("LOADER_SNOWFLAKE__ACCOUNT", "acct")
    monkeypatch.setenv("LOADER_SNOWFLAKE__USER", "loader")
    monkeypatch.setenv("LOADER_SNOWFLAKE__HOST", "127.0.0.1")
    monkeypatch.setenv("LOADER_SNOWFLAKE__PORT", str(_closed_port()))
    monkeypatch.setenv("LOADER_SNOWFLAKE__PROTOCOL", "http")
    monkeypatch.setenv("LOADER_SNOWFLAKE__LOGIN_TIMEOUT_S", "5")


@pytest.fixture
def settings(secret_env: None) -> Settings:
    loaded = load_settings(use_dev_stack=False)
    # The sentinels really are in hand, so a leak would show.
    assert loaded.snowflake.password is not None
    assert loaded.snowflake.password.get_secret_value() == SENTINELS["LOADER_SNOWFLAKE__PASSWORD"]
    return loaded


@pytest.fixture(params=["key-file", "key-text", "token"])
def login_env(
    request: pytest.FixtureRequest, secret_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> str:
    """The sentinel environment, logging in to Snowflake with an encrypted key pair (a file or
    the PEM text) or an OAuth token instead of the password; returns which."""
    monkeypatch.delenv("LOADER_SNOWFLAKE__PASSWORD")
    if request.param == "token":
        monkeypatch.setenv("LOADER_SNOWFLAKE__TOKEN", LOGIN_SENTINELS["LOADER_SNOWFLAKE__TOKEN"])
        return "oauth"
    if request.param == "key-file":
        key_file = tmp_path / "rsa_key.p8"
        key_file.write_text(LOGIN_KEY_PEM)
        monkeypatch.setenv("LOADER_SNOWFLAKE__PRIVATE_KEY_FILE", str(key_file))
    else:
        monkeypatch.setenv("LOADER_SNOWFLAKE__PRIVATE_KEY", LOGIN_KEY_PEM)
    monkeypatch.setenv("LOADER_SNOWFLAKE__PRIVATE_KEY_PASSPHRASE", LOGIN_PASSPHRASE)
    # The connector retries a key-pair login until its login timeout: keep the unit test quick.
    monkeypatch.setenv("LOADER_SNOWFLAKE__LOGIN_TIMEOUT_S", "1")
    return "key pair"


def test_settings_print_and_dump_masked(settings: Settings) -> None:
    """repr, str, model_dump and JSON of the settings (what a log would show) hold no secret."""
    assert_no_secret(
        repr(settings),
        str(settings),
        str(settings.model_dump()),
        settings.model_dump_json(),
        repr(settings.kafka),
        repr(settings.aws),
        repr(settings.snowflake),
    )
    assert MASK in repr(settings.snowflake)


def test_login_settings_print_and_dump_masked(login_env: str) -> None:
    """With a key pair or a token, repr, str, model_dump and JSON hold no key, passphrase or token."""
    settings = load_settings(use_dev_stack=False)
    assert settings.snowflake.login_method == login_env
    assert_no_secret(
        repr(settings),
        str(settings),
        str(settings.model_dump()),
        settings.model_dump_json(),
        repr(settings.snowflake),
    )


def test_bad_env_setting_next_to_secrets_is_named_without_them(
    secret_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An invalid value beside the secrets names the field; no secret is in the message."""
    monkeypatch.setenv("LOADER_SNOWFLAKE__PORT", "not-a-port")
    with pytest.raises(ConfigError) as caught:
        load_settings(use_dev_stack=False)
    assert "snowflake.port" in str(caught.value)
    assert_no_secret(_everything(caught.value))


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ("snowflake:\n  password: {pw}\n  port: not-a-port\n", "snowflake.port"),
        ("snowflake:\n  password: [{pw}]\n", "snowflake.password"),
        ("kafka:\n  sasl_password: {pw}\n  sasl_username: [unclosed\n", "line"),
        ('snowflake:\n  password: "{pw}\n  user: loader\n', "line 2"),
    ],
    ids=["bad-field-beside", "secret-of-wrong-type", "yaml-syntax-below", "yaml-syntax-in-secret-line"],
)
def test_bad_config_file_is_explained_without_its_secrets(
    secret_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, document: str, expected: str
) -> None:
    """A broken LOADER_CONFIG file gets a message that locates the problem but quotes no secret."""
    secret = SENTINELS["LOADER_SNOWFLAKE__PASSWORD"]
    for name in [*SENTINELS, "LOADER_SNOWFLAKE__PORT"]:  # the file's values must not be overridden
        monkeypatch.delenv(name)
    config = tmp_path / "loader.yaml"
    config.write_text(document.format(pw=secret))
    monkeypatch.setenv(CONFIG_FILE_ENV, str(config))
    with pytest.raises(ConfigError) as caught:
        load_settings(use_dev_stack=False)
    assert expected in str(caught.value)
    assert_no_secret(_everything(caught.value))


def test_warehouse_connect_failure_hides_the_password(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """Snowflake unreachable: the error and the log output (at DEBUG) hold no secret."""
    configure_logging("DEBUG", "json")
    with pytest.raises(WarehouseError) as caught, Warehouse(settings.snowflake) as warehouse:
        warehouse.execute("SELECT 1")
    assert "cannot connect to Snowflake" in str(caught.value)
    assert_no_secret(_everything(caught.value), capsys.readouterr().err)


def test_warehouse_connect_failure_hides_the_login(
    login_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Snowflake unreachable with a key-pair or OAuth login: the error and DEBUG logs hold no secret."""
    configure_logging("DEBUG", "json")
    settings = load_settings(use_dev_stack=False)
    with pytest.raises(WarehouseError) as caught, Warehouse(settings.snowflake) as warehouse:
        warehouse.execute("SELECT 1")
    assert "cannot connect to Snowflake" in str(caught.value)
    assert_no_secret(_everything(caught.value), capsys.readouterr().err)


@pytest.mark.parametrize("source", ["file", "text"])
def test_cli_unusable_key_shows_no_secret(
    secret_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, source: str
) -> None:
    """A key with the wrong passphrase: exit 2 naming the setting, quoting no key or passphrase."""
    wrong = "wrong-passphrase-sentinel-5d0c2e"
    monkeypatch.delenv("LOADER_SNOWFLAKE__PASSWORD")
    if source == "file":
        key_file = tmp_path / "rsa_key.p8"
        key_file.write_text(LOGIN_KEY_PEM)
        monkeypatch.setenv("LOADER_SNOWFLAKE__PRIVATE_KEY_FILE", str(key_file))
    else:
        monkeypatch.setenv("LOADER_SNOWFLAKE__PRIVATE_KEY", LOGIN_KEY_PEM)
    monkeypatch.setenv("LOADER_SNOWFLAKE__PRIVATE_KEY_PASSPHRASE", wrong)
    result = CliRunner().invoke(
        cli, ["--log-level", "DEBUG", "--log-format", "json", "pipes", "plan", "--specs", str(PIPELINES)]
    )
    assert result.exit_code == 2, result.output
    assert "error: cannot decrypt the Snowflake private key" in result.output
    assert "LOADER_SNOWFLAKE__PRIVATE_KEY_PASSPHRASE" in result.output
    assert wrong not in result.output
    assert_no_secret(result.output)


def _command_paths(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """``path`` and the path of every command below it."""
    below = command.commands.values() if isinstance(command, click.Group) else []
    return [path] + [p for sub in below for p in _command_paths(sub, (*path, sub.name or ""))]


def test_help_shows_no_secret(secret_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every command's --help, with every secret set in the environment, shows none of them."""
    monkeypatch.setenv("LOADER_SNOWFLAKE__PRIVATE_KEY", LOGIN_KEY_PEM)
    for name in ("LOADER_SNOWFLAKE__PRIVATE_KEY_PASSPHRASE", "LOADER_SNOWFLAKE__TOKEN"):
        monkeypatch.setenv(name, LOGIN_SENTINELS[name])
    paths = _command_paths(cli)
    assert len(paths) > 10
    for path in paths:
        result = CliRunner().invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert_no_secret(result.output)


def test_s3_and_sqs_errors_hide_the_keys(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    """S3 and SQS unreachable: the translated errors and the log output hold no key."""
    configure_logging("DEBUG", "json")
    s3 = aws_client("s3", settings.aws, max_attempts=1)
    sqs = aws_client("sqs", settings.aws, max_attempts=1)
    with pytest.raises(StorageError) as s3_error, storage_errors("list s3://bucket/prefix"):
        s3.list_objects_v2(Bucket="bucket", Prefix="prefix")
    with pytest.raises(StorageError) as sqs_error, storage_errors("receive from the notifications queue"):
        sqs.receive_message(QueueUrl=f"{settings.aws.endpoint_url}/123456789012/q", WaitTimeSeconds=0)
    assert "list s3://bucket/prefix failed" in str(s3_error.value)
    assert_no_secret(_everything(s3_error.value), _everything(sqs_error.value), capsys.readouterr().err)


def test_kafka_sasl_failure_hides_the_password(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """Kafka (SASL) unreachable: the lag query's error and the log output hold no password."""
    configure_logging("DEBUG", "json")
    with pytest.raises(LoaderError) as caught:
        asyncio.run(consumer_lag(make_spec("secret_test", bucket="b-secret"), settings.kafka))
    assert_no_secret(_everything(caught.value), capsys.readouterr().err)


def test_cli_error_path_shows_no_secret(secret_env: None) -> None:
    """``loader pipes plan`` against an unreachable warehouse: one message, no secret, exit 1."""
    result = CliRunner().invoke(
        cli, ["--log-level", "DEBUG", "--log-format", "json", "pipes", "plan", "--specs", str(PIPELINES)]
    )
    assert result.exit_code == 1
    assert "error: cannot connect to Snowflake" in result.output
    assert_no_secret(result.output, _everything(result.exception) if result.exception else "")


def test_cli_bad_config_file_shows_no_secret(
    secret_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A config file broken on its password line: exit 2 with the line number, not the line."""
    monkeypatch.delenv("LOADER_SNOWFLAKE__PASSWORD")
    config = tmp_path / "loader.yaml"
    config.write_text(f'snowflake:\n  password: "{SENTINELS["LOADER_SNOWFLAKE__PASSWORD"]}\n')
    monkeypatch.setenv(CONFIG_FILE_ENV, str(config))
    result = CliRunner().invoke(cli, ["status", "--specs", str(PIPELINES)])
    assert result.exit_code == 2
    assert "loader.yaml" in result.output
    assert_no_secret(result.output)


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_log_output_masks_secret_fields_and_traceback_locals(
    settings: Settings, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    """Secret-named fields are masked, settings print masked, and tracebacks show no locals."""
    configure_logging("DEBUG", fmt)
    log = structlog.get_logger("test")
    log.info("settings_loaded", settings=settings, kafka=settings.kafka)
    log.info(
        "connecting",
        password=SENTINELS["LOADER_SNOWFLAKE__PASSWORD"],
        sasl_password=SENTINELS["LOADER_KAFKA__SASL_PASSWORD"],
        secret_access_key=SENTINELS["LOADER_AWS__SECRET_ACCESS_KEY"],
        aws_access_key_id=SENTINELS["LOADER_AWS__ACCESS_KEY_ID"],
        private_key=LOGIN_KEY_PEM,
        private_key_passphrase=LOGIN_PASSPHRASE,
        token=LOGIN_SENTINELS["LOADER_SNOWFLAKE__TOKEN"],
        key="events/orders/data/p0000.parquet",
    )

    def connect(password: str) -> None:
        raise ConnectionError("refused")

    for logger in (log, logging.getLogger("aiokafka")):
        try:
            connect(SENTINELS["LOADER_KAFKA__SASL_PASSWORD"])
        except ConnectionError:
            logger.exception("connect_failed")
    err = capsys.readouterr().err
    assert "settings_loaded" in err
    assert "events/orders/data/p0000.parquet" in err  # a file key is not a secret
    assert err.count("ConnectionError: refused") == 2
    assert MASK in err
    assert_no_secret(err)


def test_kafka_tls_key_password_is_never_shown(
    secret_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The TLS key's passphrase is masked in the settings and absent from errors and DEBUG logs,
    whether Kafka is unreachable or the key refuses a wrong passphrase."""
    passphrase = "kafka-tls-key-sentinel-5d0c2e"
    tls = make_tls_files(tmp_path, key_password=passphrase)
    for name, value in {
        "SECURITY_PROTOCOL": "SASL_SSL",
        "SSL_CAFILE": str(tls.ca),
        "SSL_CERTFILE": str(tls.client_cert),
        "SSL_KEYFILE": str(tls.client_key),
        "SSL_KEY_PASSWORD": passphrase,
    }.items():
        monkeypatch.setenv(f"LOADER_KAFKA__{name}", value)
    configure_logging("DEBUG", "json")
    settings = load_settings(use_dev_stack=False)
    spec = make_spec("secret_test", bucket="b-secret")
    with pytest.raises(LoaderError) as unreachable:  # the key loads; the broker is a closed port
        asyncio.run(consumer_lag(spec, settings.kafka))
    assert not isinstance(unreachable.value, ConfigError)
    monkeypatch.setenv("LOADER_KAFKA__SSL_KEY_PASSWORD", f"{passphrase}-wrong")
    with pytest.raises(ConfigError, match="cannot load the Kafka TLS files") as refused:
        asyncio.run(consumer_lag(spec, load_settings(use_dev_stack=False).kafka))
    for text in (
        repr(settings),
        settings.model_dump_json(),
        _everything(unreachable.value),
        _everything(refused.value),
        capsys.readouterr().err,
    ):
        assert passphrase not in text


def test_schema_registry_password_is_never_shown(
    secret_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The registry password (and its Basic token) is masked in the settings and absent from the
    client's repr, its errors (registry down, login refused) and DEBUG logs."""
    password = "registry-sentinel-5d0c2e"
    token = base64.b64encode(f"loader:{password}".encode()).decode()

    class Refusing(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            return

        def do_GET(self) -> None:
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = HTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("LOADER_SCHEMA_REGISTRY__USERNAME", "loader")
    monkeypatch.setenv("LOADER_SCHEMA_REGISTRY__PASSWORD", password)
    configure_logging("DEBUG", "json")
    texts: list[str] = []
    try:
        for port, error in ((_closed_port(), RegistryError), (server.server_address[1], ConfigError)):
            monkeypatch.setenv("LOADER_SCHEMA_REGISTRY__URL", f"http://127.0.0.1:{port}")
            settings = load_settings(use_dev_stack=False)
            with (
                RegistryClient.from_settings(settings.schema_registry) as client,
                pytest.raises(error) as caught,
            ):
                client.writer_schema(1)
            texts += [repr(settings), settings.model_dump_json(), repr(client), _everything(caught.value)]
    finally:
        server.shutdown()
        server.server_close()
    texts.append(capsys.readouterr().err)
    for text in texts:
        assert password not in text
        assert token not in text


GATEWAY_KEY = "gateway-key-sentinel-5d0c2e-0123456789"
WRONG_GATEWAY_KEY = "gateway-wrong-key-sentinel-5d0c2e"


def test_gateway_api_keys_never_appear_in_logs_answers_or_settings(
    secret_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A gateway API key, right or wrong, is in no log line, answer, error or settings output:
    posting with it (accepted, refused, forbidden, bad bodies), a key pasted where its hash
    belongs (env and keys file), and the settings' repr and dumps."""
    from loader.gateway.auth import KeyRing  # noqa: PLC0415 - the gateway's tests only
    from tests.unit.gateway_fakes import gateway  # noqa: PLC0415 - see above

    configure_logging("DEBUG", "json")
    entry = {
        "name": "web",
        "sha256": hashlib.sha256(GATEWAY_KEY.encode()).hexdigest(),
        "events": ["order_created"],
    }
    monkeypatch.setenv("LOADER_GATEWAY__API_KEYS", json.dumps([entry]))
    settings = load_settings(use_dev_stack=False)
    texts = [repr(settings), str(settings.model_dump()), settings.model_dump_json(), repr(settings.gateway)]
    event = {"event_id": "e", "created_at": "2026-11-27T08:00:00Z", "payload": {"x": 1}}
    with gateway() as (client, _):
        for key in (GATEWAY_KEY, WRONG_GATEWAY_KEY):
            for headers in ({"Authorization": f"Bearer {key}"}, {"X-API-Key": key}):
                for path in ("/v1/events/order_created", "/v1/events/store_updated", "/v1/events/nope"):
                    answers = [
                        client.post(path, json=[event], headers=headers),
                        client.post(path, content=b"[{", headers=headers),
                    ]
                    texts += [f"{a.status_code} {a.headers} {a.text}" for a in answers]
                proxy = client.post(
                    "/topics/orders.order_created",
                    json={"records": [{"value": event}]},
                    headers={**headers, "Content-Type": "application/vnd.kafka.json.v2+json"},
                )
                texts.append(f"{proxy.headers} {proxy.text}")
    # The key itself pasted where its hash belongs: refused without being echoed.
    pasted = json.dumps([{**entry, "sha256": GATEWAY_KEY}])
    monkeypatch.setenv("LOADER_GATEWAY__API_KEYS", pasted)
    with pytest.raises(ConfigError) as from_env:
        load_settings(use_dev_stack=False)
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(pasted)
    monkeypatch.setenv("LOADER_GATEWAY__API_KEYS", "[]")
    monkeypatch.setenv("LOADER_GATEWAY__API_KEYS_FILE", str(keys_file))
    with pytest.raises(ConfigError) as from_file:
        KeyRing.from_settings(load_settings(use_dev_stack=False).gateway)
    result = CliRunner().invoke(cli, ["gateway", "--specs", str(PIPELINES)])
    assert result.exit_code == 2 and "api_keys_file" in result.output
    texts += [
        _everything(from_env.value),
        _everything(from_file.value),
        result.output,
        capsys.readouterr().err,
    ]
    for text in texts:
        assert GATEWAY_KEY not in text
        assert WRONG_GATEWAY_KEY not in text
