"""A worker process outlives a schema registry outage: records naming a writer schema it has not
cached wait for the registry, neither dropped nor dead-lettered.

The worker reaches the real registry (Apicurio, started by the session's dev stack) through a
TCP outage proxy; the producer reaches it directly, so it registers v2 while the worker cannot
look it up.
"""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from prometheus_client.parser import text_string_to_metric_families

from loader.devstack import DevStack
from loader.devstack import registry as registry_service
from loader.devstack.process import free_port
from tests.chaos.tcp_outage import TcpOutageProxy
from tests.integration.avro_events import AvroProducer, avro_spec_on_disk
from tests.integration.helpers import produce, read_files
from tests.integration.workers import (
    WorkerProcess,
    end_and_committed,
    offsets_in_s3,
    wait_until_caught_up,
    worker_env,
)
from tests.waiting import eventually, stays

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.timeout(900)]

BEFORE = 60
DURING = 90
OUTAGE_S = 25.0


def _get(worker: WorkerProcess, path: str) -> tuple[int, bytes] | None:
    """Status and body of one of the worker's endpoints; None if it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.web_port}{path}", timeout=10) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def _readiness(worker: WorkerProcess) -> tuple[int, dict[str, Any]] | None:
    answer = _get(worker, "/readyz")
    return None if answer is None else (answer[0], json.loads(answer[1]))


def _registry_errors(worker: WorkerProcess) -> float:
    """``loader_errors_total`` of component ``registry``, summed over kinds."""
    answer = _get(worker, "/metrics")
    assert answer is not None and answer[0] == 200, answer
    return sum(
        sample.value
        for family in text_string_to_metric_families(answer[1].decode())
        for sample in family.samples
        if sample.name == "loader_errors_total" and sample.labels["component"] == "registry"
    )


def test_records_of_a_new_schema_wait_out_a_registry_outage(
    dev_stack: DevStack, tmp_path: Path, unique_name: Callable[..., str]
) -> None:
    """With the registry unreachable, v2 records (an id the worker never saw) are not taken: the
    worker stays up, /readyz is 503 naming the registry, errors are counted, nothing is
    dead-lettered or committed past them; once it is back every record lands exactly once."""
    settings = dev_stack.settings
    registry_url = settings.schema_registry.url
    assert registry_url, "the session's dev stack has no schema registry"
    name = unique_name("regout", sep="_")
    specs_dir = tmp_path / "specs"
    spec, store = avro_spec_on_disk(settings, specs_dir, name, bucket="it-registry-outage", partitions=2)
    upstream = urlsplit(registry_url)
    assert upstream.port is not None

    with (
        TcpOutageProxy(upstream.port) as proxy,
        AvroProducer(registry_url, spec.kafka.topic) as producer,
    ):
        assert settings.aws.endpoint_url is not None
        env = worker_env(settings, settings.aws.endpoint_url) | {
            "LOADER_SCHEMA_REGISTRY__URL": registry_service.endpoint(proxy.port),
            "LOADER_SCHEMA_REGISTRY__TIMEOUT_S": "3",
        }
        produce(settings, spec, [producer.message(i, "v1") for i in range(BEFORE)])
        worker = WorkerProcess(name, specs_dir, env, tmp_path / "worker.log", free_port())

        def alive() -> None:
            if not worker.alive:
                pytest.fail(f"the worker died: {worker.log_tail()}")

        try:
            assert worker.wait_until_assigned(90), worker.log_tail()
            wait_until_caught_up(settings, spec, 120, what="v1 records committed", check=alive)
            before = eventually(lambda: _readiness(worker), 30, what="an answer from /readyz")
            assert before is not None and before[0] == 200, before

            proxy.down()
            # The producer still reaches the registry: v2 gets an id the worker has never seen.
            during = [producer.message(BEFORE + i, ("v2", "v1")[i % 3 == 2]) for i in range(DURING)]
            produced = BEFORE + produce(settings, spec, during)
            assert producer.ids["v2"] != producer.ids["v1"]

            def registry_named_down() -> bool:
                alive()
                readiness = _readiness(worker)
                return (
                    readiness is not None
                    and readiness[0] == 503
                    and "schema_registry" in readiness[1].get("down", {})
                )

            eventually(
                registry_named_down, 60, what="/readyz naming the registry down", detail=worker.log_tail
            )
            eventually(lambda: _registry_errors(worker) > 0, 30, what="registry errors counted")
            ends, _ = end_and_committed(settings, spec)

            def waiting() -> bool:
                _, committed = end_and_committed(settings, spec)
                return (
                    worker.alive
                    and registry_named_down()
                    and not read_files(store, spec.dead_letter_prefix)
                    and any(committed[p] < ends[p] for p in ends)
                )

            stays(
                waiting,
                OUTAGE_S,
                what="the worker waiting for the registry",
                interval_s=1.0,
                detail=worker.log_tail,
            )
            errors_during = _registry_errors(worker)
            assert errors_during >= 2, "the lookup was not retried during the outage"

            proxy.up()
            wait_until_caught_up(
                settings, spec, 180, what="every record committed after the outage", check=alive
            )
            assert eventually(
                lambda: (r := _readiness(worker)) is not None and r[0] == 200 and not r[1]["down"],
                60,
                what="/readyz ready again",
            )
        finally:
            assert worker.signal(signal.SIGTERM) == 0, worker.log_tail()

    rows, dead, _ranges = offsets_in_s3(store, spec)
    assert dead == []
    assert Counter(rows) == Counter((p, o) for p in range(spec.kafka.partitions) for o in range(ends[p]))
    assert sum(ends.values()) == produced
    files = read_files(store, spec.data_prefix)
    coupons = [c for table in files.values() for c in table.column("COUPON").to_pylist()]
    expected = [d.get("coupon") for d in producer.sent.values()]
    assert sorted(map(str, coupons)) == sorted(map(str, expected))
