"""Property tests: a record's verdict (row or dead letter, and its reason) is a function of its
content alone. The same event written in any layout (compact, pretty-printed, keys reordered,
extra whitespace, escaped keys) gets one verdict and, as a row, the same values; and a record
gets the same verdict alone, in one batch with others, or in a batch split anywhere."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loader.devstack.samples import SampleEvents
from loader.encode.decode import BatchDecoder, Decoder
from loader.encode.raw import RawDecoder
from loader.schema import load_avro_schema
from tests.unit.fakes import FakeRecord
from tests.unit.jsontext import LAYOUTS, Obj, dump

pytestmark = pytest.mark.unit

SCHEMAS = Path(__file__).parents[2] / "schemas"
DECODERS: dict[str, Decoder] = {
    name: BatchDecoder(load_avro_schema(SCHEMAS / f"{name}.avsc"))
    for name in ("store_updated", "order_created")
}
DECODERS["raw"] = RawDecoder("app_click")
SAMPLES = {
    name: [
        SampleEvents(name, load_avro_schema(SCHEMAS / f"{name}.avsc"), seed=5).encoded(i)[1]
        for i in range(20)
    ]
    for name in ("store_updated", "order_created")
}
Path_ = tuple[str | int, ...]
Event = tuple[str, Any, tuple[tuple[str, bytes], ...]]
"""(decoder name, the JSON value to send, headers)."""

_KEYS = st.sampled_from(["a", "b", "x", 'q"', "c:", "\\", "é", "city", "lat", "sku"])
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.sampled_from([float("nan"), float("inf"), float("-inf")]),
    st.text(max_size=8),
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(st.tuples(_KEYS, inner), max_size=3).map(lambda pairs: Obj(tuple(pairs))),
    ),
    max_leaves=8,
)


def _paths(value: Any, want: type | None, path: Path_ = ()) -> list[Path_]:
    """Paths to the objects (``want`` Obj) or the scalars (``want`` None) in ``value``."""
    found: list[Path_] = []
    if isinstance(value, Obj):
        if want is Obj:
            found.append(path)
        for index, (_, member) in enumerate(value.pairs):
            found += _paths(member, want, (*path, index))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, want, (*path, f"[{index}]"))
    elif want is None:
        found.append(path)
    return found


def _update(value: Any, path: Path_, change: Any) -> Any:
    """``value`` with ``change(old)`` at ``path`` (an int steps into a member, ``[i]`` an item)."""
    if not path:
        return change(value)
    step, rest = path[0], path[1:]
    if isinstance(step, int):
        pairs = list(value.pairs)
        pairs[step] = (pairs[step][0], _update(pairs[step][1], rest, change))
        return Obj(tuple(pairs))
    index = int(step[1:-1])
    return [_update(item, rest, change) if i == index else item for i, item in enumerate(value)]


def _deep(levels: int) -> Any:
    value: Any = 0
    for level in range(levels):
        value = [value] if level % 2 else Obj((("d", value),))
    return value


@st.composite
def _mutated(draw: st.DrawFn, value: Obj) -> Obj:
    """``value`` as a producer might have broken it, or not."""
    kind = draw(st.sampled_from(["none", "drop", "repeat", "nonfinite", "unknown", "deep", "retype", "text"]))
    objects, scalars = _paths(value, Obj), _paths(value, None)
    if kind == "drop":
        path = draw(st.sampled_from(objects))

        def drop(obj: Obj) -> Obj:
            if not obj.pairs:
                return obj
            gone = draw(st.sampled_from([k for k, _ in obj.pairs]))
            return Obj(tuple((k, v) for k, v in obj.pairs if k != gone))

        return _update(value, path, drop)  # type: ignore[no-any-return]
    if kind == "repeat":

        def repeat(obj: Obj) -> Obj:
            if not obj.pairs:
                return obj
            key, old = draw(st.sampled_from(obj.pairs))
            return Obj((*obj.pairs, (key, draw(st.one_of(st.just(old), _SCALARS)))))

        return _update(value, draw(st.sampled_from(objects)), repeat)  # type: ignore[no-any-return]
    if kind in ("unknown", "deep"):
        extra = draw(_JSON) if kind == "unknown" else _deep(draw(st.integers(56, 66)))
        name = draw(st.sampled_from(["extra", "zz"]))
        return _update(value, draw(st.sampled_from(objects)), lambda obj: obj.with_member(name, extra))  # type: ignore[no-any-return]
    if kind != "none" and scalars:
        new = {
            "nonfinite": st.sampled_from([float("nan"), float("inf"), float("-inf")]),
            "retype": _SCALARS,
            "text": st.text(max_size=12),
        }[kind]
        return _update(value, draw(st.sampled_from(scalars)), lambda _old: draw(new))  # type: ignore[no-any-return]
    return value


@st.composite
def _events(draw: st.DrawFn) -> Event:
    """(decoder name, the JSON value to send, headers): an event, maybe broken, its envelope in
    the value or in headers."""
    name = draw(st.sampled_from(["store_updated", "order_created", "raw"]))
    event = Obj.parse(draw(st.sampled_from(SAMPLES["store_updated" if name == "raw" else name])))
    payload = event.get("payload")
    if name == "store_updated" and draw(st.booleans()):
        payload = payload.with_member("location", Obj((("lat", 1.5), ("lng", -2.25))))
    if draw(st.booleans()):  # the envelope in headers, the bare payload as the value
        headers = tuple((k, str(v).encode()) for k, v in event.pairs if k != "payload" and v is not None)
        return name, draw(_mutated(payload)), headers
    return name, draw(_mutated(event.with_member("payload", payload))), ()


def _outcomes(decoder: Decoder, records: Sequence[FakeRecord]) -> dict[int, Any]:
    """Each record's verdict by offset: its row (without _OFFSET; VARIANT text parsed), or its reason."""
    batch = decoder.decode(records)
    outcomes: dict[int, Any] = {r.record.offset: ("dead letter", r.reason) for r in batch.rejected}
    for row in batch.table.to_pylist():
        offset = row.pop("_OFFSET")
        for variant in ("PAYLOAD", "_EXTRA"):  # JSON text: key order is the producer's
            if row.get(variant) is not None:
                row[variant] = json.loads(row[variant])
        assert offset not in outcomes
        outcomes[offset] = ("row", row)
    assert sorted(outcomes) == [r.offset for r in records]
    return outcomes


def _record(offset: int, value: bytes, headers: tuple[tuple[str, bytes], ...]) -> FakeRecord:
    return FakeRecord("t", 0, offset, 1_764_230_400_000, b"k", value, headers)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_events())
def test_one_verdict_however_the_record_is_written(
    event: tuple[str, Any, tuple[tuple[str, bytes], ...]],
) -> None:
    """Compact, pretty-printed, reordered, spaced or escaped: one verdict, and as a row the same
    values; each layout's verdict alone is its verdict in one batch with the others."""
    name, value, headers = event
    decoder = DECODERS[name]
    records = [_record(i, dump(value, layout), headers) for i, layout in enumerate(LAYOUTS.values())]
    alone = {r.offset: _outcomes(decoder, [r])[r.offset] for r in records}
    assert _outcomes(decoder, records) == alone
    verdicts = {layout: alone[i] for i, layout in enumerate(LAYOUTS)}
    kinds = {layout: verdict[0] for layout, verdict in verdicts.items()}
    assert len(set(kinds.values())) == 1, verdicts
    if kinds["compact"] == "row":
        rows = [verdict[1] for verdict in verdicts.values()]
        assert all(row == rows[0] for row in rows), verdicts


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["store_updated", "order_created", "raw"]),
    st.lists(st.tuples(_events(), st.sampled_from(list(LAYOUTS))), min_size=1, max_size=10),
    st.lists(st.integers(1, 4), min_size=1, max_size=3),
)
def test_one_verdict_however_the_records_are_batched(
    name: str,
    drawn: list[tuple[Event, str]],
    chunks: list[int],
) -> None:
    """A record's verdict and reason are the same alone, in one batch with good and bad
    records, and in a batch split anywhere."""
    decoder = DECODERS[name]
    records = [
        _record(i, dump(value, LAYOUTS[layout]), headers)
        for i, ((_, value, headers), layout) in enumerate(drawn)
    ]
    together = _outcomes(decoder, records)
    alone = {r.offset: _outcomes(decoder, [r])[r.offset] for r in records}
    split: dict[int, Any] = {}
    start, index = 0, 0
    while start < len(records):
        size = chunks[index % len(chunks)]
        split.update(_outcomes(decoder, records[start : start + size]))
        start, index = start + size, index + 1
    assert together == alone == split
