"""Kafka record headers as a JSON column (``_HEADERS``), and back.

The warehouse gets the headers a producer sent (trace ids, routing hints) as
a VARIANT array of ``{"key": …, "value": …}`` objects, in the order sent and
with repeats kept, so ``loader replay publish`` can put every record back on
Kafka with exactly its headers. A value that is not UTF-8 text is kept as
``{"key": …, "value_base64": …}``; a null value stays null. A record without
headers has a null ``_HEADERS``; a batch without any costs one null array.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any, Protocol

import orjson
import pyarrow as pa

__all__ = ["HEADERS_TYPE", "decode_headers", "header_key_bytes", "headers_column", "is_utf8_key"]

HEADERS_TYPE = pa.json_()


class _WithHeaders(Protocol):
    """What :func:`headers_column` reads of a record (a :class:`~loader.encode.decode.KafkaRecord`
    has it; naming only this keeps the decoder importing this module, not the other way round)."""

    @property
    def headers(self) -> Sequence[tuple[str, bytes | None]]: ...


def is_utf8_key(key: str) -> bool:
    """Whether a header key arrived as UTF-8 (the record reader keeps other bytes as
    surrogate escapes, which no UTF-8 text contains)."""
    if key.isascii():
        return True
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def header_key_bytes(key: str) -> bytes:
    """The bytes a header key was sent as (see :func:`is_utf8_key`)."""
    try:
        return key.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate no reader escapes: keep it as it is, too
        return key.encode("utf-8", "surrogatepass")


def headers_column(records: Sequence[_WithHeaders]) -> pa.Array:
    """The ``_HEADERS`` values of ``records`` (JSON text, or null for a record without headers)."""
    if not any(record.headers for record in records):
        return pa.nulls(len(records), HEADERS_TYPE)
    return pa.array([_encode(record.headers) if record.headers else None for record in records], HEADERS_TYPE)


def _encode(headers: Sequence[tuple[str, bytes | None]]) -> str:
    entries: list[dict[str, Any]] = []
    for key, value in headers:
        if value is None:
            entries.append({"key": key, "value": None})
            continue
        try:
            entries.append({"key": key, "value": value.decode("utf-8")})
        except UnicodeDecodeError:
            entries.append({"key": key, "value_base64": base64.b64encode(value).decode("ascii")})
    return orjson.dumps(entries).decode()


def decode_headers(text: str | None) -> list[tuple[str, bytes | None]]:
    """The headers a ``_HEADERS`` value holds, as Kafka clients take them.

    Raises ValueError for text that this module did not write."""
    if text is None:
        return []
    try:
        entries = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"_HEADERS is not JSON: {exc}") from None
    if not isinstance(entries, list):
        raise ValueError("_HEADERS is not a JSON array")
    headers: list[tuple[str, bytes | None]] = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
            raise ValueError(f"_HEADERS entry without a string key: {str(entry)[:80]}")
        if "value_base64" in entry:
            try:
                headers.append((entry["key"], base64.b64decode(entry["value_base64"], validate=True)))
            except (binascii.Error, TypeError) as exc:
                raise ValueError(f"_HEADERS entry {entry['key']!r}: bad base64: {exc}") from None
        else:
            value = entry.get("value")
            headers.append((entry["key"], None if value is None else str(value).encode("utf-8")))
    return headers
