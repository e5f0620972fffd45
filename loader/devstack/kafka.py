"""A real single-node Apache Kafka broker (KRaft, broker and controller in one JVM).

Owns: finding Java, downloading the broker's jars from Maven Central once into
the cache folder (with ``mvn`` and ``kafka-pom.xml``), writing
``server.properties``, formatting the storage, starting ``kafka.Kafka`` and
waiting until it answers a metadata request.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import importlib.resources
import os
import re
import shutil
import signal
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any

import structlog

from loader.devstack.process import (
    LOOPBACK,
    Service,
    free_port,
    launch,
    log_tail,
    port_open,
    stop,
)
from loader.errors import DevStackError

__all__ = [
    "CMDLINE_MARKER",
    "KAFKA_VERSION",
    "NAME",
    "STOP_SIGNAL",
    "answers",
    "cache_dir",
    "endpoint",
    "ensure_kafka_libs",
    "find_java",
    "new_cluster_id",
    "server_properties",
    "start",
    "version_from_libs",
    "version_from_log",
]

NAME = "kafka"
KAFKA_VERSION = "4.4.0"
SCALA_VERSION = "2.13"
MIN_JAVA = 17
"""Kafka 4.x brokers need Java 17 or newer."""
STOP_SIGNAL = signal.SIGTERM
"""The broker's shutdown hook does a clean controlled shutdown on SIGTERM."""
CMDLINE_MARKER = "kafka.Kafka"
CACHE_DIR_ENV = "LOADER_CACHE_DIR"
_MARKER = ".complete"
_JAVA_HINT = "install a JDK 17+ (e.g. `apt-get install openjdk-17-jdk-headless` or `brew install openjdk@17`)"
_MVN_HINT = "install Maven (e.g. `apt-get install maven` or `brew install maven`)"
_LOG4J2_PROPERTIES = """\
# Broker logs go to stdout, which the dev stack sends to kafka.log.
status = warn
# Keep logging through the broker's own shutdown hook (log4j would stop first).
shutdownHook = disable
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""

log = structlog.get_logger()


def cache_dir() -> Path:
    """Where downloaded jars live: ``$LOADER_CACHE_DIR`` or ``~/.cache/event-loader`` (outside the repo)."""
    configured = os.environ.get(CACHE_DIR_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "event-loader"


def endpoint(port: int) -> str:
    """The bootstrap servers of a broker on ``port``."""
    return f"{LOOPBACK}:{port}"


def find_java() -> Path:
    """The ``java`` to run the broker with ($JAVA_HOME first, then PATH), checked to be 17+."""
    java_home = os.environ.get("JAVA_HOME")
    candidates = [Path(java_home) / "bin" / "java"] if java_home else []
    if found := shutil.which("java"):
        candidates.append(Path(found))
    java = next((c for c in candidates if c.is_file() and os.access(c, os.X_OK)), None)
    if java is None:
        raise DevStackError(f"Java not found (no $JAVA_HOME/bin/java, no java on PATH): {_JAVA_HINT}")
    try:
        out = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [str(java), "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise DevStackError(f"cannot run {java} -version ({exc}): {_JAVA_HINT}") from exc
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        raise DevStackError(f"cannot tell the version of {java}: {_JAVA_HINT}")
    major = int(match[1]) if match[1] != "1" else int(match[2] or 0)  # "1.8.0" is Java 8
    if major < MIN_JAVA:
        raise DevStackError(
            f"Kafka {KAFKA_VERSION} needs Java {MIN_JAVA}+, {java} is Java {major}: {_JAVA_HINT}"
        )
    return java


def version_from_libs(libs: Path) -> str | None:
    """The Kafka version of the ``kafka_2.13-<version>.jar`` in ``libs``."""
    for jar in libs.glob(f"kafka_{SCALA_VERSION}-*.jar"):
        if match := re.fullmatch(rf"kafka_{re.escape(SCALA_VERSION)}-(\d[\w.]*)\.jar", jar.name):
            return match[1]
    return None


def version_from_log(log_path: Path) -> str | None:
    """The version the running broker reports (``AppInfoParser``: "Kafka version: 4.4.0")."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return None
    match = re.search(r"Kafka version: (\S+)", text)
    return match[1] if match else None


def ensure_kafka_libs(cache: Path | None = None, *, timeout_s: float = 900.0) -> Path:
    """The folder of Kafka's jars, downloaded from Maven Central with ``mvn`` unless already complete."""
    home = (cache or cache_dir()) / f"kafka-{KAFKA_VERSION}"
    libs = home / "libs"
    if (libs / _MARKER).is_file():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise DevStackError(
            f"Maven (mvn) not found on PATH; it is needed once to download Apache Kafka {KAFKA_VERSION} "
            f"from Maven Central into {libs}: {_MVN_HINT}"
        )
    home.mkdir(parents=True, exist_ok=True)
    build = home / f"build-{os.getpid()}-{threading.get_ident()}"
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir()
    try:
        pom = build / "pom.xml"
        pom.write_bytes(importlib.resources.files("loader.devstack").joinpath("kafka-pom.xml").read_bytes())
        log.info("devstack.kafka_download", version=KAFKA_VERSION, into=str(libs))
        argv = [
            mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
            f"-DoutputDirectory={build / 'libs'}", "-DincludeScope=runtime",
        ]  # fmt: skip
        try:
            out = subprocess.run(  # noqa: S603 - fixed argv, no shell
                argv, cwd=build, capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise DevStackError(
                f"downloading Kafka {KAFKA_VERSION} with mvn took over {timeout_s:.0f}s"
            ) from exc
        if out.returncode != 0 or version_from_libs(build / "libs") != KAFKA_VERSION:
            tail = "\n".join((out.stdout + out.stderr).splitlines()[-30:])
            raise DevStackError(
                f"downloading Apache Kafka {KAFKA_VERSION} from Maven Central failed (mvn exit "
                f"{out.returncode}); check network access to Maven Central and ~/.m2/settings.xml:\n{tail}"
            )
        (build / "libs" / _MARKER).write_text(f"kafka_{SCALA_VERSION}-{KAFKA_VERSION}\n")
        if not (libs / _MARKER).is_file():  # another process may have finished first
            shutil.rmtree(libs, ignore_errors=True)
            try:
                (build / "libs").rename(libs)
            except OSError:
                if not (libs / _MARKER).is_file():
                    raise
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return libs


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding, not starting with '-'."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):  # would read as an option on the command line
            return cluster_id


def server_properties(*, port: int, controller_port: int, data_dir: Path) -> str:
    """``server.properties`` of a single-node KRaft broker+controller bound to 127.0.0.1."""
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{LOOPBACK}:{controller_port}",
        "listeners": f"PLAINTEXT://{LOOPBACK}:{port},CONTROLLER://{LOOPBACK}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{LOOPBACK}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "6",
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        # Members that start together (a worker's processes) join one generation instead of
        # rebalancing right after; production brokers default to 3000.
        "group.initial.rebalance.delay.ms": "1000",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
    }
    return "".join(f"{key}={value}\n" for key, value in props.items())


async def _describe_cluster(bootstrap: str, timeout_s: float) -> dict[str, Any]:
    from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415 - heavy import, only when probing

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    try:
        await admin.start()
        cluster: dict[str, Any] = await admin.describe_cluster()
        return cluster
    finally:
        await admin.close()


def answers(port: int, timeout_s: float = 3.0) -> bool:
    """Whether the broker on ``port`` answers a metadata request and lists itself."""
    if not port_open(port):
        return False
    cluster = asyncio.run(asyncio.wait_for(_describe_cluster(endpoint(port), timeout_s), timeout_s + 1))
    return bool(cluster.get("brokers"))


def start(work_dir: Path, *, timeout_s: float = 60.0, cancel: threading.Event | None = None) -> Service:
    """Format and start a fresh broker under ``work_dir``; return it once it answers metadata.

    Data from an earlier run is wiped: the local stack is ephemeral (moto and
    fakesnow keep nothing either), and a new cluster id needs fresh storage.
    """
    find_java()  # fail fast, before a download, when there is no suitable Java
    work_dir.mkdir(parents=True, exist_ok=True)
    data_dir = work_dir / "data"
    shutil.rmtree(data_dir, ignore_errors=True)
    port, controller_port = free_port(), free_port()
    while controller_port == port:
        controller_port = free_port()
    config = work_dir / "server.properties"
    config.write_text(server_properties(port=port, controller_port=controller_port, data_dir=data_dir))
    (work_dir / "log4j2.properties").write_text(_LOG4J2_PROPERTIES)
    fmt = [*_jvm(work_dir), "kafka.tools.StorageTool", "format", "-t", new_cluster_id(), "-c", str(config)]
    with (work_dir / "format.log").open("w") as fmt_log:
        try:
            done = subprocess.run(  # noqa: S603 - fixed argv, no shell
                fmt,
                stdin=subprocess.DEVNULL,
                stdout=fmt_log,
                stderr=subprocess.STDOUT,
                timeout=120,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise DevStackError(f"formatting Kafka storage in {data_dir} took over 120s") from exc
    if done.returncode != 0:
        raise DevStackError(f"formatting Kafka storage failed:\n{log_tail(work_dir / 'format.log')}")

    return _launch(work_dir, port=port, timeout_s=timeout_s, cancel=cancel)


def _jvm(work_dir: Path) -> list[str]:
    """``java`` with the broker's classpath and logging configuration."""
    log4j = work_dir / "log4j2.properties"
    classpath = f"{ensure_kafka_libs()}{os.sep}*"
    return [
        str(find_java()),
        f"-Dlog4j2.configurationFile={log4j}",
        "-Djava.awt.headless=true",
        "-cp",
        classpath,
    ]


def restart(service: Service, work_dir: Path, *, timeout_s: float = 60.0) -> Service:
    """Stop the broker cleanly and start it again on the same port and data (broker-restart tests)."""
    stop(service, sig=STOP_SIGNAL, grace_s=30.0)
    return _launch(work_dir, port=service.port, timeout_s=timeout_s, cancel=None)


def _launch(work_dir: Path, *, port: int, timeout_s: float, cancel: threading.Event | None) -> Service:
    """Start ``kafka.Kafka`` on the formatted storage and config in ``work_dir``."""
    config, log_path = work_dir / "server.properties", work_dir / "kafka.log"
    jvm = _jvm(work_dir)
    service, seconds = launch(
        NAME,
        "Kafka",
        [*jvm[:1], "-Xms256m", "-Xmx768m", *jvm[1:], "kafka.Kafka", str(config)],
        port=port,
        log_path=log_path,
        probe=lambda: answers(port),
        stop_signal=STOP_SIGNAL,
        timeout_s=timeout_s,
        cancel=cancel,
    )
    version = version_from_log(log_path) or version_from_libs(ensure_kafka_libs()) or "unknown"
    log.info(
        "devstack.kafka_ready",
        version=f"Apache Kafka {version}",
        bootstrap_servers=endpoint(port),
        pid=service.pid,
        seconds=round(seconds, 2),
    )
    return dataclasses.replace(service, version=f"Apache Kafka {version}")
