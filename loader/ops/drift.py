"""``loader schemas drift``: the unknown fields an event's data files hold in ``_EXTRA``.

Reads only S3: the event's data files of a time range (:mod:`loader.store.listing`), and
of each only its ``_EXTRA`` and ``_KAFKA_TIMESTAMP`` columns. Files without ``_EXTRA``
(written before it existed, or by a spec that drops unknown fields) hold nothing to read.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import datetime

import orjson
import pyarrow.compute as pc
import pyarrow.parquet as pq

from loader.config.spec import EventSpec
from loader.encode.extra import extra_paths
from loader.schema.drift import FieldDrift
from loader.schema.model import EventSchema
from loader.schema.types import EXTRA
from loader.store.listing import data_files
from loader.store.s3 import S3Store

__all__ = ["DriftReport", "read_drift"]

_SEEN = "_KAFKA_TIMESTAMP"


@dataclass
class DriftReport:
    """The unknown fields of the files read, by path."""

    event: str
    files: int = 0
    files_without_extra: int = 0
    rows: int = 0
    rows_with_extra: int = 0
    fields: dict[str, FieldDrift] = field(default_factory=dict)


def read_drift(
    store: S3Store, spec: EventSpec, schema: EventSchema, since: datetime | None, until: datetime | None
) -> DriftReport:
    """Gather the unknown fields of ``spec``'s data files whose time partition is in [since, until)."""
    report = DriftReport(spec.name)
    for info in data_files(store, spec, since, until):
        report.files += 1
        parquet = pq.ParquetFile(io.BytesIO(store.get_bytes(info.key)))
        report.rows += parquet.metadata.num_rows
        if EXTRA not in parquet.schema_arrow.names:
            report.files_without_extra += 1
            continue
        table = parquet.read(columns=[EXTRA, _SEEN])
        table = table.filter(pc.is_valid(table.column(EXTRA)))
        report.rows_with_extra += table.num_rows
        extras = table.column(EXTRA).cast("string").to_pylist()
        seen = table.column(_SEEN).to_pylist()
        for text, moment in zip(extras, seen, strict=True):
            for path, value in extra_paths(orjson.loads(text), schema.fields):
                drift = report.fields.get(path)
                if drift is None:
                    drift = report.fields[path] = FieldDrift(path)
                drift.add(value, moment)
    return report
