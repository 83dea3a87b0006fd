import json
import logging

import pytest
from opentelemetry.sdk.trace import TracerProvider

from vibewave.runtime.logs import JsonFormatter, request_id_var

pytestmark = pytest.mark.unit


def format_line(logger_name: str, **extra: object) -> dict[str, object]:
    record = logging.LogRecord(logger_name, logging.INFO, __file__, 1, "hello %s", ("world",), None)
    for key, value in extra.items():
        setattr(record, key, value)
    return json.loads(JsonFormatter("scheduler").format(record))


def test_line_carries_service_request_and_trace_ids():
    tracer = TracerProvider().get_tracer("test")
    token = request_id_var.set("req-0123456789abcdef")
    try:
        with tracer.start_as_current_span("work") as span:
            entry = format_line("vibewave.executor.comfyui", pod_id="pod-1")
    finally:
        request_id_var.reset(token)
    assert entry["msg"] == "hello world"
    assert entry["level"] == "INFO"
    assert entry["service"] == "executor"
    assert entry["request_id"] == "req-0123456789abcdef"
    assert entry["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert entry["pod_id"] == "pod-1"


def test_line_without_context_uses_the_process_service():
    entry = format_line("aiohttp.client")
    assert entry["service"] == "scheduler"
    assert "request_id" not in entry and "trace_id" not in entry
