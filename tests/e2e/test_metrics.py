"""`/metrics` of every service after a small burst: each instrument of the issue is there, and the
counters and histograms agree with what the burst did (the requests' own records are the reference).

A local simulated fleet takes six requests — one cancelled at once, one with a webhook to a receiver that
takes it, one with a webhook to a receiver that always fails (so it dies, and lands in the dead letters);
then one request on the RunPod emulator counts the RunPod API calls."""

from __future__ import annotations

import base64
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from uuid import uuid4

import pytest

from tests.e2e.conftest import StackFactory
from tests.support.emulator import Emulator
from tests.support.stack import Sample, Stack, total, wait_for

pytestmark = pytest.mark.e2e

SERVICES = ("api", "scheduler", "pod-manager", "executor")
PRICE_PER_HR = 1.8
TERMINAL = {"completed", "failed", "cancelled"}
WORKFLOW = "comfyui_image_qwen"
METRICS = {  # each instrument of issue 16, by the service that records it
    "scheduler": [
        "vibewave_requests_total", "vibewave_requests_submitted_total", "vibewave_queue_depth",
        "vibewave_queue_wait_seconds_count", "vibewave_run_duration_seconds_count",
        "vibewave_dispatch_latency_seconds_count", "vibewave_gpu_usage_seconds_total", "vibewave_gpu_cost_total",
    ],
    "pod-manager": ["vibewave_pods", "vibewave_pod_boot_duration_seconds_count"],
    "api": [
        "http_server_request_duration_seconds_count", "vibewave_webhook_deliveries_total",
        "vibewave_dead_letters_total",
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def receiver() -> Iterator[str]:
    """A webhook receiver: 204 on `/ok`, 500 on anything else."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(204 if self.path == "/ok" else 500)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def scrape(stack: Stack) -> dict[str, list[Sample]]:
    return {name: stack.samples(name) for name in SERVICES}


def test_a_burst_shows_in_every_services_metrics(start_own_stack: StackFactory, receiver: str) -> None:
    stack = start_own_stack(
        MAX_PODS="2", LOCAL_GPU_COST_PER_HR=str(PRICE_PER_HR), VIBEWAVE_ALLOW_PRIVATE_URLS="true",
        WEBHOOK_SECRET="whsec_" + base64.b64encode(secrets.token_bytes(24)).decode(), WEBHOOK_RETRY_DELAYS="0.1",
        WEBHOOK_MAX_TRIES="2",
    )  # fmt: skip
    ids = [stack.generate(f"burst {n}", steps=20) for n in range(4)]
    ids.append(stack.generate("told", webhook={"url": f"{receiver}/ok", "events": ["completed"]}))
    ids.append(stack.generate("never heard", webhook={"url": f"{receiver}/fail", "events": ["completed"]}))
    cancelled = stack.generate("cancelled at once", steps=50)
    assert stack.client.delete(f"/api/runpod/workflows/{cancelled}").status_code in (200, 202)
    ids.append(cancelled)
    finished = {request_id: stack.wait_status(request_id, TERMINAL, timeout=120) for request_id in ids}
    statuses = [status["status"] for status in finished.values()]
    assert statuses.count("completed") >= 6, statuses
    ran = [status for status in finished.values() if status["timings"] is not None]

    def settled() -> dict[str, list[Sample]] | None:  # the scheduler counts right after storing, the api retries
        samples = scrape(stack)
        done = total(samples["scheduler"], "vibewave_requests_total")
        webhooks = samples["api"]
        dead = total(webhooks, "vibewave_webhook_deliveries_total", outcome="dead")
        delivered = total(webhooks, "vibewave_webhook_deliveries_total", outcome="delivered")
        return samples if done == len(ids) and dead >= 1 and delivered >= 1 else None

    samples = wait_for(settled, 60, "every end counted and both webhooks settled", interval=0.5)
    for service, names in METRICS.items():
        present = {s.name for s in samples[service]}
        assert set(names) <= present, (service, set(names) - present)
    for service in SERVICES:
        ours = [s for s in samples[service] if s.name.startswith(("vibewave_", "http_server_"))]
        assert all(s.labels.get("service_name") == f"vibewave-{service}" for s in ours), service

    scheduler = samples["scheduler"]
    for status in TERMINAL:
        assert total(scheduler, "vibewave_requests_total", status=status) == statuses.count(status), status
    assert total(scheduler, "vibewave_requests_total", workflow=WORKFLOW) == len(ids)
    assert total(scheduler, "vibewave_requests_submitted_total", workflow=WORKFLOW) == len(ids)
    assert total(scheduler, "vibewave_queue_wait_seconds_count") == len(ran)
    assert total(scheduler, "vibewave_run_duration_seconds_count") == len(ran)
    assert total(scheduler, "vibewave_dispatch_latency_seconds_count") >= len(ran)
    assert total(scheduler, "vibewave_queue_depth") == 0, "nothing waits any more"
    gpu_seconds = sum(status["gpu_seconds"] for status in finished.values())
    assert gpu_seconds > 0
    rounding = 0.0005 * len(ids)  # the status rounds each request's seconds to ms
    assert total(scheduler, "vibewave_gpu_usage_seconds_total") == pytest.approx(gpu_seconds, abs=rounding)
    cost = sum(status["cost"] for status in finished.values())
    assert cost == pytest.approx(PRICE_PER_HR * gpu_seconds / 3600, rel=1e-3)
    assert total(scheduler, "vibewave_gpu_cost_total") == pytest.approx(cost, rel=1e-3, abs=1e-6 * len(ids))

    pods = stack.client.get("/api/runpod/pods").json()
    fleet = samples["pod-manager"]
    assert total(fleet, "vibewave_pods") == len(pods) > 0
    assert total(fleet, "vibewave_pods", provider="local") == len(pods)
    assert total(fleet, "vibewave_pod_boot_duration_seconds_count", provider="local") >= 1

    api = samples["api"]
    routes = {s.labels["http_route"] for s in api if s.name == "http_server_request_duration_seconds_count"}
    assert {"/api/qwen/generate-async", "/api/qwen/status/{request_id}"} <= routes, routes
    assert not [s for s in api for value in s.labels.values() if "req-" in value], "no request id in any label"
    assert total(api, "vibewave_webhook_deliveries_total", event="completed", outcome="delivered") == 1
    assert total(api, "vibewave_webhook_deliveries_total", event="completed", outcome="failed") == 1
    assert total(api, "vibewave_webhook_deliveries_total", event="completed", outcome="dead") == 1
    assert total(api, "vibewave_dead_letters_total", stream="REQUESTS") == 1


def test_runpod_api_calls_are_counted(start_own_stack: StackFactory, tmp_path_factory: pytest.TempPathFactory) -> None:
    emulator = Emulator(tmp_path_factory.mktemp("emulator-metrics"), f"rpa_E2EMETRICS_{uuid4().hex}")
    try:
        stack = start_own_stack(service_env={"pod-manager": emulator.pod_manager_env()}, MAX_PODS="1")
        request_id = stack.generate("on the emulator")
        assert stack.wait_status(request_id, TERMINAL, timeout=120)["status"] == "completed"
        fleet = stack.samples("pod-manager")
        calls = [s for s in fleet if s.name == "vibewave_runpod_api_calls_total"]
        assert sum(s.value for s in calls) > 0
        operations = {s.labels["operation"] for s in calls}
        assert "POST /pods" in operations, operations
        assert all("{" in op or op.count("/") <= 1 for op in operations if op.startswith(("GET /pods/", "POST /pods/")))
        assert total(fleet, "vibewave_pods", provider="runpod") >= 1
        assert total(fleet, "vibewave_pod_boot_duration_seconds_count", provider="runpod") >= 1
    finally:
        emulator.close()
