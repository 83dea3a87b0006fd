"""The request's trace context at the edge.

When traces are exported, the OpenTelemetry ASGI middleware (Litestar's plugin) records a server span
per request. When they go nowhere (no exporter: spans are not sampled), that middleware's work — a span
per receive and send, the request's attributes — is thrown away, yet it was the largest single cost of
an accepted request (`make bench SCENARIO=edge`, py-spy). Then this middleware keeps only what still
matters: the caller's `traceparent` (or a new trace id) is current while the request is handled, so the
messages it publishes and the lines it logs carry it.
"""

from __future__ import annotations

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send
from opentelemetry import propagate
from opentelemetry.trace import SpanKind, TracerProvider, get_tracer

TRACE_HEADERS = (b"traceparent", b"tracestate")


class TraceContextMiddleware:
    """Pure ASGI: the request runs in the caller's trace (or a new one), on a non-recording span."""

    def __init__(self, app: ASGIApp, provider: TracerProvider | None) -> None:
        self.app = app
        self.tracer = get_tracer("vibewave.api", tracer_provider=provider)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        carrier = {
            name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"] if name in TRACE_HEADERS
        }
        parent = propagate.extract(carrier) if carrier else None
        with self.tracer.start_as_current_span(scope["path"], context=parent, kind=SpanKind.SERVER):
            await self.app(scope, receive, send)
