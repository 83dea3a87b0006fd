"""OpenTelemetry metrics: a Prometheus `/metrics` on every process, and OTLP when an endpoint is set.

`setup_metrics(service)` installs the process's meter provider: its resource names the service
(`vibewave-<service>`, OTEL_SERVICE_NAME overrides, as `telemetry.setup_tracing`), a Prometheus reader
serves what `/metrics` shows (and puts `service_name` on every series, so a scrape of several services
stays apart), and an OTLP/HTTP reader pushes the same instruments when `OTEL_METRICS_EXPORTER` says
`otlp` — or, unset, when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._METRICS_ENDPOINT`) is set.

Every instrument is declared once, in `Instruments`, with the names of the OpenTelemetry semantic
conventions where one exists (`http.server.request.duration`) and `vibewave.*` otherwise. Attributes are
bounded sets only — workflows, statuses, priorities, pod states, providers, operations — never a request
id, a pod id or anything secret: a label per request would grow the series without bound.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from opentelemetry import metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from prometheus_client import REGISTRY, CollectorRegistry

METER_NAME = "vibewave"
# Bucket boundaries (seconds) fitted to what each histogram measures
WAIT_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600)  # queue wait, pod boot
RUN_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 900)  # a workflow's run
DISPATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)  # ms-scale bus hops
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)  # the semconv's advice

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"})

_instruments: Instruments | None = None


class Instruments:
    """Every instrument of Vibewave, made from one meter. The observable gauges read their sources when
    collected: a service that holds the state (the scheduler's queue, pod-manager's fleet) sets them."""

    def __init__(self, meter: Meter) -> None:
        self.requests = meter.create_counter(
            "vibewave.requests", unit="{request}", description="Requests finished, by workflow and final status"
        )
        self.submitted = meter.create_counter(
            "vibewave.requests.submitted", unit="{request}", description="Requests accepted into the queue"
        )
        self.queue_wait = meter.create_histogram(
            "vibewave.queue.wait", unit="s", explicit_bucket_boundaries_advisory=WAIT_BUCKETS,
            description="From a request's creation to its first assignment to a pod (booting pods included)",
        )  # fmt: skip
        self.run_duration = meter.create_histogram(
            "vibewave.run.duration", unit="s", explicit_bucket_boundaries_advisory=RUN_BUCKETS,
            description="A request's run on its pod, for requests that ran (the run of its last attempt)",
        )  # fmt: skip
        self.dispatch_latency = meter.create_histogram(
            "vibewave.dispatch.latency", unit="s", explicit_bucket_boundaries_advisory=DISPATCH_BUCKETS,
            description="From the scheduler placing a request on a pod to its assignment being published",
        )  # fmt: skip
        self.pod_boot = meter.create_histogram(
            "vibewave.pod.boot.duration", unit="s", explicit_bucket_boundaries_advisory=WAIT_BUCKETS,
            description="From a pod's create (or resume) until it is ready",
        )  # fmt: skip
        self.gpu_usage = meter.create_counter(
            "vibewave.gpu.usage", unit="s", description="Pod time billed to requests (placed → outcome, per attempt)"
        )
        self.gpu_cost = meter.create_counter(
            "vibewave.gpu.cost", unit="{USD}", description="Cost of that pod time at each pod's hourly price"
        )
        self.runpod_calls = meter.create_counter(
            "vibewave.runpod.api.calls", unit="{call}", description="RunPod API calls; `error.type` on failed ones"
        )
        self.dead_letters = meter.create_counter(
            "vibewave.dead_letters", unit="{message}", description="Messages sent to the dead letters"
        )
        self.webhook_deliveries = meter.create_counter(
            "vibewave.webhook.deliveries", unit="{delivery}", description="Webhook tries: delivered, failed, dead"
        )
        self.http_duration = meter.create_histogram(
            "http.server.request.duration", unit="s", explicit_bucket_boundaries_advisory=HTTP_BUCKETS,
            description="Duration of HTTP server requests",
        )  # fmt: skip
        self.queue_source: Callable[[], Mapping[str, int]] | None = None
        self.pods_source: Callable[[], Mapping[tuple[str, str], int]] | None = None
        meter.create_observable_gauge(
            "vibewave.queue.depth", [self._queue_depth], unit="{request}", description="Requests waiting, by priority"
        )
        meter.create_observable_gauge(
            "vibewave.pods", [self._pods], unit="{pod}", description="Pods of the fleet, by state and provider"
        )

    def _queue_depth(self, _options: CallbackOptions) -> Iterable[Observation]:
        source = self.queue_source
        if source is None:
            return []
        return [Observation(count, {"priority": priority}) for priority, count in source().items()]

    def _pods(self, _options: CallbackOptions) -> Iterable[Observation]:
        source = self.pods_source
        if source is None:
            return []
        return [Observation(n, {"state": state, "provider": provider}) for (state, provider), n in source().items()]


def instruments() -> Instruments:
    """The process's instruments, made once from the global meter provider (a no-op one until
    `setup_metrics` ran: then recording costs next to nothing)."""
    global _instruments
    if _instruments is None:
        _instruments = Instruments(metrics.get_meter(METER_NAME))
    return _instruments


def registry() -> CollectorRegistry:
    """What `/metrics` shows: the registry `setup_metrics`' Prometheus reader writes into."""
    return REGISTRY


def _otlp_wanted() -> bool:
    names = os.environ.get("OTEL_METRICS_EXPORTER", "").strip().lower()
    if names:
        return "otlp" in {name.strip() for name in names.split(",")}
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"))


def build_meter_provider(service: str, registry: CollectorRegistry) -> MeterProvider:
    """A provider for `service` whose Prometheus reader writes into `registry`, plus OTLP when configured."""
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": f"vibewave-{service}"}
    readers: list[MetricReader] = [
        PrometheusMetricReader(registry=registry, resource_attribute_filter=lambda key: key == "service.name")
    ]
    if _otlp_wanted():
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    return MeterProvider(metric_readers=readers, resource=Resource.create(attributes))


def setup_metrics(service: str) -> MeterProvider:
    """The process's meter provider, installed as the global one (once per process: OpenTelemetry keeps
    the first); its Prometheus series go to prometheus_client's default registry, beside the process
    collector's CPU and memory. Shut it down at exit (the OTLP reader then pushes what it has)."""
    provider = build_meter_provider(service, REGISTRY)
    metrics.set_meter_provider(provider)
    return provider


class HttpServerMetrics:
    """Pure ASGI, one histogram record per HTTP request: `http.server.request.duration` by method, route
    TEMPLATE (`/api/qwen/status/{request_id}`, as the router put it in the scope; `-` when no route
    matched — never the concrete path, which holds ids) and status. Wrap it outside the app, where it
    sees every request, also refused ones."""

    def __init__(self, app: Any, meters: Instruments | None = None) -> None:
        self.app = app
        self.histogram = (meters or instruments()).http_duration

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.histogram.record(
                time.perf_counter() - started,
                {
                    "http.request.method": method if (method := scope["method"]) in HTTP_METHODS else "_OTHER",
                    "http.route": scope.get("path_template") or "-",
                    "http.response.status_code": status,
                },
            )
