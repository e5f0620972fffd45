"""Decoupling: the warehouse goes away, ingestion to S3 goes on, loads catch up exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from loader.devstack import DevStack
from loader.devstack.provision import provision
from loader.store.s3 import S3Store
from loader.warehouse.connection import Warehouse
from loader.warehouse.manager import PipeManager
from loader.warehouse.sqs_loader import SqsLoader
from loader.worker.worker import StreamWorker
from tests.chaos.tcp_outage import TcpOutageProxy
from tests.integration.helpers import make_spec, produce, read_files, sample_values
from tests.integration.loading import running
from tests.waiting import eventually_async

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600)]


def test_ingestion_goes_on_while_the_warehouse_is_down(
    dev_stack: DevStack, unique_name: Callable[..., str]
) -> None:
    """While Snowflake is unreachable the worker keeps writing to S3; afterwards every row lands once."""
    settings = dev_stack.settings
    if dev_stack.service("fakesnow") is None or settings.snowflake.port is None:
        pytest.skip("needs the local fakesnow server started by the dev stack")
    spec = make_spec(unique_name("outage", sep="_"), bucket="it-outage", partitions=3, max_records=400)
    queue_url = asyncio.run(provision(settings, [spec], queue_name=unique_name("oq")))
    values = sample_values(spec, 3_000)
    with Warehouse(settings.snowflake) as direct, TcpOutageProxy(settings.snowflake.port) as proxy:
        manager = PipeManager(direct, settings)
        manager.apply(spec)
        objects = manager.objects(spec)

        def rows() -> int:
            return int(direct.execute(objects.count_statement())[0][0])

        through_proxy = settings.model_copy(
            update={
                "snowflake": settings.snowflake.model_copy(
                    update={"port": proxy.port, "login_timeout_s": 5, "network_timeout_s": 20}
                )
            }
        )
        loader = SqsLoader(through_proxy, [spec], queue_url=queue_url, wait_time_s=1, visibility_timeout_s=5)
        worker = StreamWorker(spec, settings)

        async def scenario() -> tuple[int, int, int]:  # rows during, rows after, loads during
            task = asyncio.create_task(worker.run())

            def state() -> str:
                return f"rows={rows()}, worker: {worker.stats}, loader: {loader.stats}"

            async def wait_for(predicate: Callable[[], bool], what: str, timeout_s: float = 120) -> None:
                def checked() -> bool:
                    assert not task.done(), task
                    return predicate()

                await eventually_async(checked, timeout_s, what=what, interval_s=0.3, detail=state)

            await asyncio.to_thread(produce, settings, spec, values[:1_500])
            await wait_for(lambda: rows() == 1_500, "the first half in the table")
            proxy.down()  # the warehouse is unreachable from the loader from here on
            loads_before = loader.stats.files_loaded
            await asyncio.to_thread(produce, settings, spec, values[1_500:])
            await wait_for(lambda: worker.stats.rows_written == 3_000, "every record in S3 during the outage")
            await asyncio.sleep(6)  # the loader keeps failing: no message may be lost meanwhile
            during = rows()
            loads_during = loader.stats.files_loaded - loads_before
            proxy.up()
            await wait_for(lambda: rows() >= 3_000, "the loads to catch up", timeout_s=240)
            await asyncio.sleep(3)  # let any duplicate load show up
            worker.stop()
            await task
            return during, rows(), loads_during

        with running(loader):
            during, after, loads_during = asyncio.run(scenario())
        loaded = direct.execute(f'SELECT "_PARTITION", "_OFFSET" FROM {objects.table}')
    assert during == 1_500  # nothing reached the table while it was down
    assert loads_during == 0
    in_s3 = read_files(S3Store(settings.aws, spec.s3.bucket), spec.data_prefix)
    assert sum(table.num_rows for table in in_s3.values()) == 3_000
    assert after == len(loaded) == len(set(loaded)) == 3_000
