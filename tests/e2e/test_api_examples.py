"""Every example of the API document's "Usage Examples" (and its monitoring examples), verbatim.

The bodies, paths and query strings below are copied character for character from the product's API document.
"""

from __future__ import annotations

import json

import pytest

from tests.support.stack import Stack, wait_for

pytestmark = pytest.mark.e2e

EXAMPLE_1 = """{
    "prompt": "A majestic dragon soaring through clouds above a medieval castle, fantasy art style, highly detailed, epic lighting",
    "width": 1024,
    "height": 1024,
    "steps": 4
  }"""  # noqa: E501
EXAMPLE_2 = """{
    "prompt": "A futuristic cyberpunk cityscape at night with neon lights",
    "width": 1024,
    "height": 1024
  }"""
EXAMPLE_3 = """{
    "prompts": [
      "A serene mountain landscape with a crystal clear lake",
      "A futuristic cityscape with flying cars and neon lights",
      "An abstract digital art piece with vibrant colors"
    ],
    "width": 1024,
    "height": 1024,
    "steps": 4
  }"""
JSON = {"Content-Type": "application/json"}
REQUEST_KEYS = {"id", "workflow_name", "inputs", "status", "pod_id", "created_at", "updated_at", "result", "error"}


def post(stack: Stack, path: str, body: str):  # type: ignore[no-untyped-def]
    return stack.client.post(path, content=body.encode(), headers=JSON, timeout=120)


def test_1_generate_a_single_image_synchronously(stack: Stack):
    response = post(stack, "/api/qwen/generate", EXAMPLE_1)
    assert response.status_code == 200, response.text
    result = response.json()
    assert set(result) == {"success", "files", "error", "request_id", "pod_id", "pod_ip"}
    assert result["success"] is True and result["error"] is None
    assert len(result["files"]) == 1 and result["files"][0].startswith("qwen_") and result["pod_id"]
    image = stack.client.get(f"/api/files/{result['files'][0]}")
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"


def test_2_generate_asynchronously_then_check_status(stack: Stack):
    started = post(stack, "/api/qwen/generate-async", EXAMPLE_2)
    assert started.status_code == 202
    request_id = started.json()["request_id"]
    done = stack.wait_status(request_id, {"completed", "failed"})
    assert set(done) >= REQUEST_KEYS
    assert done["status"] == "completed" and done["workflow_name"] == "comfyui_image_qwen"
    assert done["inputs"]["prompt"] == json.loads(EXAMPLE_2)["prompt"]
    assert done["result"]["success"] is True and done["result"]["files"]


def test_3_generate_multiple_images(stack: Stack):
    started = post(stack, "/api/qwen/batch-generate", EXAMPLE_3)
    assert started.status_code == 202, started.text
    batch = started.json()
    assert len(batch["request_ids"]) == 3 and batch["status_url"] == f"/api/qwen/status/{batch['batch_id']}"
    at_once = stack.client.get(batch["status_url"])
    assert at_once.status_code == 200 and at_once.json()["total"] == 3, "readable as soon as it is accepted"

    def finished():  # type: ignore[no-untyped-def]
        body = stack.client.get(batch["status_url"]).json()
        return body if body["status"] in ("completed", "failed", "cancelled") else None

    whole = wait_for(finished, 60, "the batch to finish")
    assert whole["status"] == "completed" and whole["counts"] == {"completed": 3} and len(whole["files"]) == 3
    prompts = [r["inputs"]["prompt"] for r in whole["requests"]]
    assert prompts == json.loads(EXAMPLE_3)["prompts"]
    for request_id in batch["request_ids"]:
        assert stack.client.get(f"/api/qwen/status/{request_id}").json()["status"] == "completed"


def test_4_get_available_presets(stack: Stack):
    body = stack.client.get("/api/qwen/presets").json()
    presets = {p["name"]: p for p in body["presets"]}
    assert {name: p["inputs"]["steps"] for name, p in presets.items()} == {"fast": 4, "quality": 8, "ultra": 12}
    assert presets["fast"]["variant"] == "lightning4" and "4steps" in presets["fast"]["graph"]
    assert presets["quality"]["variant"] == "lightning8" and presets["ultra"]["variant"] == "distill"
    assert presets["fast"]["expected_seconds"] == [30, 60] and presets["ultra"]["expected_seconds"] == [120, 300]
    assert body["inputs"]["width"]["multiple_of"] == 16 and body["inputs"]["prompt"]["required"] is True


def test_5_get_example_prompts(stack: Stack):
    body = stack.client.get("/api/qwen/examples").json()
    assert body["examples"] and all("prompt" in e and "preset" in e for e in body["examples"])
    assert body["tips"]


def test_6_check_queue_status(stack: Stack):
    body = stack.client.get("/api/runpod/workflows/queue/status").json()
    assert set(body) == {"active_pods", "pending_requests", "completed_requests", "failed_requests"}
    assert body["active_pods"], "the examples above left a warm pod"
    assert set(body["active_pods"][0]) == {"id", "name", "status", "ip", "workflow_name"}
    assert body["completed_requests"] and set(body["completed_requests"][0]) == {"id", "workflow_name", "status"}
    assert all(r["status"] == "completed" for r in body["completed_requests"])


def test_7_get_workflow_history(stack: Stack):
    history = stack.client.get("/api/runpod/workflows/history?limit=10&status=completed").json()
    assert 1 <= len(history) <= 10
    assert all(r["status"] == "completed" and set(r) >= REQUEST_KEYS for r in history)
    created = [r["created_at"] for r in history]
    assert created == sorted(created, reverse=True), "newest first"


def test_queue_statistics_and_health_checks(stack: Stack):
    stats = stack.client.get("/api/runpod/stats").json()
    assert {"active_pods", "pending_requests", "completed_requests", "failed_requests", "total_requests"} <= set(stats)
    parts = ("pending_requests", "completed_requests", "failed_requests", "cancelled_requests")
    assert stats["total_requests"] == sum(stats[k] for k in parts)
    for path in ("/health", "/api/runpod/health", "/api/qwen/health"):
        assert stack.client.get(path).status_code == 200, path


def test_documented_errors(stack: Stack):
    assert (
        post(stack, "/api/qwen/generate-async", '{"width": 1024}')
        .json()["detail"]
        .startswith("Invalid workflow input parameters")
    )
    assert stack.client.get("/api/runpod/workflows/status/req-0123456789abcdef").json() == {
        "detail": "Request not found"
    }
    history = stack.client.get("/api/runpod/workflows/history?status=bogus")
    assert history.status_code == 400 and "status" in history.json()["detail"]
