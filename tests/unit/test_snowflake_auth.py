"""Snowflake login settings: a key pair (file or PEM text, maybe encrypted), an OAuth token or a
password; exactly one, and a key that cannot be used is a clear error that quotes no secret."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from loader.config.settings import SnowflakeSettings, load_settings
from loader.errors import ConfigError

pytestmark = pytest.mark.unit

PASSPHRASE = "passphrase-5d0c2e-correct"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PLAIN_PEM = KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()
ENCRYPTED_PEM = KEY.private_bytes(
    serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8,
    serialization.BestAvailableEncryption(PASSPHRASE.encode()),
).decode()
PUBLIC_PEM = (
    KEY.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)
ACCOUNT = {"account": "myorg-myaccount", "user": "LOADER"}


def _key_body_lines(pem: str) -> list[str]:
    """The base64 lines of a PEM block: any one of them in a message would leak key material."""
    return [line for line in pem.splitlines() if line and not line.startswith("-----")]


def assert_quotes_no_secret(text: str) -> None:
    assert PASSPHRASE not in text
    for line in _key_body_lines(PLAIN_PEM) + _key_body_lines(ENCRYPTED_PEM):
        assert line not in text, "key material leaked"


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No LOADER_ setting from the environment; an empty state dir (no dev stack)."""
    for name in list(os.environ):
        if name.startswith("LOADER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("LOADER_STATE_DIR", str(tmp_path / "state"))
    return tmp_path


def _same_key(kwargs: dict[str, object]) -> bool:
    key = kwargs["private_key"]
    assert isinstance(key, rsa.RSAPrivateKey)
    return key.private_numbers() == KEY.private_numbers()


# --- each login method --------------------------------------------------------------------


def test_password_login_passes_the_password(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A password alone still works: the connector gets it and the default authenticator."""
    monkeypatch.setenv("LOADER_SNOWFLAKE__PASSWORD", "hunter2")
    settings = load_settings(snowflake=ACCOUNT).snowflake
    kwargs = settings.connect_kwargs()
    assert settings.login_method == "password"
    assert kwargs["password"] == "hunter2"
    assert "authenticator" not in kwargs and "private_key" not in kwargs


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_key_file_login_hands_the_decrypted_key_to_the_connector(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, encrypted: bool
) -> None:
    """A key file (encrypted or not) becomes the connector's key-pair (JWT) login, without a password."""
    path = isolated / "rsa_key.p8"
    path.write_text(ENCRYPTED_PEM if encrypted else PLAIN_PEM)
    monkeypatch.setenv("LOADER_SNOWFLAKE__PRIVATE_KEY_FILE", str(path))
    if encrypted:
        monkeypatch.setenv("LOADER_SNOWFLAKE__PRIVATE_KEY_PASSPHRASE", PASSPHRASE)
    settings = load_settings(snowflake=ACCOUNT).snowflake
    kwargs = settings.connect_kwargs()
    assert settings.login_method == "key pair"
    assert kwargs["authenticator"] == "SNOWFLAKE_JWT"
    assert _same_key(kwargs)
    assert "password" not in kwargs and "private_key_passphrase" not in kwargs


@pytest.mark.parametrize(
    ("pem", "passphrase"),
    [
        (PLAIN_PEM, None),
        (ENCRYPTED_PEM, PASSPHRASE),
        (PLAIN_PEM.replace("\n", "\\n"), None),
        (f"\n  {PLAIN_PEM}\n\n", None),
    ],
    ids=["plain", "encrypted", "newlines-escaped", "surrounding-whitespace"],
)
def test_key_text_from_the_environment_logs_in_with_the_key(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, pem: str, passphrase: str | None
) -> None:
    """PEM text in LOADER_SNOWFLAKE__PRIVATE_KEY (as a Secret provides it) is the key-pair login."""
    monkeypatch.setenv("LOADER_SNOWFLAKE__PRIVATE_KEY", pem)
    if passphrase:
        monkeypatch.setenv("LOADER_SNOWFLAKE__PRIVATE_KEY_PASSPHRASE", passphrase)
    kwargs = load_settings(snowflake=ACCOUNT).snowflake.connect_kwargs()
    assert kwargs["authenticator"] == "SNOWFLAKE_JWT"
    assert _same_key(kwargs)


def test_ec_key_is_accepted_like_the_connector_does(isolated: Path) -> None:
    """An EC private key is handed over too: the connector signs its JWT with RSA or ECDSA keys."""
    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        .decode()
    )
    kwargs = SnowflakeSettings(**ACCOUNT, private_key=pem).connect_kwargs()
    assert isinstance(kwargs["private_key"], ec.EllipticCurvePrivateKey)


def test_token_login_uses_the_oauth_authenticator(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An OAuth token is passed with authenticator=oauth, and nothing else logs in."""
    monkeypatch.setenv("LOADER_SNOWFLAKE__TOKEN", "oauth-access-token")
    settings = load_settings(snowflake=ACCOUNT).snowflake
    kwargs = settings.connect_kwargs()
    assert settings.login_method == "oauth"
    assert (kwargs["authenticator"], kwargs["token"]) == ("oauth", "oauth-access-token")
    assert "password" not in kwargs and "private_key" not in kwargs


def test_a_rotated_key_file_is_read_at_the_next_connect(isolated: Path) -> None:
    """The key file is read at each connect: a Secret's rotated key is used without a restart."""
    path = isolated / "rsa_key.p8"
    path.write_text(PLAIN_PEM)
    settings = SnowflakeSettings(**ACCOUNT, private_key_file=path)
    assert _same_key(settings.connect_kwargs())
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(
        other.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key = settings.connect_kwargs()["private_key"]
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.private_numbers() == other.private_numbers()


# --- exactly one login --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PASSWORD": "hunter2", "PRIVATE_KEY": PLAIN_PEM}, "password, private_key"),
        ({"PASSWORD": "hunter2", "TOKEN": "t"}, "password, token"),
        ({"PRIVATE_KEY_FILE": "/keys/rsa_key.p8", "PRIVATE_KEY": PLAIN_PEM}, "private_key_file, private_key"),
        ({"PRIVATE_KEY": PLAIN_PEM, "TOKEN": "t"}, "private_key, token"),
    ],
    ids=["password-and-key", "password-and-token", "key-file-and-key-text", "key-and-token"],
)
def test_two_logins_are_refused_naming_the_settings_to_use(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    """Two login methods at once are refused when the settings load, naming both and the choices."""
    for name, value in env.items():
        monkeypatch.setenv(f"LOADER_SNOWFLAKE__{name}", value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert f"snowflake: 2 Snowflake logins are set ({named}): set exactly one of" in message
    for setting in ("PRIVATE_KEY_FILE", "PRIVATE_KEY", "PRIVATE_KEY_PASSPHRASE", "TOKEN", "PASSWORD"):
        assert f"LOADER_SNOWFLAKE__{setting}" in message
    assert "hunter2" not in message
    assert_quotes_no_secret(message)


def test_a_higher_source_login_replaces_a_lower_one(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A key in the environment replaces the password a dev stack recorded; a token in the config
    file replaces it too: a login is one setting, taken whole from the highest source."""
    state = isolated / "state"
    state.mkdir()
    recorded = {"settings": {"snowflake": {**ACCOUNT, "password": "dev-stack-password"}}}
    (state / "dev-stack.json").write_text(json.dumps(recorded))
    assert load_settings().snowflake.login_method == "password"

    config = isolated / "loader.yaml"
    config.write_text("snowflake:\n  token: oauth-token\n")
    monkeypatch.setenv("LOADER_CONFIG", str(config))
    from_file = load_settings().snowflake
    assert (from_file.login_method, from_file.password) == ("oauth", None)

    monkeypatch.setenv("LOADER_SNOWFLAKE__PRIVATE_KEY", PLAIN_PEM)
    from_env = load_settings().snowflake
    assert (from_env.login_method, from_env.password, from_env.token) == ("key pair", None, None)
    assert from_env.account == ACCOUNT["account"]


def test_no_login_is_refused_at_connect_naming_the_settings(isolated: Path) -> None:
    """Without a login the settings load (a worker needs none), and connecting says what to set."""
    settings = load_settings(snowflake=ACCOUNT).snowflake
    assert settings.login_method is None
    with pytest.raises(ConfigError, match=r"no Snowflake login configured: set exactly one of") as caught:
        settings.connect_kwargs()
    for setting in ("PRIVATE_KEY_FILE", "PRIVATE_KEY", "PRIVATE_KEY_PASSPHRASE", "TOKEN", "PASSWORD"):
        assert f"LOADER_SNOWFLAKE__{setting}" in str(caught.value)


def test_empty_values_count_as_unset(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Empty login settings (a chart's `value: ""`) are no login: the key alone is chosen."""
    for name in ("PASSWORD", "TOKEN", "PRIVATE_KEY_FILE"):
        monkeypatch.setenv(f"LOADER_SNOWFLAKE__{name}", "")
    monkeypatch.setenv("LOADER_SNOWFLAKE__PRIVATE_KEY", PLAIN_PEM)
    settings = load_settings(snowflake=ACCOUNT).snowflake
    assert (settings.password, settings.token, settings.private_key_file) == (None, None, None)
    assert settings.login_method == "key pair"


def test_passphrase_without_a_key_is_refused(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A passphrase beside a password (no key) is refused: it would go unused."""
    monkeypatch.setenv("LOADER_SNOWFLAKE__PASSWORD", "hunter2")
    monkeypatch.setenv("LOADER_SNOWFLAKE__PRIVATE_KEY_PASSPHRASE", PASSPHRASE)
    with pytest.raises(ConfigError, match=r"private_key_passphrase is set without a private key") as caught:
        load_settings()
    assert_quotes_no_secret(str(caught.value))


def test_authenticator_is_not_a_setting(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The login method follows from the secret given: a separate authenticator setting is refused."""
    monkeypatch.setenv("LOADER_SNOWFLAKE__AUTHENTICATOR", "oauth")
    with pytest.raises(ConfigError, match=r"snowflake\.authenticator: Extra inputs are not permitted"):
        load_settings()


# --- keys that cannot be used -------------------------------------------------------------


def _pkcs1_encrypted() -> str:
    return KEY.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.BestAvailableEncryption(PASSPHRASE.encode()),
    ).decode()


def _damaged(pem: str) -> str:
    lines = pem.splitlines()
    lines[5] = lines[5][::-1]  # base64 still, but the DER inside no longer parses
    return "\n".join(lines)


def _ed25519() -> str:
    return (
        ed25519.Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        .decode()
    )


@pytest.mark.parametrize(
    ("pem", "passphrase", "expected"),
    [
        (ENCRYPTED_PEM, "passphrase-5d0c2e-wrong", r"cannot decrypt .*: the passphrase .* is wrong"),
        (_pkcs1_encrypted(), "passphrase-5d0c2e-wrong", r"cannot decrypt .*: the passphrase .* is wrong"),
        (ENCRYPTED_PEM, None, r"is encrypted: set LOADER_SNOWFLAKE__PRIVATE_KEY_PASSPHRASE"),
        (PLAIN_PEM, PASSPHRASE, r"is not encrypted, but LOADER_SNOWFLAKE__PRIVATE_KEY_PASSPHRASE is set"),
        ("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", None, r"is not a PEM private key: expected a '-----BEGIN"),
        ("ssh-rsa AAAAB3NzaC1yc2E loader@host", None, r"is not a PEM private key"),
        (PUBLIC_PEM, None, r"holds a public key: the loader needs the private key"),
        (_damaged(PLAIN_PEM), None, r"is damaged: its PEM block does not decode to a private key"),
        (_damaged(ENCRYPTED_PEM), PASSPHRASE, r"cannot decrypt .*or the key is damaged"),
        (_ed25519(), None, r"is a Ed25519PrivateKey: Snowflake key-pair login needs an RSA key"),
    ],
    ids=[
        "wrong-passphrase",
        "wrong-passphrase-pkcs1",
        "encrypted-without-passphrase",
        "passphrase-for-plain-key",
        "bare-base64",
        "ssh-public-key",
        "public-key",
        "damaged-pem",
        "damaged-encrypted-pem",
        "ed25519",
    ],
)
@pytest.mark.parametrize("source", ["text", "file"])
def test_unusable_key_is_a_clear_error_quoting_no_secret(
    isolated: Path, pem: str, passphrase: str | None, expected: str, source: str
) -> None:
    """An unusable key says why and names its setting; no key material or passphrase, not even chained."""
    path = isolated / "rsa_key.p8"
    path.write_text(pem)
    location = {"private_key": pem} if source == "text" else {"private_key_file": path}
    settings = SnowflakeSettings(**ACCOUNT, **location, private_key_passphrase=passphrase)
    with pytest.raises(ConfigError, match=expected) as caught:
        settings.connect_kwargs()
    message = str(caught.value)
    setting = (
        "LOADER_SNOWFLAKE__PRIVATE_KEY)"
        if source == "text"
        else f"{path} (LOADER_SNOWFLAKE__PRIVATE_KEY_FILE)"
    )
    assert setting in message
    # No chained cryptography error either: a traceback would print it.
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None or caught.value.__suppress_context__
    assert_quotes_no_secret(message)
    assert passphrase is None or passphrase not in message


def test_missing_key_file_names_the_file_and_the_reason(isolated: Path) -> None:
    """A key file that cannot be read names the file and the OS's reason."""
    settings = SnowflakeSettings(**ACCOUNT, private_key_file=isolated / "absent.p8")
    with pytest.raises(
        ConfigError, match=r"cannot read the Snowflake private key file .*absent\.p8 .*: No such file"
    ):
        settings.connect_kwargs()
