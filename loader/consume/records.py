"""Reading fetched record batches so that no record's content can stop a consumer.

aiokafka decodes every header key as strict UTF-8 while it unpacks a batch
(its Cython ``DefaultRecordBatch._read_msg``; the pure-Python reader raises the
same error wrapped in ``CorruptRecordException``). The protocol calls a header
key a string, but brokers do not check it: one record with the header key
``b"\\xff\\xfe"`` makes ``getmany`` raise at the same offset on every try, so the
partition never moves again and its lag grows forever.

:class:`TolerantRecords` stands in for aiokafka's ``MemoryRecords`` in its
fetcher (:func:`install`). Each batch is still read by aiokafka's fast reader,
in one call; only when that reader refuses a header key is the same batch read
again by :func:`read_batch`, which keeps such a key as a ``str`` with
``surrogateescape`` (``key.encode("utf-8", "surrogateescape")`` gives its bytes
back exactly). The decoder then makes that record a dead letter. Batches
aiokafka reads are handed over unchanged.

The override is one module attribute of aiokafka's fetcher, replaced once and
checked: :func:`install` refuses to run if aiokafka stops reading batches
through that name, and ``tests/unit/test_records.py`` fails if aiokafka starts
accepting such keys (then this module can go) or changes how its fetcher
iterates batches.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aiokafka.codec import gzip_decode, lz4_decode, snappy_decode, zstd_decode
from aiokafka.consumer import fetcher as _fetcher
from aiokafka.errors import CorruptRecordException
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import decode_varint

__all__ = ["TolerantRecords", "install", "read_batch"]

_LOG_OVERHEAD = 12
"""Every batch starts with its base offset (int64) and its length (int32) after them."""
_HEADER = struct.Struct(">qiibIhiqqqhii")
"""A v2 batch header: base offset, length, leader epoch, magic, crc, attributes, last offset
delta, first and max timestamps, producer id and epoch, base sequence, record count."""
_CODECS = {1: gzip_decode, 2: snappy_decode, 3: lz4_decode, 4: zstd_decode}
_LOG_APPEND_TIME = 0x08


@dataclass(frozen=True, slots=True)
class Record:
    """One record of a batch, with the attributes aiokafka's fetcher reads from its own."""

    offset: int
    timestamp: int
    timestamp_type: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    checksum: None = None


def read_batch(data: bytes | memoryview) -> list[Record]:
    """The records of one v2 batch (``data`` from its base offset to its end), header keys
    that are not UTF-8 kept as surrogate escapes. Raises CorruptRecordException for bytes
    that are not a batch."""
    try:
        return _read(bytes(data))
    except (ValueError, IndexError, struct.error) as exc:
        raise CorruptRecordException(f"cannot read the record batch: {exc!r}") from exc


def _read(data: bytes) -> list[Record]:
    (base_offset, _length, _epoch, magic, _crc, attributes, _last, first_ts, max_ts, *_, count) = (
        _HEADER.unpack_from(data)
    )
    if magic != 2:
        raise ValueError(f"magic {magic} is not a v2 batch")
    buffer = data[_HEADER.size :]
    codec = attributes & 0x07
    if codec:
        buffer = bytes(_CODECS[codec](buffer))
    log_append = bool(attributes & _LOG_APPEND_TIME)
    records: list[Record] = []
    pos = 0
    for _ in range(count):
        length, pos = decode_varint(buffer, pos)
        end = pos + length
        _attributes, pos = decode_varint(buffer, pos)
        ts_delta, pos = decode_varint(buffer, pos)
        offset_delta, pos = decode_varint(buffer, pos)
        key, pos = _bytes(buffer, pos)
        value, pos = _bytes(buffer, pos)
        header_count, pos = decode_varint(buffer, pos)
        headers: list[tuple[str, bytes | None]] = []
        for _ in range(header_count):
            name, pos = _bytes(buffer, pos)
            if name is None:
                raise ValueError("a header without a key")
            header_value, pos = _bytes(buffer, pos)
            headers.append((name.decode("utf-8", "surrogateescape"), header_value))
        if pos != end:
            raise ValueError(f"record of {length} bytes read as {length + pos - end}")
        records.append(
            Record(
                offset=base_offset + offset_delta,
                timestamp=max_ts if log_append else first_ts + ts_delta,
                timestamp_type=int(log_append),
                key=key,
                value=value,
                headers=headers,
            )
        )
    return records


def _bytes(buffer: bytes, pos: int) -> tuple[bytes | None, int]:
    size, pos = decode_varint(buffer, pos)
    if size < 0:
        return None, pos
    if pos + size > len(buffer):
        raise ValueError("a field runs past the end of the batch")
    return buffer[pos : pos + size], pos + size


class _Batch:
    """aiokafka's batch, but iterating it falls back to :func:`read_batch` for header keys."""

    __slots__ = ("_batch", "_data")

    def __init__(self, batch: Any, data: memoryview) -> None:
        self._batch = batch
        self._data = data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._batch, name)

    def __iter__(self) -> Iterator[Any]:
        # aiokafka's records one by one, as its fetcher reads them: a generator costs ~0.03 µs a
        # record, where materialising the batch in a list cost ~0.2 µs (about a third of the
        # worker's throughput). If a record fails, the records handed out before it are the
        # same first records read_batch finds, so it goes on from there. aiokafka's pure-Python
        # reader (AIOKAFKA_NO_EXTENSIONS) raises the same error wrapped in
        # CorruptRecordException; a batch that really is corrupt raises that from read_batch.
        handed = 0
        try:
            for record in self._batch:
                yield record
                handed += 1
        except (UnicodeDecodeError, CorruptRecordException):
            yield from read_batch(self._data)[handed:]

    def __next__(self) -> Any:
        # The fetcher reads a control batch's marker with next(): no headers there.
        return next(self._batch)


class TolerantRecords:
    """aiokafka's ``MemoryRecords`` of one fetched partition, with :class:`_Batch` batches."""

    def __init__(self, data: bytes) -> None:
        self._records = MemoryRecords(data)
        self._data = memoryview(data)
        self._pos = 0

    def size_in_bytes(self) -> int:
        return int(self._records.size_in_bytes())

    def has_next(self) -> bool:
        return bool(self._records.has_next())

    def next_batch(self) -> Any:
        batch = self._records.next_batch()
        if batch is None:
            return None
        # aiokafka cuts batches by the same framing: the next one starts where this one ends.
        start = self._pos
        (length,) = struct.unpack_from(">i", self._data, start + 8)
        self._pos = start + _LOG_OVERHEAD + length
        if batch.magic < 2:
            return batch  # v0/v1 message sets have no headers
        return _Batch(batch, self._data[start : self._pos])


def install() -> None:
    """Make aiokafka's fetcher read batches through :class:`TolerantRecords` (idempotent)."""
    current = _fetcher.MemoryRecords
    if current is TolerantRecords:
        return
    if current is not MemoryRecords:
        raise RuntimeError(
            "aiokafka's fetcher no longer reads batches through aiokafka.record.MemoryRecords: "
            "loader.consume.records cannot protect the worker from header keys that are not UTF-8"
        )
    _fetcher.MemoryRecords = TolerantRecords
