"""Decoding alone, JSON against Confluent wire-format Avro, on the same events in one process.

The same sample events are encoded twice: as the JSON values the rest of the
benchmark produces, and as a producer using a schema registry sends them (Avro
binary after the magic byte and the schema id, the envelope in Kafka headers).
Each is decoded in batches of the worker's fetch size by its decoder
(:class:`~loader.encode.decode.BatchDecoder`,
:class:`~loader.encode.avro_registry.AvroRegistryDecoder` with an in-memory
registry), and the rates are compared. Run alone with
``python -m bench.avro_decode [--events N]``; ``bench/run`` runs it too.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro

from loader.devstack.samples import SampleEvents
from loader.encode.avro_registry import AvroRegistryDecoder, wire_value
from loader.encode.decode import BatchDecoder, Decoder, RecordValues
from loader.runtime import heap
from loader.schema.avro import load_avro_schema
from loader.schema.model import FieldType

__all__ = ["BATCH", "DecodeRates", "Records", "json_record", "measure_decoding", "rate"]

SCHEMA_ID = 1
BATCH = 5_000
TARGET_RATIO = 0.5


Records = list[RecordValues]


@dataclass(frozen=True)
class DecodeRates:
    """Events per second JSON's decoder and a registry format's reached on the same events."""

    events: int
    json_eps: float
    registry_eps: float
    form: str = "Avro"
    """The registry format: Avro or Protobuf."""
    target: float | None = TARGET_RATIO
    """The ratio to reach (issue 13 set Avro's; Protobuf's rate is printed for reference)."""

    @property
    def ratio(self) -> float:
        return self.registry_eps / self.json_eps if self.json_eps else 0.0

    def describe(self) -> str:
        judged = ""
        if self.target is not None:
            judged = f" (target >= {self.target}: {'ok' if self.ratio >= self.target else 'MISSED'})"
        return (
            f"decoding only, {self.events:,} events in batches of {BATCH:,}:"
            f" JSON {self.json_eps:,.0f} events/s,"
            f" {self.form} from a registry {self.registry_eps:,.0f} events/s;"
            f" {self.form.lower()}/json = {self.ratio:.2f}{judged}"
        )


def json_record(index: int, event: dict[str, Any]) -> RecordValues:
    """Sample event ``index`` as the JSON value the rest of the benchmark produces."""
    value = json.dumps(event, separators=(",", ":")).encode()
    return RecordValues("bench", 0, index, 1_764_230_400_000 + index, None, value, ())


class _Registry:
    """The one writer schema, by id (what the registry client answers)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def writer_schema(self, schema_id: int) -> str:
        return self.text


def _avro_value(value: Any, field_type: FieldType) -> Any:
    """A sample event's JSON value as the Python value fastavro writes for ``field_type``."""
    if value is None:
        return None
    kind = field_type.kind
    if kind == "decimal":
        return Decimal(value)
    if kind == "timestamp":
        return datetime.fromisoformat(value)
    if kind == "date":
        return date.fromisoformat(value)
    if kind == "record":
        return {f.name: _avro_value(value.get(f.name), f.type) for f in field_type.fields}
    if kind == "array":
        assert field_type.items is not None
        return [_avro_value(item, field_type.items) for item in value]
    return value


def _encode(name: str, schema_path: Path, events: int, seed: int) -> tuple[Records, Records, str]:
    schema = load_avro_schema(schema_path)
    text = schema_path.read_text()
    writer = fastavro.parse_schema(json.loads(text))
    samples = SampleEvents(name, schema, seed=seed, source="bench-producer")
    as_json: Records = []
    as_avro: Records = []
    for index in range(events):
        event = samples.envelope(index)
        payload = {f.name: _avro_value(event["payload"][f.name], f.type) for f in schema.fields}
        body = io.BytesIO()
        fastavro.schemaless_writer(body, writer, payload)
        headers = [
            (key, str(event[key]).encode()) for key in ("event_id", "event_name", "created_at", "source")
        ]
        headers.append(("schema_version", str(event["schema_version"]).encode()))
        timestamp = 1_764_230_400_000 + index
        as_json.append(json_record(index, event))
        as_avro.append(
            RecordValues("bench", 0, index, timestamp, None, wire_value(SCHEMA_ID, body.getvalue()), headers)
        )
    return as_json, as_avro, text


def rate(decoder: Decoder, records: Records) -> float:
    """Events per second ``decoder`` decodes ``records`` at, in batches of :data:`BATCH`."""
    started = time.perf_counter()
    rows = 0
    for start in range(0, len(records), BATCH):
        decoded = decoder.decode(records[start : start + BATCH])
        assert not decoded.rejected, decoded.rejected[0].reason
        rows += decoded.table.num_rows
    assert rows == len(records)
    return len(records) / (time.perf_counter() - started)


def measure_decoding(
    name: str, schema_path: Path, events: int, seed: int = 7, rounds: int = 3
) -> DecodeRates:
    """Decode the same ``events`` both ways, alternating ``rounds`` times; the best round of each counts
    (other work on the machine only ever slows a round down)."""
    as_json, as_avro, text = _encode(name, schema_path, events, seed)
    schema = load_avro_schema(schema_path)
    json_decoder = BatchDecoder(schema)
    avro_decoder = AvroRegistryDecoder(schema, json.loads(text), _Registry(text))
    json_best = avro_best = 0.0
    with worker_heap():
        for _ in range(rounds):
            json_best = max(json_best, rate(json_decoder, as_json))
            avro_best = max(avro_best, rate(avro_decoder, as_avro))
    return DecodeRates(events, json_best, avro_best)


@contextlib.contextmanager
def worker_heap() -> Iterator[None]:
    """Decode under a worker process's collector settings (:func:`loader.runtime.heap.settle`),
    undone afterwards. The encoded records are frozen out of the collector, as a worker's
    start-up heap is: a worker holds one batch, not a benchmark's 100,000 records for every
    full collection to walk, which halved the Protobuf rate (its decoder makes an object a
    field) and made the Avro rate swing 0.47-0.80 of JSON's between runs."""
    thresholds = gc.get_threshold()
    heap.settle()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.avro_decode", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--schema", default="order_created")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    schema_path = Path(__file__).resolve().parents[1] / "schemas" / f"{args.schema}.avsc"
    print(measure_decoding(args.schema, schema_path, args.events, args.seed).describe())


if __name__ == "__main__":
    main()
