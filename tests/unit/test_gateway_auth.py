"""API keys: hashes only, constant-time matching, per-event grants, and the new-key command."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from loader.cli import cli
from loader.config.settings import GatewayApiKey, GatewaySettings
from loader.errors import ConfigError
from loader.gateway.auth import KeyRing

pytestmark = pytest.mark.unit

KEY = "a-long-random-key-for-the-tests-0123456789"
ENTRY = GatewayApiKey(name="web", sha256=hashlib.sha256(KEY.encode()).hexdigest(), events=["order_created"])


def test_a_key_is_found_by_its_hash_with_its_grants() -> None:
    """Bearer and X-API-Key find the key's holder; its grants say which events it may post."""
    ring = KeyRing([ENTRY])
    for headers in ({"authorization": f"Bearer {KEY}"}, {"x-api-key": KEY}):
        caller = ring.caller(headers)
        assert caller is not None and caller.name == "web"
        assert caller.may_post("order_created") and not caller.may_post("store_updated")
    assert ring.caller({"authorization": f"Bearer {KEY}x"}) is None
    assert ring.caller({}) is None


def test_anonymous_needs_allow_anonymous_and_a_wrong_key_is_refused_anyway() -> None:
    """With allow_anonymous, no key is an anonymous caller allowed everything; a wrong key is
    still refused."""
    ring = KeyRing([ENTRY], allow_anonymous=True)
    anonymous = ring.caller({})
    assert anonymous is not None and anonymous.name is None and anonymous.may_post("x")
    assert ring.caller({"x-api-key": "wrong"}) is None


def test_no_keys_and_no_anonymous_refuses_to_start() -> None:
    """Without keys the gateway does not start, and the message says how to fix it."""
    with pytest.raises(ConfigError, match="new-key"):
        KeyRing.from_settings(GatewaySettings())


def test_keys_are_read_from_the_keys_file(tmp_path: Path) -> None:
    """api_keys_file (YAML or JSON list) adds keys; a bad file is a ConfigError naming it."""
    path = tmp_path / "keys.yaml"
    path.write_text(json.dumps([ENTRY.model_dump()]))
    ring = KeyRing.from_settings(GatewaySettings(api_keys_file=path))
    assert ring.caller({"x-api-key": KEY}) is not None
    path.write_text("- name: web\n  sha256: nothex\n  events: [a]\n")
    with pytest.raises(ConfigError, match=str(path)):
        KeyRing.from_settings(GatewaySettings(api_keys_file=path))


def test_new_key_prints_a_key_and_the_entry_with_its_hash() -> None:
    """`loader gateway new-key` prints a fresh key and an entry whose hash is that key's."""
    result = CliRunner().invoke(
        cli, ["gateway", "new-key", "mobile", "--events", "order_created,store_updated"]
    )
    assert result.exit_code == 0, result.output
    key_line, _, entry_line = result.output.strip().splitlines()
    key = key_line.rsplit(" ", 1)[1]
    entry = json.loads(entry_line)
    assert entry == {
        "name": "mobile",
        "sha256": hashlib.sha256(key.encode()).hexdigest(),
        "events": ["order_created", "store_updated"],
    }
    assert KeyRing([GatewayApiKey(**entry)]).caller({"x-api-key": key}) is not None


def test_new_key_shell_lines_set_the_key_and_its_entry() -> None:
    """`new-key --shell` prints lines bash evaluates into KEY and LOADER_GATEWAY__API_KEYS, whose
    one entry holds the hash of that key."""
    result = CliRunner().invoke(cli, ["gateway", "new-key", "web", "--events", "*", "--shell"])
    assert result.exit_code == 0, result.output
    shell = subprocess.run(
        ["bash", "-c", f'{result.output}\nprintf "%s\\n%s" "$KEY" "$LOADER_GATEWAY__API_KEYS"'],
        capture_output=True,
        text=True,
        check=True,
    )
    key, keys = shell.stdout.split("\n", 1)
    [entry] = json.loads(keys)
    assert entry == {"name": "web", "sha256": hashlib.sha256(key.encode()).hexdigest(), "events": ["*"]}
    assert (
        KeyRing.from_settings(GatewaySettings(api_keys=[GatewayApiKey(**entry)])).caller(
            {"authorization": f"Bearer {key}"}
        )
        is not None
    )
