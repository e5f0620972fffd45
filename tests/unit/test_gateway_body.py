"""Reading a posted body: limits, gzip, arrays and NDJSON, one verdict per element."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator

import pytest

from loader.gateway.body import BodyError, TooLargeError, decompress, elements, read_limited

pytestmark = pytest.mark.unit


def test_an_array_and_ndjson_give_the_same_elements() -> None:
    """A JSON array and the same objects one a line are the same elements, by index."""
    array = elements(b'[{"a": 1}, {"b": 2}]', "application/json", 10)
    lines = elements(b'{"a": 1}\n\n{"b": 2}\n', None, 10)
    assert (
        [(e.index, e.value) for e in array]
        == [(e.index, e.value) for e in lines]
        == [(0, {"a": 1}), (1, {"b": 2})]
    )


def test_a_repeated_key_rejects_only_its_element() -> None:
    """An object spelling a key twice, at any depth, is refused by index; its neighbours are not."""
    found = elements(b'[{"a": 1}, {"b": {"c": 1, "c": 2}}, {"d": 3}]', None, 10)
    assert [e.value is None for e in found] == [False, True, False]
    assert found[1].problem == "duplicate key 'c': a key may appear once per object"


def test_an_ndjson_line_that_is_not_an_object_is_rejected_alone() -> None:
    """A malformed line or a bare value is that element's problem; the rest are read."""
    found = elements(b'{"a": 1}\n{"a": \n7\n', "application/x-ndjson", 10)
    assert found[0].value == {"a": 1}
    assert found[1].problem is not None and found[1].problem.startswith("malformed JSON")
    assert found[2].problem == "not a JSON object: int"


@pytest.mark.parametrize(
    "body", [b"[1,", b"[{}", b"[]", b" \n "], ids=["malformed", "unclosed", "empty-array", "blank"]
)
def test_a_body_that_cannot_be_split_is_refused_whole(body: bytes) -> None:
    """Malformed arrays, an empty array or a blank body: BodyError for the whole request."""
    with pytest.raises(BodyError):
        elements(body, "application/json", 10)


def test_more_elements_than_the_limit_is_too_large() -> None:
    """Past max_records elements: TooLargeError, for arrays and NDJSON alike."""
    with pytest.raises(TooLargeError):
        elements(b"[{}, {}, {}]", None, 2)
    with pytest.raises(TooLargeError):
        elements(b"{}\n{}\n{}", None, 2)


def test_gzip_is_capped_while_inflating() -> None:
    """A gzip body inflating past the limit is TooLargeError; one within it is decoded; bad
    gzip and unknown encodings are BodyError."""
    assert decompress(gzip.compress(b"x" * 100), "gzip", 100) == b"x" * 100
    with pytest.raises(TooLargeError):
        decompress(gzip.compress(b"x" * 50_000_000), "gzip", 1024)
    with pytest.raises(BodyError):
        decompress(b"not gzip", "gzip", 1024)
    with pytest.raises(BodyError):
        decompress(b"x", "br", 1024)


def test_reading_stops_at_the_limit() -> None:
    """The raw body is refused as soon as it passes the limit, without reading the rest."""
    read: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        for index in range(100):
            read.append(index)
            yield b"x" * 100

    with pytest.raises(TooLargeError):
        asyncio.run(read_limited(chunks(), 250))
    assert read == [0, 1, 2]
