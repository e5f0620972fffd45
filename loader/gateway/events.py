"""Posted events -> Kafka records, checked with the worker's own match and decoder.

Each event becomes the :class:`~loader.gateway.outbound.OutboundRecord` it will be produced
as (value bytes, headers, timestamp), and those records go through exactly what a worker
runs on a consumed batch: the spec's shared-topic matcher (:mod:`loader.encode.match`),
then its decoder (:func:`loader.encode.decoder_for`). So a record the gateway accepts is one
the worker turns into a row, and every rejected one has the worker's reason.

The envelope is written as the spec's ``kafka.envelope`` says: Kafka headers holding the
envelope fields (the value is the bare payload) or one JSON object with its ``payload``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from loader.config.spec import EventSpec
from loader.encode import decoder_for
from loader.encode.decode import ENVELOPE_FIELDS, BatchDecoder, RecordValues
from loader.encode.match import matcher_for
from loader.encode.raw import RawDecoder
from loader.gateway.outbound import OutboundRecord

__all__ = ["Checked", "EventRoute", "Posted", "RefusedError", "Rejection", "created_at_text"]

Posted = Literal["envelope", "payload"]
"""How events are posted: full envelopes, or bare payloads whose envelope the gateway fills."""

_ENVELOPE_KEYS = frozenset((*ENVELOPE_FIELDS, "payload"))
_TEXT_FIELDS = ("event_id", "created_at", "event_name", "source")


class RefusedError(ValueError):
    """An event that cannot be made into a record (its envelope); the message is the reason."""


@dataclass(frozen=True)
class Rejection:
    """A posted record that is not produced: its index in the request, why, and the reason's
    kind (the ``reason`` label of ``loader_gateway_rejected_total``)."""

    index: int
    reason: str
    kind: str


@dataclass(frozen=True)
class Checked:
    """A request's records split by the check: those to produce (with their index), the rest."""

    accepted: list[tuple[int, OutboundRecord]]
    rejected: list[Rejection]


def created_at_text(now: datetime) -> str:
    """``now`` (UTC) as the RFC 3339 text the gateway writes into ``created_at``."""
    return now.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class EventRoute:
    """One event type as the gateway serves it: how its events are written and checked."""

    def __init__(self, spec: EventSpec) -> None:
        self.spec = spec
        form = spec.schema_ref.format
        self.unsupported: str | None = None
        """Why the gateway does not produce this event type (answered 415), or None."""
        if form != "json":
            self.unsupported = (
                f"event {spec.name!r} is format {form}: its values are Confluent wire-format "
                "records; produce them with a schema-registry serializer, not through the gateway"
            )
            return
        decoder = decoder_for(spec)
        assert isinstance(decoder, BatchDecoder | RawDecoder)  # format json, checked above
        self._decoder = decoder
        self._matcher = matcher_for(spec)
        match = spec.kafka.match
        self.default_event_name = (
            match.event_name if match is not None and match.event_name is not None else spec.name
        )
        self._match_header = (
            (match.header, match.equals.encode())
            if match is not None and match.header is not None and match.equals is not None
            else None
        )

    def outbound(
        self,
        event: Mapping[str, Any],
        *,
        posted: Posted,
        source: str | None,
        now: datetime,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
        partition: int | None = None,
        default_event_name: bool = True,
    ) -> OutboundRecord:
        """The record ``event`` is produced as; RefusedError when its envelope is wrong.

        ``source`` and (unless ``default_event_name`` is false) the event name fill an
        envelope that has none; ``headers`` are the client's own (not envelope fields)."""
        if posted == "payload":
            envelope: dict[str, Any] = {
                "event_id": str(uuid.uuid4()),
                "created_at": created_at_text(now),
                "event_name": None,
                "source": None,
                "schema_version": None,
            }
            payload: Any = dict(event)
        else:
            envelope, payload = _envelope(event)
        if envelope["event_name"] is None and default_event_name:
            envelope["event_name"] = self.default_event_name
        if envelope["source"] is None:
            envelope["source"] = source
        for name, _ in headers:
            if name in ENVELOPE_FIELDS:
                raise RefusedError(f"header {name!r} is an envelope field: give it in the envelope")
        extra = list(headers)
        if self._match_header is not None and all(name != self._match_header[0] for name, _ in extra):
            extra.append(self._match_header)
        timestamp_ms = int(now.timestamp() * 1000)
        if self.spec.kafka.envelope == "headers":
            fields = [(k, _header_text(envelope[k])) for k in ENVELOPE_FIELDS if envelope[k] is not None]
            return OutboundRecord(
                value=_dumps(payload),
                key=key,
                headers=(*fields, *extra),
                timestamp_ms=timestamp_ms,
                partition=partition,
            )
        whole = {k: v for k, v in envelope.items() if v is not None}
        whole["payload"] = payload
        return OutboundRecord(
            value=_dumps(whole),
            key=key,
            headers=tuple(extra),
            timestamp_ms=timestamp_ms,
            partition=partition,
        )

    def takes(self, records: Sequence[OutboundRecord]) -> list[bool]:
        """Whether this spec's ``kafka.match`` takes each record (all, without a match)."""
        if self._matcher is None:
            return [True] * len(records)
        probes = self._probes(records)
        taken = {r.offset for r in self._matcher.split(probes).taken}
        return [p.offset in taken for p in probes]

    def check(self, candidates: Sequence[tuple[int, OutboundRecord]]) -> Checked:
        """Split ``candidates`` (index, record) as a worker would: the records its match takes
        and its decoder turns into rows are accepted; the others rejected with the reason."""
        if not candidates:
            return Checked([], [])
        probes = self._probes([record for _, record in candidates])
        rejected: list[Rejection] = []
        taken: Sequence[RecordValues] = probes
        if self._matcher is not None:
            taken = self._matcher.split(probes).taken  # type: ignore[assignment]  # our probes back
            kept = {p.offset for p in taken}
            rejected += [
                Rejection(candidates[p.offset][0], self._not_taken(), "not_taken")
                for p in probes
                if p.offset not in kept
            ]
        bad: dict[int, str] = {}
        if taken:
            bad = {r.record.offset: r.reason for r in self._decoder.rejects(taken)}
        rejected += [Rejection(candidates[offset][0], reason, "schema") for offset, reason in bad.items()]
        accepted = [candidates[p.offset] for p in taken if p.offset not in bad]
        rejected.sort(key=lambda r: r.index)
        return Checked(accepted, rejected)

    def _probes(self, records: Sequence[OutboundRecord]) -> list[RecordValues]:
        topic = self.spec.kafka.topic
        return [
            RecordValues(topic, 0, position, r.timestamp_ms, r.key, r.value, r.headers)
            for position, r in enumerate(records)
        ]

    def _not_taken(self) -> str:
        return f"event type {self.spec.name!r} takes only records with {self.spec.takes} (kafka.match)"


def _envelope(event: Mapping[str, Any]) -> tuple[dict[str, Any], Any]:
    """The envelope fields and payload of a posted envelope; RefusedError if it is not one."""
    unknown = sorted(set(event) - _ENVELOPE_KEYS)
    if unknown:
        raise RefusedError(
            f"unknown envelope field {unknown[0][:80]!r}: an envelope holds "
            f"{', '.join(ENVELOPE_FIELDS)} and payload (payload fields go inside payload)"
        )
    if "payload" not in event or event["payload"] is None:
        raise RefusedError("missing payload")
    envelope = {k: event.get(k) for k in ENVELOPE_FIELDS}
    for name in _TEXT_FIELDS:
        value = envelope[name]
        if value is not None and not isinstance(value, str):
            raise RefusedError(f"envelope field {name!r} must be a string (got {type(value).__name__})")
    for name in ("event_id", "created_at"):
        if not envelope[name]:
            raise RefusedError(f"missing required envelope field {name!r}")
    version = envelope["schema_version"]
    if version is not None and (not isinstance(version, int) or isinstance(version, bool) or version < 0):
        raise RefusedError(f"schema_version must be a non-negative integer (got {str(version)[:40]!r})")
    return envelope, event["payload"]


def _header_text(value: Any) -> bytes:
    """An envelope field as a header's value: UTF-8 text (``schema_version`` in decimal); a
    lone surrogate stays as it is, for the decoder to name."""
    return str(value).encode("utf-8", "surrogatepass")


def _dumps(value: Any) -> bytes:
    """JSON bytes of a parsed value; RefusedError for text no UTF-8 can hold (a lone surrogate
    escape, which Python's json reads)."""
    try:
        return orjson.dumps(value)
    except TypeError as exc:  # orjson's JSONEncodeError is one
        raise RefusedError(f"not valid JSON text: {exc}") from None
