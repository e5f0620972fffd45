"""Kafka v2 record batches built byte by byte, for records no ordinary client will send.

Producers (aiokafka, librdkafka through confluent-kafka) take header keys as
``str`` and encode them as UTF-8 themselves: none can send a key that is not
UTF-8, which the protocol and the broker both allow. This encoder writes
exactly the bytes it is given, and is independent of aiokafka's own encoder,
so tests of aiokafka's reader do not check it against itself.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka.codec import gzip_encode, lz4_encode, snappy_encode, zstd_encode
from aiokafka.record.util import calc_crc32c

__all__ = ["CODECS", "RawRecord", "batch_bytes"]

CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
_ENCODERS = {1: gzip_encode, 2: snappy_encode, 3: lz4_encode, 4: zstd_encode}


@dataclass(frozen=True)
class RawRecord:
    """One record as it goes on the wire: header keys are bytes."""

    value: bytes | None
    timestamp_ms: int
    key: bytes | None = None
    headers: Sequence[tuple[bytes, bytes | None]] = field(default_factory=tuple)


def _varint(value: int) -> bytes:
    zigzag = (value << 1) ^ (value >> 63)
    out = bytearray()
    while True:
        byte = zigzag & 0x7F
        zigzag >>= 7
        if zigzag:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(data: bytes | None) -> bytes:
    return _varint(-1) if data is None else _varint(len(data)) + data


def batch_bytes(records: Sequence[RawRecord], *, codec: str = "none", base_offset: int = 0) -> bytes:
    """A v2 batch of ``records`` (offsets ``base_offset`` on), compressed with ``codec``."""
    first_ts = records[0].timestamp_ms
    body = bytearray()
    for delta, record in enumerate(records):
        inner = (
            b"\x00"
            + _varint(record.timestamp_ms - first_ts)
            + _varint(delta)
            + _field(record.key)
            + _field(record.value)
            + _varint(len(record.headers))
            + b"".join(_field(k) + _field(v) for k, v in record.headers)
        )
        body += _varint(len(inner)) + inner
    attributes = CODECS[codec]
    payload = bytes(body) if not attributes else bytes(_ENCODERS[attributes](bytes(body)))
    after_crc = (
        struct.pack(
            ">hiqqqhii",
            attributes,
            len(records) - 1,
            first_ts,
            max(r.timestamp_ms for r in records),
            -1,
            -1,
            -1,
            len(records),
        )
        + payload
    )
    crc = calc_crc32c(after_crc)
    tail = struct.pack(">ibI", -1, 2, crc) + after_crc
    return struct.pack(">qi", base_offset, len(tail)) + tail
