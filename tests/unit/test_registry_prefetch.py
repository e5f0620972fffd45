"""The registry client's prefetch: a batch's writer schemas are looked up before it is decoded,
so decoding it sends no request and a registry outage surfaces before the decode, retryable."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from loader.errors import RegistryError
from loader.schema.registry_client import RegistryClient, WriterSchemaError
from tests.unit.test_registry_client import AVRO, Answer, FakeRegistry, _closed_port, _serve

pytestmark = pytest.mark.unit


@pytest.fixture
def registry() -> Iterator[FakeRegistry]:
    yield from _serve()


def test_after_a_prefetch_decoding_the_batch_sends_no_request(registry: FakeRegistry) -> None:
    """Known and unknown ids of the batch are answered from the prefetch, with no second request;
    the unknown id stays the record's problem and is asked again by the next prefetch."""
    registry.answers["/schemas/ids/1"] = Answer(200, {"schema": AVRO})
    with RegistryClient(registry.url) as client:
        client.prefetch([1, 7, 1])
        asked = len(registry.requests)
        assert client.writer_schema(1) == AVRO
        for _ in range(2):
            with pytest.raises(WriterSchemaError, match="no such schema") as caught:
                client.writer_schema(7)
            assert caught.value.schema_id == 7
        assert len(registry.requests) == asked == 2
        client.prefetch([7])
    assert [path for _, path, _ in registry.requests] == [
        "/schemas/ids/1",
        "/schemas/ids/7",
        "/schemas/ids/7",
    ]


def test_prefetch_with_the_registry_down_is_transient_and_cached_ids_need_none() -> None:
    """Unreachable, a prefetch of an uncached id is a transient RegistryError (the caller
    retries), never a WriterSchemaError that would dead-letter the records."""
    with RegistryClient(f"http://127.0.0.1:{_closed_port()}", timeout_s=2) as client:
        client.prefetch([])
        with pytest.raises(RegistryError) as caught:
            client.prefetch([3])
    assert caught.value.transient
    assert not isinstance(caught.value, WriterSchemaError)


def test_a_batch_of_cached_ids_is_held_with_no_request(registry: FakeRegistry) -> None:
    """Once every id of a batch has been found, the cache alone answers its prefetch (no
    request, so no thread); an id never found, or known to be unknown, needs the registry."""
    registry.answers["/schemas/ids/1"] = Answer(200, {"schema": AVRO})
    with RegistryClient(registry.url) as client:
        assert not client.prefetch_cached([1])
        client.prefetch([1, 7])
        asked = len(registry.requests)
        assert client.prefetch_cached([1, 1])
        assert client.writer_schema(1) == AVRO
        assert not client.prefetch_cached([1, 7])  # 7 is asked again, by a prefetch
        assert client.prefetch_cached([])
        assert len(registry.requests) == asked == 2
