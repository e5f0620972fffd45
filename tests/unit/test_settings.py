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


def test_aliases_in_the_config_file_are_refused(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A settings file made of YAML aliases is refused by line and column, quickly and briefly."""
    config = isolated / "loader.yaml"
    config.write_text(
        "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nkafka: *b\n"
    )
    monkeypatch.setenv("LOADER_CONFIG", str(config))
    with pytest.raises(ConfigError, match=r"line 2, column 8: YAML aliases \(\*name\) are not allowed"):
        load_settings()


def test_settings_errors_stay_short_and_quote_no_value(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thousand bad keys and a huge one give a short message, without the values (maybe secrets)."""
    config = isolated / "loader.json"
    keys = {f"k{i}": "hunter2" for i in range(1000)} | {"x" * 100_000: "hunter2"}
    config.write_text(json.dumps({"snowflake": keys}))
    monkeypatch.setenv("LOADER_CONFIG", str(config))
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "snowflake.k0: Extra inputs are not permitted" in message and "… and 981 more" in message
    assert "hunter2" not in message
    assert len(message) < 3000


def test_a_bad_json_environment_value_is_a_config_error(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mapping setting in the environment that is not JSON is a message saying so, not a traceback."""
    monkeypatch.setenv("LOADER_KAFKA__CLUSTERS", "{not json")
    with pytest.raises(ConfigError, match=r"invalid settings: .*\"kafka\".* must be JSON"):
        load_settings()
