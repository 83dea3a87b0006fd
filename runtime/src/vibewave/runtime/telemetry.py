"""OpenTelemetry tracing set up from the standard OTEL_* variables, and the span helpers the services share.

Exporter: `OTEL_TRACES_EXPORTER` (`otlp`, `console`, `none`; comma-separated). When unset, traces go to
OTLP/HTTP if `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set, and nowhere otherwise.
HTTP spans follow the stable HTTP semantic conventions (`OTEL_SEMCONV_STABILITY_OPT_IN=http` unless the
operator chose otherwise), so the instrumentations write `http.request.method`, `url.path`, … and not the
old `http.method`, `http.target`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace import TracerProvider as AnyTracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

MAX_LINKS = 8  # requests a pod-manager span links to: the oldest waiting ones of the pod's GPU class


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


class ContextOnlyTracer(trace.Tracer):
    """Starts no span at all: a span asked for inside a trace *is* that trace's current span context (the
    caller's trace id, span id and sampled flag, unchanged), and one asked for outside any trace is a new
    trace id (not sampled), so logs and messages still name a trace. An SDK tracer with an always-off
    sampler would give every span flags 00, and a caller's `traceparent: …-01` came out on events `…-00`;
    keeping the caller's span id also parents a downstream service's recorded spans on the caller's span."""

    def __init__(self, ids: IdGenerator) -> None:
        self.ids = ids

    def start_span(
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> Span:
        parent = trace.get_current_span(context).get_span_context()
        if parent.is_valid:
            return NonRecordingSpan(parent)
        ids = self.ids
        root = SpanContext(ids.generate_trace_id(), ids.generate_span_id(), False, TraceFlags(TraceFlags.DEFAULT))
        return NonRecordingSpan(root)

    @contextmanager
    def start_as_current_span(  # type: ignore[override]  # the API's decorator is private; same protocol
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[Span]:
        span = self.start_span(name, context)
        with trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
            yield span


class ContextOnlyTracerProvider(TracerProvider):
    """The provider when no exporter is configured: its tracers are `ContextOnlyTracer`s. Nothing is
    recorded (spans nobody keeps were a quarter of the api's CPU per request, a third of a message's in
    the scheduler and the executor: `make bench`, py-spy), yet trace context travels as it came."""

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource=resource, sampler=ALWAYS_OFF, shutdown_on_exit=False)
        self._context_tracer = ContextOnlyTracer(RandomIdGenerator())

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes = None,
    ) -> trace.Tracer:
        return self._context_tracer


def setup_tracing(service: str) -> TracerProvider:
    """A provider named `vibewave-<service>` (OTEL_SERVICE_NAME overrides), installed as the global one.

    With no exporter (and no OTEL_TRACES_SAMPLER asking to record anyway) it is a `ContextOnlyTracerProvider`;
    with one, the SDK's own (sampler from OTEL_TRACES_SAMPLER, by default parent-based always-on: a caller's
    sampled=0 is honoured)."""
    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": f"vibewave-{service}"}
    resource = Resource.create(attributes)
    exporters = _exporters()
    provider: TracerProvider
    if exporters or os.environ.get("OTEL_TRACES_SAMPLER"):
        provider = TracerProvider(resource=resource)
    else:
        provider = ContextOnlyTracerProvider(resource)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


def records_spans(provider: AnyTracerProvider | None) -> bool:
    """False for a provider that never records (set up here without an exporter, or an SDK one with an
    always-off sampler): code may skip making spans and keep only the trace context."""
    provider = provider or trace.get_tracer_provider()
    if isinstance(provider, ContextOnlyTracerProvider):
        return False
    return not (isinstance(provider, TracerProvider) and provider.sampler is ALWAYS_OFF)


def trace_headers() -> dict[str, str]:
    """W3C trace context of the current span, as message headers (or to keep on a record)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


_W3C = TraceContextTextMapPropagator()


def span_context_of(traceparent: str | None) -> SpanContext | None:
    """The span context a W3C `traceparent` names, or None for a missing or malformed one."""
    if not traceparent:
        return None
    found = trace.get_current_span(_W3C.extract({"traceparent": traceparent})).get_span_context()
    return found if found.is_valid else None


def links_to(traceparents: Iterable[str | None], limit: int = MAX_LINKS) -> list[Link]:
    """Span links to the traces these `traceparent`s name (distinct, at most `limit`): a span that serves
    requests without being part of their traces (a pod booted for them) is found from each of them."""
    links: list[Link] = []
    seen: set[tuple[int, int]] = set()
    for traceparent in traceparents:
        found = span_context_of(traceparent)
        if found is None or (found.trace_id, found.span_id) in seen:
            continue
        seen.add((found.trace_id, found.span_id))
        links.append(Link(found))
        if len(links) >= limit:
            break
    return links


def safe_url(url: str) -> str:
    """`url.full` as a span may hold it: no user info, no query string (tokens and keys travel there in some
    APIs; ours send them in headers, and this keeps it so whatever a caller adds), no fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def client_attributes(method: str, url: str) -> dict[str, str | int]:
    """Stable HTTP client semantic-convention attributes of a call (no secrets: see `safe_url`)."""
    parts = urlsplit(url)
    attributes: dict[str, str | int] = {"http.request.method": method.upper(), "url.full": safe_url(url)}
    if parts.hostname:
        attributes["server.address"] = parts.hostname
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    if port:
        attributes["server.port"] = port
    return attributes


@contextmanager
def client_span(
    tracer: trace.Tracer, name: str, method: str, url: str, attributes: Attributes = None
) -> Iterator[Span]:
    """A CLIENT span around one HTTP call; the caller sets `http.response.status_code` (`responded`). An
    exception marks it ERROR with `error.type` (the exception's class) and is raised on."""
    with tracer.start_as_current_span(
        name,
        kind=SpanKind.CLIENT,
        attributes={**client_attributes(method, url), **(attributes or {})},
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except Exception as exc:
            if span.is_recording():
                span.set_attribute("error.type", type(exc).__qualname__)
                span.set_status(Status(StatusCode.ERROR, type(exc).__qualname__))
            raise


def responded(span: Span, status: int) -> None:
    """The answer's status on a client span; 4xx and 5xx are errors (`error.type` the status code)."""
    if not span.is_recording():
        return
    span.set_attribute("http.response.status_code", status)
    if status >= 400:
        span.set_attribute("error.type", str(status))
        span.set_status(Status(StatusCode.ERROR))
