"""API keys of the gateway: who may post which events.

Keys are configured as SHA-256 hashes (``gateway.api_keys`` and ``gateway.api_keys_file``),
never in plaintext. A request's key (``Authorization: Bearer <key>`` or ``X-API-Key: <key>``)
is hashed and compared with every configured hash in constant time. A key is never logged
or put in an error message: only its holder's ``name`` is.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pydantic import TypeAdapter, ValidationError

from loader.config.settings import GatewayApiKey, GatewaySettings
from loader.config.yamlfile import YamlFileError, read_yaml
from loader.errors import ConfigError, capped

__all__ = ["Caller", "KeyRing", "new_key"]

_KEY_LIST = TypeAdapter(list[GatewayApiKey])


@dataclass(frozen=True)
class Caller:
    """Who posted: the key's holder (None: anonymous, allowed by ``allow_anonymous``)."""

    name: str | None
    events: frozenset[str] | None
    """Event types the key may post; None: every one."""

    def may_post(self, event: str) -> bool:
        """Whether this caller may post events of type ``event``."""
        return self.events is None or event in self.events


class KeyRing:
    """The configured keys, by hash; :meth:`caller` says who a request comes from."""

    def __init__(self, keys: Sequence[GatewayApiKey], *, allow_anonymous: bool = False) -> None:
        self._keys = [(bytes.fromhex(k.sha256), _caller(k)) for k in keys]
        self.allow_anonymous = allow_anonymous

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> KeyRing:
        """The keys of ``settings`` (``api_keys`` plus ``api_keys_file``); ConfigError when the
        file cannot be read, or when there are no keys and anonymous posting is not allowed."""
        keys = list(settings.api_keys)
        if settings.api_keys_file is not None:
            keys += _read_keys(settings)
        if not keys and not settings.allow_anonymous:
            raise ConfigError(
                "the gateway has no API keys: add some to LOADER_GATEWAY__API_KEYS or "
                "LOADER_GATEWAY__API_KEYS_FILE (`loader gateway new-key NAME --events EVENT` makes one), "
                "or set LOADER_GATEWAY__ALLOW_ANONYMOUS=true for local development"
            )
        return cls(keys, allow_anonymous=settings.allow_anonymous)

    def caller(self, headers: Mapping[str, str]) -> Caller | None:
        """Who sent a request with ``headers`` (lower-case names); None: no key or an unknown
        one (answered 401)."""
        presented = _presented_key(headers)
        if presented is None:
            return Caller(None, None) if self.allow_anonymous else None
        digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
        found: Caller | None = None
        for known, caller in self._keys:
            # Every hash is compared, so the time taken says nothing about which matched.
            if hmac.compare_digest(digest, known) and found is None:
                found = caller
        return found


def new_key() -> tuple[str, str]:
    """A fresh API key and its SHA-256 (hex), for ``loader gateway new-key``."""
    key = secrets.token_urlsafe(32)
    return key, hashlib.sha256(key.encode()).hexdigest()


def _caller(key: GatewayApiKey) -> Caller:
    return Caller(key.name, None if "*" in key.events else frozenset(key.events))


def _presented_key(headers: Mapping[str, str]) -> str | None:
    authorization = headers.get("authorization")
    if authorization is not None:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    key = headers.get("x-api-key")
    return key.strip() if key is not None and key.strip() else None


def _read_keys(settings: GatewaySettings) -> list[GatewayApiKey]:
    path = settings.api_keys_file
    assert path is not None  # checked by the caller
    try:
        data = read_yaml(path)
    except (OSError, YamlFileError) as exc:
        raise ConfigError(f"gateway.api_keys_file {path}: cannot read it: {exc}") from None
    try:
        return _KEY_LIST.validate_python(data)
    except ValidationError as exc:
        # The locations and messages only: an input value is never echoed.
        problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(
            f"gateway.api_keys_file {path}: not a list of keys (name, sha256, events): "
            + "; ".join(capped(problems))
        ) from None
