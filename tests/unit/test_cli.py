"""The CLI: bad input gets a message saying what is wrong, never a traceback."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from loader.cli import cli
from loader.cli.ranges import MOMENT, check_range
from loader.config.spec import load_specs
from tests.unit.example_specs import EXAMPLES, write_example_spec

pytestmark = pytest.mark.unit


def test_bad_spec_is_a_message_with_exit_code_2(tmp_path: Path) -> None:
    """A broken spec prints the file and field, exits 2, and shows no traceback."""
    (tmp_path / "bad.yaml").write_text("name: orders\nkafka: {topic: 'orders'}\n")
    result = CliRunner().invoke(cli, ["worker", "run", "orders", "--specs", str(tmp_path)])
    assert result.exit_code == 2
    assert "bad.yaml: invalid event spec" in result.output
    assert "s3: Field required" in result.output
    assert "Traceback" not in result.output


def test_missing_specs_folder_says_how_to_fix(tmp_path: Path) -> None:
    """A specs folder that does not exist names the setting to change."""
    result = CliRunner().invoke(cli, ["pipes", "run", "--specs", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "LOADER_SPECS_DIR" in result.output


def test_unknown_event_lists_known_ones() -> None:
    """Asking for an event without a spec lists the ones there are."""
    specs = Path(__file__).parents[2] / "pipelines"
    result = CliRunner().invoke(cli, ["worker", "run", "nope", "--specs", str(specs)])
    assert result.exit_code == 2
    assert "known: app_click, order_created, store_updated" in result.output


def test_bad_option_value_is_explained() -> None:
    """click's own validation explains a bad option value."""
    result = CliRunner().invoke(cli, ["demo", "--events", "0"])
    assert result.exit_code == 2
    assert "--events" in result.output and "Traceback" not in result.output


@pytest.fixture
def run(tmp_path: Path) -> Callable[..., Result]:
    """Invoke the CLI with no dev stack or config file to find."""
    env = {"LOADER_STATE_DIR": str(tmp_path / "state"), "LOADER_CONFIG": None}

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(cli, list(args), env=env)

    return invoke


def _spec_folder(tmp_path: Path, **changes: str) -> Path:
    """A folder holding the order_created example with top-level or ``section__field`` changes."""
    folder = tmp_path / "specs"
    folder.mkdir()
    write_example_spec(folder, "order_created", **changes)
    return folder


@pytest.mark.parametrize(
    "command",
    [
        ["schemas", "check", "--against", ""],
        ["plan", "order_created"],
        ["pipes", "plan"],
        ["pipes", "apply"],
        ["deploy", "render"],
        ["reconcile"],
        ["replay", "load", "order_created"],
        ["dead-letters", "redrive", "order_created"],
    ],
)
def test_every_command_refuses_a_table_name_too_long_for_its_pipe(
    tmp_path: Path, run: Callable[..., Result], command: list[str]
) -> None:
    """A 250-character table is refused the same way by every command, before any service is contacted."""
    specs = _spec_folder(tmp_path, snowflake__table="T" * 250)
    result = run(*command, "--specs", str(specs))
    assert result.exit_code == 2, result.output
    assert "snowflake.table: table name" in result.output and "at most 247" in result.output
    assert isinstance(result.exception, SystemExit)  # an exit status, not a crash


def test_schemas_check_refuses_an_alias_bomb_briefly(tmp_path: Path, run: Callable[..., Result]) -> None:
    """A spec of nested YAML aliases makes `schemas check` fail at once with a few lines, not megabytes."""
    specs = tmp_path / "specs"
    specs.mkdir()
    bomb = ['a0: &a0 ["xxxxxxxxxxxxxxxx", "xxxxxxxxxxxxxxxx", "xxxxxxxxxxxxxxxx"]']
    bomb += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 6)]
    (specs / "bomb.yaml").write_text("\n".join([*bomb, "name: *a5", ""]))
    started = time.monotonic()
    result = run("schemas", "check", "--against", "", "--specs", str(specs))
    assert time.monotonic() - started < 5
    assert result.exit_code == 2
    assert "YAML aliases (*name) are not allowed" in result.output
    assert len(result.output) < 1000


@pytest.mark.parametrize(
    "command",
    [
        ["reconcile", "order_created"],
        ["replay", "load", "order_created"],
        ["replay", "publish", "order_created", "--topic", "orders.replay"],
        ["dead-letters", "redrive", "order_created"],
    ],
)
def test_a_reversed_range_is_a_usage_error_naming_both_ends(
    run: Callable[..., Result], command: list[str]
) -> None:
    """--since after --until is refused with both values, instead of reporting 0 files."""
    result = run(*command, "--specs", str(EXAMPLES), "--since", "2026-11-27T14", "--until", "2026-11-27T12")
    assert result.exit_code == 2, result.output
    assert "Usage:" in result.output
    assert (
        "--since 2026-11-27T14:00:00+00:00 is not before --until 2026-11-27T12:00:00+00:00" in result.output
    )


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], click.Command]:
    """Every leaf command under ``group``, by its path."""
    found: dict[tuple[str, ...], click.Command] = {}
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found |= _commands(command, (*path, name))
        else:
            found[(*path, name)] = command
    return found


def test_every_command_taking_a_range_takes_the_shared_range_options() -> None:
    """--since/--until/--dry-run come from one declaration; the range tests cover every command with them."""
    with_range = {
        path: command
        for path, command in _commands(cli).items()
        if any(p.name == "since" for p in command.params)
    }
    assert set(with_range) == {
        ("audit",),
        ("reconcile",),
        ("replay", "load"),
        ("replay", "publish"),
        ("dead-letters", "redrive"),
        ("schemas", "drift"),
    }
    for path, command in with_range.items():
        options = {p.name: p for p in command.params if isinstance(p, click.Option)}
        assert options["since"].type is MOMENT and options["until"].type is MOMENT, path
        # schemas drift and audit only read: no --dry-run.
        assert path in {("schemas", "drift"), ("audit",)} or options["dry_run"].is_flag, path


def test_specs_default_to_loader_specs_dir(tmp_path: Path) -> None:
    """Without --specs, a command reads the specs folder from $LOADER_SPECS_DIR."""
    env = {
        "LOADER_STATE_DIR": str(tmp_path / "state"),
        "LOADER_CONFIG": None,
        "LOADER_SPECS_DIR": str(EXAMPLES),
    }
    result = CliRunner().invoke(cli, ["plan", "order_created", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert '"order_created"' in result.output


@pytest.mark.parametrize(
    "command",
    [
        ["audit"],
        ["reconcile"],
        ["replay", "load", "order_created"],
        ["replay", "publish", "order_created", "--topic", "orders.replay"],
        ["dead-letters", "redrive", "order_created"],
        ["schemas", "drift", "order_created"],
    ],
)
@pytest.mark.parametrize(
    ("option", "moment", "expected"),
    [
        (
            "--since",
            "2026-11-27T13:15",
            "--since 2026-11-27T13:15:00+00:00 is inside the dt=2026-11-27/hour=13",
        ),
        ("--until", "2026-11-27T13:00:01", "use 2026-11-27T13:00 or 2026-11-27T14:00"),
        ("--since", "2026-11-27T13:00+05:30", "--since 2026-11-27T07:30:00+00:00 is inside"),
    ],
)
def test_a_moment_inside_an_hour_partition_is_refused_with_the_boundaries(
    run: Callable[..., Result], command: list[str], option: str, moment: str, expected: str
) -> None:
    """A time inside an hour folder is refused, naming the folder and the two boundaries to use."""
    result = run(*command, "--specs", str(EXAMPLES), option, moment)
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "files cover whole hours" in result.output


def test_a_moment_inside_a_day_partition_is_refused(tmp_path: Path, run: Callable[..., Result]) -> None:
    """For day folders an hour is not a boundary: the message names the dt= folder and the two days."""
    specs = _spec_folder(tmp_path, s3__time_partition="day")
    result = run("replay", "load", "order_created", "--specs", str(specs), "--since", "2026-11-27T08")
    assert result.exit_code == 2, result.output
    assert "inside the dt=2026-11-27 partition of order_created" in result.output
    assert "use 2026-11-27 or 2026-11-28" in result.output


def test_ranges_on_partition_boundaries_pass() -> None:
    """Boundaries, open ends and offsets that land on a boundary in UTC are accepted."""
    [spec] = load_specs(EXAMPLES, ["order_created"])
    at = MOMENT.convert
    check_range(None, None, [spec])
    check_range(at("2026-11-27T13", None, None), None, [spec])
    check_range(at("2026-11-27T13:00+05:00", None, None), at("2026-11-28", None, None), [spec])
    with pytest.raises(click.UsageError):
        check_range(at("2026-11-27T13", None, None), at("2026-11-27T13", None, None), [spec])


@pytest.mark.parametrize(
    "args",
    [
        ["--log-format", "j" * 100_000, "status"],
        ["replay", "load", "order_created", "--since", "s" * 100_000],
        ["deploy", "render", "--image", "i" * 100_000],
        ["new-event", "n" * 100_000],
        ["no-such-command-" + "c" * 100_000],
        ["worker", "run", "e" * 100_000],
    ],
)
def test_a_huge_argument_is_quoted_clipped(
    tmp_path: Path, run: Callable[..., Result], args: list[str]
) -> None:
    """However long a bad argument, the error quotes only an excerpt of it."""
    result = run(*args, "--specs", str(EXAMPLES)) if args[0] != "--log-format" else run(*args)
    assert result.exit_code == 2, result.output[:500]
    assert "characters left out" in result.output
    assert len(result.output) < 2000


def test_an_unknown_log_level_is_refused() -> None:
    """--log-level names the levels it takes instead of silently logging at INFO."""
    result = CliRunner().invoke(cli, ["--log-level", "LOUD", "status"])
    assert result.exit_code == 2
    assert "'LOUD' is not one of" in result.output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["replay", "publish", "order_created", "--topic", ".."], "not a valid Kafka topic name"),
        (["replay", "load", "order_created", "--into", 'X"; DROP TABLE T; --'], "table name 'X\"; DROP"),
    ],
)
def test_names_given_on_the_command_line_follow_the_spec_rules(
    run: Callable[..., Result], args: list[str], expected: str
) -> None:
    """A topic or table named on the command line is checked like a spec's, before anything is contacted."""
    result = run(*args, "--specs", str(EXAMPLES))
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--" in result.output and expected in result.output


def test_pipes_run_without_a_queue_is_a_config_error(run: Callable[..., Result]) -> None:
    """`loader pipes run` with no notifications queue configured says which setting to set, exit 2."""
    result = run("pipes", "run", "--specs", str(EXAMPLES))
    assert result.exit_code == 2, result.output
    assert "LOADER_AWS__NOTIFICATIONS_QUEUE_URL" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "command"),
    [
        (["dead-letters", "nope"], "list"),
        (["dead-letters", "--samples", "0", "nope", "--json"], "list"),
        (["dead-letters", "list", "nope"], "list"),
        (["dead-letters", "redrive", "nope"], "redrive"),
    ],
)
def test_dead_letters_lists_by_default_and_redrives_on_request(
    run: Callable[..., Result], args: list[str], command: str
) -> None:
    """`loader dead-letters [EVENT…]` still lists (its options anywhere); `redrive` is its own
    command: both refuse an unknown event before any service is asked."""
    result = run(*args, "--specs", str(EXAMPLES))
    assert result.exit_code == 2, result.output
    assert "nope" in result.output and "known: app_click, order_created, store_updated" in result.output
    listed = run("dead-letters", "--help")
    assert listed.exit_code == 0 and "redrive" in listed.output and "list" in listed.output
    help_text = run("dead-letters", command, "--help").output
    assert ("--dry-run" in help_text) == (command == "redrive")
