"""Snowflake login: the methods the settings offer, and the private key of a key-pair login.

A key pair is the recommended login (Snowflake is phasing out passwords for
service users); an OAuth token and a password also work; exactly one is set.
The private key is PEM (PKCS#8, optionally encrypted with a passphrase), read
from a file or given as the PEM text itself (an environment variable filled
from a Kubernetes Secret). It is decrypted here, with ``cryptography``, and the
connector gets the key object: the passphrase never leaves this module, and a
key that cannot be used is a :class:`~loader.errors.ConfigError` that names
the setting, never quoting the key or the passphrase.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from pydantic import SecretStr

from loader.errors import ConfigError, clip

__all__ = ["LOGIN_SETTINGS", "PrivateKey", "read_private_key"]

LOGIN_SETTINGS = (
    "set exactly one of LOADER_SNOWFLAKE__PRIVATE_KEY_FILE or LOADER_SNOWFLAKE__PRIVATE_KEY "
    "(key pair, recommended; plus LOADER_SNOWFLAKE__PRIVATE_KEY_PASSPHRASE if the key is encrypted), "
    "LOADER_SNOWFLAKE__TOKEN (OAuth) or LOADER_SNOWFLAKE__PASSWORD"
)
"""What to do about a missing or ambiguous login, for error messages."""

PrivateKey = RSAPrivateKey | EllipticCurvePrivateKey
"""The key types the connector signs its login token (JWT) with."""

_SETUP = "see deploy/snowflake-role.sql for how to make one"
_ENCRYPTED = (b"-----BEGIN ENCRYPTED PRIVATE KEY-----", b"Proc-Type: 4,ENCRYPTED")


def read_private_key(
    *, path: Path | None = None, pem: SecretStr | None = None, passphrase: SecretStr | None = None
) -> PrivateKey:
    """The private key in the file ``path`` or the PEM text ``pem``, decrypted with ``passphrase``."""
    if path is not None:
        what = f"the Snowflake private key file {clip(str(path), 200)} (LOADER_SNOWFLAKE__PRIVATE_KEY_FILE)"
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read {what}: {exc.strerror or type(exc).__name__}") from None
    elif pem is not None:
        what = "the Snowflake private key (LOADER_SNOWFLAKE__PRIVATE_KEY)"
        text = pem.get_secret_value().strip()
        if "\n" not in text:  # a PEM squeezed into one line of an env file, its newlines escaped
            text = text.replace("\\n", "\n")
        data = text.encode()
    else:
        raise ConfigError(f"no Snowflake private key: {LOGIN_SETTINGS}")
    return _load(data.strip(), passphrase, what)


def _load(data: bytes, passphrase: SecretStr | None, what: str) -> PrivateKey:
    # The messages below are ours alone: cryptography's could, one day, quote what it was given.
    if b"-----BEGIN PUBLIC KEY-----" in data and b"PRIVATE KEY-----" not in data:
        raise ConfigError(
            f"{what} holds a public key: the loader needs the private key "
            "(the public key is what ALTER USER … SET RSA_PUBLIC_KEY takes)"
        )
    if not data.startswith(b"-----BEGIN ") or b"PRIVATE KEY-----" not in data:
        raise ConfigError(
            f"{what} is not a PEM private key: expected a '-----BEGIN PRIVATE KEY-----' or "
            f"'-----BEGIN ENCRYPTED PRIVATE KEY-----' block (PKCS#8); {_SETUP}"
        )
    encrypted = any(marker in data for marker in _ENCRYPTED)
    if encrypted and passphrase is None:
        raise ConfigError(f"{what} is encrypted: set LOADER_SNOWFLAKE__PRIVATE_KEY_PASSPHRASE")
    if not encrypted and passphrase is not None:
        raise ConfigError(
            f"{what} is not encrypted, but LOADER_SNOWFLAKE__PRIVATE_KEY_PASSPHRASE is set: unset it"
        )
    password = passphrase.get_secret_value().encode() if passphrase is not None else None
    try:
        key = load_pem_private_key(data, password=password)
    except UnsupportedAlgorithm:
        raise ConfigError(f"{what} uses an algorithm this build cannot read; {_SETUP}") from None
    except (ValueError, TypeError):
        if encrypted:
            raise ConfigError(
                f"cannot decrypt {what}: the passphrase (LOADER_SNOWFLAKE__PRIVATE_KEY_PASSPHRASE) "
                "is wrong, or the key is damaged"
            ) from None
        raise ConfigError(f"{what} is damaged: its PEM block does not decode to a private key") from None
    if not isinstance(key, RSAPrivateKey | EllipticCurvePrivateKey):
        raise ConfigError(f"{what} is a {type(key).__name__}: Snowflake key-pair login needs an RSA key")
    return key
