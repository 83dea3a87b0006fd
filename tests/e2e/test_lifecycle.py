"""The request lifecycle on a one-pod fleet, so that requests really wait: priority order, cancel of a
waiting request, a sync call's 408 followed by a successful poll, idempotent re-submits, and the
/api/runpod generate endpoints."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.conftest import StackFactory
from tests.e2e.test_execution import ready_pods
from tests.support.stack import Stack

pytestmark = pytest.mark.e2e

QWEN = "comfyui_image_qwen"


@pytest.fixture(scope="module")
def stack(start_stack: StackFactory) -> Stack:
    return start_stack(MAX_PODS="1", SCHEDULER_AGING="3600")


def record(stack: Stack, request_id: str, statuses: set[str], timeout: float = 60) -> Any:
    return stack.record(request_id, statuses, timeout)


def submit(stack: Stack, **body: Any) -> str:
    response = stack.client.post("/api/qwen/generate-async", json={"prompt": "a lighthouse", **body})
    assert response.status_code == 202, response.text
    request_id: str = response.json()["request_id"]
    return request_id


class Blocker:
    """Occupies the fleet's single pod with a slow run until released (cancelled)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        record(stack, submit(stack), {"completed"})  # the pod exists and is warm
        (self.pod,) = ready_pods(stack)
        httpx.post(f"{self.pod.comfyui_url}/vibewave-sim/faults", json={"step_time": 0.1}).raise_for_status()
        self.request_id = submit(stack, steps=50)
        record(stack, self.request_id, {"running"})

    def release(self) -> None:
        httpx.post(f"{self.pod.comfyui_url}/vibewave-sim/faults", json={"step_time": 0.01}).raise_for_status()
        response = self.stack.client.delete(f"/api/runpod/workflows/{self.request_id}")
        assert response.status_code == 200 and response.json()["status"] == "cancelled", response.text


def test_higher_priority_runs_first_and_fifo_within_a_class(stack: Stack):
    blocker = Blocker(stack)
    order = [("low", "low-1"), ("normal", "normal-1"), ("high", "high-1"), ("normal", "normal-2"), ("high", "high-2")]
    ids = {name: submit(stack, priority=priority, prompt=name) for priority, name in order}
    for request_id in ids.values():
        assert stack.client.get(f"/api/qwen/status/{request_id}").json()["status"] == "pending"
    blocker.release()
    done = {name: record(stack, request_id, {"completed", "failed"}) for name, request_id in ids.items()}
    ran = sorted(done, key=lambda name: done[name].updated_at)
    assert ran == ["high-1", "high-2", "normal-1", "normal-2", "low-1"]


def test_cancel_of_a_waiting_request_is_immediate(stack: Stack):
    blocker = Blocker(stack)
    try:
        waiting = submit(stack)
        record(stack, waiting, {"pending"})
        response = stack.client.delete(f"/api/runpod/workflows/{waiting}")
        assert response.status_code == 200 and response.json()["status"] == "cancelled"
        assert response.json()["pod_id"] is None, "it never reached a pod"
    finally:
        blocker.release()


def test_sync_call_times_out_with_408_and_the_request_can_be_polled_to_completion(stack: Stack):
    blocker = Blocker(stack)
    try:
        response = stack.client.post("/api/qwen/generate?timeout=0.5", json={"prompt": "patience", "seed": 5})
        assert response.status_code == 408, response.text
        body = response.json()
        assert body["status"] == "pending" and body["status_url"] == f"/api/qwen/status/{body['request_id']}"
        assert "keeps running" in body["detail"]
    finally:
        blocker.release()
    done = stack.wait_status(body["request_id"], {"completed", "failed"})
    assert done["status"] == "completed" and done["result"]["files"][0].startswith("qwen_5_")


def test_idempotent_resubmit_returns_the_same_request(stack: Stack):
    headers = {"Idempotency-Key": "order-4711"}
    body = {"prompt": "a red bicycle", "seed": 11}
    first = stack.client.post("/api/qwen/generate-async", json=body, headers=headers)
    again = stack.client.post("/api/qwen/generate-async", json=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["request_id"] == again.json()["request_id"]
    other = stack.client.post("/api/qwen/generate-async", json={**body, "seed": 12}, headers=headers)
    assert other.status_code == 422 and "Idempotency-Key" in other.json()["detail"]
    sync = stack.client.post("/api/qwen/generate", json=body, headers={"Idempotency-Key": "order-4712"})
    sync_again = stack.client.post("/api/qwen/generate", json=body, headers={"Idempotency-Key": "order-4712"})
    assert sync.status_code == sync_again.status_code == 200
    assert sync.json()["request_id"] == sync_again.json()["request_id"]
    history = stack.client.get("/api/runpod/workflows/history?limit=1000").json()
    assert [r["id"] for r in history].count(first.json()["request_id"]) == 1


def test_runpod_generate_endpoints(stack: Stack):
    result = stack.client.post("/api/runpod/generate-image", json={"prompt": "a cat", "seed": 3}, timeout=60).json()
    assert result["success"] is True and result["files"][0].startswith("qwen_3_")
    accepted = stack.client.post("/api/runpod/generate-image-async", json={"prompt": "a dog"}).json()
    assert record(stack, accepted["request_id"], {"completed", "failed"}).status == "completed"
    batch = stack.client.post("/api/runpod/generate-multiple-images", json={"prompt": "a fox", "seed": 40, "count": 3})
    assert batch.status_code == 202
    seeds = []
    for request_id in batch.json()["request_ids"]:
        done = record(stack, request_id, {"completed", "failed"})
        assert done.status == "completed"
        seeds.append(done.inputs["seed"])
    assert seeds == [40, 41, 42]
    too_many = stack.client.post("/api/runpod/generate-multiple-images", json={"prompt": "x", "count": 99})
    assert too_many.status_code == 400 and "count" in too_many.json()["detail"]
