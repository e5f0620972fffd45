"""Talking to a Confluent-compatible schema registry over HTTP, and the writer schemas it holds.

Owns: one connection pool per registry (keep-alive, TLS checked against a CA file or
the system's CAs, one timeout per request and no retries of its own: the caller's
loop retries what is transient), basic auth, a bounded cache of schemas by id (a
registry never changes what an id means, so a cached schema never goes stale), the
answers for the batch about to be decoded (:meth:`RegistryClient.prefetch`), and
translating every failure into the loader's error tree here, at the boundary:

- registry unreachable, a timeout, HTTP 5xx, 408 or 429: :class:`RegistryError`,
  transient (the batch is retried, never dropped);
- 401 or 403: :class:`ConfigError` (wrong credentials or grants; retrying cannot help);
- an id the registry does not know (404, Confluent's code 40403), or a schema the
  caller cannot use: :class:`WriterSchemaError`, the record's own problem (a dead
  letter with the id and the reason);
- anything else: :class:`RegistryError`, terminal.

The password is only ever in the ``Authorization`` header: no message quotes it, and a
URL holding credentials is refused.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final
from urllib.parse import quote, urlsplit

import structlog
import urllib3

from loader.config.settings import SchemaRegistrySettings
from loader.config.spec import EventSpec
from loader.errors import ConfigError, LoaderError, RegistryError, clip, excerpt

__all__ = [
    "CACHE_SIZE",
    "SCHEMA_TYPES",
    "RegisteredSchema",
    "RegistryClient",
    "WriterSchemaError",
    "registry_for",
]

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
CACHE_SIZE = 1000
"""The most schemas one client keeps (least recently used go first); a topic rarely sees more
than a few writer versions."""
SCHEMA_TYPES: Final = ("AVRO", "PROTOBUF", "JSON")
"""The schema types of Confluent's API; an answer without ``schemaType`` is Avro."""
SCHEMA_NOT_FOUND = 40403
"""Confluent's (and Apicurio's) ``error_code`` for an unknown schema id; another 404 means
the URL does not lead to the registry's API."""
_TRANSIENT_STATUS = frozenset({408, 429})
_DETAIL_CHARS = 300

log = structlog.get_logger()


@dataclass(frozen=True)
class RegisteredSchema:
    """A schema as the registry holds it under its id."""

    schema_id: int
    schema_type: str
    """One of :data:`SCHEMA_TYPES`."""
    text: str
    """The schema's text: Avro JSON, a ``.proto`` file or a JSON Schema."""
    references: tuple[str, ...] = ()
    """Names of the other schemas it references (Avro named types, Protobuf imports)."""


class WriterSchemaError(RegistryError):
    """A record's schema id names no writer schema the loader can use: the record's problem.

    The registry does not know the id, or the schema is of another type or needs
    references; the decoder makes the record a dead letter with :attr:`schema_id` and
    :attr:`reason`, and goes on with the batch.
    """

    transient = False

    def __init__(self, schema_id: int, reason: str) -> None:
        super().__init__(f"schema id {schema_id}: {reason}", transient=False)
        self.schema_id = schema_id
        self.reason = reason


@dataclass(frozen=True)
class _Answer:
    status: int
    body: Any
    """The decoded JSON, or None when the body is not JSON."""

    @property
    def error_code(self) -> int | None:
        code = self.body.get("error_code") if isinstance(self.body, dict) else None
        return code if isinstance(code, int) else None

    def ok_value(self, key: str) -> Any:
        """``key`` of a 200 answer's JSON object; None for another status or another body."""
        return self.body.get(key) if self.status == 200 and isinstance(self.body, dict) else None

    @property
    def detail(self) -> str:
        message = self.body.get("message") if isinstance(self.body, dict) else None
        return clip(str(message), _DETAIL_CHARS) if message else f"HTTP {self.status}"


class RegistryClient:
    """A Confluent-compatible registry at ``url``; thread-safe; :meth:`close` (or ``with``) when done."""

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        ca_file: Path | None = None,
        timeout_s: float = 10.0,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        parts = urlsplit(url)
        if "@" in url.split("://", 1)[-1].split("/", 1)[0]:  # user:password@host: never quoted
            raise ConfigError(
                "the schema registry URL holds credentials: pass the user and password separately"
            )
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"schema registry URL must be http(s)://host… (got {excerpt(url)})")
        self.url = url.rstrip("/")
        self._headers = {"Accept": CONTENT_TYPE}
        if username:
            self._headers |= urllib3.make_headers(basic_auth=f"{username}:{password or ''}")
        self._pool = urllib3.PoolManager(
            num_pools=2,
            maxsize=4,
            timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s),
            retries=False,
            ssl_context=_tls_context(ca_file) if parts.scheme == "https" else None,
        )
        self._cache: OrderedDict[int, RegisteredSchema] = OrderedDict()
        self._cache_size = cache_size
        self._held: dict[int, RegisteredSchema | WriterSchemaError] = {}
        """The answers of the last :meth:`prefetch`, kept until the next one."""
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: SchemaRegistrySettings) -> RegistryClient:
        """A client for the configured registry, or a ConfigError saying how to configure one."""
        if not settings.url:
            raise ConfigError(
                "no schema registry configured: set LOADER_SCHEMA_REGISTRY__URL, "
                "or start the local stack with `loader dev up`"
            )
        return cls(
            settings.url,
            username=settings.username,
            password=settings.password.get_secret_value() if settings.password else None,
            ca_file=settings.ca_file,
            timeout_s=settings.timeout_s,
        )

    def __repr__(self) -> str:
        return f"RegistryClient({self.url!r})"

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled connections."""
        self._pool.clear()

    def prefetch(self, schema_ids: Iterable[int]) -> None:
        """Look up the ids of a batch before it is decoded, and hold the answers until the next
        prefetch, so that decoding it sends no request: a registry outage surfaces here, as a
        transient RegistryError the caller retries, never halfway through a decode. An id the
        registry does not know is held as its WriterSchemaError (its records become dead
        letters) and asked again by the next prefetch."""
        with self._lock:
            self._held = {}
        answers: dict[int, RegisteredSchema | WriterSchemaError] = {}
        for schema_id in sorted(set(schema_ids)):
            try:
                answers[schema_id] = self.schema(schema_id)
            except WriterSchemaError as exc:
                answers[schema_id] = exc
        with self._lock:
            self._held = answers

    def prefetch_cached(self, schema_ids: Iterable[int]) -> bool:
        """:meth:`prefetch` from the cache alone, when every id is in it: True, and the answers
        are held as a prefetch holds them. Else False, and nothing changes. It sends no request,
        so the event loop can call it: a batch of known schemas, the common case, needs no
        thread for its lookup."""
        with self._lock:
            answers: dict[int, RegisteredSchema | WriterSchemaError] = {}
            for schema_id in set(schema_ids):
                cached = self._cache.get(schema_id)
                if cached is None:
                    return False
                self._cache.move_to_end(schema_id)
                answers[schema_id] = cached
            self._held = answers
            return True

    def schema(self, schema_id: int) -> RegisteredSchema:
        """The schema registered under ``schema_id``: as the last prefetch found it, from the
        cache, else ``GET /schemas/ids/{id}``."""
        with self._lock:
            held = self._held.get(schema_id)
            if isinstance(held, WriterSchemaError):
                raise WriterSchemaError(schema_id, held.reason)
            if held is not None:
                return held
            cached = self._cache.get(schema_id)
            if cached is not None:
                self._cache.move_to_end(schema_id)
                return cached
        found = self._fetch(schema_id)
        with self._lock:
            self._cache[schema_id] = found
            self._cache.move_to_end(schema_id)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return found

    def writer_schema(self, schema_id: int) -> str:
        """The Avro text of writer schema ``schema_id``: the lookup the Avro wire-format decoder takes."""
        found = self.schema(schema_id)
        if found.schema_type != "AVRO":
            raise WriterSchemaError(schema_id, f"is a {found.schema_type} schema, not Avro")
        if found.references:
            raise WriterSchemaError(
                schema_id, f"references other schemas ({', '.join(found.references)}), which are not resolved"
            )
        return found.text

    def protobuf_schema(self, schema_id: int) -> str:
        """The text of Protobuf writer schema ``schema_id`` (a base64 ``FileDescriptorProto`` or
        ``.proto`` text): the lookup the Protobuf wire-format decoder takes. Imports of
        well-known types (``google/protobuf/…``) are resolved by the decoder; other references
        are not."""
        found = self.schema(schema_id)
        if found.schema_type != "PROTOBUF":
            raise WriterSchemaError(schema_id, f"is a {found.schema_type} schema, not Protobuf")
        others = [name for name in found.references if not name.startswith("google/protobuf/")]
        if others:
            raise WriterSchemaError(
                schema_id, f"references other schemas ({', '.join(others)}), which are not resolved"
            )
        return found.text

    def register(self, subject: str, schema_type: str, text: str) -> int:
        """Register ``text`` under ``subject`` (idempotent: the same schema keeps its id); return the id."""
        body = json.dumps({"schemaType": schema_type, "schema": text}).encode()
        what = f"registering under {subject}"
        answer = self._send("POST", f"/subjects/{quote(subject, safe='')}/versions", what, body=body)
        refused = {409: "refused the schema as incompatible", 422: "refused the schema"}.get(answer.status)
        if refused:
            raise RegistryError(f"{subject}: the registry {refused}: {answer.detail}", transient=False)
        schema_id = answer.ok_value("id")
        if not isinstance(schema_id, int):
            raise self._unexpected(answer, what)
        return schema_id

    def _fetch(self, schema_id: int) -> RegisteredSchema:
        what = f"fetching schema id {schema_id}"
        answer = self._send("GET", f"/schemas/ids/{int(schema_id)}", what)
        if answer.status == 404 and answer.error_code == SCHEMA_NOT_FOUND:
            raise WriterSchemaError(schema_id, f"the schema registry has no such schema ({answer.detail})")
        text = answer.ok_value("schema")
        if not isinstance(text, str):
            raise self._unexpected(answer, what)
        schema_type = answer.ok_value("schemaType") or "AVRO"
        if schema_type not in SCHEMA_TYPES:
            raise WriterSchemaError(schema_id, f"has the unsupported schema type {excerpt(schema_type)}")
        refs = answer.ok_value("references")
        names = (
            tuple(str(ref.get("name")) for ref in refs if isinstance(ref, dict))
            if isinstance(refs, list)
            else ()
        )
        log.info("schema_registry.schema_fetched", schema_id=schema_id, schema_type=schema_type)
        return RegisteredSchema(schema_id, schema_type, text, names)

    def _send(self, method: str, path: str, what: str, *, body: bytes | None = None) -> _Answer:
        """One request; failures every call treats alike (unreachable, 5xx, refused login) raise here."""
        # Headers given to a request replace the pool's, so every request sends all of them.
        headers = self._headers | {"Content-Type": CONTENT_TYPE} if body is not None else self._headers
        try:
            response = self._pool.request(method, self.url + path, body=body, headers=headers)
        except urllib3.exceptions.SSLError as exc:
            raise ConfigError(
                f"schema registry {self.url}: TLS failed while {what} ({exc}); if its certificate is "
                "signed by a private CA, set LOADER_SCHEMA_REGISTRY__CA_FILE to that CA's PEM file"
            ) from None
        except urllib3.exceptions.HTTPError as exc:
            raise RegistryError(
                f"schema registry {self.url} unreachable while {what}: {type(exc).__name__}: {exc}",
                transient=True,
            ) from None
        try:
            decoded = json.loads(response.data) if response.data else None
        except ValueError:
            decoded = None
        answer = _Answer(response.status, decoded)
        if answer.status >= 500 or answer.status in _TRANSIENT_STATUS:
            raise RegistryError(
                f"schema registry {self.url} answered {answer.status} while {what}: {answer.detail}",
                transient=True,
            )
        if answer.status in (401, 403):
            raise ConfigError(
                f"schema registry {self.url} refused the login ({answer.status}) while {what}: check the "
                "registry user and password (LOADER_SCHEMA_REGISTRY__USERNAME, "
                "LOADER_SCHEMA_REGISTRY__PASSWORD) and the user's grants"
            )
        return answer

    def _unexpected(self, answer: _Answer, what: str) -> LoaderError:
        if answer.status == 404:
            return ConfigError(
                f"schema registry {self.url} answered 404 ({answer.detail}) while {what}: is the URL "
                "the root of its Confluent API (Apicurio: …/apis/ccompat/v7)?"
            )
        return RegistryError(
            f"schema registry {self.url}: unexpected answer while {what}: {answer.detail}", transient=False
        )


def registry_for(spec: EventSpec, settings: SchemaRegistrySettings) -> RegistryClient | None:
    """The registry client an event type's decoder needs: one for values in Confluent's wire
    format (``avro-registry``, ``protobuf-registry``), none for JSON."""
    return RegistryClient.from_settings(settings) if spec.schema_ref.format != "json" else None


def _tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """Certificates and host names checked, against ``ca_file`` or the system's CAs."""
    try:
        return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot use the schema registry CA file {clip(str(ca_file), 200)}: {exc}; "
            "LOADER_SCHEMA_REGISTRY__CA_FILE must name a readable PEM file"
        ) from None
