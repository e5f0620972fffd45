"""A Parquet file's footer from S3 without downloading the file."""

from __future__ import annotations

import struct

import pyarrow as pa
import pyarrow.parquet as pq

from loader.errors import StorageError
from loader.store.s3 import S3Store

__all__ = ["parquet_footer"]

_MAGIC = b"PAR1"
_TAIL_BYTES = 64 * 1024
"""First guess at the footer's size: one ranged GET covers all but very wide files."""


def parquet_footer(store: S3Store, key: str) -> pq.FileMetaData:
    """The file's metadata (row counts, row-group statistics) from its last bytes only."""
    tail = store.get_tail(key, _TAIL_BYTES)
    if len(tail) < 12 or tail[-4:] != _MAGIC:
        raise StorageError(f"s3://{store.bucket}/{key} is not a Parquet file", transient=False)
    footer_len = struct.unpack("<I", tail[-8:-4])[0]
    if footer_len + 8 > len(tail):
        tail = store.get_tail(key, footer_len + 8)
    # The reader only needs the footer; the leading magic stands in for the data pages before it.
    return pq.read_metadata(pa.BufferReader(_MAGIC + tail[-(footer_len + 8) :]))
