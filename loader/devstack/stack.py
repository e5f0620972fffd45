"""The local dev stack: start the services that are not configured, hand back their settings.

Owns: deciding which of Kafka, moto (S3/SQS), fakesnow (Snowflake) and the schema
registry (Apicurio) to start,
starting them in parallel, the settings overrides that point the loader at
them, and the two ways of using them:

- in-process, as a context manager (tests, the demo) that stops exactly what
  it started on exit: ``with DevStack.start() as stack: stack.settings``;
- detached (``loader dev up``/``down``/``status``), recorded in the state file
  at :func:`loader.config.settings.dev_state_path`, which ``load_settings()``
  merges under env and config files.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import structlog

from loader.config.settings import Settings, dev_state_path, load_settings
from loader.devstack import fakesnow, kafka, moto, registry
from loader.devstack.process import Service, cmdline, is_running, stop
from loader.errors import DevStackError

__all__ = [
    "REAL_AWS_ENV",
    "SERVICE_NAMES",
    "DevStack",
    "ServiceStatus",
    "StopOutcome",
    "default_work_dir",
    "down",
    "owns",
    "read_state",
    "record_settings",
    "running_stack",
    "services_to_start",
    "status",
    "up",
]

REAL_AWS_ENV = "LOADER_DEV_REAL_AWS"
"""Set to 1/true to use real AWS (boto3's usual credentials) instead of starting moto."""
SERVICE_NAMES = (kafka.NAME, moto.NAME, fakesnow.NAME, registry.NAME)
DEFAULT_TIMEOUT_S = 90.0

log = structlog.get_logger()


class _Starter(Protocol):
    def __call__(self, work_dir: Path, *, timeout_s: float, cancel: threading.Event | None) -> Service: ...


@dataclass(frozen=True)
class _Kind:
    """What the stack needs to know about one kind of service."""

    start: _Starter
    answers: Callable[[int], bool]
    endpoint: Callable[[int], str]
    stop_signal: signal.Signals
    cmdline_marker: str


_KINDS: dict[str, _Kind] = {
    kafka.NAME: _Kind(kafka.start, kafka.answers, kafka.endpoint, kafka.STOP_SIGNAL, kafka.CMDLINE_MARKER),
    moto.NAME: _Kind(moto.start, moto.answers, moto.endpoint, moto.STOP_SIGNAL, moto.CMDLINE_MARKER),
    fakesnow.NAME: _Kind(
        fakesnow.start, fakesnow.answers, fakesnow.endpoint, fakesnow.STOP_SIGNAL, fakesnow.CMDLINE_MARKER
    ),
    registry.NAME: _Kind(
        registry.start, registry.answers, registry.endpoint, registry.STOP_SIGNAL, registry.CMDLINE_MARKER
    ),
}


def _real_aws_opt_in(real_aws: bool | None) -> bool:
    if real_aws is not None:
        return real_aws
    return os.environ.get(REAL_AWS_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def services_to_start(settings: Settings, *, real_aws: bool | None = None) -> list[str]:
    """The services that ``settings`` does not configure, in start order.

    Kafka when no default bootstrap servers are set; moto when there is no AWS
    endpoint and no opt-in to real AWS (``real_aws`` or ``$LOADER_DEV_REAL_AWS``);
    fakesnow when no Snowflake account is set; the schema registry when no registry URL is set.
    """
    names = []
    if not settings.kafka.bootstrap_servers:
        names.append(kafka.NAME)
    if not settings.aws.endpoint_url and not _real_aws_opt_in(real_aws):
        names.append(moto.NAME)
    if not settings.snowflake.account:
        names.append(fakesnow.NAME)
    if not settings.schema_registry.url:
        names.append(registry.NAME)
    return names


def default_work_dir() -> Path:
    """Data and logs of the stack: ``$LOADER_STATE_DIR/devstack`` (``.loader/devstack`` by default)."""
    return dev_state_path().parent / "devstack"


def _overrides(services: Sequence[Service], base: Settings, work_dir: Path) -> dict[str, Any]:
    """Settings that point at ``services``, nested like :class:`Settings` (JSON-serialisable)."""
    overrides: dict[str, Any] = {}
    for service in services:
        if service.name == kafka.NAME:
            overrides["kafka"] = {"bootstrap_servers": kafka.endpoint(service.port)}
        elif service.name == moto.NAME:
            overrides["aws"] = {
                "endpoint_url": moto.endpoint(service.port),
                "region": base.aws.region,
                "access_key_id": "testing",
                "secret_access_key": "testing",
            }
        elif service.name == fakesnow.NAME:
            # fakesnow takes any login: a configured one (a key pair, say) is kept, not joined by a password.
            login = {} if base.snowflake.login_method else {"password": fakesnow.PASSWORD}
            overrides["snowflake"] = {
                "account": fakesnow.ACCOUNT,
                "user": fakesnow.USER,
                **login,
                "host": "127.0.0.1",
                "port": service.port,
                "protocol": "http",
                "local_stage_dir": str(fakesnow.stage_dir(work_dir / fakesnow.NAME)),
            }
        elif service.name == registry.NAME:
            overrides["schema_registry"] = {"url": registry.endpoint(service.port)}
    return overrides


def owns(service: Service) -> bool:
    """Whether ``service.pid`` is still the process we started (alive, same group, same program)."""
    if not is_running(service.pid):
        return False
    try:
        if os.getpgid(service.pid) != service.pgid:
            return False
    except ProcessLookupError:
        return False
    command = cmdline(service.pid)
    kind = _KINDS.get(service.name)
    return command is not None and kind is not None and kind.cmdline_marker in command


def _stop_all(services: Sequence[Service]) -> None:
    """Stop ``services`` in parallel (Kafka's clean shutdown takes a few seconds)."""
    if not services:
        return
    with ThreadPoolExecutor(max_workers=len(services), thread_name_prefix="devstack-stop") as pool:
        futures = [pool.submit(stop, s, sig=_KINDS[s.name].stop_signal) for s in services]
    for future in futures:
        if exc := future.exception():
            log.error("devstack.stop_failed", error=str(exc))


class DevStack:
    """Local services started by this stack, and the settings that point at them."""

    def __init__(self, services: Sequence[Service], overrides: Mapping[str, Any], work_dir: Path) -> None:
        self.services: tuple[Service, ...] = tuple(services)
        self.overrides: dict[str, Any] = dict(overrides)
        """Settings overrides, nested like :class:`Settings` (what the state file records)."""
        self.work_dir = work_dir

    @property
    def settings(self) -> Settings:
        """The configured settings with this stack's endpoints merged in."""
        return load_settings(use_dev_stack=False, **self.overrides)

    @property
    def endpoints(self) -> dict[str, str]:
        """Endpoint of each started service, by name (``kafka``: bootstrap servers, others: URLs)."""
        return {s.name: _KINDS[s.name].endpoint(s.port) for s in self.services}

    def service(self, name: str) -> Service | None:
        """The started service called ``name``, or None when it was configured rather than started."""
        return next((s for s in self.services if s.name == name), None)

    @classmethod
    def launch(
        cls,
        settings: Settings | None = None,
        *,
        work_dir: Path | None = None,
        real_aws: bool | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> DevStack:
        """Start, in parallel, the services ``settings`` does not configure; the caller must :meth:`stop`.

        If any service fails (or the start is interrupted), the ones already
        started are stopped before the error propagates.
        """
        base = settings if settings is not None else load_settings(use_dev_stack=False)
        names = services_to_start(base, real_aws=real_aws)
        root = (work_dir or default_work_dir()).resolve()
        if not names:
            return cls([], {}, root)
        _refuse_if_detached_stack_uses(root)
        log.info("devstack.starting", services=names, work_dir=str(root))
        began = time.monotonic()
        cancel = threading.Event()
        started: list[Service] = []
        failure: BaseException | None = None
        pool = ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="devstack")
        futures: dict[Future[Service], str] = {
            pool.submit(_KINDS[name].start, root / name, timeout_s=timeout_s, cancel=cancel): name
            for name in names
        }
        try:
            for future in as_completed(futures):
                try:
                    started.append(future.result())
                except Exception as exc:  # reported below, after cleaning up
                    if failure is None:
                        failure = exc
                    cancel.set()
        except BaseException:  # KeyboardInterrupt while waiting: let the threads finish, then clean up
            cancel.set()
            pool.shutdown(wait=True)
            _stop_all([f.result() for f in futures if f.exception() is None])
            raise
        pool.shutdown(wait=True)
        if failure is not None:
            _stop_all(started)
            if isinstance(failure, DevStackError):
                raise failure
            raise DevStackError(f"the local dev stack failed to start: {failure!r}") from failure
        started.sort(key=lambda s: SERVICE_NAMES.index(s.name))
        log.info("devstack.ready", services=names, seconds=round(time.monotonic() - began, 2))
        return cls(started, _overrides(started, base, root), root)

    @classmethod
    @contextlib.contextmanager
    def start(
        cls,
        settings: Settings | None = None,
        *,
        work_dir: Path | None = None,
        real_aws: bool | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> Iterator[DevStack]:
        """Context manager: :meth:`launch`, and stop exactly what was started on exit (errors included)."""
        stack = cls.launch(settings, work_dir=work_dir, real_aws=real_aws, timeout_s=timeout_s)
        try:
            yield stack
        finally:
            stack.stop()

    def restart_kafka(self) -> None:
        """Restart the broker this stack started, keeping its port and data (broker-restart tests)."""
        old = self.service(kafka.NAME)
        if old is None:
            raise DevStackError("this stack did not start Kafka, so it cannot restart it")
        new = kafka.restart(old, self.work_dir / kafka.NAME)
        self.services = tuple(new if s is old else s for s in self.services)

    def stop(self) -> None:
        """Stop every service this stack started (those still ours; a reused pid is left alone)."""
        _stop_all([s for s in self.services if owns(s)])

    def to_state(self) -> dict[str, Any]:
        """The JSON document of the state file."""
        return {
            "settings": self.overrides,
            "services": [s.to_json() for s in self.services],
            "work_dir": str(self.work_dir),
        }

    @classmethod
    def from_state(cls, data: Mapping[str, Any]) -> DevStack:
        """Rebuild a stack from its state file document."""
        services = data.get("services", [])
        if not isinstance(services, list):
            raise DevStackError("dev stack state: 'services' must be a list")
        return cls(
            [Service.from_json(s) for s in services],
            data.get("settings") or {},
            Path(str(data.get("work_dir") or default_work_dir())),
        )


def read_state(path: Path | None = None) -> DevStack | None:
    """The stack recorded by ``loader dev up``, or None when there is no state file."""
    path = path or dev_state_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DevStackError(f"cannot read the dev stack state {path}: {exc}; delete it if stale") from exc
    if not isinstance(data, dict):
        raise DevStackError(f"dev stack state {path} must hold a JSON object; delete it if stale")
    return DevStack.from_state(data)


def running_stack() -> DevStack | None:
    """The recorded stack when at least one of its services is still ours and alive."""
    stack = read_state()
    if stack is None or not any(owns(s) for s in stack.services):
        return None
    return stack


def _refuse_if_detached_stack_uses(work_dir: Path) -> None:
    """Two stacks in one work dir would wipe each other's data."""
    with contextlib.suppress(DevStackError):
        detached = running_stack()
        if detached is not None and detached.work_dir.resolve() == work_dir:
            raise DevStackError(
                f"a dev stack started by `loader dev up` is using {work_dir}: "
                "run `loader dev down` first, or use another work dir"
            )


def _write_state(stack: DevStack, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(stack.to_state(), indent=2) + "\n")
    tmp.replace(path)


def record_settings(stack: DevStack, section: str, **values: Any) -> None:
    """Add ``values`` to the recorded stack's settings ``section`` and rewrite its state file,
    so later commands find what was created on it (the notifications queue's URL)."""
    stack.overrides[section] = {**stack.overrides.get(section, {}), **values}
    _write_state(stack, dev_state_path())


def up(*, real_aws: bool | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> DevStack:
    """Start the missing services detached and record them in the state file.

    Raises DevStackError when a recorded stack is still running. Returns a
    stack without services (and writes no state) when everything is configured.
    """
    path = dev_state_path()
    if running_stack() is not None:
        raise DevStackError(f"a dev stack is already running (see {path}); `loader dev down` stops it")
    if path.exists():
        log.info("devstack.stale_state_removed", path=str(path))
        path.unlink()
    stack = DevStack.launch(real_aws=real_aws, timeout_s=timeout_s)
    if stack.services:
        try:
            _write_state(stack, path)
        except BaseException:
            stack.stop()
            raise
        log.info("devstack.up", state=str(path), services=[s.name for s in stack.services])
    return stack


StopOutcome = Literal["stopped", "not running", "not ours", "failed"]


def down() -> list[tuple[Service, StopOutcome]]:
    """Stop the recorded services (only processes that are still ours) and remove the state file.

    The state file stays when a service could not be stopped, so that a
    second ``down`` can retry.
    """
    path = dev_state_path()
    stack = read_state(path)
    if stack is None:
        return []
    outcomes: list[tuple[Service, StopOutcome]] = []
    for service in stack.services:
        if not is_running(service.pid):
            outcomes.append((service, "not running"))
        elif not owns(service):
            log.warning("devstack.pid_reused", service=service.name, pid=service.pid)
            outcomes.append((service, "not ours"))
        else:
            try:
                stop(service, sig=_KINDS[service.name].stop_signal)
            except DevStackError as exc:
                log.warning("devstack.stop_failed", service=service.name, pid=service.pid, error=str(exc))
                outcomes.append((service, "failed"))
            else:
                outcomes.append((service, "stopped"))
    if all(outcome != "failed" for _, outcome in outcomes):
        path.unlink(missing_ok=True)
    return outcomes


@dataclass(frozen=True)
class ServiceStatus:
    """One recorded service: where it is, whether its process is ours, whether it answers."""

    service: Service
    endpoint: str
    running: bool
    answers: bool


def _answers(service: Service) -> bool:
    try:
        return _KINDS[service.name].answers(service.port)
    except Exception:  # any failure to answer is "not answering"
        return False


def status() -> list[ServiceStatus] | None:
    """The state of each recorded service, or None when no stack was started with ``loader dev up``."""
    stack = read_state()
    if stack is None:
        return None
    result = []
    for service in stack.services:
        kind = _KINDS.get(service.name)
        if kind is None:
            raise DevStackError(f"dev stack state names an unknown service {service.name!r}")
        running = owns(service)
        result.append(
            ServiceStatus(service, kind.endpoint(service.port), running, running and _answers(service))
        )
    return result
