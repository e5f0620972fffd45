"""Settings: env beats the config file beats the dev stack; secrets never print."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loader.config.settings import dev_state_path, load_settings
from loader.errors import ConfigError

pytestmark = pytest.mark.unit


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LOADER_STATE_DIR", str(tmp_path / "state"))
    for name in ("LOADER_CONFIG", "LOADER_KAFKA__BOOTSTRAP_SERVERS", "LOADER_SNOWFLAKE__PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_precedence_env_then_file_then_dev_stack(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each source fills what the higher ones leave unset."""
    state = dev_state_path()
    state.parent.mkdir(parents=True)
    state.write_text(
        json.dumps(
            {
                "settings": {
                    "kafka": {"bootstrap_servers": "dev:1"},
                    "aws": {"endpoint_url": "http://dev:2"},
                    "snowflake": {"account": "dev", "user": "dev"},
                }
            }
        )
    )
    config = isolated / "loader.yaml"
    config.write_text("aws:\n  endpoint_url: http://file:3\nsnowflake:\n  account: file-account\n")
    monkeypatch.setenv("LOADER_CONFIG", str(config))
    monkeypatch.setenv("LOADER_SNOWFLAKE__ACCOUNT", "env-account")
    settings = load_settings()
    assert settings.kafka.bootstrap_servers == "dev:1"
    assert settings.aws.endpoint_url == "http://file:3"
    assert settings.snowflake.account == "env-account"
    assert settings.snowflake.user == "dev"
    assert load_settings(use_dev_stack=False).kafka.bootstrap_servers is None


def test_secrets_do_not_print(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A password set in the environment never shows in repr or str."""
    monkeypatch.setenv("LOADER_SNOWFLAKE__PASSWORD", "hunter2-very-secret")
    settings = load_settings()
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.snowflake)
    assert settings.snowflake.password is not None
    assert settings.snowflake.password.get_secret_value() == "hunter2-very-secret"


def test_missing_kafka_says_how_to_configure(isolated: Path) -> None:
    """Without a Kafka the error names the variable and the dev command."""
    with pytest.raises(ConfigError, match=r"LOADER_KAFKA__BOOTSTRAP_SERVERS.*loader dev up"):
        load_settings().kafka.bootstrap_for("default")


def test_bad_setting_is_a_config_error(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A malformed value is reported with its field, not a traceback."""
    monkeypatch.setenv("LOADER_SNOWFLAKE__PORT", "not-a-port")
    with pytest.raises(ConfigError, match=r"snowflake\.port"):
        load_settings()
