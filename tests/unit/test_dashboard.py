"""The Grafana dashboard (deploy/grafana/event-loader.json): its structure, and that its queries read
metrics the code really exports, filtered by the event variable, counters through rate()."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from loader import metrics
from tests.exported_metrics import exported_metric_names
from tests.promtool import promtool

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "event-loader.json"
CHART_COPY = ROOT / "deploy" / "helm" / "event-loader" / "dashboards" / "event-loader.json"
EVENT_FILTER = 'event=~"$event"'
DATASOURCE = "${datasource}"
SELECTOR = re.compile(r"(?P<name>[A-Za-z_:][\w:]*)\s*(?P<matchers>\{[^}]*\})?")
FUNCTIONS = {"sum", "min", "max", "rate", "increase", "histogram_quantile", "by", "label_values"}
COUNTER_SUFFIXES = ("_total", "_bucket", "_sum", "_count")
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$event": ".*"}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """The panels that show data (rows only group them)."""
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def _queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every query: each panel target and the event variable's."""
    for panel in _panels(dashboard):
        for target in panel["targets"]:
            yield panel["title"], target["expr"]
    yield "the event variable", _variables(dashboard)["event"]["query"]["query"]


def _selectors(expr: str) -> Iterator[tuple[str, str, int]]:
    """(metric, its matchers, position) of every series selector in ``expr``."""
    for found in SELECTOR.finditer(expr):
        name = found["name"]
        tail = expr[found.end() :].lstrip()
        if name in FUNCTIONS or tail.startswith("("):
            continue
        if found["matchers"] is None and not name.startswith("loader_"):
            continue  # a label name in by (...) or a function argument, not a series
        start, end = found.span("matchers") if found["matchers"] else (found.end(), found.end())
        yield name, expr[start:end], found.start()


def _label_names() -> dict[str, tuple[str, ...]]:
    """Sample name -> label names, of every metric in the registry (and freshness, which is derived
    from the newest _CREATED_AT gauge with its labels)."""
    labels = {
        name: tuple(collector._labelnames)  # type: ignore[attr-defined]
        for name, collector in metrics.REGISTRY._names_to_collectors.items()
    }
    labels[metrics.FRESHNESS_NAME] = labels[metrics.NEWEST_NAME]
    return labels


def test_dashboard_has_prometheus_datasource_and_multi_event_variables(dashboard: dict[str, Any]) -> None:
    """A current-schema dashboard with a Prometheus datasource variable and a multi-select event variable
    (with All) listing the event label of an exported per-event metric."""
    assert dashboard["schemaVersion"] >= 39
    assert dashboard["uid"] and dashboard["title"]
    variables = _variables(dashboard)
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    event = variables["event"]
    assert event["type"] == "query"
    assert event["datasource"]["uid"] == DATASOURCE
    assert event["multi"] is True and event["includeAll"] is True
    match = re.fullmatch(r"label_values\((\w+), event\)", event["query"]["query"])
    assert match, event["query"]["query"]
    assert match[1] in exported_metric_names()
    assert "event" in _label_names()[match[1]]


def test_every_panel_has_a_title_datasource_queries_and_a_unique_id(dashboard: dict[str, Any]) -> None:
    """Every data panel has a title, the datasource variable (panel and targets), at least one query with
    distinct refIds; panel ids are unique across rows and panels."""
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert _panels(dashboard)
    for panel in _panels(dashboard):
        assert panel["title"].strip()
        assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE}, panel["title"]
        targets = panel["targets"]
        assert targets, panel["title"]
        assert len({t["refId"] for t in targets}) == len(targets)
        for target in targets:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] == DATASOURCE


def test_panels_fit_the_grid_without_overlapping(dashboard: dict[str, Any]) -> None:
    """Every panel lies inside the 24-column grid with a positive size, and no two panels overlap."""
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["w"] > 0 and pos["h"] > 0 and pos["x"] >= 0 and pos["y"] >= 0, panel["title"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[x, y]}"
                cells[x, y] = panel["title"]


def test_queries_use_only_exported_metrics(dashboard: dict[str, Any]) -> None:
    """Every metric any query reads is one the code exports, under its exposition name."""
    exported = exported_metric_names()
    for where, expr in _queries(dashboard):
        used = [name for name, _, _ in _selectors(expr)]
        assert used, f"{where}: no metric in {expr}"
        unknown = set(used) - exported
        assert not unknown, f"{where}: {sorted(unknown)} not exported (exported: {sorted(exported)})"


def test_labels_in_queries_exist_on_their_metrics(dashboard: dict[str, Any]) -> None:
    """Matchers, by (...) groupings and legends name only labels the queried metrics carry."""
    labels = _label_names()
    for panel in _panels(dashboard):
        for target in panel["targets"]:
            expr = target["expr"]
            carried = {"le"}
            for name, matchers, _ in _selectors(expr):
                carried |= set(labels[name])
                for label in re.findall(r"(\w+)\s*=~?", matchers):
                    assert label in labels[name], f"{panel['title']}: {name} has no label {label}"
            grouped = {
                label.strip()
                for clause in re.findall(r"by\s*\(([^)]*)\)", expr)
                for label in clause.split(",")
            }
            legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
            assert grouped | legend <= carried, f"{panel['title']}: {(grouped | legend) - carried}"


def test_per_event_metrics_are_filtered_by_the_event_variable(dashboard: dict[str, Any]) -> None:
    """Every selector of a metric with an event label filters on the event variable (and no other)."""
    labels = _label_names()
    for where, expr in _queries(dashboard):
        if where == "the event variable":
            continue
        for name, matchers, _ in _selectors(expr):
            assert ("event" in labels[name]) == (EVENT_FILTER in matchers), f"{where}: {name}{matchers}"


def test_counters_are_read_through_rate_and_gauges_as_they_are(dashboard: dict[str, Any]) -> None:
    """Counter and histogram series appear only inside rate() or increase() over a range; gauges never."""
    for where, expr in _queries(dashboard):
        if where == "the event variable":
            continue
        for name, matchers, start in _selectors(expr):
            before = expr[:start].rstrip()
            after = expr[start + len(name) :].lstrip()[len(matchers) :].lstrip()
            through_rate = re.search(r"\b(rate|increase)\($", before) is not None and after.startswith("[")
            assert through_rate == name.endswith(COUNTER_SUFFIXES), f"{where}: {name} in {expr}"


def test_dashboard_shows_every_part_of_the_pipeline(dashboard: dict[str, Any]) -> None:
    """Lag, freshness in S3 and the table, throughput, files, dead letters, errors, latencies, memory
    against the budget and the gateway each have a query."""
    used: set[tuple[str, str]] = {
        (name, matchers) for _, expr in _queries(dashboard) for name, matchers, _ in _selectors(expr)
    }
    names = {name for name, _ in used}
    assert {
        "loader_consumer_lag_records",
        "loader_records_consumed_total",
        "loader_records_written_total",
        "loader_files_written_total",
        "loader_file_size_bytes_bucket",
        "loader_records_dead_lettered_total",
        "loader_errors_total",
        "loader_upload_duration_seconds_bucket",
        "loader_load_latency_seconds_bucket",
        "loader_buffer_memory_bytes",
        "loader_buffer_memory_budget_bytes",
        "loader_gateway_requests_total",
        "loader_gateway_records_total",
        "loader_gateway_rejected_total",
        "loader_gateway_produce_seconds_bucket",
        "loader_gateway_in_flight_records",
        "loader_gateway_async_failures_total",
        "loader_gateway_spilled_total",
    } <= names
    freshness = {m for name, m in used if name == metrics.FRESHNESS_NAME}
    assert any('where="s3"' in m for m in freshness) and any('where="table"' in m for m in freshness)


def test_deploy_dashboard_is_the_charts_file() -> None:
    """deploy/grafana/event-loader.json and the chart's copy are one file (one source of truth)."""
    assert DASHBOARD.resolve() == CHART_COPY.resolve()
    assert CHART_COPY.is_file() and not CHART_COPY.is_symlink()


def test_panel_queries_are_valid_promql(dashboard: dict[str, Any], tmp_path: Path) -> None:
    """Every panel query, with Grafana's variables filled in, parses as PromQL (`promtool check rules`)."""
    rules = []
    for index, (where, expr) in enumerate(_queries(dashboard)):
        if where == "the event variable":
            continue  # label_values() is Grafana's, not PromQL
        filled = expr
        for variable, value in GRAFANA_VARIABLES.items():
            filled = filled.replace(variable, value)
        rules.append({"record": f"dashboard:query_{index}", "expr": filled})
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run(
        [promtool(), "check", "rules", "--lint=none", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
