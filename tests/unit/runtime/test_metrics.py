"""The instruments' names, units and labels as Prometheus shows them, and what the scheduler counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from tests.support.stack import parse_metrics, total
from vibewave.contracts.events import RequestRecord
from vibewave.contracts.models import RequestStatus, RequestTimings
from vibewave.pod_manager.providers.base import Unavailable
from vibewave.pod_manager.runpod_api import counted, rest_route
from vibewave.runtime import metrics
from vibewave.runtime.metrics import HttpServerMetrics, Instruments, build_meter_provider
from vibewave.scheduler.service import measure

pytestmark = pytest.mark.unit

EXPECTED = {
    "vibewave_requests_total",
    "vibewave_requests_submitted_total",
    "vibewave_queue_depth",
    "vibewave_queue_wait_seconds_count",
    "vibewave_run_duration_seconds_count",
    "vibewave_dispatch_latency_seconds_count",
    "vibewave_pods",
    "vibewave_pod_boot_duration_seconds_count",
    "vibewave_gpu_usage_seconds_total",
    "vibewave_gpu_cost_total",
    "vibewave_runpod_api_calls_total",
    "vibewave_dead_letters_total",
    "vibewave_webhook_deliveries_total",
    "http_server_request_duration_seconds_count",
}


@pytest.fixture
def meters() -> tuple[Instruments, CollectorRegistry]:
    registry = CollectorRegistry()
    provider = build_meter_provider("test", registry)
    return Instruments(provider.get_meter(metrics.METER_NAME)), registry


def test_every_instrument_has_its_agreed_prometheus_name(meters: tuple[Instruments, CollectorRegistry]) -> None:
    m, registry = meters
    m.requests.add(1, {"workflow": "w", "status": "completed"})
    m.submitted.add(1, {"workflow": "w"})
    m.queue_source = lambda: {"high": 0, "normal": 2, "low": 0}
    m.queue_wait.record(1.5, {"workflow": "w"})
    m.run_duration.record(2.0, {"workflow": "w"})
    m.dispatch_latency.record(0.003)
    m.pods_source = lambda: {("ready", "local"): 1}
    m.pod_boot.record(4.0, {"provider": "local"})
    m.gpu_usage.add(3.0, {"workflow": "w"})
    m.gpu_cost.add(0.01, {"workflow": "w"})
    m.runpod_calls.add(1, {"operation": "GET /pods/{podId}"})
    m.dead_letters.add(1, {"stream": "REQUESTS", "consumer": "scheduler"})
    m.webhook_deliveries.add(1, {"event": "completed", "outcome": "delivered"})
    m.http_duration.record(0.01, {"http.request.method": "GET", "http.route": "/x", "http.response.status_code": 200})
    samples = parse_metrics(generate_latest(registry).decode())
    assert {s.name for s in samples} >= EXPECTED
    assert all(s.labels.get("service_name") == "vibewave-test" for s in samples if s.name != "target_info")
    assert total(samples, "vibewave_queue_depth", priority="normal") == 2
    assert total(samples, "vibewave_pods", state="ready", provider="local") == 1


def test_histograms_have_buckets_fitted_to_what_they_measure(meters: tuple[Instruments, CollectorRegistry]) -> None:
    m, registry = meters
    m.queue_wait.record(1500, {"workflow": "w"})  # 25 minutes: still within a bucket
    m.dispatch_latency.record(0.002)
    samples = parse_metrics(generate_latest(registry).decode())
    wait = [s for s in samples if s.name == "vibewave_queue_wait_seconds_bucket"]
    assert any(float(s.labels["le"]) == 1800 and s.value == 1 for s in wait)
    assert any(float(s.labels["le"]) == 1200 and s.value == 0 for s in wait)
    dispatch = [s for s in samples if s.name == "vibewave_dispatch_latency_seconds_bucket"]
    assert any(float(s.labels["le"]) == 0.0025 and s.value == 1 for s in dispatch)


def record(**changes: object) -> RequestRecord:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    base = RequestRecord(
        id="req-1", workflow_name="comfyui_image_qwen", inputs={}, status=RequestStatus.PENDING,
        created_at=at, updated_at=at,
    )  # fmt: skip
    return msgspec.structs.replace(base, **changes)


def test_the_scheduler_measures_each_stored_change_once(meters: tuple[Instruments, CollectorRegistry]) -> None:
    m, registry = meters
    pending = record()
    created = pending.created_at
    assigned = record(status=RequestStatus.ASSIGNED, attempts=1, assigned_at=created + timedelta(seconds=4))
    running = msgspec.structs.replace(assigned, status=RequestStatus.RUNNING)
    timings = RequestTimings(queued_ms=0, boot_wait_ms=0, run_ms=2500, upload_ms=10, total_ms=6600)
    completed = msgspec.structs.replace(
        running, status=RequestStatus.COMPLETED, gpu_seconds=2.6, cost=0.0013, timings=timings
    )
    for before, after in [(None, pending), (pending, assigned), (assigned, running), (running, completed)]:
        measure(m, before, after)
    samples = parse_metrics(generate_latest(registry).decode())
    workflow = {"workflow": "comfyui_image_qwen"}
    assert total(samples, "vibewave_requests_submitted_total", **workflow) == 1
    assert total(samples, "vibewave_requests_total", status="completed", **workflow) == 1
    assert total(samples, "vibewave_queue_wait_seconds_count") == 1
    assert total(samples, "vibewave_queue_wait_seconds_sum") == 4
    assert total(samples, "vibewave_run_duration_seconds_sum") == 2.5
    assert total(samples, "vibewave_gpu_usage_seconds_total") == pytest.approx(2.6)
    assert total(samples, "vibewave_gpu_cost_total") == pytest.approx(0.0013)


def test_a_retry_is_billed_per_attempt_and_waits_only_once(meters: tuple[Instruments, CollectorRegistry]) -> None:
    m, registry = meters
    first = record(status=RequestStatus.ASSIGNED, attempts=1, assigned_at=record().created_at)
    retried = msgspec.structs.replace(first, status=RequestStatus.PENDING, gpu_seconds=1.0)
    second = msgspec.structs.replace(retried, status=RequestStatus.ASSIGNED, attempts=2)
    cancelled = msgspec.structs.replace(second, status=RequestStatus.CANCELLED, gpu_seconds=1.5)
    for before, after in [(record(), first), (first, retried), (retried, second), (second, cancelled)]:
        measure(m, before, after)
    samples = parse_metrics(generate_latest(registry).decode())
    assert total(samples, "vibewave_queue_wait_seconds_count") == 1
    assert total(samples, "vibewave_gpu_usage_seconds_total") == pytest.approx(1.5)
    assert total(samples, "vibewave_requests_total", status="cancelled") == 1
    assert total(samples, "vibewave_run_duration_seconds_count") == 0  # no timings: it never reported a run


async def test_http_metrics_label_the_route_template_never_the_path(
    meters: tuple[Instruments, CollectorRegistry],
) -> None:
    m, registry = meters

    async def app(scope: dict[str, object], _receive: object, send: object) -> None:
        scope["path_template"] = "/api/qwen/status/{request_id}"
        await send({"type": "http.response.start", "status": 404})  # type: ignore[operator]

    async def send(_message: object) -> None:
        return None

    wrapped = HttpServerMetrics(app, m)
    await wrapped({"type": "http", "method": "GET", "path": "/api/qwen/status/req-123"}, None, send)
    await wrapped({"type": "http", "method": "BREW", "path": "/nowhere"}, None, send)
    text = generate_latest(registry).decode()
    assert "req-123" not in text
    samples = parse_metrics(text)
    route = {"http_route": "/api/qwen/status/{request_id}", "http_response_status_code": "404"}
    assert total(samples, "http_server_request_duration_seconds_count", http_request_method="GET", **route) == 1
    assert total(samples, "http_server_request_duration_seconds_count", http_request_method="_OTHER") == 1


def test_runpod_rest_operations_are_route_templates() -> None:
    assert rest_route("/pods") == "/pods"
    assert rest_route("/pods?cursor=abc") == "/pods"
    assert rest_route("/pods/x1y2z3") == "/pods/{podId}"
    assert rest_route("/pods/x1y2z3/action") == "/pods/{podId}/action"
    assert rest_route("/network-volumes/vol%201") == "/network-volumes/{networkVolumeId}"
    assert rest_route("/catalog/gpus") == "/catalog/gpus"


def test_runpod_calls_are_counted_with_their_error_type(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = CollectorRegistry()
    monkeypatch.setattr(metrics, "_instruments", Instruments(build_meter_provider("t", registry).get_meter("t")))
    with counted("GET /pods/{podId}"):
        pass
    with pytest.raises(Unavailable), counted("CreatePod"):
        raise Unavailable("RunPod unreachable: ClientConnectorError")
    samples = parse_metrics(generate_latest(registry).decode())
    assert total(samples, "vibewave_runpod_api_calls_total", operation="GET /pods/{podId}") == 1
    failed = [
        s for s in samples if s.name == "vibewave_runpod_api_calls_total" and s.labels["operation"] == "CreatePod"
    ]
    assert [(s.labels["error_type"], s.value) for s in failed] == [("Unavailable", 1)]


def test_otlp_is_added_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_METRICS_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert not metrics._otlp_wanted()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert metrics._otlp_wanted()
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    assert not metrics._otlp_wanted()
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
    assert metrics._otlp_wanted()
