"""The strict reading of one JSON value: what every decoding path holds a record to.

Arrow's JSON reader is lenient where a warehouse must not be: it takes ``NaN`` and
``Infinity`` (not JSON), and it neither sees duplicate keys nor limits nesting in
fields the schema does not know (it skips them). orjson refuses ``NaN`` but keeps
the last of duplicate keys, and stops at its own fixed depth (254). So this module
is the one definition of strict JSON (RFC 8259): exactly one value, no ``NaN`` or
``Infinity``, no object with a key twice at any depth, at most ``max_depth`` levels of
objects and arrays. The typed decoder checks a record here whenever Arrow's batch
parse cannot vouch for it; the raw decoder checks every record here.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from loader.config.spec import SchemaRef

__all__ = ["DEFAULT_MAX_JSON_DEPTH", "StrictJsonError", "strict_loads", "too_deep"]

DEFAULT_MAX_JSON_DEPTH: int = SchemaRef.model_fields["max_json_depth"].default
"""Levels of objects and arrays a record's value may nest (the envelope object is level 1);
a spec sets it as ``schema.max_json_depth``."""

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"{}[]")


class StrictJsonError(ValueError):
    """Why a value is not strict JSON (the message is the dead letter's reason)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise StrictJsonError(f"duplicate key {key[:80]!r}: a key may appear once per object")
            seen.add(key)
    return obj


def _no_constant(name: str) -> Any:
    raise StrictJsonError(f"{name} is not JSON (RFC 8259 has no NaN or Infinity)")


_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_no_constant)


def too_deep(value: bytes, limit: int) -> bool:
    """Whether ``value``'s objects and arrays nest more than ``limit`` levels (brackets
    inside strings do not count). A value with at most ``limit`` brackets is not scanned."""
    if value.count(b"{") + value.count(b"[") <= limit:
        return False
    return _deepest(value, limit) > limit


def _deepest(value: bytes, limit: int) -> int:
    """The deepest nesting in ``value``, counted up to ``limit + 1``."""
    depth = deepest = 0
    for byte in _STRING.sub(b"", value).translate(None, _NOT_BRACKETS):
        if byte in b"{[":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        else:
            depth -= 1
    return deepest


def strict_loads(value: bytes, max_depth: int, *, outer_depth: int = 0) -> Any:
    """The one JSON value ``value`` holds (UTF-8 text), or StrictJsonError saying why it is not
    strict JSON. ``outer_depth`` levels already enclose it (a payload sent bare under a header
    envelope sits in the envelope object), and count towards ``max_depth``.

    orjson parses (a microsecond or two); Python's json, which sees every key, runs only
    when orjson refuses the value or its keys may repeat (see :func:`_keys_may_repeat`)."""
    allowed = max_depth - outer_depth
    if too_deep(value, allowed):
        raise StrictJsonError(f"nested deeper than {max_depth} levels of objects and arrays (max_json_depth)")
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        _exact(value)  # the precise reason, when Python's json finds one (NaN, a repeated key)
        raise StrictJsonError(f"malformed JSON: {exc}") from None
    if _keys_may_repeat(value, parsed):
        _exact(value)
    return parsed


def _keys_may_repeat(value: bytes, parsed: Any) -> bool:
    """False only when no object in ``value`` repeats a key. Outside strings, a colon only
    ends a key; orjson keeps the last of repeated keys and writes a string's colons as they
    are. So text that spells no colon as ``\\u003a`` has as many colons as orjson's rewrite
    of it, unless a key repeats."""
    if b"\\" in value and b"\\u003" in value:
        return True
    try:
        rewritten = orjson.dumps(parsed)
    except (orjson.JSONEncodeError, TypeError):
        return True
    return value.count(b":") != rewritten.count(b":")


def _exact(value: bytes) -> Any:
    """Parse with Python's json, which refuses NaN and repeated keys with their names."""
    try:
        return _DECODER.decode(value.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise StrictJsonError(f"not valid UTF-8 (byte {exc.start}): JSON must be UTF-8") from None
    except json.JSONDecodeError as exc:
        raise StrictJsonError(f"malformed JSON: {exc}") from None
    except RecursionError:  # unreachable within max_depth; malformed input may fool the scan
        raise StrictJsonError("malformed JSON: nested too deeply to read") from None
