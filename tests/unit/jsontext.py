"""JSON text the way various producers write it, for tests: any layout, key order and escaping,
and what ``json.dumps`` cannot write (repeated keys, NaN)."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Obj:
    """A JSON object as written: its members in order, a key possibly more than once."""

    pairs: tuple[tuple[str, Any], ...]

    @classmethod
    def parse(cls, text: bytes | str) -> Any:
        """The JSON value in ``text`` with every object as an Obj."""
        return json.loads(text, object_pairs_hook=lambda pairs: cls(tuple(pairs)))

    def get(self, key: str) -> Any:
        return dict(self.pairs)[key]

    def with_member(self, key: str, value: Any) -> Obj:
        """This object with ``key`` set (replaced where it is, else added at the end)."""
        if any(k == key for k, _ in self.pairs):
            return Obj(tuple((k, value if k == key else v) for k, v in self.pairs))
        return Obj((*self.pairs, (key, value)))


@dataclass(frozen=True)
class Layout:
    """How a producer writes JSON."""

    indent: int | None = None
    comma: str = ","
    colon: str = ":"
    newline: str = "\n"
    shuffle_seed: int | None = None
    """Write each object's members in an order shuffled with this seed."""
    escape_keys: bool = False
    """Write every key character as a ``\\uXXXX`` escape."""
    ascii_only: bool = False


LAYOUTS = {
    "compact": Layout(),
    "spaced": Layout(comma=", ", colon=": "),
    "pretty": Layout(indent=2),
    "pretty-crlf": Layout(indent=1, colon=" : ", newline="\r\n"),
    "reordered": Layout(shuffle_seed=7),
    "reordered-pretty": Layout(indent=4, shuffle_seed=3, colon=" :\t"),
    "escaped": Layout(escape_keys=True, ascii_only=True, comma=" ,  "),
}


def dump(value: Any, layout: Layout) -> bytes:
    """``value`` (Obj, list, str, int, float, bool, None) as JSON text in ``layout``."""
    rng = random.Random(layout.shuffle_seed)
    return "".join(_write(value, layout, rng, 0)).encode()


def _write(value: Any, layout: Layout, rng: random.Random, level: int) -> Iterator[str]:
    if isinstance(value, Obj):
        pairs = list(value.pairs)
        if layout.shuffle_seed is not None:
            rng.shuffle(pairs)
        members = [
            "".join([_key(k, layout), layout.colon, *_write(v, layout, rng, level + 1)]) for k, v in pairs
        ]
        yield from _container("{", "}", members, layout, level)
    elif isinstance(value, list):
        items = ["".join(_write(v, layout, rng, level + 1)) for v in value]
        yield from _container("[", "]", items, layout, level)
    elif isinstance(value, float) and not math.isfinite(value):
        yield "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    else:
        yield json.dumps(value, ensure_ascii=layout.ascii_only)


def _container(start: str, end: str, items: list[str], layout: Layout, level: int) -> Iterator[str]:
    if layout.indent is None or not items:
        yield start + layout.comma.join(items) + end
        return
    inner = layout.newline + " " * (layout.indent * (level + 1))
    yield start + inner + ("," + inner).join(items) + layout.newline + " " * (layout.indent * level) + end


def _key(key: str, layout: Layout) -> str:
    if not layout.escape_keys:
        return json.dumps(key, ensure_ascii=layout.ascii_only)
    return '"' + "".join(f"\\u{unit:04x}" for unit in _utf16(key)) + '"'


def _utf16(text: str) -> Iterator[int]:
    data = text.encode("utf-16-be")
    for index in range(0, len(data), 2):
        yield int.from_bytes(data[index : index + 2], "big")
