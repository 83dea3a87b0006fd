"""OpenTelemetry tracing set up from the standard OTEL_* variables.

Exporter: `OTEL_TRACES_EXPORTER` (`otlp`, `console`, `none`; comma-separated). When unset, traces go to
OTLP/HTTP if `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set, and nowhere otherwise.
"""

from __future__ import annotations

import os

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import TracerProvider as AnyTracerProvider


def _exporters() -> list[SpanExporter]:
    names = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not names:
        otlp = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        names = "otlp" if otlp else "none"
    exporters: list[SpanExporter] = []
    for name in (n.strip() for n in names.split(",")):
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporters.append(OTLPSpanExporter())
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
    return exporters


def setup_tracing(service: str) -> TracerProvider:
    """A provider named `vibewave-<service>` (OTEL_SERVICE_NAME overrides), installed as the global one.

    With no exporter the spans would be dropped anyway, so they are not recorded at all (an always-off
    sampler): they still carry trace ids, so trace context still travels in every message and every log
    line still names its trace, but no span gathers attributes — that was a quarter of the api's CPU per
    request (`make bench SCENARIO=edge`, py-spy)."""
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": f"vibewave-{service}"}
    exporters = _exporters()
    sampler = None if exporters or os.environ.get("OTEL_TRACES_SAMPLER") else ALWAYS_OFF
    provider = TracerProvider(resource=Resource.create(attributes), sampler=sampler)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


def records_spans(provider: AnyTracerProvider | None) -> bool:
    """False only for a provider set up here without an exporter: its spans are never recorded, so code
    may skip making them and keep only the trace context (the same trace ids travel either way)."""
    provider = provider or trace.get_tracer_provider()
    return not (isinstance(provider, TracerProvider) and provider.sampler is ALWAYS_OFF)


def trace_headers() -> dict[str, str]:
    """W3C trace context of the current span, as message headers (or to keep on a record)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier
