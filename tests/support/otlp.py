"""An OTLP/HTTP receiver for tests: what the services export, decoded and kept, to assert traces on.

`POST /v1/traces` (protobuf `ExportTraceServiceRequest`, or its JSON form) and `POST /v1/metrics` (kept
as decoded requests, for the metrics tests) on a free 127.0.0.1 port, served by `http.server` in a
thread, so a test's own event loop (or none) does not matter.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf import json_format  # type: ignore[import-untyped]
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind) if kind else None


def _attributes(items: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in items if isinstance(kv, KeyValue)}


@dataclass(frozen=True)
class SpanEvent:
    name: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class SpanLink:
    trace_id: str
    span_id: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_id: str  # "" for a root
    name: str
    kind: int
    status: int  # 0 unset, 1 ok, 2 error
    attributes: dict[str, Any]
    events: list[SpanEvent] = field(default_factory=list)
    links: list[SpanLink] = field(default_factory=list)
    start_ns: int = 0
    end_ns: int = 0


class OtlpReceiver:
    """Start with `start()` (or as a context manager); `endpoint` is what OTEL_EXPORTER_OTLP_ENDPOINT takes."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.metrics: list[ExportMetricsServiceRequest] = []
        self._lock = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                is_json = (self.headers.get("Content-Type") or "").startswith("application/json")
                if self.path == "/v1/traces":
                    request = ExportTraceServiceRequest()
                    reply: Any = ExportTraceServiceResponse()
                elif self.path == "/v1/metrics":
                    request, reply = ExportMetricsServiceRequest(), ExportMetricsServiceResponse()
                else:
                    self.send_error(404)
                    return
                try:
                    if is_json:
                        json_format.Parse(body, request)
                    else:
                        request.ParseFromString(body)
                except Exception:
                    self.send_error(400)
                    return
                receiver._store(request)
                answer = json_format.MessageToJson(reply).encode() if is_json else reply.SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/json" if is_json else "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port: int = self._server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)

    def start(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _store(self, request: ExportTraceServiceRequest | ExportMetricsServiceRequest) -> None:
        with self._lock:
            if isinstance(request, ExportMetricsServiceRequest):
                self.metrics.append(request)
            else:
                self.spans.extend(_spans_of(request))
            self._lock.notify_all()

    def wait_for_spans(
        self, predicate: Callable[[list[ReceivedSpan]], Any], timeout: float, what: str = "spans"
    ) -> Any:
        """Wait until `predicate(all spans so far)` is truthy (returned), or fail after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                found = predicate(list(self.spans))
                if found:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    names = sorted({f"{s.service}: {s.name}" for s in self.spans})
                    raise AssertionError(f"timed out after {timeout}s waiting for {what}; received {names}")
                self._lock.wait(left)

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]


def _spans_of(request: ExportTraceServiceRequest) -> list[ReceivedSpan]:
    found: list[ReceivedSpan] = []
    for resource_spans in request.resource_spans:
        service = str(_attributes(resource_spans.resource.attributes).get("service.name", ""))
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                found.append(
                    ReceivedSpan(
                        service=service,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_id=span.parent_span_id.hex(),
                        name=span.name,
                        kind=int(span.kind),
                        status=int(span.status.code),
                        attributes=_attributes(span.attributes),
                        events=[SpanEvent(e.name, _attributes(e.attributes)) for e in span.events],
                        links=[
                            SpanLink(lk.trace_id.hex(), lk.span_id.hex(), _attributes(lk.attributes))
                            for lk in span.links
                        ],
                        start_ns=int(span.start_time_unix_nano),
                        end_ns=int(span.end_time_unix_nano),
                    )
                )
    return found
