"""The request's trace at the edge: server spans named by route template, or only the trace context.

When traces are exported, the OpenTelemetry ASGI middleware (Litestar's plugin) records a server span
per request, named `"{method} {route template}"` (`GET /api/qwen/status/{request_id}`: a name per route,
not per request id) with the stable HTTP semantic-convention attributes; no request header is recorded
(an `Authorization` key never reaches a span), and its own HTTP metrics are off (the api's
`http.server.request.duration` is recorded once, by the metrics middleware).

When they go nowhere (no exporter: spans are not recorded), that middleware's work — a span per receive
and send, the request's attributes — is thrown away, yet it was the largest single cost of an accepted
request (`make bench SCENARIO=edge`, py-spy). Then `TraceContextMiddleware` keeps only what still
matters: the caller's `traceparent` — trace id, span id and sampled flag unchanged — is current while
the request is handled (or a new trace id when there is none), so the messages it publishes and the
lines it logs carry it. No span is started at all.
"""

from __future__ import annotations

import os
from typing import Any

from litestar.enums import ScopeType
from litestar.plugins.opentelemetry import OpenTelemetryConfig
from litestar.types import ASGIApp, Receive, Scope, Send
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TracerProvider

TRACE_HEADERS = (b"traceparent", b"tracestate")

_ids = RandomIdGenerator()


def route_template(scope: Scope | dict[str, Any]) -> str:
    """The matched route's template (`/api/qwen/status/{request_id}`), or the raw path before routing."""
    template = scope.get("path_template")
    return str(template or scope.get("path") or "")


def span_details(scope: Scope) -> tuple[str, dict[str, Any]]:
    """Span name and `http.route` of a server span: `"GET /api/qwen/status/{request_id}"`."""
    route = route_template(scope)
    method = str(scope.get("method") or "").strip()
    return (f"{method} {route}" if method else route), {"http.route": route}


def telemetry_config(provider: TracerProvider | None) -> OpenTelemetryConfig:
    """The Litestar plugin's configuration (see the module docstring)."""
    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")  # before the ASGI middleware reads it
    return OpenTelemetryConfig(
        tracer_provider=provider,
        meter_provider=NoOpMeterProvider(),
        scope_span_details_extractor=span_details,
        exclude_spans=["receive", "send"],
    )


class RouteSpanName:
    """Pure ASGI, inside routing: names the server span by the matched route's template. The plugin's
    middleware starts the span before Litestar has routed the request, when only the raw path is known."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        span = trace.get_current_span()
        if scope["type"] == ScopeType.HTTP and span.is_recording():
            name, attributes = span_details(scope)
            span.update_name(name)
            span.set_attributes(attributes)
        await self.app(scope, receive, send)


class TraceContextMiddleware:
    """Pure ASGI: the request runs in the caller's trace context (or a new trace's), with no span."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        carrier = {
            name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"] if name in TRACE_HEADERS
        }
        context = propagate.extract(carrier) if carrier else None
        if context is None or not trace.get_current_span(context).get_span_context().is_valid:
            root = SpanContext(_ids.generate_trace_id(), _ids.generate_span_id(), False, TraceFlags(TraceFlags.DEFAULT))
            context = trace.set_span_in_context(NonRecordingSpan(root))
        token = otel_context.attach(context)
        try:
            await self.app(scope, receive, send)
        finally:
            otel_context.detach(token)
