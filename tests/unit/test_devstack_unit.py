"""Unit tests of loader.devstack: configuration, decisions and process handling, without the services."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import sys
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from importlib.resources import files
from pathlib import Path

import pytest
from click.testing import CliRunner

from loader.cli import cli
from loader.config.settings import Settings, dev_state_path, load_settings
from loader.config.spec import EventSpec, load_specs
from loader.devstack import DevStack, Service, down, free_port, services_to_start, status
from loader.devstack import kafka as kafka_mod
from loader.devstack import provision as provision_mod
from loader.devstack import registry as registry_mod
from loader.devstack import stack as stack_mod
from loader.devstack.process import is_running, launch, spawn, stop, wait_until_ready
from loader.devstack.provision import provision_dev_stack
from loader.errors import DevStackError

pytestmark = pytest.mark.unit

REPO = Path(__file__).parents[2]
NO_SUCH_PID = 99_999_999  # above Linux's pid_max: never a live process


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own state dir and cache dir and no service configuration from the env."""
    monkeypatch.setenv("LOADER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LOADER_CACHE_DIR", str(tmp_path / "cache"))
    for name in list(os.environ):
        if name.startswith(
            ("LOADER_KAFKA__", "LOADER_AWS__", "LOADER_SNOWFLAKE__", "LOADER_SCHEMA_REGISTRY__")
        ):
            monkeypatch.delenv(name)
    monkeypatch.delenv("LOADER_CONFIG", raising=False)
    monkeypatch.delenv(stack_mod.REAL_AWS_ENV, raising=False)


@pytest.fixture
def spawned() -> Iterator[Callable[..., Service]]:
    """Spawn throw-away processes as services; kill whatever is left at teardown."""
    services: list[Service] = []

    def make(argv: list[str], name: str = "kafka", log: Path | None = None) -> Service:
        log_path = log or Path(os.environ["LOADER_STATE_DIR"]) / f"{name}-{len(services)}.log"
        pid = spawn(argv, log_path=log_path)
        service = Service(name=name, pid=pid, pgid=pid, port=free_port(), log=log_path)
        services.append(service)
        return service

    yield make
    for service in services:
        if is_running(service.pid):
            os.killpg(service.pgid, signal.SIGKILL)
            stop(service, grace_s=5)


def _settings(**overrides: object) -> Settings:
    return load_settings(use_dev_stack=False, **overrides)


def _fake_starter(name: str, calls: list[str]) -> stack_mod._Starter:
    def start(work_dir: Path, *, timeout_s: float, cancel: threading.Event | None) -> Service:
        calls.append(name)
        return Service(
            name=name, pid=NO_SUCH_PID, pgid=NO_SUCH_PID, port=4000 + len(calls), log=work_dir / "x.log"
        )

    return start


def _use_fake_starters(monkeypatch: pytest.MonkeyPatch, calls: list[str]) -> None:
    kinds = {
        name: stack_mod._Kind(_fake_starter(name, calls), kind.answers, kind.endpoint, kind.stop_signal, "x")
        for name, kind in stack_mod._KINDS.items()
    }
    monkeypatch.setattr(stack_mod, "_KINDS", kinds)


def test_free_port_is_loopback_and_bindable() -> None:
    """free_port returns a port nobody holds that binds on 127.0.0.1."""
    port = free_port()
    assert 1024 < port < 65536
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_free_ports_are_below_the_ephemeral_range() -> None:
    """Ports handed to services are never ones an outgoing connection could take meanwhile."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = {free_port() for _ in range(20)}
    assert all(20_000 <= port < low for port in ports), sorted(ports)
    assert len(ports) > 1  # picked at random, not one fixed port


def test_server_properties_single_node_kraft(tmp_path: Path) -> None:
    """server.properties describes one broker+controller on loopback with single-node replication."""
    text = kafka_mod.server_properties(port=1111, controller_port=2222, data_dir=tmp_path / "data")
    props = dict(line.split("=", 1) for line in text.splitlines())
    assert props["process.roles"] == "broker,controller"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:1111,CONTROLLER://127.0.0.1:2222"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:2222"
    assert props["log.dirs"] == str(tmp_path / "data")
    assert props["auto.create.topics.enable"] == "false"
    assert props["num.partitions"] == "6"
    assert props["group.initial.rebalance.delay.ms"] == "1000"
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
    ):
        assert props[key] == "1"
    assert "0.0.0.0" not in text


def test_cluster_id_is_kraft_shaped() -> None:
    """Cluster ids are 22 URL-safe base64 characters and never look like a command-line option."""
    for _ in range(200):
        cluster_id = kafka_mod.new_cluster_id()
        assert len(cluster_id) == 22
        assert not cluster_id.startswith("-")
        assert set(cluster_id) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_pom_pins_kafka_and_a_matching_log4j_binding() -> None:
    """The packaged pom asks for kafka_2.13 4.4.0 and the log4j 2.25.x slf4j binding."""
    pom = ET.fromstring(files("loader.devstack").joinpath("kafka-pom.xml").read_text())
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    props = {el.tag.split("}")[1]: el.text for el in pom.find("m:properties", ns) or []}
    deps = {
        dep.findtext("m:artifactId", namespaces=ns): dep.findtext("m:version", namespaces=ns)
        for dep in pom.iterfind("m:dependencies/m:dependency", ns)
    }
    assert deps["kafka_2.13"] == "${kafka.version}"
    assert props["kafka.version"] == kafka_mod.KAFKA_VERSION == "4.4.0"
    assert deps["log4j-slf4j-impl"] == "${log4j.version}"
    assert (props["log4j.version"] or "").startswith("2.25.")


def test_services_to_start_all_when_nothing_is_configured() -> None:
    """With no configuration the stack starts Kafka, moto, fakesnow and the schema registry."""
    assert services_to_start(_settings()) == ["kafka", "moto", "fakesnow", "schema-registry"]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"kafka": {"bootstrap_servers": "broker:9092"}}, ["moto", "fakesnow", "schema-registry"]),
        ({"aws": {"endpoint_url": "http://localstack:4566"}}, ["kafka", "fakesnow", "schema-registry"]),
        ({"snowflake": {"account": "acme-prod"}}, ["kafka", "moto", "schema-registry"]),
        ({"schema_registry": {"url": "https://registry:8081"}}, ["kafka", "moto", "fakesnow"]),
        (
            {
                "kafka": {"bootstrap_servers": "b:9092"},
                "aws": {"endpoint_url": "http://s3"},
                "snowflake": {"account": "a"},
                "schema_registry": {"url": "https://registry:8081"},
            },
            [],
        ),
    ],
)
def test_services_to_start_skips_configured_services(
    overrides: dict[str, object], expected: list[str]
) -> None:
    """A service that settings already point at is not started."""
    assert services_to_start(_settings(**overrides)) == expected


def test_real_aws_opt_in_skips_moto(monkeypatch: pytest.MonkeyPatch) -> None:
    """Opting in to real AWS (argument or env var) means no moto even without an endpoint."""
    assert "moto" not in services_to_start(_settings(), real_aws=True)
    monkeypatch.setenv(stack_mod.REAL_AWS_ENV, "1")
    assert "moto" not in services_to_start(_settings())
    assert "moto" in services_to_start(_settings(), real_aws=False)


def test_env_configuration_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Kafka set through LOADER_KAFKA__BOOTSTRAP_SERVERS is not replaced by a local one."""
    monkeypatch.setenv("LOADER_KAFKA__BOOTSTRAP_SERVERS", "kafka.internal:9092")
    assert services_to_start(_settings()) == ["moto", "fakesnow", "schema-registry"]


def test_launch_starts_only_missing_services_and_builds_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """launch starts just the unconfigured services and its settings point at them, keeping the rest."""
    calls: list[str] = []
    _use_fake_starters(monkeypatch, calls)
    base = _settings(kafka={"bootstrap_servers": "broker:9092"}, aws={"region": "eu-west-1"})
    stack = DevStack.launch(base, work_dir=tmp_path / "w")
    assert sorted(calls) == ["fakesnow", "moto", "schema-registry"]
    assert [s.name for s in stack.services] == ["moto", "fakesnow", "schema-registry"]
    assert "kafka" not in stack.overrides
    moto_port = stack.service("moto").port  # type: ignore[union-attr]
    registry_port = stack.service("schema-registry").port  # type: ignore[union-attr]
    settings = stack.settings
    assert settings.schema_registry.url == f"http://127.0.0.1:{registry_port}/apis/ccompat/v7"
    assert settings.aws.endpoint_url == f"http://127.0.0.1:{moto_port}"
    assert settings.aws.region == "eu-west-1"
    assert settings.aws.access_key_id is not None
    assert settings.aws.access_key_id.get_secret_value() == "testing"
    assert settings.snowflake.account == "fakesnow"
    assert settings.snowflake.protocol == "http"
    assert settings.snowflake.host == "127.0.0.1"
    assert settings.snowflake.local_stage_dir == (tmp_path / "w" / "fakesnow" / "stage").resolve()
    assert settings.snowflake.connect_kwargs()["password"] == "snow"
    json.dumps(stack.to_state())  # the state file must be able to hold it


def test_launch_with_everything_configured_starts_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """When settings configure every service, launch starts no process at all."""
    calls: list[str] = []
    _use_fake_starters(monkeypatch, calls)
    base = _settings(
        kafka={"bootstrap_servers": "b:1"},
        aws={"endpoint_url": "http://s3"},
        snowflake={"account": "a"},
        schema_registry={"url": "http://registry:8081"},
    )
    stack = DevStack.launch(base, work_dir=tmp_path)
    assert calls == []
    assert stack.services == ()
    assert stack.overrides == {}


def test_launch_failure_stops_what_started(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """If one service fails to start, the others already started are stopped and the error propagates."""
    calls: list[str] = []
    _use_fake_starters(monkeypatch, calls)

    def broken(work_dir: Path, *, timeout_s: float, cancel: threading.Event | None) -> Service:
        raise DevStackError("Java not found: install a JDK")

    kinds = dict(stack_mod._KINDS)
    kinds["kafka"] = dataclasses.replace(kinds["kafka"], start=broken)
    monkeypatch.setattr(stack_mod, "_KINDS", kinds)
    stopped: list[str] = []
    monkeypatch.setattr(stack_mod, "stop", lambda service, **_: stopped.append(service.name))
    with pytest.raises(DevStackError, match="install a JDK"):
        DevStack.launch(_settings(), work_dir=tmp_path)
    assert sorted(stopped) == sorted(calls) == ["fakesnow", "moto", "schema-registry"]


def test_context_manager_stops_on_exception(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """DevStack.start stops the services it started when the block raises."""
    calls: list[str] = []
    _use_fake_starters(monkeypatch, calls)
    stopped: list[str] = []
    monkeypatch.setattr(stack_mod, "_stop_all", lambda services: stopped.extend(s.name for s in services))
    monkeypatch.setattr(stack_mod, "owns", lambda service: True)
    with pytest.raises(KeyboardInterrupt), DevStack.start(_settings(), work_dir=tmp_path):
        raise KeyboardInterrupt
    assert stopped == ["kafka", "moto", "fakesnow", "schema-registry"]


def test_java_missing_names_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without java on PATH or JAVA_HOME, the error says to install a JDK 17+."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(DevStackError, match=r"Java not found.*install a JDK 17\+"):
        kafka_mod.find_java()
    with pytest.raises(DevStackError, match="Java not found"):
        kafka_mod.start(tmp_path / "kafka")


def test_old_java_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A Java older than 17 is refused with the version found and what to install."""
    java = tmp_path / "java"
    java.write_text("#!/bin/sh\necho 'openjdk version \"11.0.2\" 2019-01-15' >&2\n")
    java.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(DevStackError, match=r"needs Java 17\+.*is Java 11.*install a JDK"):
        kafka_mod.find_java()


def test_mvn_missing_names_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With no jars cached and no mvn on PATH, the error says to install Maven."""
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DevStackError, match=r"Maven \(mvn\) not found.*install Maven"):
        kafka_mod.ensure_kafka_libs(tmp_path / "cache")


def _fake_mvn(bin_dir: Path, body: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    mvn = bin_dir / "mvn"
    mvn.write_text(f"#!/bin/sh\n{body}\n")
    mvn.chmod(0o755)


def test_download_failure_shows_mvn_output(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A failing mvn yields a DevStackError with its output, and leaves no half-filled libs folder."""
    _fake_mvn(tmp_path / "bin", "echo '[ERROR] Could not resolve org.apache.kafka:kafka_2.13:4.4.0'; exit 1")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    with pytest.raises(DevStackError, match=r"(?s)from Maven Central failed.*Could not resolve"):
        kafka_mod.ensure_kafka_libs(tmp_path / "cache")
    assert list((tmp_path / "cache" / "kafka-4.4.0").iterdir()) == []


def test_download_fills_libs_once_and_marks_it_complete(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """mvn copies the jars into the cache; a completion marker makes the next call skip mvn."""
    calls = tmp_path / "calls"
    script = (
        f'echo "$@" >> {calls}\n'
        'for arg in "$@"; do\n'
        '  case "$arg" in -DoutputDirectory=*) out="${arg#-DoutputDirectory=}";; esac\n'
        "done\n"
        'mkdir -p "$out" && touch "$out/kafka_2.13-4.4.0.jar" "$out/log4j-slf4j-impl-2.25.5.jar"'
    )
    _fake_mvn(tmp_path / "bin", script)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    libs = kafka_mod.ensure_kafka_libs(tmp_path / "cache")
    assert libs == tmp_path / "cache" / "kafka-4.4.0" / "libs"
    assert (libs / ".complete").is_file()
    assert (libs / "kafka_2.13-4.4.0.jar").is_file()
    assert kafka_mod.ensure_kafka_libs(tmp_path / "cache") == libs
    argv = calls.read_text().splitlines()
    assert len(argv) == 1
    assert "dependency:copy-dependencies" in argv[0]
    assert "-q -B -f" in argv[0]


def test_complete_libs_skip_the_download(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A libs folder with the completion marker is used as is, without mvn."""
    libs = tmp_path / "cache" / "kafka-4.4.0" / "libs"
    libs.mkdir(parents=True)
    (libs / "kafka_2.13-4.4.0.jar").touch()
    (libs / ".complete").touch()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert kafka_mod.ensure_kafka_libs(tmp_path / "cache") == libs
    assert kafka_mod.version_from_libs(libs) == "4.4.0"


def test_cache_dir_defaults_outside_the_repo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The jar cache is $LOADER_CACHE_DIR, else ~/.cache/event-loader."""
    monkeypatch.setenv("LOADER_CACHE_DIR", str(tmp_path))
    assert kafka_mod.cache_dir() == tmp_path
    monkeypatch.delenv("LOADER_CACHE_DIR")
    assert kafka_mod.cache_dir() == Path.home() / ".cache" / "event-loader"


def test_version_from_broker_log(tmp_path: Path) -> None:
    """The running version is read from the broker's AppInfoParser line."""
    log = tmp_path / "kafka.log"
    log.write_text("[x] INFO Kafka version: 4.4.0 (org.apache.kafka.common.utils.internals.AppInfoParser)\n")
    assert kafka_mod.version_from_log(log) == "4.4.0"
    assert kafka_mod.version_from_log(tmp_path / "missing.log") is None


def test_wait_reports_an_early_exit_with_the_log_tail(spawned: Callable[..., Service]) -> None:
    """A service that dies during start-up fails fast with the last lines of its log."""
    service = spawned(["/bin/sh", "-c", "echo 'boom: port in use'; exit 3"])
    with pytest.raises(DevStackError, match=r"(?s)exited during start-up.*boom: port in use"):
        wait_until_ready("svc", lambda: False, pid=service.pid, log_path=service.log, timeout_s=10)


def test_wait_times_out_with_the_last_probe_error(spawned: Callable[..., Service]) -> None:
    """A service that never answers fails at the deadline, naming the probe's last error and the log."""
    service = spawned(["/bin/sh", "-c", "echo still-booting; exec sleep 30"])

    def probe() -> bool:
        raise ConnectionRefusedError("nope")

    with pytest.raises(DevStackError, match=r"(?s)did not become ready.*nope.*still-booting"):
        wait_until_ready("svc", probe, pid=service.pid, log_path=service.log, timeout_s=0.5)


def test_launch_stops_a_service_that_does_not_come_up(tmp_path: Path) -> None:
    """launch() names the service in the error and stops its process: nothing is left behind."""
    pid_file = tmp_path / "pid"
    with pytest.raises(DevStackError, match=r"the test service did not become ready"):
        launch(
            "svc",
            "the test service",
            ["/bin/sh", "-c", f"echo $$ > {pid_file}; exec sleep 30"],
            port=0,
            log_path=tmp_path / "svc.log",
            probe=lambda: False,
            stop_signal=signal.SIGTERM,
            timeout_s=0.5,
        )
    assert not is_running(int(pid_file.read_text()))


def test_wait_can_be_cancelled(spawned: Callable[..., Service]) -> None:
    """Setting the cancel event stops the wait (used when another service failed)."""
    service = spawned(["/bin/sleep", "30"])
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(DevStackError, match="cancelled"):
        wait_until_ready(
            "svc", lambda: False, pid=service.pid, log_path=service.log, timeout_s=10, cancel=cancel
        )


def test_spawned_process_leads_its_own_group(spawned: Callable[..., Service]) -> None:
    """Services run as session leaders, so the recorded pgid is their pid and not ours."""
    service = spawned(["/bin/sleep", "30"])
    assert os.getpgid(service.pid) == service.pid != os.getpgid(0)


def test_stop_escalates_to_sigkill(spawned: Callable[..., Service]) -> None:
    """A process group that ignores the polite signal is killed after the grace period."""
    service = spawned(["/bin/sh", "-c", "trap '' TERM; echo ready; sleep 30 & wait"])
    wait_until_ready(
        "svc", lambda: "ready" in service.log.read_text(), pid=service.pid, log_path=service.log, timeout_s=5
    )
    stop(service, sig=signal.SIGTERM, grace_s=0.3)
    assert not is_running(service.pid)


def test_service_record_round_trips() -> None:
    """A service survives the state file: name, pid, pgid, port and log."""
    service = Service(name="moto", pid=10, pgid=10, port=5000, log=Path("/tmp/moto.log"), version="x")
    again = Service.from_json(json.loads(json.dumps(service.to_json())))
    assert again == Service(name="moto", pid=10, pgid=10, port=5000, log=Path("/tmp/moto.log"))
    with pytest.raises(DevStackError, match="unreadable"):
        Service.from_json({"name": "moto"})


def _write_state(services: list[Service]) -> Path:
    path = dev_state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    state = DevStack(services, {"kafka": {"bootstrap_servers": "127.0.0.1:1"}}, path.parent / "devstack")
    path.write_text(json.dumps(state.to_state()))
    return path


def test_down_leaves_a_reused_pid_alone(spawned: Callable[..., Service]) -> None:
    """down does not signal a recorded pid that now runs another program, and forgets the stack."""
    stranger = spawned(["/bin/sleep", "30"], name="kafka")
    path = _write_state([stranger])
    outcomes = down()
    assert [(s.name, outcome) for s, outcome in outcomes] == [("kafka", "not ours")]
    assert is_running(stranger.pid)
    assert not path.exists()


def test_state_settings_are_merged_by_load_settings(spawned: Callable[..., Service]) -> None:
    """The state file's settings reach load_settings(), so `loader dev up` needs no configuration."""
    _write_state([])
    assert load_settings().kafka.bootstrap_servers == "127.0.0.1:1"
    assert load_settings(use_dev_stack=False).kafka.bootstrap_servers is None


def test_cli_up_when_running_starts_nothing(
    spawned: Callable[..., Service], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`loader dev up` with a live recorded stack says so, exits 0 and starts nothing."""
    fake_moto = spawned([sys.executable, "-c", "import time; time.sleep(30)", "moto_server"], name="moto")
    _write_state([fake_moto])

    def no_launch(*args: object, **kwargs: object) -> DevStack:
        raise AssertionError("must not start another stack")

    monkeypatch.setattr(DevStack, "launch", no_launch)
    result = CliRunner().invoke(cli, ["dev", "up"])
    assert result.exit_code == 0, result.output
    assert "already running" in result.output
    states = status()
    assert states is not None
    assert [(s.service.name, s.running, s.answers) for s in states] == [("moto", True, False)]


def test_cli_status_and_down_without_a_stack() -> None:
    """Without a recorded stack, status exits 1 and down says there is nothing to stop."""
    runner = CliRunner()
    result = runner.invoke(cli, ["dev", "status"])
    assert result.exit_code == 1
    assert "no dev stack is running" in result.output
    result = runner.invoke(cli, ["dev", "down"])
    assert result.exit_code == 0
    assert "no dev stack is running" in result.output


def test_unreadable_state_file_is_a_clear_error() -> None:
    """A corrupt state file yields a DevStackError that says to delete it."""
    path = dev_state_path()
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(DevStackError, match="delete it"):
        down()


def _fake_services(spawned: Callable[..., Service]) -> list[Service]:
    """A recorded dev stack whose Kafka and moto are live processes of ours (they answer nothing)."""
    sleeper = [sys.executable, "-c", "import time; time.sleep(30)"]
    services = [
        spawned([*sleeper, "kafka.Kafka"], name="kafka"),
        spawned([*sleeper, "moto_server"], name="moto"),
    ]
    path = dev_state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    stack = DevStack(services, {}, path.parent / "devstack")
    stack.overrides = {
        "kafka": {"bootstrap_servers": stack.endpoints["kafka"]},
        "aws": {
            "endpoint_url": stack.endpoints["moto"],
            "access_key_id": "testing",
            "secret_access_key": "testing",
        },
    }
    path.write_text(json.dumps(stack.to_state()))
    return services


@pytest.fixture
def no_provisioning(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record, instead of doing, each provisioning step (topics, storage), returning a fake queue URL."""
    calls: list[str] = []

    async def topics(settings: Settings, specs: list[EventSpec]) -> None:
        calls.extend(f"topic {s.kafka.topic}" for s in specs)

    def storage(settings: Settings, specs: list[EventSpec], *, queue_name: str) -> str:
        calls.append(f"storage at {settings.aws.endpoint_url}")
        return f"{settings.aws.endpoint_url}/123456789012/{queue_name}"

    monkeypatch.setattr(provision_mod, "_ensure_topics", topics)
    monkeypatch.setattr(provision_mod, "_ensure_storage", storage)
    return calls


def _spec(name: str = "order_created") -> EventSpec:
    [spec] = load_specs(REPO / "pipelines", [name])
    return spec


def test_dev_provision_without_a_stack_is_refused(no_provisioning: list[str]) -> None:
    """Without a stack that `loader dev up` started, provisioning is refused, saying what to do."""
    with pytest.raises(DevStackError, match=r"no dev stack is running.*never on configured infrastructure"):
        provision_dev_stack([_spec()])
    result = CliRunner().invoke(cli, ["dev", "provision", "--specs", str(REPO / "pipelines")])
    assert result.exit_code == 1
    assert "start them with `loader dev up`" in result.output
    assert no_provisioning == []


def test_dev_provision_refuses_endpoints_that_are_not_the_stacks(
    spawned: Callable[..., Service], no_provisioning: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Settings pointing away from the stack's Kafka and moto: nothing is touched, and it says why."""
    _fake_services(spawned)
    monkeypatch.setenv("LOADER_KAFKA__BOOTSTRAP_SERVERS", "broker-1.prod.example:9092")
    monkeypatch.setenv("LOADER_AWS__ENDPOINT_URL", "https://s3.eu-west-1.amazonaws.com")
    done = provision_dev_stack([_spec()])
    assert done.nothing
    result = CliRunner().invoke(
        cli, ["dev", "provision", "order_created", "--specs", str(REPO / "pipelines")]
    )
    assert result.exit_code == 1
    assert "error: nothing provisioned" in result.output
    assert "broker-1.prod.example:9092, not the dev stack's 127.0.0.1:" in result.output
    assert (
        "https://s3.eu-west-1.amazonaws.com, not the dev stack's moto at http://127.0.0.1:" in result.output
    )
    assert no_provisioning == []
    assert "notifications_queue_url" not in dev_state_path().read_text()


def test_dev_provision_leaves_a_configured_service_alone(
    spawned: Callable[..., Service], no_provisioning: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With Kafka configured elsewhere, only the stack's moto is provisioned; the topic is left alone."""
    services = _fake_services(spawned)
    monkeypatch.setenv("LOADER_KAFKA__BOOTSTRAP_SERVERS", "broker-1.prod.example:9092")
    done = provision_dev_stack([_spec()])
    moto_url = f"http://127.0.0.1:{services[1].port}"
    assert no_provisioning == [f"storage at {moto_url}"]
    assert done.topics == []
    assert [reason.split(":")[0] for reason in done.left_alone] == [
        "topic orders.order_created of order_created"
    ]
    assert done.queue_url == f"{moto_url}/123456789012/loader-notifications"


def test_dev_provision_records_the_queue_for_pipes_run(
    spawned: Callable[..., Service], no_provisioning: list[str]
) -> None:
    """Provisioning on the stack's own services records the queue URL, which later settings then carry."""
    _fake_services(spawned)
    specs = load_specs(REPO / "pipelines")
    result = CliRunner().invoke(cli, ["dev", "provision", "--specs", str(REPO / "pipelines")])
    assert result.exit_code == 0, result.output
    assert sorted(no_provisioning[1:]) == sorted(f"topic {s.kafka.topic}" for s in specs)
    recorded = load_settings().aws.notifications_queue_url
    assert recorded is not None and recorded.endswith("/123456789012/loader-notifications")
    assert f"queue    {recorded}" in result.output
    again = CliRunner().invoke(cli, ["dev", "provision", "--specs", str(REPO / "pipelines")])
    assert again.exit_code == 0, again.output
    assert load_settings().aws.notifications_queue_url == recorded
    assert json.loads(dev_state_path().read_text())["settings"]["kafka"]["bootstrap_servers"].startswith(
        "127.0.0.1:"
    )


def test_dev_produce_is_refused_off_the_stack(
    spawned: Callable[..., Service], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`loader dev produce` never sends to a configured cluster: it names the cluster and exits 1."""
    _fake_services(spawned)
    monkeypatch.setenv("LOADER_KAFKA__BOOTSTRAP_SERVERS", "broker-1.prod.example:9092")
    result = CliRunner().invoke(cli, ["dev", "produce", "order_created", "--specs", str(REPO / "pipelines")])
    assert result.exit_code == 1
    assert "no sample events produced" in result.output
    assert "broker-1.prod.example:9092, not the dev stack's" in result.output


def test_cli_up_without_specs_starts_and_provisions_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`loader dev up` without a specs folder still brings the stack up, and says it provisioned nothing."""
    calls: list[str] = []
    _use_fake_starters(monkeypatch, calls)
    monkeypatch.setattr(stack_mod, "running_stack", lambda: None)
    result = CliRunner().invoke(cli, ["dev", "up", "--specs", str(tmp_path / "no-such-folder")])
    assert result.exit_code == 0, result.output
    assert sorted(calls) == ["fakesnow", "kafka", "moto", "schema-registry"]
    assert f"no specs folder {tmp_path / 'no-such-folder'}: nothing provisioned" in result.output
    assert dev_state_path().exists()


def test_registry_build_failure_shows_mvn_output(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A failing registry build is a DevStackError with mvn's output; nothing half-built is kept."""
    _fake_mvn(tmp_path / "bin", "echo '[ERROR] Could not resolve io.apicurio:apicurio-registry-app'; exit 1")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    with pytest.raises(DevStackError, match=r"(?s)Apicurio Registry 2\.4\.2\.Final.*Could not resolve"):
        registry_mod.ensure_app(tmp_path / "cache")
    assert list((tmp_path / "cache" / "apicurio-2.4.2").iterdir()) == []
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(DevStackError, match=r"Maven \(mvn\) not found.*install Maven"):
        registry_mod.ensure_app(tmp_path / "cache")


def test_registry_is_built_once_from_the_packaged_project(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """mvn builds the wrapper project (pom, Central-only settings, application.properties) once;
    the cached app, marked complete, is reused without mvn."""
    calls = tmp_path / "calls"
    script = (
        f'echo "$PWD $*" >> {calls}\n'
        "test -f pom.xml && test -f settings.xml && test -f src/main/resources/application.properties"
        " || exit 3\n"
        "mkdir -p target/lib && touch target/apicurio-registry-local-2.4.2-runner.jar"
    )
    _fake_mvn(tmp_path / "bin", script)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    jar = registry_mod.ensure_app(tmp_path / "cache")
    assert jar.is_file()
    assert (jar.parent / ".complete").is_file()
    assert jar.parent.parent == tmp_path / "cache" / "apicurio-2.4.2"
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert registry_mod.ensure_app(tmp_path / "cache") == jar
    [argv] = calls.read_text().splitlines()
    assert argv.endswith("-B -q -s settings.xml package -DskipTests")
    packaged = files("loader.devstack").joinpath("apicurio")
    assert "<mirrorOf>*</mirrorOf>" in packaged.joinpath("settings.xml").read_text()
    assert "quarkus.index-dependency.regapp.artifact-id=apicurio-registry-app" in (
        packaged.joinpath("application.properties").read_text()
    )
