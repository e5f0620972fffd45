"""The record reader under aiokafka's fetcher: every codec, and header keys that are not UTF-8.

These tests pin what aiokafka does as well as what we do: if aiokafka starts
accepting such keys, or stops reading batches through ``MemoryRecords`` in its
fetcher, a test here fails and says so.
"""

from __future__ import annotations

from importlib.metadata import requires

import pytest
from aiokafka import TopicPartition
from aiokafka.consumer import fetcher
from aiokafka.errors import CorruptRecordException
from aiokafka.record import memory_records
from aiokafka.record.default_records import _DefaultRecordBatchPy
from aiokafka.record.memory_records import MemoryRecords, _MemoryRecordsPy
from aiokafka.structs import ConsumerRecord
from packaging.requirements import Requirement

from loader.consume import records
from loader.encode.headers import header_key_bytes
from tests.batches import CODECS, RawRecord, batch_bytes

pytestmark = pytest.mark.unit

TP = TopicPartition("t", 0)
BAD_KEY = b"\xff\xfe"


def _batch(codec: str = "none", base_offset: int = 0) -> bytes:
    return batch_bytes(
        [
            RawRecord(b'{"n":0}', 1_000, key=b"k0"),
            RawRecord(b'{"n":1}', 1_001, headers=[(b"ok", b"1"), (BAD_KEY, b"v"), (b"n", None)]),
            RawRecord(b'{"n":2}', 1_002),
        ],
        codec=codec,
        base_offset=base_offset,
    )


def _fetched(data: bytes, fetch_offset: int = 0) -> tuple[list[ConsumerRecord], int]:
    """What aiokafka's fetcher hands out for ``data``, read as its fetcher reads a response."""
    partition = fetcher.PartitionRecords(
        TP, fetcher.MemoryRecords(data), [], fetch_offset, None, None, True, fetcher.READ_COMMITTED
    )
    return list(partition), partition.next_fetch_offset


def test_aiokafka_still_refuses_header_keys_that_are_not_utf8() -> None:
    """aiokafka's own reader raises on such a key: the reason loader.consume.records exists."""
    with pytest.raises(UnicodeDecodeError):
        list(MemoryRecords(_batch()).next_batch())


@pytest.mark.parametrize("codec", list(CODECS))
def test_aiokafka_reads_every_codec(codec: str) -> None:
    """With the runtime dependencies, aiokafka decompresses gzip, snappy, lz4 and zstd batches."""
    data = batch_bytes([RawRecord(b'{"n":0}', 1_000), RawRecord(b'{"n":1}', 1_001)], codec=codec)
    assert [r.value for r in MemoryRecords(data).next_batch()] == [b'{"n":0}', b'{"n":1}']


def test_runtime_dependencies_name_the_codec_extras() -> None:
    """The package requires aiokafka with the snappy, lz4 and zstd extras, so the image has them."""
    aiokafka = next(Requirement(r) for r in requires("event-loader") or [] if r.startswith("aiokafka"))
    assert {"snappy", "lz4", "zstd"} <= aiokafka.extras


@pytest.mark.parametrize("codec", list(CODECS))
def test_fetcher_hands_out_a_batch_with_a_key_that_is_not_utf8(
    codec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Installed, the fetcher hands out every record of the batch, the bad key's bytes kept."""
    monkeypatch.setattr(fetcher, "MemoryRecords", MemoryRecords)
    records.install()
    consumed, next_offset = _fetched(_batch(codec, base_offset=40))
    assert [r.offset for r in consumed] == [40, 41, 42]
    assert next_offset == 43
    assert [r.value for r in consumed] == [b'{"n":0}', b'{"n":1}', b'{"n":2}']
    assert consumed[0].key == b"k0"
    assert consumed[1].timestamp == 1_001
    keys = [header_key_bytes(k) for k, _ in consumed[1].headers]
    assert keys == [b"ok", BAD_KEY, b"n"]
    assert [v for _, v in consumed[1].headers] == [b"1", b"v", None]


def test_pure_python_reader_is_covered_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under aiokafka's pure-Python reader (its error is a CorruptRecordException) the batch reads too."""
    monkeypatch.setattr(memory_records, "DefaultRecordBatch", _DefaultRecordBatchPy)
    monkeypatch.setattr(records, "MemoryRecords", _MemoryRecordsPy)
    monkeypatch.setattr(fetcher, "MemoryRecords", _MemoryRecordsPy)
    with pytest.raises(CorruptRecordException):
        list(_MemoryRecordsPy(_batch()).next_batch())
    monkeypatch.setattr(fetcher, "MemoryRecords", records.TolerantRecords)
    consumed, _next_offset = _fetched(_batch())
    assert [header_key_bytes(k) for k, _ in consumed[1].headers] == [b"ok", BAD_KEY, b"n"]


def test_fetcher_skips_what_it_already_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """Re-read from a later fetch offset, the batch hands out only the records from there on."""
    monkeypatch.setattr(fetcher, "MemoryRecords", MemoryRecords)
    records.install()
    consumed, next_offset = _fetched(_batch(base_offset=40) + _batch(base_offset=43), fetch_offset=42)
    assert [r.offset for r in consumed] == [42, 43, 44, 45]
    assert next_offset == 46


def test_good_batches_are_aiokafkas_own_records(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch aiokafka reads is handed over as aiokafka read it (no second reader involved)."""
    monkeypatch.setattr(fetcher, "MemoryRecords", MemoryRecords)
    records.install()
    data = batch_bytes([RawRecord(b"{}", 5, headers=[(b"trace", b"1")])])
    batch = fetcher.MemoryRecords(data).next_batch()
    [record] = list(batch)
    assert not isinstance(record, records.Record)
    assert record.headers == [("trace", b"1")]


def test_install_refuses_a_fetcher_it_does_not_know(monkeypatch: pytest.MonkeyPatch) -> None:
    """If aiokafka's fetcher stops reading through MemoryRecords, installing fails loudly."""
    monkeypatch.setattr(fetcher, "MemoryRecords", object)
    with pytest.raises(RuntimeError, match="no longer reads batches"):
        records.install()


def test_a_truncated_batch_is_a_corrupt_record_error() -> None:
    """The fallback reader reports bytes that are not a batch as aiokafka does, not with IndexError."""
    with pytest.raises(CorruptRecordException):
        records.read_batch(_batch()[:-3])
