"""Trace context with tracing off keeps the caller's trace id and sampled flag; with it on, the standard
parent-based sampler decides; the span helpers keep secrets out of attributes."""

import pytest
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from vibewave.runtime.telemetry import (
    ContextOnlyTracerProvider,
    client_attributes,
    links_to,
    records_spans,
    safe_url,
    setup_tracing,
    trace_headers,
)

pytestmark = pytest.mark.unit

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def _headers_inside(tracer: trace.Tracer, traceparent: str | None) -> dict[str, str]:
    """The trace headers a message published inside a span (under the caller's context) would carry."""
    parent = propagate.extract({"traceparent": traceparent} if traceparent else {})
    token = otel_context.attach(parent)
    try:
        with tracer.start_as_current_span("handle"), tracer.start_as_current_span("inner"):
            return trace_headers()
    finally:
        otel_context.detach(token)


@pytest.mark.parametrize("flags", ["01", "00"])
def test_with_tracing_off_the_callers_trace_id_and_sampled_flag_travel_unchanged(flags):
    provider = ContextOnlyTracerProvider(Resource.create({}))
    caller = f"00-{TRACE_ID}-00f067aa0ba902b7-{flags}"
    assert not records_spans(provider)
    assert _headers_inside(provider.get_tracer("t"), caller)["traceparent"] == caller


def test_with_tracing_off_a_span_outside_any_trace_starts_a_new_unsampled_one():
    tracer = ContextOnlyTracerProvider(Resource.create({})).get_tracer("t")
    first, second = _headers_inside(tracer, None)["traceparent"], _headers_inside(tracer, None)["traceparent"]
    assert first.split("-")[1] != second.split("-")[1] != "0" * 32
    assert first.endswith("-00")


@pytest.mark.parametrize(("flags", "recorded"), [("01", True), ("00", False)])
def test_with_tracing_on_the_parent_based_sampler_decides(flags, recorded):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    assert records_spans(provider)
    headers = _headers_inside(provider.get_tracer("t"), f"00-{TRACE_ID}-00f067aa0ba902b7-{flags}")
    assert headers["traceparent"].split("-")[1] == TRACE_ID and headers["traceparent"].endswith(f"-{flags}")
    spans = exporter.get_finished_spans()
    assert len(spans) == (2 if recorded else 0)
    if recorded:
        assert {format(s.context.trace_id, "032x") for s in spans} == {TRACE_ID}


def test_setup_without_an_exporter_records_nothing_and_with_one_records(monkeypatch):
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    monkeypatch.setattr(trace, "set_tracer_provider", lambda provider: None)  # the global one stays as it is
    off = setup_tracing("test")
    assert isinstance(off, ContextOnlyTracerProvider) and not records_spans(off)
    assert off.resource.attributes["service.name"] == "vibewave-test"
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    on = setup_tracing("test")
    try:
        assert not isinstance(on, ContextOnlyTracerProvider) and records_spans(on)
    finally:
        on.shutdown()


def test_links_name_each_distinct_valid_trace_once_and_are_bounded():
    parents = [CALLER, CALLER, "garbage", None, *(f"00-{i:032x}-00f067aa0ba902b7-01" for i in range(1, 20))]
    links = links_to(parents, limit=8)
    assert len(links) == 8
    assert format(links[0].context.trace_id, "032x") == TRACE_ID
    assert len({link.context.trace_id for link in links}) == 8


def test_client_urls_keep_no_query_string_nor_user_info():
    url = "https://user:secret@rest.runpod.io:8443/v2/pods?api_key=KEY&cursor=2#x"
    assert safe_url(url) == "https://rest.runpod.io:8443/v2/pods"
    attributes = client_attributes("get", "http://127.0.0.1:8188/view?filename=a.png&token=t")
    assert attributes == {
        "http.request.method": "GET",
        "url.full": "http://127.0.0.1:8188/view",
        "server.address": "127.0.0.1",
        "server.port": 8188,
    }
