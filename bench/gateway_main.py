"""``bench/gateway``: the event gateway against a direct producer, in one run.

1. Build ``oha`` (a compiled HTTP load generator) from crates.io if it is not cached
   (:mod:`bench.oha`), and start the local services that are not configured (Kafka, moto).
2. Copy the ``order_created`` example spec onto a fresh topic and write a body file of 100
   valid sample events (JSON envelopes) for it.
3. (a) A direct aiokafka producer in this process sends the records the gateway would
   produce for those events (same value, headers and timestamps), tuned as the gateway's
   producer is (:func:`loader.gateway.delivery.producer_options`: idempotent, acks=all,
   the same linger and compression), to its own topic.
4. (b) ``loader gateway`` (sync mode, no API key) runs as a subprocess; oha posts the body
   file as fast as it can at rising concurrency until events/s stop rising: the peak.
   Then (a) runs again: b/a uses the mean of the two, since the machine's speed drifts
   within a run (a slower spell during (b) alone once made b/a 0.47 against 0.62-0.63).
5. (c) oha posts at half the peak's request rate, over the fewest connections of the sweep
   that carried that rate with a fifth to spare: the gateway's p50/p99 latency there.
6. Every record is counted on the topics: the gateway's must hold exactly 100 per 2xx
   answer (a 200 may carry rejections, and oha only sees the status), the direct one every
   record sent. Print events/s of both, the ratio, p50/p99, the targets as met/MISSED, and
   a JSON line for scripts.

Missing a target is reported, not an error (exit 0); a run whose records did not all land,
or with a non-2xx answer, exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from bench.cpu import CpuMeter, CpuUsage
from bench.oha import OhaRun, ensure_oha, run_oha
from bench.worker_run import worker_env
from loader.config.settings import Settings, load_settings
from loader.config.spec import EventSpec, load_spec
from loader.devstack import DevStack
from loader.devstack.samples import SampleEvents
from loader.gateway.delivery import producer_options
from loader.gateway.events import EventRoute
from loader.gateway.outbound import OutboundRecord
from loader.logs import configure_logging
from loader.schema.avro import load_avro_schema

__all__ = ["main"]

REPO = Path(__file__).resolve().parents[1]
EVENT = "order_created"
BATCH = 100
"""Events per request (the issue's batches of 100)."""
TARGET_RATIO = 0.5
TARGET_P99_S = 0.050
CONCURRENCY = (4, 8, 16, 32, 64, 128)
"""Connections tried for the peak, in order, until events/s stop rising."""
STILL_RISING = 1.05
"""A step is an improvement when it beats the best so far by this factor."""
FLAT_STEPS = 2
"""The sweep stops after this many steps in a row without an improvement (one can be noise)."""
READY_WITHIN_S = 120.0


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/gateway",
        description="The event gateway (through oha) against a direct aiokafka producer.",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each oha run (default 10)")
    parser.add_argument(
        "--direct-events", type=int, default=300_000, help="events the direct producer sends (default 300000)"
    )
    parser.add_argument("--partitions", type=int, default=6, help="partitions of both topics (default 6)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the sample events (default 7)")
    parser.add_argument(
        "--linger-ms",
        type=int,
        help="both producers' linger (LOADER_GATEWAY__LINGER_MS; default: the gateway's setting)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=os.cpu_count() or 1,
        help="gateway processes (LOADER_GATEWAY__PROCESSES; default: one per core)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (gateway log, body, spec)")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or min(args.direct_events, args.partitions, args.processes) < 1:
        parser.error("--seconds, --direct-events, --partitions and --processes must be positive")
    return args


def _say(message: str) -> None:
    """Progress goes to stderr; stdout holds only the results (its last line is JSON)."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# --- the event and its records -------------------------------------------------------------------


def write_bench_spec(specs_dir: Path, topic: str, partitions: int) -> EventSpec:
    """The ``order_created`` example spec, on the benchmark's own topic (so its records can be counted)."""
    document = yaml.safe_load((REPO / "pipelines" / f"{EVENT}.yaml").read_text())
    document["kafka"].update(topic=topic, partitions=partitions, consumer_group=f"{topic}.unused")
    document["schema"]["path"] = str((REPO / "schemas" / f"{EVENT}.avsc").resolve())
    specs_dir.mkdir(parents=True, exist_ok=True)
    path = specs_dir / f"{EVENT}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return load_spec(path)


def sample_envelopes(spec: EventSpec, seed: int) -> list[dict[str, Any]]:
    """``BATCH`` valid events of ``spec``, as full envelopes (the gateway's default posted form)."""
    assert spec.schema_path is not None
    samples = SampleEvents(EVENT, load_avro_schema(spec.schema_path), seed=seed, source="bench-gateway")
    return [samples.envelope(i) for i in range(BATCH)]


def gateway_records(spec: EventSpec, events: list[dict[str, Any]]) -> list[OutboundRecord]:
    """The records the gateway produces for ``events`` (its own conversion, so both sides send the
    same bytes); every event must pass the worker's checks, or the comparison would be unfair."""
    route = EventRoute(spec)
    now = datetime.now(UTC)
    records = [route.outbound(e, posted="envelope", source=None, now=now) for e in events]
    checked = route.check(list(enumerate(records)))
    if checked.rejected:
        raise RuntimeError(f"sample events the worker would reject: {checked.rejected[:3]}")
    return records


# --- Kafka -----------------------------------------------------------------------------------


async def create_topics(bootstrap: str, partitions: dict[str, int]) -> None:
    """Create the topics (an existing one, like the canary after an earlier run, is fine)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for topic, count in partitions.items():
            with contextlib.suppress(TopicAlreadyExistsError):
                response = await admin.create_topics([NewTopic(topic, count, 1)])
                for _name, code, *rest in response.topic_errors:
                    if code and code != TopicAlreadyExistsError.errno:
                        raise RuntimeError(
                            f"cannot create topic {topic}: error {code} {rest[-1] if rest else ''}"
                        )
    finally:
        await admin.close()


async def count_records(bootstrap: str, topic: str, partitions: int) -> int:
    """Records in ``topic``: the sum of its end offsets (a fresh topic, idempotent producers)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
    finally:
        await consumer.stop()
    return sum(ends.values())


@dataclass(frozen=True)
class Direct:
    events: int
    seconds: float
    cpu: CpuUsage

    @property
    def eps(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


async def produce_direct(
    settings: Settings,
    bootstrap: str,
    topic: str,
    records: list[OutboundRecord],
    events: int,
    meter: CpuMeter,
) -> Direct:
    """Send ``events`` records (``records`` over and over) one ``send`` each, as the gateway does,
    with the gateway's producer options; timed from the first send to the last acknowledgement."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **producer_options(settings))
    await producer.start()
    try:
        # Warm up: metadata and the idempotent producer id, as a ready gateway has them.
        await (await producer.send(topic, records[0].value, headers=list(records[0].headers)))
        began = time.perf_counter()
        meter.start()
        pending: list[asyncio.Future[Any]] = []
        for number in range(events - 1):
            record = records[number % len(records)]
            pending.append(
                await producer.send(
                    topic, record.value, headers=list(record.headers), timestamp_ms=record.timestamp_ms
                )
            )
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        return Direct(events - 1, time.perf_counter() - began, meter.stop())
    finally:
        await producer.stop()


# --- the gateway -------------------------------------------------------------------------------


def _ready(metrics_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/readyz", timeout=3) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_gateway(
    settings: Settings, specs_dir: Path, work_dir: Path, port: int, metrics_port: int
) -> subprocess.Popen[bytes]:
    """``loader gateway`` in sync mode without API keys, once ``/readyz`` says 200."""
    env = worker_env(settings, work_dir / "state", work_dir / "tmp")
    (work_dir / "tmp").mkdir(parents=True, exist_ok=True)
    env |= {
        "LOADER_SPECS_DIR": str(specs_dir),
        # The tuning the direct producer got, whatever the environment said.
        "LOADER_GATEWAY__LINGER_MS": str(settings.gateway.linger_ms),
        "LOADER_GATEWAY__COMPRESSION": settings.gateway.compression,
        "LOADER_GATEWAY__PROCESSES": str(settings.gateway.processes),
        "LOADER_LOG_LEVEL": "WARNING",
        "LOADER_GATEWAY__ALLOW_ANONYMOUS": "true",
        "LOADER_GATEWAY__MODE": "sync",
        "LOADER_GATEWAY__METRICS_PORT": str(metrics_port),
    }
    loader = Path(sys.executable).with_name("loader")
    with (work_dir / "gateway.log").open("wb") as log:
        process = subprocess.Popen(
            [str(loader), "gateway", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + READY_WITHIN_S
    while not _ready(metrics_port):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_gateway(process)
            tail = (work_dir / "gateway.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the gateway did not become ready:\n{tail}")
        time.sleep(0.5)
    return process


def gateway_pids(pid: int) -> dict[str, int]:
    """The gateway's process and, with several, its children (each measured: "gateway/N")."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return {"gateway": pid, **{f"gateway/{n}": int(child) for n, child in enumerate(children, start=1)}}


def stop_gateway(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM the gateway (it drains and flushes), SIGKILL after 30 s; its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def find_peak(oha: Path, url: str, body: Path, seconds: float, meter: CpuMeter) -> list[OhaRun]:
    """oha at rising concurrency until events/s stop rising (or a step fails); every run made."""
    runs: list[OhaRun] = []
    best = 0.0
    flat = 0
    for concurrency in CONCURRENCY:
        run = run_oha(oha, url, body, concurrency=concurrency, duration_s=seconds, meter=meter)
        runs.append(run)
        eps = run.events_per_s(BATCH)
        _say(
            f"(b) {concurrency:>3} connections: {eps:,.0f} events/s ({run.ok} answered 2xx,"
            f" {run.not_ok} not), p99 {run.p99_s * 1000:.1f} ms; {_cores(run.cpu)}"
        )
        if run.not_ok:
            break
        flat = 0 if eps >= best * STILL_RISING else flat + 1
        best = max(best, eps)
        if flat >= FLAT_STEPS:
            break
    return runs


def half_rate_connections(runs: list[OhaRun], rate: float) -> int:
    """Connections for the half-rate run: the fewest of the sweep that carried the rate with
    a fifth to spare, as clients that need no more would use (more connections than the
    rate needs only make oha's arrivals burstier: Little's law asks for rate x latency)."""
    enough = [r.concurrency for r in runs if r.ok / r.seconds >= rate * 1.2 and not r.not_ok]
    return min(enough) if enough else max(runs, key=lambda r: r.events_per_s(BATCH)).concurrency


def _gateway_cores(cpu: CpuUsage | None) -> float:
    """Cores the gateway's processes used together."""
    return sum(used for party, used in cpu.cores.items() if party.startswith("gateway")) if cpu else 0.0


def _cores(cpu: CpuUsage | None) -> str:
    return cpu.describe() if cpu is not None else "cores used: not measured"


# --- the run -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Results:
    direct: Direct
    direct_after: Direct
    """(a) again, right after the gateway's sweep: the machine's speed drifts within a run."""
    direct_landed: int
    peak: OhaRun
    runs: list[OhaRun]
    half: OhaRun
    landed: int
    gateway_exit: int
    linger_ms: int
    compression: str
    processes: int


def _services(work_dir: Path) -> DevStack:
    """Start what is not configured; the benchmark never talks to Snowflake, so it is marked
    configured for the launch only (no fakesnow process for nothing)."""
    base = load_settings()
    if not base.snowflake.account:
        base = base.model_copy(update={"snowflake": base.snowflake.model_copy(update={"account": "unused"})})
    return DevStack.launch(base, work_dir=work_dir)


def measure(
    args: argparse.Namespace, oha: Path, settings: Settings, work_dir: Path, service_pids: dict[str, int]
) -> Results:
    tuned = settings.gateway.model_copy(update={"processes": args.processes})
    if args.linger_ms is not None:
        tuned = tuned.model_copy(update={"linger_ms": args.linger_ms})
    settings = settings.model_copy(update={"gateway": tuned})
    bootstrap = settings.kafka.bootstrap_for("default")
    run_id = f"{time.strftime('%Y%m%d%H%M%S')}{uuid.uuid4().hex[:6]}"
    topic, direct_topic = f"bench.gateway.{run_id}", f"bench.gateway.{run_id}.direct"
    asyncio.run(
        create_topics(
            bootstrap,
            {topic: args.partitions, direct_topic: args.partitions, settings.gateway.canary_topic: 1},
        )
    )
    specs_dir = work_dir / "specs"
    spec = write_bench_spec(specs_dir, topic, args.partitions)
    events = sample_envelopes(spec, args.seed)
    records = gateway_records(spec, events)
    body = work_dir / "body.json"
    body.write_bytes(orjson.dumps(events))
    _say(f"{EVENT}: {BATCH} events per request, {body.stat().st_size:,} B body; topics {topic}[.direct]")

    tuning = f"linger {settings.gateway.linger_ms} ms, {settings.gateway.compression}"
    _say(f"(a) direct aiokafka producer, {args.direct_events:,} events ({tuning})")
    in_process = CpuMeter({"bench": os.getpid(), **service_pids})
    direct = asyncio.run(
        produce_direct(settings, bootstrap, direct_topic, records, args.direct_events, in_process)
    )
    _say(f"(a) {direct.eps:,.0f} events/s; {direct.cpu.describe()}")

    port, metrics_port = _free_port(), _free_port()
    _say(
        f"starting `loader gateway` on 127.0.0.1:{port} (sync mode, {settings.gateway.processes} processes),"
        " waiting for /readyz"
    )
    gateway = start_gateway(settings, specs_dir, work_dir, port, metrics_port)
    url = f"http://127.0.0.1:{port}/v1/events/{EVENT}"
    try:
        meter = CpuMeter({**gateway_pids(gateway.pid), **service_pids})
        runs = find_peak(oha, url, body, args.seconds, meter)
        peak = max(runs, key=lambda r: r.events_per_s(BATCH))
        _say(f"(a) the direct producer again, right after the sweep ({args.direct_events:,} events)")
        direct_after = asyncio.run(
            produce_direct(settings, bootstrap, direct_topic, records, args.direct_events, in_process)
        )
        _say(f"(a) {direct_after.eps:,.0f} events/s; {direct_after.cpu.describe()}")
        rate = peak.ok / peak.seconds / 2
        connections = half_rate_connections(runs, rate)
        _say(f"(c) {rate:,.0f} requests/s (half the peak) with {connections} connections")
        half = run_oha(
            oha,
            url,
            body,
            concurrency=connections,
            duration_s=args.seconds * 1.5,
            rate=rate,
            meter=meter,
        )
        _say(f"(c) p50 {half.p50_s * 1000:.1f} ms, p99 {half.p99_s * 1000:.1f} ms; {_cores(half.cpu)}")
    finally:
        code = stop_gateway(gateway)
    landed = asyncio.run(count_records(bootstrap, topic, args.partitions))
    direct_landed = asyncio.run(count_records(bootstrap, direct_topic, args.partitions))
    return Results(
        direct,
        direct_after,
        direct_landed,
        peak,
        [*runs, half],
        half,
        landed,
        code,
        settings.gateway.linger_ms,
        settings.gateway.compression,
        settings.gateway.processes,
    )


def report(args: argparse.Namespace, results: Results) -> bool:
    """Print the figures and the JSON line; True when every record landed and every answer was 2xx."""
    direct, after, peak, half = results.direct, results.direct_after, results.peak, results.half
    gateway_eps = peak.events_per_s(BATCH)
    direct_eps = (direct.eps + after.eps) / 2  # before and after the sweep: the drift between cancels
    ratio = gateway_eps / direct_eps if direct_eps > 0 else 0.0
    accepted = sum(run.ok for run in results.runs) * BATCH
    not_ok = {
        status: n for run in results.runs for status, n in run.statuses.items() if not 200 <= status < 300
    }
    errors = {e: n for run in results.runs for e, n in run.errors.items()}

    def mark(ok: bool) -> str:
        return "met" if ok else "MISSED"

    problems: list[str] = []
    if not_ok or errors:
        problems.append(f"answers other than 2xx: statuses {not_ok}, errors {errors}")
    if results.landed != accepted:
        problems.append(
            f"{results.landed:,} records on the gateway's topic for {accepted:,} events answered 2xx"
        )
    direct_sent = direct.events + 1 + after.events + 1  # each run's warm-up record too
    if results.direct_landed != direct_sent:
        problems.append(f"{results.direct_landed:,} records on the direct topic for {direct_sent:,} sent")
    if results.gateway_exit != 0:
        problems.append(f"the gateway exited {results.gateway_exit} on SIGTERM")
    lines = [
        "",
        f"Gateway benchmark: {EVENT} events, {BATCH} per request (JSON envelopes), sync mode,"
        f" {results.processes} gateway process(es),"
        f" {args.partitions} partitions, producers lingering {results.linger_ms} ms, {results.compression};"
        f" {os.cpu_count()} cores shared by oha, the gateway and Kafka",
        f"  (a) direct aiokafka producer (gateway's options)   {direct_eps:>10,.0f} events/s"
        f"  (the mean of {direct.eps:,.0f} before the gateway and {after.eps:,.0f} after its sweep,"
        f" {direct.events:,} events each)",
        f"      before: {direct.cpu.describe()}",
        f"      after: {after.cpu.describe()}",
        f"  (b) gateway through oha, peak                      {gateway_eps:>10,.0f} events/s"
        f"  ({peak.ok / peak.seconds:,.0f} requests/s, {peak.concurrency} connections,"
        f" p50 {peak.p50_s * 1000:.1f} ms, p99 {peak.p99_s * 1000:.1f} ms)",
        f"      {_cores(peak.cpu)}",
        "      concurrency sweep: "
        + ", ".join(f"{r.concurrency}: {r.events_per_s(BATCH):,.0f}" for r in results.runs if r.rate is None),
        f"  b/a = {ratio:.2f} (target >= {TARGET_RATIO}: {mark(ratio >= TARGET_RATIO)})",
        f"  (c) at half the peak ({half.rate or 0:,.0f} requests/s, {half.ok / half.seconds:,.0f} served):"
        f" p50 {half.p50_s * 1000:.1f} ms, p99 {half.p99_s * 1000:.1f} ms"
        f" (target p99 < {TARGET_P99_S * 1000:.0f} ms: {mark(half.p99_s < TARGET_P99_S)})",
        f"      {_cores(half.cpu)}",
        f"  records on the gateway's topic: {results.landed:,} (2xx answers x {BATCH}: {accepted:,});"
        f" on the direct topic: {results.direct_landed:,}",
    ]
    lines += [f"  PROBLEM: {p}" for p in problems] or ["  correctness: every 2xx event is on the topic, once"]
    print("\n".join(lines))
    summary = {
        "direct_eps": round(direct_eps, 1),
        "direct_eps_before": round(direct.eps, 1),
        "direct_eps_after": round(after.eps, 1),
        "gateway_eps": round(gateway_eps, 1),
        "ratio": round(ratio, 3),
        "peak_concurrency": peak.concurrency,
        "linger_ms": results.linger_ms,
        "half_rate_rps": round(half.rate or 0, 1),
        "p50_ms": round(half.p50_s * 1000, 2),
        "p99_ms": round(half.p99_s * 1000, 2),
        "ratio_met": ratio >= TARGET_RATIO,
        "p99_met": half.p99_s < TARGET_P99_S,
        "gateway_processes": results.processes,
        "gateway_cores_at_peak": round(_gateway_cores(peak.cpu), 2),
        "other_cores_at_peak": round(peak.cpu.other, 2) if peak.cpu else None,
        "records_landed": results.landed,
        "records_accepted": accepted,
        "problems": problems,
    }
    print(json.dumps(summary), flush=True)
    return not problems


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 unless a request failed or records did not land."""
    args = _args(argv)
    configure_logging("WARNING")
    oha = ensure_oha()
    work_dir = Path(tempfile.mkdtemp(prefix="loader-bench-gateway-"))
    try:
        _say(f"starting the local services that are not configured (work dir {work_dir})")
        stack = _services(work_dir / "stack")
        previous = signal.getsignal(signal.SIGINT)
        try:
            kafka = stack.service("kafka")
            pids = {"kafka": kafka.pid} if kafka is not None else {}
            results = measure(args, oha, load_settings(**stack.overrides), work_dir, pids)
        except KeyboardInterrupt:
            _say("interrupted")
            return 130
        finally:
            _say("stopping the services the benchmark started")
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                stack.stop()
            finally:
                signal.signal(signal.SIGINT, previous)
    finally:
        if args.keep:
            _say(f"kept {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    return 0 if report(args, results) else 1


if __name__ == "__main__":
    sys.exit(main())
