"""The Grafana dashboard (deploy/observability/grafana) queries only the metrics Vibewave exports, by the
names and labels the OpenTelemetry Prometheus exporter gives them: a misspelt metric or label would draw
an empty panel without any error, so it fails here. Its data sources are the provisioned ones."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from vibewave.runtime.metrics import Instruments, build_meter_provider

pytestmark = pytest.mark.unit

GRAFANA = Path(__file__).resolve().parents[3] / "deploy" / "observability" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "vibewave.json"
DASHBOARDS_PATH = "/var/lib/grafana/dashboards"  # where compose mounts dashboards/

# The agreed metrics (issue 16's interfaces), as Prometheus names: kind, and labels (OTel attributes with
# dots as underscores)
COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"
METRICS: dict[str, tuple[str, frozenset[str]]] = {
    "vibewave_requests_total": (COUNTER, frozenset({"workflow", "status"})),
    "vibewave_requests_submitted_total": (COUNTER, frozenset({"workflow"})),
    "vibewave_queue_depth": (GAUGE, frozenset({"priority"})),
    "vibewave_queue_wait_seconds": (HISTOGRAM, frozenset({"workflow"})),
    "vibewave_run_duration_seconds": (HISTOGRAM, frozenset({"workflow"})),
    "vibewave_dispatch_latency_seconds": (HISTOGRAM, frozenset()),
    "vibewave_pods": (GAUGE, frozenset({"state", "provider"})),
    "vibewave_pod_boot_duration_seconds": (HISTOGRAM, frozenset({"provider"})),
    "vibewave_gpu_usage_seconds_total": (COUNTER, frozenset({"workflow"})),
    "vibewave_gpu_cost_total": (COUNTER, frozenset({"workflow"})),
    "vibewave_runpod_api_calls_total": (COUNTER, frozenset({"operation", "error_type"})),
    "vibewave_dead_letters_total": (COUNTER, frozenset({"stream", "consumer"})),
    "vibewave_webhook_deliveries_total": (COUNTER, frozenset({"event", "outcome"})),
    "http_server_request_duration_seconds": (
        HISTOGRAM,
        frozenset({"http_request_method", "http_route", "http_response_status_code"}),
    ),
}
EVERY_SERIES = frozenset({"service_name", "job", "instance"})  # the resource's service.name; the scrape's own
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")
PROMQL_WORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
                          "and", "or", "unless", "inf", "nan"})  # fmt: skip

# what a series name looks like once strings, label matchers, ranges and grouping clauses are gone
IDENTIFIER = re.compile(r"(?<![\w$.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:]|\s*\()")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
MATCHERS = re.compile(r"\{([^}]*)\}")
MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


def series_of(name: str) -> str | None:
    """The agreed metric a series name belongs to (a histogram's `_bucket`, `_sum`, `_count` too)."""
    if name in METRICS:
        return name if METRICS[name][0] != HISTOGRAM else None  # a histogram is queried by its series
    for suffix in HISTOGRAM_SERIES:
        base = name.removesuffix(suffix)
        if base != name and METRICS.get(base, ("", frozenset()))[0] == HISTOGRAM:
            return base
    return None


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression reads."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings first: they may hold braces or words
    text = MATCHERS.sub(" ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = GROUPING.sub(" ", text)
    text = re.sub(r"\$\w+", " ", text)  # Grafana's variables ($__rate_interval, $workflow)
    names = {match.group(1) for match in IDENTIFIER.finditer(text)}
    return {name for name in names if name.lower() not in PROMQL_WORDS and not re.fullmatch(r"[0-9.e]+", name)}


def label_names(expr: str) -> set[str]:
    """The labels an expression groups by or matches on."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    labels = {label.strip() for group in GROUPING.findall(text) for label in group.split(",") if label.strip()}
    for matchers in MATCHERS.findall(text):
        labels |= set(MATCHER_LABEL.findall(matchers))
    return labels


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found += panel.get("panels", [])  # a collapsed row holds its panels
    return found


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    found = [(panel["title"], target["expr"]) for panel in panels(dashboard) for target in panel.get("targets", [])]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            inner = re.fullmatch(r"label_values\((?:(.+),\s*)?(\w+)\)", text.strip())
            assert inner is not None, f"variable {variable['name']}: {text}"
            found.append((f"variable {variable['name']}", inner.group(1) or ""))
    return found


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


@pytest.fixture(scope="module")
def datasources() -> dict[str, dict[str, Any]]:
    config = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "vibewave.yaml").read_text())
    return {source["uid"]: source for source in config["datasources"]}


def test_the_parser_finds_names_and_labels() -> None:
    """The checks below are only as good as this: a name inside a function, beside a matcher, after by()."""
    expr = ('histogram_quantile(0.95, sum by (le, workflow) (rate(vibewave_run_duration_seconds_bucket'
            '{workflow=~"$workflow", status!="a{b}"}[$__rate_interval]))) / ignoring(x) up * 3600')  # fmt: skip
    assert metric_names(expr) == {"vibewave_run_duration_seconds_bucket", "up"}
    assert label_names(expr) == {"le", "workflow", "status", "x"}
    assert series_of("vibewave_run_duration_seconds_count") == "vibewave_run_duration_seconds"
    assert series_of("vibewave_run_duration_seconds") is None
    assert series_of("vibewave_request_total") is None


def test_the_agreed_names_are_what_the_services_export() -> None:
    """Every instrument of `runtime.metrics`, recorded once, through the same Prometheus reader as /metrics."""
    registry = CollectorRegistry()
    provider = build_meter_provider("dashboard-test", registry)
    try:
        meters = Instruments(provider.get_meter("vibewave"))
        meters.queue_source = lambda: {"normal": 1}
        meters.pods_source = lambda: {("ready", "local"): 1}
        for instrument in vars(meters).values():
            if hasattr(instrument, "add"):
                instrument.add(1, {})
            elif hasattr(instrument, "record"):
                instrument.record(1.0, {})
        lines = generate_latest(registry).decode().splitlines()
    finally:
        provider.shutdown()
    exported = {re.split(r"[{ ]", line)[0] for line in lines if line and not line.startswith("#")} - {"target_info"}
    expected = set()
    for name, (kind, _) in METRICS.items():
        expected |= {name + suffix for suffix in HISTOGRAM_SERIES} if kind == HISTOGRAM else {name}
    assert exported == expected


def test_dashboard_is_a_grafana_dashboard(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "vibewave" and dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(dashboard):
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel.get("targets"), f"{panel['title']}: no query"


def test_every_query_reads_only_agreed_metrics(dashboard: dict[str, Any]) -> None:
    for where, expr in queries(dashboard):
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        unknown = sorted(name for name in names if series_of(name) is None)
        assert not unknown, f"{where}: {unknown} are not metrics Vibewave exports (or a histogram without _bucket)"


def test_every_label_is_one_the_metric_has(dashboard: dict[str, Any]) -> None:
    for where, expr in queries(dashboard):
        bases = {series_of(name) for name in metric_names(expr)}
        allowed = set(EVERY_SERIES)
        for base in bases:
            assert base is not None
            kind, labels = METRICS[base]
            allowed |= labels | ({"le"} if kind == HISTOGRAM else set())
        unknown = label_names(expr) - allowed
        assert not unknown, f"{where}: labels {sorted(unknown)} are not on {sorted(b for b in bases if b)}"


def test_quantiles_are_taken_over_buckets_by_le(dashboard: dict[str, Any]) -> None:
    for where, expr in queries(dashboard):
        if "histogram_quantile" in expr:
            assert "_bucket" in expr and re.search(r"by \((?:[^)]*, )?le\b", expr), f"{where}: {expr}"


def test_every_agreed_metric_has_a_panel(dashboard: dict[str, Any]) -> None:
    shown = {series_of(name) for _, expr in queries(dashboard) for name in metric_names(expr)}
    assert not set(METRICS) - shown, f"not on the dashboard: {sorted(set(METRICS) - shown)}"


def test_panels_use_the_provisioned_prometheus(dashboard: dict[str, Any], datasources: dict[str, Any]) -> None:
    used = [
        (panel["title"], source)
        for panel in panels(dashboard)
        for source in [panel.get("datasource"), *(t.get("datasource") for t in panel.get("targets", []))]
    ]
    used += [(f"variable {v['name']}", v.get("datasource")) for v in dashboard.get("templating", {}).get("list", [])]
    for where, source in used:
        if source is not None:
            assert datasources.get(source["uid"], {}).get("type") == source["type"] == "prometheus", where


def test_datasources_and_provider(datasources: dict[str, Any]) -> None:
    """Compose runs Grafana with host networking: Prometheus and Jaeger on loopback."""
    assert datasources["prometheus"]["url"] == "http://127.0.0.1:9090"
    assert datasources["prometheus"]["type"] == "prometheus"
    assert datasources["jaeger"]["url"] == "http://127.0.0.1:16686"
    assert datasources["jaeger"]["type"] == "jaeger"
    assert [source.get("isDefault") for source in datasources.values()].count(True) == 1
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "vibewave.yaml").read_text())["providers"]
    assert [provider["options"]["path"] for provider in providers] == [DASHBOARDS_PATH]
    assert all(provider["type"] == "file" for provider in providers)
