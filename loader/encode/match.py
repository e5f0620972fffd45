"""Which records of a shared topic are this event type's (``kafka.match``).

Several specs may read one topic, each with its own consumer group; each takes
the records its match selects and skips the others. The decision reads only
what the rule needs, once per batch: a header's value, or the envelope's
``event_name``, from the ``event_name`` header when the envelope rides in
headers (an ``event_id`` header, as the decoders decide), else from the JSON
values in one Arrow parse that reads that field alone. A value Arrow cannot
parse has no event name: the batch is halved until such values stand alone, so
each record's verdict depends on its bytes only. Avro values (``avro-registry``)
are not read: their event name is the ``event_name`` header's. A header read
twice is its last occurrence, as in :func:`~loader.encode.decode.header_envelope`.

A record this spec does not take is ``other_event`` when a sibling spec (or the
topic's catch-all) takes it, ``unmatched`` when no spec on the topic does.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from loader.config.spec import EventSpec, KafkaMatch
from loader.encode.decode import KafkaRecord, header_envelope

__all__ = ["OTHER_EVENT", "UNMATCHED", "Matched", "RecordMatcher", "SkipReason", "matcher_for"]

SkipReason = Literal["other_event", "unmatched"]
OTHER_EVENT: SkipReason = "other_event"
UNMATCHED: SkipReason = "unmatched"

_NAME_SCHEMA = pa.schema([pa.field("event_name", pa.string())])
_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)


@dataclass(frozen=True)
class Matched:
    """A batch split by the match: the records to take (offset order) and the skipped counts."""

    taken: Sequence[KafkaRecord]
    skipped: dict[str, int]


class RecordMatcher:
    """Splits batches of a shared topic for one spec (see the module docstring)."""

    def __init__(
        self, match: KafkaMatch, siblings: Sequence[KafkaMatch], *, json_values: bool = True
    ) -> None:
        self.match = match
        self._json_values = json_values
        rules = [match, *siblings]
        on = {m.on for m in rules if not m.catch_all}
        self._header = next((m.header for m in rules if m.header is not None), None)
        assert len(on) <= 1, "load_specs refuses specs matching on different things"
        others = [m.value for m in siblings if m.value is not None]
        self._others = pa.array(others, pa.string())
        self._mine = pa.array([match.value] if match.value is not None else others, pa.string())
        self._sibling_catch_all = any(m.catch_all for m in siblings)

    def split(self, records: Sequence[KafkaRecord]) -> Matched:
        """The records of ``records`` this spec takes, and how many it skips, by reason."""
        if not records:
            return Matched(records, {})
        keys = self._keys(records)
        in_mine = pc.fill_null(pc.is_in(keys, value_set=self._mine), False)
        if self.match.catch_all:
            take = pc.invert(in_mine)  # what no sibling takes (no event name: nobody's)
            other = in_mine
        else:
            take = in_mine
            in_others = pc.fill_null(pc.is_in(keys, value_set=self._others), False)
            other = pc.invert(take) if self._sibling_catch_all else in_others
        taken_count = pc.sum(take).as_py() or 0
        if taken_count == len(records):
            return Matched(records, {})
        other_count = pc.sum(other).as_py() or 0
        skipped: dict[str, int] = {}
        if other_count:
            skipped[OTHER_EVENT] = other_count
        if len(records) - taken_count - other_count:
            skipped[UNMATCHED] = len(records) - taken_count - other_count
        flags = take.to_pylist()
        return Matched([r for r, t in zip(records, flags, strict=True) if t], skipped)

    def _keys(self, records: Sequence[KafkaRecord]) -> pa.Array:
        """What the rule reads of each record: a header's value or the event name (null: none)."""
        if self._header is not None:
            return pa.array([_text(_last_header(r, self._header)) for r in records], pa.string())
        if not self._json_values:
            return pa.array([_text(_last_header(r, "event_name")) for r in records], pa.string())
        if not any(r.headers for r in records):
            return _json_names([r.value for r in records])
        names: list[str | None] = [None] * len(records)
        in_json: list[int] = []
        for index, record in enumerate(records):
            envelope = header_envelope(record.headers) if record.headers else {}
            if "event_id" in envelope and record.value is not None:
                names[index] = _text(envelope.get("event_name"))
            else:
                in_json.append(index)
        if in_json:
            parsed = _json_names([records[i].value for i in in_json]).to_pylist()
            for index, name in zip(in_json, parsed, strict=True):
                names[index] = name
        return pa.array(names, pa.string())


def matcher_for(spec: EventSpec) -> RecordMatcher | None:
    """The spec's matcher, or None when it takes every record of its topic."""
    match = spec.kafka.match
    if match is None:
        return None
    return RecordMatcher(
        match, [s.match for s in spec.siblings], json_values=spec.schema_ref.format == "json"
    )


def _last_header(record: KafkaRecord, key: str) -> bytes | None:
    found = None
    for name, value in record.headers:
        if name == key:
            found = value
    return found


def _text(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _json_names(values: Sequence[bytes | None]) -> pa.Array:
    """The top-level ``event_name`` of each JSON value (null where it has none or is no
    JSON object), in one Arrow parse; a batch Arrow refuses is halved until each value that
    breaks it stands alone, so a value's name never depends on its neighbours."""
    if None not in values:
        # The common case, as the decoder's fast path: compact objects, one a line.
        joined = b"\n".join(values)  # type: ignore[arg-type]  # no None, checked above
        count = len(values)
        if (
            joined.count(b"\n") == count - 1
            and b"\r" not in joined
            and joined.startswith(b"{")
            and joined.endswith(b"}")
            and joined.count(b"}\n{") == count - 1
        ):
            parsed = _parse_joined(joined, count)
            if parsed is not None:
                return parsed
    lines: list[bytes] = []
    usable: list[int] = []
    for index, value in enumerate(values):
        if value is None:
            continue
        line = value.strip()
        if b"\n" in line or b"\r" in line:
            # Outside strings JSON's newlines are whitespace; inside them they are invalid anyway.
            line = line.replace(b"\n", b" ").replace(b"\r", b" ")
        # A bare top-level value (``null``) crashes Arrow's reader: objects only.
        if line.startswith(b"{") and line.endswith(b"}"):
            lines.append(line)
            usable.append(index)
    if len(usable) == len(values):
        return _parse_names(lines)
    names: list[str | None] = [None] * len(values)
    for index, name in zip(usable, _parse_names(lines).to_pylist(), strict=True):
        names[index] = name
    return pa.array(names, pa.string())


def _parse_names(lines: Sequence[bytes]) -> pa.Array:
    """The event names of ``lines`` (one JSON object each), halving where a parse fails."""
    if not lines:
        return pa.array([], pa.string())
    names = _parse_joined(b"\n".join(lines), len(lines))
    if names is not None:
        return names
    if len(lines) == 1:
        return pa.nulls(1, pa.string())
    middle = len(lines) // 2
    return pa.concat_arrays([_parse_names(lines[:middle]), _parse_names(lines[middle:])])


def _parse_joined(joined: bytes, count: int) -> pa.Array | None:
    """The ``event_name`` column of ``count`` newline-separated JSON objects; None if Arrow
    refuses them, or they are not UTF-8 (which Arrow would let into a string column)."""
    try:
        joined.decode("utf-8")
        table = pj.read_json(
            io.BytesIO(joined),
            read_options=pj.ReadOptions(use_threads=False, block_size=len(joined) + 1),  # one block
            parse_options=pj.ParseOptions(explicit_schema=_NAME_SCHEMA, unexpected_field_behavior="ignore"),
        )
    except (*_ARROW_ERRORS, UnicodeDecodeError):
        return None
    if table.num_rows != count:
        return None
    return table.column("event_name").combine_chunks()
