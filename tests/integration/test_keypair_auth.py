"""Key-pair login end to end: the pipeline runs on fakesnow with a private key and no password.

fakesnow's server takes the connector's key-pair (JWT) login. The key is made
here, handed over as Snowflake users get it (a file, encrypted with a
passphrase, or the PEM text in an environment variable), and no password is
set anywhere: the worker process, ``loader pipes apply``, the SQS loader and
the dev stack all run on the key.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import snowflake.connector
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from snowflake.connector.auth import AuthByKeyPair

from loader.cli import cli
from loader.config.settings import Settings, SnowflakeSettings
from loader.devstack import DevStack
from loader.devstack.process import free_port
from loader.notify.provision import ensure_queue
from loader.warehouse.connection import Warehouse
from loader.warehouse.objects import EventObjects
from loader.warehouse.sqs_loader import SqsLoader
from tests.integration.helpers import produce, sample_values, spec_on_disk
from tests.integration.loading import run_loader_until
from tests.integration.workers import WorkerProcess, cli_env, run_worker_process_until_caught_up

pytestmark = pytest.mark.integration

EVENTS = 600
PASSPHRASE = "key-pair-test-passphrase"


def _private_key_pem(passphrase: str | None) -> str:
    """A new 2048-bit RSA key as PKCS#8 PEM, encrypted when a passphrase is given."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    encryption = (
        serialization.BestAvailableEncryption(passphrase.encode())
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    ).decode()


def _key_login(how: str, tmp_path: Path) -> dict[str, str]:
    """The LOADER_SNOWFLAKE__ settings of a key-pair login: an encrypted key file, or the PEM text."""
    if how == "encrypted-file":
        key_file = tmp_path / "rsa_key.p8"
        key_file.write_text(_private_key_pem(PASSPHRASE))
        key_file.chmod(0o600)
        return {"PRIVATE_KEY_FILE": str(key_file), "PRIVATE_KEY_PASSPHRASE": PASSPHRASE}
    return {"PRIVATE_KEY": _private_key_pem(None)}


def _with_login(settings: Settings, login: dict[str, str]) -> Settings:
    """``settings`` whose Snowflake login is ``login`` instead of the session's password."""
    snowflake = settings.snowflake.model_dump(exclude={"password"}) | {k.lower(): v for k, v in login.items()}
    return settings.model_copy(update={"snowflake": SnowflakeSettings.model_validate(snowflake)})


@pytest.mark.parametrize("how", ["encrypted-file", "pem-in-env"])
def test_events_load_with_a_key_pair_and_no_password(
    dev_stack: DevStack, tmp_path: Path, unique_name: Callable[..., str], how: str
) -> None:
    """With only a private key (no password), pipes apply, a worker process and the SQS loader
    load every event: the table holds exactly the events produced."""
    login = _key_login(how, tmp_path)
    settings = _with_login(dev_stack.settings, login)
    assert settings.snowflake.password is None and settings.snowflake.login_method == "key pair"

    name = unique_name("keypair", sep="_")
    specs_dir = tmp_path / "specs"
    spec, _store = spec_on_disk(settings, specs_dir, name, bucket="it-keypair", partitions=2)
    queue_url = ensure_queue(settings, unique_name("keypair"))
    env = cli_env(settings, LOADER_AWS__NOTIFICATIONS_QUEUE_URL=queue_url) | {
        f"LOADER_SNOWFLAKE__{k}": v for k, v in login.items()
    }
    assert env["LOADER_SNOWFLAKE__PASSWORD"] == ""  # cli_env's way of saying "none"

    applied = CliRunner().invoke(cli, ["pipes", "apply", name, "--specs", str(specs_dir)], env=env)
    assert applied.exit_code == 0, applied.output

    events = sample_values(spec, EVENTS)
    assert produce(settings, spec, events) == EVENTS
    worker = WorkerProcess(name, specs_dir, env, tmp_path / "worker.log", free_port())
    run_worker_process_until_caught_up(settings, spec, worker, 120, what="the worker to commit every event")

    run_loader_until(
        SqsLoader(settings, [spec], queue_url=queue_url, wait_time_s=1, visibility_timeout_s=10),
        lambda loader: loader.stats.rows_loaded >= EVENTS,
        90,
        what=f"{EVENTS} rows loaded",
        join_timeout_s=30,
    )

    table = EventObjects.for_spec(spec, settings.snowflake).table
    with Warehouse(settings.snowflake) as warehouse:
        rows = warehouse.execute(f'SELECT "_EVENT_ID", "_PARTITION", "_OFFSET" FROM {table}')
    assert len({(partition, offset) for _, partition, offset in rows}) == len(rows) == EVENTS
    assert sorted(event_id for event_id, _, _ in rows) == sorted(json.loads(v)["event_id"] for _, v in events)


def test_the_connector_logs_in_with_the_key_pair(dev_stack: DevStack, tmp_path: Path) -> None:
    """The settings' connect arguments make the connector log in with a key-pair JWT, not a password."""
    settings = _with_login(dev_stack.settings, _key_login("encrypted-file", tmp_path))
    kwargs = settings.snowflake.connect_kwargs()
    assert "password" not in kwargs
    conn = snowflake.connector.connect(**kwargs)
    try:
        assert isinstance(conn.auth_class, AuthByKeyPair)
        assert conn.cursor().execute("SELECT 1").fetchall() == [(1,)]  # type: ignore[union-attr]
    finally:
        conn.close()


def test_dev_stack_keeps_a_configured_key_pair(
    dev_stack: DevStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key configured before `loader dev up` is the login to its fakesnow: no password is added."""
    base = dev_stack.settings
    assert base.kafka.bootstrap_servers is not None and base.aws.endpoint_url is not None
    monkeypatch.setenv("LOADER_KAFKA__BOOTSTRAP_SERVERS", base.kafka.bootstrap_servers)
    monkeypatch.setenv("LOADER_AWS__ENDPOINT_URL", base.aws.endpoint_url)
    if base.schema_registry.url:
        monkeypatch.setenv("LOADER_SCHEMA_REGISTRY__URL", base.schema_registry.url)
    monkeypatch.setenv("LOADER_SNOWFLAKE__PRIVATE_KEY", _private_key_pem(None))
    with DevStack.start(work_dir=tmp_path / "devstack") as stack:
        assert [s.name for s in stack.services] == ["fakesnow"]
        settings = stack.settings.snowflake
        assert settings.login_method == "key pair" and settings.password is None
        with Warehouse(settings) as warehouse:
            assert warehouse.execute("SELECT 1") == [(1,)]
