"""Reading a posted body: size limits, gzip, a JSON array or NDJSON, one element per event.

The raw body and its gzip-decoded bytes are each held to ``max_body_bytes`` while they are
read, so neither a large upload nor a small gzip bomb is ever held whole in memory. A body
that cannot be split into elements (a malformed JSON array) is refused whole; otherwise each
element gets its own verdict: a JSON object, or the reason it is none, by index.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["BodyError", "Element", "TooLargeError", "decompress", "elements", "read_limited"]

_NDJSON_TYPES = ("application/x-ndjson", "application/jsonl", "application/json-seq")
_MAX_DEPTH = 254
"""orjson's own nesting limit; no spec allows deeper values (``max_json_depth`` <= 200)."""


class BodyError(ValueError):
    """The body as a whole cannot be read (answered 400 with this message)."""


class TooLargeError(BodyError):
    """The body, decoded or not, or its number of events, is over a limit (answered 413)."""


@dataclass(frozen=True)
class Element:
    """One posted event: the JSON object, or why it is none."""

    index: int
    value: dict[str, Any] | None
    problem: str | None = None


async def read_limited(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """The whole body from ``chunks``; TooLargeError as soon as it passes ``limit`` bytes."""
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise TooLargeError(f"body larger than {limit} bytes (gateway.max_body_bytes)")
        parts.append(chunk)
    return b"".join(parts)


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """``body`` decoded per its ``Content-Encoding`` (identity or gzip), at most ``limit`` bytes."""
    name = (encoding or "identity").strip().lower()
    if name in ("", "identity"):
        return body
    if name not in ("gzip", "x-gzip"):
        raise BodyError(f"Content-Encoding {name[:40]!r} is not supported (gzip or none)")
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        # Asking for one byte more than the limit is enough to know it is over, whatever the ratio.
        out = inflater.decompress(body, limit + 1)
        if len(out) > limit or inflater.unconsumed_tail:
            raise TooLargeError(f"gzip-decoded body larger than {limit} bytes (gateway.max_body_bytes)")
        out += inflater.flush()
    except zlib.error as exc:
        raise BodyError(f"body is not valid gzip: {exc}") from None
    if len(out) > limit:
        raise TooLargeError(f"gzip-decoded body larger than {limit} bytes (gateway.max_body_bytes)")
    if not inflater.eof or inflater.unused_data:
        raise BodyError("body is not one complete gzip stream")
    return out


def elements(body: bytes, content_type: str | None, max_records: int) -> list[Element]:
    """The events of a JSON-array or NDJSON body (NDJSON when so typed or not starting with
    ``[``); TooLargeError past ``max_records`` events, BodyError when it cannot be split."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media in _NDJSON_TYPES or not body.lstrip().startswith(b"["):
        return _ndjson(body, max_records)
    return _array(body, max_records)


def _too_many(count: int, max_records: int) -> TooLargeError:
    return TooLargeError(f"{count} events in one request; at most {max_records} (gateway.max_batch_records)")


def _ndjson(body: bytes, max_records: int) -> list[Element]:
    lines = [line for line in body.split(b"\n") if line.strip()]
    if not lines:
        raise BodyError("no events in the body (a JSON array or one JSON object a line)")
    if len(lines) > max_records:
        raise _too_many(len(lines), max_records)
    result = []
    for index, line in enumerate(lines):
        try:
            value, marked = _loads(line)
        except ValueError as exc:
            result.append(Element(index, None, str(exc)))
        else:
            result.append(_element(index, value, marked))
    return result


def _array(body: bytes, max_records: int) -> list[Element]:
    try:
        parsed, marked = _loads(body)
    except ValueError as exc:
        raise BodyError(str(exc)) from None
    if not isinstance(parsed, list):
        raise BodyError("the body is not a JSON array")
    if not parsed:
        raise BodyError("no events in the body (an empty array)")
    if len(parsed) > max_records:
        raise _too_many(len(parsed), max_records)
    return [_element(index, value, marked) for index, value in enumerate(parsed)]


def _element(index: int, value: Any, marked: bool) -> Element:
    if not isinstance(value, dict):
        return Element(index, None, f"not a JSON object: {type(value).__name__}")
    repeated = _repeated_key(value) if marked else None
    if repeated is not None:
        return Element(index, None, f"duplicate key {repeated[:80]!r}: a key may appear once per object")
    return Element(index, value)


class _Repeated(dict[str, Any]):
    """An object that spelt ``key`` more than once (kept to name it, by index)."""

    key: str = ""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    seen: set[str] = set()
    marked = _Repeated(obj)
    for key, _ in pairs:
        if key in seen:
            marked.key = key
            break
        seen.add(key)
    return marked


_PAIRS_DECODER = json.JSONDecoder(object_pairs_hook=_pairs)


def _loads(text: bytes) -> tuple[Any, bool]:
    """One JSON value, and whether its objects were marked. orjson keeps the last of repeated
    keys; where the text may repeat one (more colons than orjson's rewrite has), Python's json
    reads it again and marks the objects that do, so :func:`_repeated_key` refuses only those
    elements."""
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"malformed JSON: {exc}") from None
    try:
        rewritten = orjson.dumps(parsed)
    except TypeError as exc:  # orjson's JSONEncodeError is one: nested past its depth
        raise ValueError(f"malformed JSON: {exc}") from None
    if text.count(b":") == rewritten.count(b":") and b"\\u003" not in text:
        return parsed, False
    try:
        return _PAIRS_DECODER.decode(text.decode("utf-8")), True
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"malformed JSON: {exc}") from None


def _repeated_key(value: Any, depth: int = 0) -> str | None:
    """The first repeated key in ``value`` at any depth (only the slow parse marks them)."""
    if depth > _MAX_DEPTH:
        return None
    if isinstance(value, _Repeated):
        return value.key
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for child in children:
        if isinstance(child, dict | list):
            found = _repeated_key(child, depth + 1)
            if found is not None:
                return found
    return None
