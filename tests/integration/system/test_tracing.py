"""One request is one trace across the api, scheduler and executor (services in process, real NATS)."""

import dataclasses

import pytest
from litestar.testing import AsyncTestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.support.requests import wait_for_record
from vibewave.api.app import create_app
from vibewave.api.settings import ApiSettings
from vibewave.executor.service import ExecutorService
from vibewave.executor.settings import ExecutorSettings
from vibewave.pod_manager.service import PodManagerService
from vibewave.pod_manager.settings import PodManagerSettings
from vibewave.runtime.settings import CommonSettings
from vibewave.scheduler.service import SchedulerService
from vibewave.scheduler.settings import SchedulerSettings

pytestmark = pytest.mark.integration


async def test_one_trace_spans_api_scheduler_and_executor(nats_url, vibewave_home):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    common = CommonSettings(nats_url=nats_url, home=vibewave_home, log_level="INFO", debug=False, replicas=1)
    services = [
        SchedulerService(dataclasses.replace(SchedulerSettings.from_env(common), demand_interval_s=0.1), provider),
        PodManagerService(
            dataclasses.replace(PodManagerSettings.from_env(common), probe_interval_s=0.1, simulator_step_time_s=0.01)
        ),
        ExecutorService(ExecutorSettings.from_env(common), provider),
    ]
    for service in services:
        await service.start()
    app = create_app(ApiSettings.from_env(common), provider)
    try:
        async with AsyncTestClient(app) as client:
            accepted = await client.post("/api/qwen/generate-async", json={"prompt": "trace me", "seed": 1})
            assert accepted.status_code == 202
            request_id = accepted.json()["request_id"]
            record = await wait_for_record(nats_url, request_id, {"completed", "failed"}, timeout=60)
            assert record.status == "completed", record.error
    finally:
        for service in reversed(services):
            await service.stop()

    # Services are stopped above, so every span they started has ended and been exported.
    spans = exporter.get_finished_spans()
    server = next(s for s in spans if s.kind == SpanKind.SERVER and "generate-async" in s.name)
    trace_id = server.context.trace_id
    in_trace = [s for s in spans if s.context.trace_id == trace_id]
    scopes = {s.instrumentation_scope.name for s in in_trace if s.instrumentation_scope}
    names = {s.name for s in in_trace}
    assert "opentelemetry.instrumentation.faststream" in scopes, (scopes, names)
    assert "vibewave.executor" in scopes, (scopes, names)
    # FastStream's spans are named `<subject> publish|process`: take the subject's last part
    steps = {(_step(name), name.split(" ")[-1]) for name in names if name.startswith("vw.")}
    assert {
        ("submitted", "publish"),
        ("submitted", "process"),
        ("dispatch", "publish"),
        ("dispatch", "process"),
    } <= steps
    assert {("attempt_succeeded", "publish"), ("attempt_succeeded", "process"), ("completed", "publish")} <= steps
    assert "execute workflow" in names, "the executor's own span is in the same trace"


def _step(span_name: str) -> str:
    """`vw.req.<id>.completed publish` → `completed`; `vw.dispatch.<pod> process` → `dispatch`."""
    subject = span_name.split(" ")[0].split(".")
    return subject[-1] if subject[1] == "req" else subject[1]
