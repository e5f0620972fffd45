"""A real Confluent-compatible schema registry: Apicurio Registry 2.4.2.Final, in memory.

Owns: building the registry once from Maven Central artifacts into the cache
folder (with ``mvn`` and the wrapper project in ``apicurio/``; no runnable jar is
published), starting it on 127.0.0.1 and waiting until its Confluent API
(``/apis/ccompat/v7``) answers. Where it differs from Confluent's registry:
default compatibility is NONE (tests set it per subject), some error codes (an
unknown subject is 40402, an incompatible schema 409 with code 0),
``/schemas/ids/{id}/subjects`` and ``/mode`` are missing, and the same schema
with other whitespace gets a new id. Apicurio's canonical hashing would fix the
last, but stays off: with it, 2.4.2 stores and serves a record's fields sorted
by name, a different binary layout, so a consumer decoding with the writer
schema it fetched would misread every record.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import importlib.resources
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import structlog

from loader.devstack.kafka import cache_dir, find_java
from loader.devstack.process import LOOPBACK, Service, free_port, launch, port_open
from loader.errors import DevStackError

__all__ = [
    "APICURIO_VERSION",
    "API_PATH",
    "CMDLINE_MARKER",
    "NAME",
    "STOP_SIGNAL",
    "answers",
    "endpoint",
    "ensure_app",
    "start",
]

NAME = "schema-registry"
APICURIO_VERSION = "2.4.2.Final"
API_PATH = "/apis/ccompat/v7"
"""Where Apicurio serves the Confluent Schema Registry API."""
STOP_SIGNAL = signal.SIGTERM
"""Quarkus shuts down cleanly on SIGTERM."""
CMDLINE_MARKER = "apicurio-registry-local"
"""In the runner jar's name, so in the command line of every registry the stack starts."""
RUNNER_JAR = "apicurio-registry-local-2.4.2-runner.jar"
_PROJECT_FILES = {
    "pom.xml": "pom.xml",
    "settings.xml": "settings.xml",
    "application.properties": "src/main/resources/application.properties",
}
"""The wrapper project's files (package data in ``apicurio/``) and where the build wants them."""
_MARKER = ".complete"
_MVN_HINT = "install Maven (e.g. `apt-get install maven` or `brew install maven`)"

log = structlog.get_logger()


def endpoint(port: int) -> str:
    """The Confluent-compatible API URL of a registry on ``port`` (what ``schema_registry.url`` takes)."""
    return f"http://{LOOPBACK}:{port}{API_PATH}"


def _project() -> dict[str, bytes]:
    data = importlib.resources.files("loader.devstack").joinpath("apicurio")
    return {name: data.joinpath(name).read_bytes() for name in _PROJECT_FILES}


def _app_dir(cache: Path, project: dict[str, bytes]) -> Path:
    """The build's folder, named after the project files, so a changed project is rebuilt."""
    digest = hashlib.sha256()
    for name in sorted(project):
        digest.update(name.encode() + b"\0" + project[name] + b"\0")
    return cache / "apicurio-2.4.2" / f"app-{digest.hexdigest()[:12]}"


def ensure_app(cache: Path | None = None, *, timeout_s: float = 1800.0) -> Path:
    """The registry's runner jar (its ``lib/`` beside it), built with ``mvn`` unless already complete.

    The first build downloads about 340 MB into the Maven repository (``~/.m2``);
    the app itself is about 130 MB, in the cache folder outside the repo.
    """
    project = _project()
    home = _app_dir(cache or cache_dir(), project)
    if (home / _MARKER).is_file():
        return home / RUNNER_JAR
    mvn = shutil.which("mvn")
    if mvn is None:
        raise DevStackError(
            f"Maven (mvn) not found on PATH; it is needed once to build Apicurio Registry "
            f"{APICURIO_VERSION} from Maven Central into {home}: {_MVN_HINT}"
        )
    home.parent.mkdir(parents=True, exist_ok=True)
    build = home.parent / f"build-{os.getpid()}-{threading.get_ident()}"
    shutil.rmtree(build, ignore_errors=True)
    try:
        for name, place in _PROJECT_FILES.items():
            (build / place).parent.mkdir(parents=True, exist_ok=True)
            (build / place).write_bytes(project[name])
        log.info("devstack.registry_build", version=APICURIO_VERSION, into=str(home))
        began = time.monotonic()
        argv = [mvn, "-B", "-q", "-s", "settings.xml", "package", "-DskipTests"]
        try:
            out = subprocess.run(  # noqa: S603 - fixed argv, no shell
                argv, cwd=build, capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise DevStackError(
                f"building Apicurio Registry {APICURIO_VERSION} with mvn took over {timeout_s:.0f}s"
            ) from exc
        target = build / "target"
        if out.returncode != 0 or not (target / RUNNER_JAR).is_file():
            tail = "\n".join((out.stdout + out.stderr).splitlines()[-30:])
            raise DevStackError(
                f"building Apicurio Registry {APICURIO_VERSION} from Maven Central failed (mvn exit "
                f"{out.returncode}); check network access to Maven Central:\n{tail}"
            )
        (target / _MARKER).write_text(f"apicurio-registry {APICURIO_VERSION}\n")
        if not (home / _MARKER).is_file():  # another process may have finished first
            shutil.rmtree(home, ignore_errors=True)
            try:
                target.rename(home)
            except OSError:
                if not (home / _MARKER).is_file():
                    raise
        log.info("devstack.registry_built", seconds=round(time.monotonic() - began, 1), into=str(home))
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return home / RUNNER_JAR


def answers(port: int, timeout_s: float = 2.0) -> bool:
    """Whether the registry on ``port`` lists its subjects (HTTP 200 from the Confluent API)."""
    if not port_open(port):
        return False
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout_s)
    try:
        conn.request("GET", f"{API_PATH}/subjects")
        return conn.getresponse().status == 200
    finally:
        conn.close()


def start(work_dir: Path, *, timeout_s: float = 60.0, cancel: threading.Event | None = None) -> Service:
    """Start an empty registry on a free loopback port; return it once its Confluent API answers."""
    java = find_java()  # fail fast, before a build, when there is no suitable Java
    jar = ensure_app()
    work_dir.mkdir(parents=True, exist_ok=True)
    tmp = work_dir / "tmp"  # Vert.x's file cache, kept out of the shared /tmp
    tmp.mkdir(exist_ok=True)
    port = free_port()
    log_path = work_dir / "schema-registry.log"
    argv = [
        str(java), "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
        "-Djava.net.preferIPv4Stack=true", f"-Djava.io.tmpdir={tmp}",
        f"-Dquarkus.http.host={LOOPBACK}", f"-Dquarkus.http.port={port}",
        "-Dregistry.ccompat.use-canonical-hash=false",  # it reorders fields: see the module docstring
        "-jar", str(jar),
    ]  # fmt: skip
    service, seconds = launch(
        NAME,
        "the schema registry (Apicurio)",
        argv,
        port=port,
        log_path=log_path,
        probe=lambda: answers(port),
        stop_signal=STOP_SIGNAL,
        timeout_s=timeout_s,
        cancel=cancel,
    )
    version = f"Apicurio Registry {APICURIO_VERSION}"
    log.info(
        "devstack.registry_ready",
        version=version,
        url=endpoint(port),
        pid=service.pid,
        seconds=round(seconds, 2),
    )
    return dataclasses.replace(service, version=version)
