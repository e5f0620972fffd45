"""The alerting rules (deploy/prometheus/loader-alerts.yaml): valid and unit-tested by Prometheus's
own promtool, each alert fired and kept silent by its tests, every metric one the code exports,
and every alert documented in the README's runbook with a first command the CLI takes."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from loader.cli import cli
from tests.exported_metrics import exported_metric_names
from tests.promtool import promtool

pytestmark = pytest.mark.unit

REPO = Path(__file__).parents[2]
RULES = REPO / "deploy" / "prometheus" / "loader-alerts.yaml"
RULE_TESTS = REPO / "deploy" / "prometheus" / "loader-alerts.test.yaml"
README = REPO / "README.md"
RUNBOOK_HEADING = "## Alerts and runbook"

NOT_EXPORTED_BY_THE_CODE = {
    "up": "Prometheus's own, one per scrape target",
    "loader_audit_problems": "pushed by the audit CronJob",
    "loader_audit_last_run_timestamp_seconds": "pushed by the audit CronJob",
}
_PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
_PROMQL_WORDS |= {"group_left", "group_right", "inf", "nan"}


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120, check=False)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, keywords, labels or durations)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", expr)
    return {name for name in names if name.lower() not in _PROMQL_WORDS}


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = heading.lstrip("#").strip().lower()
    return re.sub(r"[^a-z0-9 _-]", "", text).replace(" ", "-")


def _runbook_sections() -> dict[str, str]:
    """The README's runbook: each alert's section text, by its heading's anchor."""
    text = README.read_text()
    runbook = text.split(f"\n{RUNBOOK_HEADING}\n", 1)[1]
    runbook = re.split(r"^## ", runbook, maxsplit=1, flags=re.MULTILINE)[0]
    parts = re.split(r"^(#### .+)$", runbook, flags=re.MULTILINE)
    return {_slug(heading): body for heading, body in zip(parts[1::2], parts[2::2], strict=True)}


def test_promtool_checks_the_rules() -> None:
    """`promtool check rules` accepts the rule file."""
    result = _run_promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    """`promtool test rules` runs loader-alerts.test.yaml: every expected alert, and no other."""
    result = _run_promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_fails_a_test_that_expects_the_wrong_alert(tmp_path: Path) -> None:
    """The unit tests can fail: an alert expected to stay silent where it fires is reported."""
    tests = yaml.safe_load(RULE_TESTS.read_text())
    tests["rule_files"] = [str(RULES)]
    for case in tests["tests"]:
        for check in case["alert_rule_test"]:
            check["exp_alerts"] = []
    broken = tmp_path / "broken.test.yaml"
    broken.write_text(yaml.safe_dump(tests))
    result = _run_promtool("test", "rules", str(broken))
    assert result.returncode != 0
    assert "LoaderConsumerLagGrowing" in result.stdout + result.stderr


def test_each_alert_is_tested_firing_and_silent() -> None:
    """Every alert has a unit test where it fires and a case where it stays silent: an evaluation
    expecting no alert, or input series of an event (or queue) that the firing one leaves out."""
    fires: set[str] = set()
    silent: set[str] = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        series_keys = {
            match.group(2)
            for item in case["input_series"]
            for match in re.finditer(r'\b(event|queue)="([^"]*)"', item["series"])
        }
        for check in case["alert_rule_test"]:
            name = check["alertname"]
            expected = check.get("exp_alerts") or []
            if not expected:
                silent.add(name)
                continue
            fires.add(name)
            alerted = {alert["exp_labels"].get(key) for alert in expected for key in ("event", "queue")}
            if series_keys - alerted:
                silent.add(name)
    alerts = {rule["alert"] for rule in _rules()}
    assert alerts - fires == set(), "alerts never seen firing"
    assert alerts - silent == set(), "alerts never seen silent"


def test_every_metric_in_the_rules_is_exported() -> None:
    """Each metric a rule queries is served by the code (loader.metrics), or named above as
    coming from elsewhere: a renamed metric cannot leave an alert that never fires."""
    used = {name for rule in _rules() for name in metric_names(rule["expr"])}
    assert {"loader_consumer_lag_records", "loader_freshness_seconds", "up"} <= used
    unknown = used - exported_metric_names() - NOT_EXPORTED_BY_THE_CODE.keys()
    assert unknown == set()


def test_metric_names_finds_selectors_only() -> None:
    """The PromQL scan keeps metric names and drops functions, keywords, labels and ranges."""
    expr = (
        'sum by (event) (rate(a_total{kind=~"x|y"}[5m])) > on (event) group_left () '
        "(max by (event, where) (b_seconds) + 600) and ignoring (where) c or time() - d > 2 * 86400"
    )
    assert metric_names(expr) == {"a_total", "b_seconds", "c", "d"}


def test_every_alert_has_a_summary_description_and_runbook_section() -> None:
    """Each alert's annotations hold a summary, a description and a runbook_url pointing at its
    section of the README's runbook, and each section gives a first command in a bash block."""
    sections = _runbook_sections()
    for rule in _rules():
        annotations = rule["annotations"]
        assert annotations["summary"].strip() and annotations["description"].strip(), rule["alert"]
        path, anchor = annotations["runbook_url"].split("#")
        assert path == "README.md"
        assert anchor in sections, f"{rule['alert']}: no README section #{anchor}"
        assert re.search(r"^```bash\nloader ", sections[anchor], flags=re.MULTILINE), anchor
    assert {_slug(rule["alert"]) for rule in _rules()} - sections.keys() <= {"loaderauditnotrun"}


def test_each_first_command_is_one_the_cli_takes() -> None:
    """The runbook's first commands parse with the CLI as written (EVENT as a placeholder)."""
    commands = [
        shlex.split(line)
        for body in _runbook_sections().values()
        for block in re.findall(r"^```bash\n(.*?)^```$", body, flags=re.MULTILINE | re.DOTALL)
        for line in block.splitlines()[:1]
    ]
    assert len(commands) >= len(_rules()) - 1
    for argv in commands:
        assert argv[0] == "loader"
        command: click.Command = cli
        args = argv[1:]
        while isinstance(command, click.Group) and args and args[0] in command.commands:
            command, args = command.commands[args[0]], args[1:]
        assert command is not cli, f"{shlex.join(argv)}: no such command"
        command.make_context(shlex.join(argv), list(args))  # raises on arguments it does not take
