"""Packaging checks: docker-compose.yml, deploy/Dockerfile and localstack/ agree with the specs.

Expected names (events, topics, partitions, bucket, data prefixes) come from
``pipelines/`` through :func:`loader.config.spec.load_specs`, so adding a spec
without wiring it into the compose file and the init script fails here.
"""

from __future__ import annotations

import fnmatch
import inspect
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from loader.config.settings import GatewaySettings, Settings
from loader.config.spec import EventSpec, load_specs
from loader.notify.provision import ensure_queue

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
INIT_SCRIPT = ROOT / "localstack" / "init-aws.sh"
LOCALSTACK_INIT_DIR = "/etc/localstack/init/ready.d"


# --- helpers -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def specs() -> list[EventSpec]:
    """The example event specs."""
    found = load_specs(ROOT / "pipelines")
    assert found, "pipelines/ holds no spec"
    return found


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    """The compose services, with YAML anchors and merge keys resolved."""
    compose: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _loader_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Services that run the loader image's `loader` entry point (not fakesnow, which overrides it)."""
    return {name: svc for name, svc in services.items() if "build" in svc and "entrypoint" not in svc}


def _workers(services: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Worker service name -> the event it runs."""
    workers = {}
    for name, svc in _loader_services(services).items():
        command = _command(svc)
        if command[:2] == ["worker", "run"]:
            assert len(command) == 3, f"{name}: `worker run` takes exactly one event, got {command}"
            workers[name] = command[2]
    return workers


def _only(services: dict[str, dict[str, Any]], command: list[str]) -> tuple[str, dict[str, Any]]:
    matches = [
        (n, s) for n, s in _loader_services(services).items() if _command(s)[: len(command)] == command
    ]
    assert len(matches) == 1, f"expected one service running `loader {' '.join(command)}`, got {matches}"
    return matches[0]


def _script_var(name: str) -> str:
    match = re.search(rf'^{name}="([^"]*)"$', INIT_SCRIPT.read_text(), re.MULTILINE)
    assert match, f'{INIT_SCRIPT.name} sets no {name}="..."'
    return match.group(1)


def _script_prefixes() -> list[str]:
    match = re.search(r"^DATA_PREFIXES=\((.*?)^\)", INIT_SCRIPT.read_text(), re.MULTILINE | re.DOTALL)
    assert match, f"{INIT_SCRIPT.name} has no DATA_PREFIXES=( ... ) array"
    return re.findall(r'"([^"]+)"', match.group(1))


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending = f"{pending} {line}".strip()
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        keyword, _, args = pending.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    return instructions


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in _dockerfile():
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


# --- docker-compose.yml ------------------------------------------------------------------------


def test_published_ports_bind_loopback_only(services: dict[str, dict[str, Any]]) -> None:
    """Every published port binds 127.0.0.1, never all interfaces."""
    published = 0
    for name, svc in services.items():
        for port in svc.get("ports", []):
            published += 1
            if isinstance(port, dict):
                host_ip = port.get("host_ip")
            else:
                parts = str(port).split(":")
                host_ip = parts[0] if len(parts) == 3 else None
            assert host_ip == "127.0.0.1", f"{name}: port {port!r} must be published on 127.0.0.1 only"
    assert published, "no port is published: the host could not reach Kafka, LocalStack or fakesnow"


def test_one_worker_service_per_spec(services: dict[str, dict[str, Any]], specs: list[EventSpec]) -> None:
    """There is exactly one `loader worker run EVENT` service for each spec, and none for unknown events."""
    events = sorted(_workers(services).values())
    assert events == sorted(spec.name for spec in specs)
    for name, event in _workers(services).items():
        assert event.replace("_", "-") in name, f"service {name} runs {event}: name it after its event"


def test_third_party_images_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    """LocalStack (and every other pulled image) names a version tag, not `latest` or nothing."""
    pulled = {name: svc["image"] for name, svc in services.items() if "build" not in svc}
    assert any(image.startswith("localstack/localstack:") for image in pulled.values())
    for name, image in pulled.items():
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: image {image!r} has no tag"
        assert re.fullmatch(r"\d+\.\d+(\.\d+)?", tag), f"{name}: image {image!r} is not pinned to a version"


def test_localstack_runs_the_init_script(services: dict[str, dict[str, Any]]) -> None:
    """LocalStack mounts localstack/ as its ready.d hooks and is healthy only after init-aws.sh succeeded."""
    [(name, svc)] = [(n, s) for n, s in services.items() if str(s.get("image", "")).startswith("localstack/")]
    mounts = {str(v).split(":")[1].rstrip("/"): str(v).split(":")[0] for v in svc.get("volumes", [])}
    assert mounts.get(LOCALSTACK_INIT_DIR) == "./localstack", f"{name}: mount ./localstack at the ready hooks"
    assert INIT_SCRIPT.name in " ".join(svc["healthcheck"]["test"])
    assert {"s3", "sqs"} <= set(_env(svc)["SERVICES"].split(","))


def test_topics_service_creates_each_spec_topic(
    services: dict[str, dict[str, Any]], specs: list[EventSpec]
) -> None:
    """The one-shot topics service creates every spec's topic with the spec's partition count."""
    [(name, svc)] = [(n, s) for n, s in services.items() if "kafka-topics.sh" in " ".join(_command(s))]
    script = " ".join(_command(svc))
    created = dict(re.findall(r"--topic (\S+) --partitions (\d+)", script))
    canary = GatewaySettings().canary_topic
    assert {t: int(p) for t, p in created.items() if t != canary} == {
        s.kafka.topic: s.kafka.partitions for s in specs
    }
    assert canary in created, "the gateway's /readyz needs its canary topic (auto-creation is off)"
    assert svc.get("restart", "no") == "no", f"{name} is one-shot"
    bootstrap = set(re.findall(r"--bootstrap-server (\S+)", script))
    loader_bootstrap = {
        _env(s)["LOADER_KAFKA__BOOTSTRAP_SERVERS"] for s in _loader_services(services).values()
    }
    assert bootstrap == loader_bootstrap, "topics and loader processes must use the same Kafka listener"


def test_loader_env_parses_into_settings(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each loader service's environment loads as Settings (no misspelt field) and names compose services."""
    published_targets = {
        name: {
            int(p["target"]) if isinstance(p, dict) else int(str(p).rsplit(":", 1)[1])
            for p in svc.get("ports", [])
        }
        for name, svc in services.items()
    }
    for name, svc in _loader_services(services).items():
        for var in [v for v in os.environ if v.startswith("LOADER_") and v != "LOADER_STATE_DIR"]:
            monkeypatch.delenv(var)
        for var, value in _env(svc).items():
            monkeypatch.setenv(var, value)
        settings = Settings()
        kafka_host, _, kafka_port = (settings.kafka.bootstrap_servers or "").partition(":")
        advertised = _env(services[kafka_host])["KAFKA_ADVERTISED_LISTENERS"]
        assert f"//{kafka_host}:{kafka_port}" in advertised, f"{name}: Kafka does not advertise {kafka_host}"
        aws = urlparse(settings.aws.endpoint_url or "")
        assert aws.hostname in services and aws.port in published_targets[aws.hostname], name
        assert settings.snowflake.host in services, f"{name}: no service {settings.snowflake.host}"
        assert settings.snowflake.port in published_targets[settings.snowflake.host], name
        assert settings.snowflake.protocol == "http"
        assert settings.snowflake.local_stage_dir is not None


def test_queue_and_bucket_env_match_specs_and_init_script(
    services: dict[str, dict[str, Any]], specs: list[EventSpec]
) -> None:
    """Every env var naming a queue or a bucket names the init script's queue or a spec's bucket."""
    queue = _script_var("QUEUE")
    buckets = {spec.s3.bucket for spec in specs}
    checked = 0
    for name, svc in services.items():
        for var, value in _env(svc).items():
            if "QUEUE" in var:
                url = urlparse(value)
                assert url.hostname in services, f"{name}: {var} points at no compose service"
                named = url.path.rstrip("/").rsplit("/", 1)[-1]
                assert named == queue, f"{name}: {var}={value}, but init-aws.sh makes {queue}"
                checked += 1
            elif "BUCKET" in var:
                assert value in buckets, f"{name}: {var}={value} is not a spec bucket {sorted(buckets)}"
                checked += 1
    assert checked, "no service is told the notifications queue (LOADER_AWS__NOTIFICATIONS_QUEUE_URL)"
    _, loader = _only(services, ["pipes", "run"])
    assert "LOADER_AWS__NOTIFICATIONS_QUEUE_URL" in _env(loader)


def test_stage_volume_shared_by_fakesnow_and_loader(services: dict[str, dict[str, Any]]) -> None:
    """fakesnow and `pipes run` mount one named volume at LOADER_SNOWFLAKE__LOCAL_STAGE_DIR."""
    name, loader = _only(services, ["pipes", "run"])
    stage_dir = _env(loader)["LOADER_SNOWFLAKE__LOCAL_STAGE_DIR"]
    host = _env(loader)["LOADER_SNOWFLAKE__HOST"]

    def volume_at(svc: dict[str, Any]) -> str | None:
        for volume in svc.get("volumes", []):
            source, _, target = str(volume).partition(":")
            if target.split(":")[0] == stage_dir:
                return source
        return None

    source = volume_at(loader)
    assert source is not None, f"{name} does not mount anything at {stage_dir}"
    assert volume_at(services[host]) == source, f"{host} must mount volume {source} at {stage_dir} too"
    assert source in (yaml.safe_load(COMPOSE_FILE.read_text()).get("volumes") or {}), "use a named volume"
    assert "fakesnow" in " ".join(_command(services[host]))


def test_start_order_uses_health_and_completion(services: dict[str, dict[str, Any]]) -> None:
    """Workers wait for topics and LocalStack, the loader for `pipes apply`; every condition can be met."""
    for name, svc in services.items():
        for dep, spec in (svc.get("depends_on") or {}).items():
            condition = spec["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}: it has no healthcheck"
            elif condition == "service_completed_successfully":
                assert services[dep].get("restart", "no") == "no", f"{dep} must be one-shot"
    topics = next(n for n, s in services.items() if "kafka-topics.sh" in " ".join(_command(s)))
    localstack = next(n for n, s in services.items() if str(s.get("image", "")).startswith("localstack/"))
    for worker in _workers(services):
        deps = services[worker]["depends_on"]
        assert deps[topics]["condition"] == "service_completed_successfully", worker
        assert deps[localstack]["condition"] == "service_healthy", worker
    init, _ = _only(services, ["pipes", "apply"])
    _, loader = _only(services, ["pipes", "run"])
    assert loader["depends_on"][init]["condition"] == "service_completed_successfully"
    assert loader["depends_on"][localstack]["condition"] == "service_healthy"


def test_gateway_service_serves_on_loopback_after_kafka(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One `loader gateway` service on all the container's interfaces, its API and endpoints published on
    127.0.0.1 at the ports its settings use, healthy on /readyz, started once Kafka is healthy and the
    topics (canary included) exist; anonymous posting is on there only."""
    name, gateway = _only(services, ["gateway"])
    command = _command(gateway)
    assert command[command.index("--host") + 1] == "0.0.0.0"
    for var in [v for v in os.environ if v.startswith("LOADER_") and v != "LOADER_STATE_DIR"]:
        monkeypatch.delenv(var)
    for var, value in _env(gateway).items():
        monkeypatch.setenv(var, value)
    settings = Settings().gateway
    port = int(command[command.index("--port") + 1]) if "--port" in command else settings.port
    targets = {int(str(p).rsplit(":", 1)[1]) for p in gateway["ports"]}
    assert targets == {port, settings.metrics_port}, f"{name} publishes {targets}"
    assert f"127.0.0.1:{settings.metrics_port}/readyz" in " ".join(gateway["healthcheck"]["test"])
    deps = gateway["depends_on"]
    assert deps["kafka"]["condition"] == "service_healthy"
    topics = next(n for n, s in services.items() if "kafka-topics.sh" in " ".join(_command(s)))
    assert deps[topics]["condition"] == "service_completed_successfully"
    anonymous = [n for n, s in services.items() if _env(s).get("LOADER_GATEWAY__ALLOW_ANONYMOUS") == "true"]
    assert anonymous == [name], "only the local gateway may take requests without a key"


def test_compose_file_validates_with_docker_compose() -> None:
    """`docker compose config -q` accepts docker-compose.yml (skipped without the compose plugin)."""
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker client not installed")
    probe = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, timeout=60, check=False
    )
    if probe.returncode != 0:
        said = (probe.stderr or probe.stdout).strip().splitlines()
        pytest.skip(f"docker compose plugin not available ({said[0] if said else probe.returncode})")
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# --- localstack/init-aws.sh ----------------------------------------------------------------------


def test_init_script_is_strict_executable_bash() -> None:
    """init-aws.sh is executable bash that stops at the first failing command."""
    text = INIT_SCRIPT.read_text()
    assert text.startswith("#!/bin/bash\n")
    assert re.search(r"^set -euo pipefail$", text, re.MULTILINE)
    assert os.access(INIT_SCRIPT, os.X_OK), "LocalStack skips init scripts that are not executable"
    assert "awslocal " in text


def test_init_script_creates_spec_bucket_and_one_rule_per_prefix(specs: list[EventSpec]) -> None:
    """The script makes the specs' bucket and exactly one ObjectCreated rule per spec data prefix."""
    text = INIT_SCRIPT.read_text()
    buckets = {spec.s3.bucket for spec in specs}
    assert buckets == {_script_var("BUCKET")}, "the script makes one bucket: the one every spec writes to"
    assert re.search(r'create-bucket --bucket "\$BUCKET"', text)
    assert sorted(_script_prefixes()) == sorted(spec.data_prefix for spec in specs)
    assert re.search(r'for prefix in "\$\{DATA_PREFIXES\[@\]\}"', text)
    assert "s3:ObjectCreated:*" in text
    assert "put-bucket-notification-configuration" in text


def test_init_script_queue_matches_provision() -> None:
    """The script's queue, DLQ suffix and maxReceiveCount are the ones loader.notify.provision uses."""
    text = INIT_SCRIPT.read_text()
    max_receive = inspect.signature(ensure_queue).parameters["max_receive_count"].default
    assert _script_var("DLQ") == "${QUEUE}-dlq"
    assert re.search(rf"^MAX_RECEIVE_COUNT={max_receive}$", text, re.MULTILINE)
    assert "RedrivePolicy" in text
    assert "deadLetterTargetArn" in text
    assert _script_var("QUEUE")


# --- deploy/Dockerfile and .dockerignore ----------------------------------------------------------


def test_dockerfile_runs_as_non_root() -> None:
    """The final stage switches to a numeric non-root USER."""
    users = [args for keyword, args in _stages()[-1] if keyword == "USER"]
    assert users, "the final stage sets no USER: the container would run as root"
    user = users[-1].split(":")[0]
    assert user.isdigit() and int(user) != 0, f"USER {users[-1]!r}: use a numeric non-root uid"


def test_dockerfile_base_images_pinned_to_minor() -> None:
    """Every stage starts from python:<major>.<minor>-slim (never `latest` or a bare major)."""
    stage_names: set[str] = set()
    for stage in _stages():
        args = stage[0][1].split()
        image = args[0]
        if image not in stage_names:
            assert re.fullmatch(r"python:3\.\d+(\.\d+)?-slim(-\w+)?", image), f"FROM {image} is not pinned"
        if len(args) == 3 and args[1].upper() == "AS":
            stage_names.add(args[2])
    assert len(_stages()) >= 2, "build the wheel in a builder stage, not in the runtime image"


def test_dockerfile_entrypoint_is_the_console_script() -> None:
    """ENTRYPOINT runs the `loader` console script that pyproject.toml declares, in JSON logging mode."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    final = _stages()[-1]
    entrypoints = [args for keyword, args in final if keyword == "ENTRYPOINT"]
    assert entrypoints and yaml.safe_load(entrypoints[-1]) == ["loader"]
    assert "loader" in scripts
    env = " ".join(args for keyword, args in final if keyword == "ENV")
    assert "LOADER_LOG_FORMAT=json" in env
    assert "PYTHONUNBUFFERED=1" in env
    assert any(keyword == "ARG" and args.startswith("EXTRAS=") for keyword, args in _dockerfile())


def test_dockerignore_keeps_what_the_dockerfile_copies() -> None:
    """No source that a COPY instruction reads from the build context is excluded by .dockerignore."""
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def excluded(path: str) -> bool:
        # Docker's rule: the last matching pattern wins; a pattern matching a folder covers its contents.
        result = False
        candidates = [str(Path(*Path(path).parts[: i + 1])) for i in range(len(Path(path).parts))]
        for pattern in patterns:
            negated = pattern.startswith("!")
            glob = pattern.lstrip("!").strip("/")
            if any(fnmatch.fnmatch(c, glob) for c in candidates):
                result = not negated
        return result

    sources = []
    for keyword, args in _dockerfile():
        if keyword == "COPY" and "--from=" not in args:
            parts = args.split()
            sources += [p for p in parts[:-1] if not p.startswith("--")]
    assert sources
    for source in sources:
        for path in sorted(ROOT.glob(source.rstrip("/"))) or [ROOT / source]:
            relative = str(path.relative_to(ROOT))
            assert not excluded(relative), f"the Dockerfile copies {relative} but .dockerignore drops it"
    assert excluded(".git") and excluded("tests"), ".dockerignore should keep the context small"
