"""The README's walks, run as written against `loader dev up`, as a new user in one terminal would.

The commands come from the README's own ```bash blocks (the Quick start's
`loader dev up` block and the "Adding an event type" block), so the README
cannot drift from what works. Each line runs in a fresh folder holding a copy
of the repository's specs and schemas, with its own LOADER_STATE_DIR and the
repository's .venv `loader` on the PATH. The venv and `loader demo` commands of
the Quick start are test_demo.py's.

A line ending in `&` starts a background job (numbered %1, %2, … as in bash);
`kill %N…` sends it SIGTERM and waits for it to exit 0. Before it stops a job,
the test waits as a person watching it would: until a `loader worker run`
job has read every event on its topic (its /metrics, on the port
$LOADER_WEB_PORT gives it), and until a `loader pipes run` job has made each
of them a row in the event's table. The environment gives the endpoints free
ports, so that the walk never collides with anything else on the machine.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest

from loader.config.spec import load_specs
from loader.devstack import DevStack, Service, free_port, read_state
from loader.devstack.process import is_running
from loader.devstack.stack import owns
from loader.warehouse.connection import Warehouse
from loader.warehouse.objects import EventObjects
from tests.integration.workers import end_offsets
from tests.waiting import eventually

pytestmark = pytest.mark.integration

REPO = Path(__file__).parents[2]
README = REPO / "README.md"
LOADER_BIN = REPO / ".venv" / "bin"
COMMAND_TIMEOUT_S = 300  # `loader dev up` on a busy 2-core machine, the first Kafka download included


def bash_blocks(heading: str) -> list[str]:
    """The ```bash blocks in the README section under the heading line ``heading``."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = README.read_text().splitlines()
    start = lines.index(heading) + 1
    end, fenced = len(lines), False
    for index in range(start, len(lines)):
        fenced ^= lines[index].startswith("```")
        if not fenced and re.match(rf"#{{1,{level}}} ", lines[index]):  # a heading, not a comment
            end = index
            break
    section = "\n".join(lines[start:end])
    return re.findall(r"^```bash\n(.*?)^```$", section, flags=re.MULTILINE | re.DOTALL)


def _commands(block: str) -> list[str]:
    """The commands of a bash block: a line ending in a backslash, or inside an open quote,
    goes on with the next one, as bash reads it."""
    commands: list[str] = []
    pending = ""
    for line in block.splitlines():
        if pending.endswith("\\"):
            pending = f"{pending[:-1]} {line}"  # a backslash-newline is no break at all
        else:
            pending = f"{pending}\n{line}" if pending else line
        if pending.endswith("\\"):
            continue
        try:
            shlex.split(pending, comments=True)
        except ValueError:  # a quote still open
            continue
        commands.append(pending)
        pending = ""
    assert not pending, f"unfinished command in a README block: {pending}"
    return commands


@dataclass
class Job:
    """A background job of the walk: the README line, its process and its log."""

    line: str
    process: subprocess.Popen[bytes]
    log: IO[bytes]


@dataclass
class Walk:
    """Runs README lines one by one in ``cwd`` with ``env``, keeping the jobs and services it started."""

    cwd: Path
    env: dict[str, str]
    logs: Path
    jobs: dict[int, Job] = field(default_factory=dict)
    services: list[Service] = field(default_factory=list)
    outputs: list[tuple[str, str]] = field(default_factory=list)
    rows_checked: list[str] = field(default_factory=list)

    def run(self, block: str) -> None:
        """Run every command of ``block`` as written, one by one."""
        for command in _commands(block):
            line = self._on_free_ports(command)
            words = shlex.split(line, comments=True)
            if not words:
                continue
            if words[0] in ("eval", "export"):
                self._set_env(line)
            elif words[-1] == "&":
                self._start(line, words[:-1])
            elif words[0] == "kill":
                self._kill(line, words[1:])
            else:
                self._run(line)

    def _on_free_ports(self, line: str) -> str:
        """The line with the gateway's default ports replaced by the walk's free ones."""
        for default, setting in (("8088", "LOADER_GATEWAY__PORT"), ("6067", "LOADER_GATEWAY__METRICS_PORT")):
            line = line.replace(f"localhost:{default}", f"localhost:{self.env[setting]}")
        return line

    def _set_env(self, line: str) -> None:
        """Run an `eval`/`export` line and keep the variables it sets for the lines after it."""
        result = subprocess.run(
            ["bash", "-c", f"set -a\n{line}\nenv -0"],  # set -a: later lines see it, as in one shell
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
        assert result.returncode == 0, f"`{line}` exited {result.returncode}:\n{result.stderr.decode()}"
        pairs = [item.partition("=") for item in result.stdout.decode().split("\0") if "=" in item]
        self.env = {name: value for name, _, value in pairs}

    def _start(self, line: str, argv: list[str]) -> None:
        number = len(self.jobs) + 1
        log = (self.logs / f"job{number}.log").open("wb")
        process = subprocess.Popen(argv, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.jobs[number] = Job(line, process, log)

    def _kill(self, line: str, specs: list[str]) -> None:
        assert specs and all(re.fullmatch(r"%\d+", s) for s in specs), f"unsupported kill line: {line}"
        jobs = [self.jobs[int(s[1:])] for s in specs]
        for job in jobs:
            command = shlex.split(job.line, comments=True)
            if command[:3] == ["loader", "worker", "run"]:
                _wait_until_read(self, job, command[3])
            elif command[:3] == ["loader", "pipes", "run"]:
                _wait_until_rows(self)
        for job in jobs:
            assert job.process.poll() is None, f"job `{job.line}` ended early:\n{self.log_of(job)}"
            job.process.send_signal(signal.SIGTERM)
        for job in jobs:
            code = job.process.wait(timeout=120)
            assert code == 0, f"`{job.line}` exited {code}:\n{self.log_of(job)}"

    def _run(self, line: str) -> None:
        result = subprocess.run(
            ["bash", "-c", line],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
        output = result.stdout + result.stderr
        self.outputs.append((line, output))
        assert result.returncode == 0, f"`{line}` exited {result.returncode}:\n{output}"
        assert "NoSuchBucket" not in output, f"`{line}`:\n{output}"
        if shlex.split(line, comments=True)[:2] == ["loader", "status"]:
            # A source status could not ask shows as an "unavailable" cell.
            assert not re.search(r"│\s*unavailable\s*│", result.stdout), f"`{line}`:\n{output}"
        stack = read_state(self.cwd / "state" / "dev-stack.json")
        if stack is not None:
            self.services += [s for s in stack.services if s not in self.services]

    def worker_events(self) -> list[str]:
        """The event types the walk's `loader worker run EVENT` jobs run."""
        return [
            words[3]
            for job in self.jobs.values()
            if (words := shlex.split(job.line, comments=True))[:3] == ["loader", "worker", "run"]
        ]

    def stack(self) -> DevStack:
        stack = read_state(self.cwd / "state" / "dev-stack.json")
        assert stack is not None, "no dev stack recorded: the walk must start one with `loader dev up`"
        return stack

    @staticmethod
    def log_of(job: Job) -> str:
        job.log.flush()
        return Path(job.log.name).read_text(errors="replace")[-4000:]

    def job_logs(self) -> dict[str, str]:
        return {job.line: self.log_of(job) for job in self.jobs.values()}

    def clean_up(self) -> None:
        """Stop whatever the walk left running, even after a failed assertion."""
        for job in self.jobs.values():
            if job.process.poll() is None:
                job.process.kill()
                job.process.wait(timeout=30)
            job.log.close()
        if (self.cwd / "state" / "dev-stack.json").exists():
            subprocess.run(["loader", "dev", "down"], cwd=self.cwd, env=self.env, timeout=120, check=False)
        for service in self.services:
            if owns(service):
                os.killpg(service.pgid, signal.SIGKILL)


def _events_on_topic(walk: Walk, event: str) -> int:
    [spec] = load_specs(walk.cwd / "pipelines", [event])
    return sum(end_offsets(walk.stack().settings, spec).values())


def _wait_until_read(walk: Walk, job: Job, event: str) -> None:
    """Wait until the worker ``job`` has read every event on ``event``'s topic (and there are some)."""
    events = _events_on_topic(walk, event)
    assert events > 0, f"the walk produced no events for {event} before stopping its worker"
    url = f"http://127.0.0.1:{walk.env['LOADER_WEB_PORT']}/metrics"
    pattern = re.compile(rf'^loader_records_consumed_total{{event="{event}"}} (\S+)$', re.MULTILINE)

    def consumed() -> int:
        with urllib.request.urlopen(url, timeout=5) as response:
            found = pattern.search(response.read().decode())
        return int(float(found.group(1))) if found else 0

    eventually(
        lambda: consumed() == events,
        180,
        what=f"the worker of {event} to read the {events} events on its topic",
        interval_s=1,
        ignoring=(OSError,),
        detail=lambda: walk.log_of(job),
    )


def _wait_until_rows(walk: Walk) -> None:
    """Wait until each worker's table holds one row per event on its topic (and there are some)."""
    specs = load_specs(walk.cwd / "pipelines", walk.worker_events())
    assert specs, "the walk runs no `loader worker run` job whose rows could be checked"
    settings = walk.stack().settings
    with Warehouse(settings.snowflake) as warehouse:
        for spec in specs:
            events = sum(end_offsets(settings, spec).values())
            assert events > 0, f"the walk produced no events to {spec.kafka.topic}"
            count = EventObjects.for_spec(spec, settings.snowflake).count_statement()

            def rows(count: str = count) -> int:
                return int(warehouse.execute(count)[0][0])

            def every_event_a_row(rows: Callable[[], int] = rows, events: int = events) -> bool:
                return rows() == events

            eventually(
                every_event_a_row,
                240,
                what=f"{events} rows of {spec.name}, one per event on {spec.kafka.topic}",
                interval_s=2,
                detail=lambda rows=rows: f"rows {rows()}; jobs' logs: {walk.job_logs()}",
            )
            walk.rows_checked.append(spec.name)


@pytest.fixture
def walk(tmp_path: Path) -> Iterator[Walk]:
    """A folder like a fresh clone (specs and schemas), its own state dir, and .venv's `loader` first."""
    work = tmp_path / "repo"
    work.mkdir()
    for folder in ("pipelines", "schemas"):
        shutil.copytree(REPO / folder, work / folder)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOADER_") or k == "LOADER_CACHE_DIR"}
    env |= {
        "LOADER_STATE_DIR": str(work / "state"),
        "PATH": f"{LOADER_BIN}{os.pathsep}{env.get('PATH', '')}",
        "COLUMNS": "200",
        "LOADER_WEB_PORT": str(free_port()),
        "LOADER_METRICS_PORT": str(free_port()),
        "LOADER_GATEWAY__PORT": str(free_port()),
        "LOADER_GATEWAY__METRICS_PORT": str(free_port()),
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    walk = Walk(work, env, logs)
    try:
        yield walk
    finally:
        walk.clean_up()


def _assert_nothing_left(walk: Walk) -> None:
    assert walk.services, "the walk started no service (no `loader dev up`?)"
    assert sorted(s.name for s in walk.services) == ["fakesnow", "kafka", "moto", "schema-registry"]
    assert [s.name for s in walk.services if is_running(s.pid)] == []
    assert [j.line for j in walk.jobs.values() if j.process.poll() is None] == []
    assert not (walk.cwd / "state" / "dev-stack.json").exists()


def test_quick_start_dev_walk(walk: Walk) -> None:
    """The Quick start's `loader dev up` block works as written: every spec applied, status answers."""
    [block] = [b for b in bash_blocks("## Quick start") if "loader dev up" in b]
    assert block.rstrip().splitlines()[-1].startswith("loader dev down")
    walk.run(block)
    status = next(out for line, out in walk.outputs if line.startswith("loader status"))
    for event in ("store_updated", "order_created", "app_click"):
        assert event in status
    _assert_nothing_left(walk)


def test_adding_an_event_type_walk(walk: Walk) -> None:
    """The "Adding an event type" block works as written on `loader dev up`: the events become rows."""
    [block, *_] = bash_blocks("### Adding an event type")
    walk.run(block)
    assert walk.rows_checked == ["payment_captured"]
    assert (walk.cwd / "pipelines" / "payment_captured.yaml").is_file()
    _assert_nothing_left(walk)


def test_event_gateway_walk(walk: Walk) -> None:
    """The event gateway section works as written on `loader dev up`: a key, the gateway ready,
    one good and one bad event answered by index, a REST Proxy v2 record produced, a clean stop."""
    blocks = bash_blocks("## The event gateway: HTTP in, Kafka out")
    for block in blocks:
        walk.run(block)
    assert walk.env["KEY"] and "LOADER_GATEWAY__API_KEYS" in walk.env
    posted = next(out for line, out in walk.outputs if "/v1/events/order_created" in line)
    answer = json.loads(posted)
    assert answer["accepted"] == 1 and [r["index"] for r in answer["rejected"]] == [1]
    [result] = answer["results"]
    assert result["index"] == 0 and result["offset"] >= 0
    proxied = next(out for line, out in walk.outputs if "/topics/orders.order_created" in line)
    [offset] = json.loads(proxied)["offsets"]
    assert offset["error_code"] is None and offset["offset"] >= 0
    _assert_nothing_left(walk)
