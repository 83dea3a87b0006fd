"""Execution end to end over HTTP: outputs, video, each failure kind (through the simulator's fault
switches), cancel, and a workflow folder added by an operator while the system runs."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from tests.e2e.conftest import StackFactory
from tests.e2e.test_walking_skeleton import png_size
from tests.support.media import mp4_facts
from tests.support.stack import Stack
from vibewave.contracts.events import PODS_BUCKET, PodRecord, PodStatus
from vibewave.runtime.broker import decode

pytestmark = pytest.mark.e2e

QWEN = "comfyui_image_qwen"


@pytest.fixture(scope="module")
def workflows_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("operator-workflows")


@pytest.fixture(scope="module")
def stack(start_stack: StackFactory, workflows_dir: Path) -> Stack:
    return start_stack(WORKFLOWS_DIR=str(workflows_dir))


def record(stack: Stack, request_id: str, statuses: set[str], timeout: float = 60) -> Any:
    return stack.record(request_id, statuses, timeout)


def ready_pods(stack: Stack) -> list[PodRecord]:
    """Every ready pod: a pod serves any workflow."""

    async def read() -> list[PodRecord]:
        nc = await nats.connect(stack.env["NATS_URL"])
        try:
            kv = await nc.jetstream().key_value(PODS_BUCKET.name)
            pods = [decode((await kv.get(key)).value or b"", PodRecord) for key in await kv.keys()]
        finally:
            await nc.close()
        return [p for p in pods if p.status == PodStatus.READY]

    return asyncio.run(read())


def set_faults(stack: Stack, faults: dict[str, Any] | None) -> int:
    """Switch simulator faults on (or back to normal with None) on every ready pod."""
    pods = ready_pods(stack)
    for pod in pods:
        url = f"{pod.comfyui_url}/vibewave-sim/faults"
        response = httpx.delete(url) if faults is None else httpx.post(url, json=faults)
        response.raise_for_status()
    return len(pods)


def generate(stack: Stack, **body: Any) -> str:
    response = stack.client.post("/api/qwen/generate-async", json={"prompt": "a quiet harbour", **body})
    assert response.status_code == 202, response.text
    request_id: str = response.json()["request_id"]
    return request_id


def queue(stack: Stack, workflow: str, inputs: dict[str, Any], **extra: Any) -> str:
    response = stack.client.post(
        "/api/runpod/workflows/queue", json={"workflow_name": workflow, "inputs": inputs, **extra}
    )
    assert response.status_code == 202, response.text
    request_id: str = response.json()["id"]
    return request_id


def add_workflow(workflows_dir: Path, name: str, graph: dict[str, Any], definition: dict[str, Any]) -> None:
    staging = workflows_dir.parent / f"staging-{name}"
    staging.mkdir()
    (staging / "graph.json").write_text(json.dumps(graph))
    (staging / "workflow.json").write_text(json.dumps({"name": name, "graph": "graph.json", **definition}))
    shutil.move(staging, workflows_dir / name)  # appears whole, as an operator's copy would


def test_same_seed_and_prompt_give_the_same_bytes(stack: Stack):
    first = record(stack, generate(stack, seed=424242, width=512, height=384), {"completed", "failed"})
    assert first.status == "completed", first.error
    assert set_faults(stack, None) >= 1
    for pod in ready_pods(stack):
        httpx.post(f"{pod.comfyui_url}/vibewave-sim/clear-cache").raise_for_status()
    second = record(stack, generate(stack, seed=424242, width=512, height=384), {"completed", "failed"})
    other = record(stack, generate(stack, seed=424243, width=512, height=384), {"completed", "failed"})
    files = [stack.client.get(f"/api/files/{r.result.files[0]}").content for r in (first, second, other)]
    assert first.result.files != second.result.files, "each request gets its own file name"
    assert files[0] == files[1], "same prompt and seed, same image"
    assert files[0] != files[2], "another seed, another image"
    assert png_size(files[0]) == (512, 384)


def test_video_workflow_produces_a_playable_mp4(stack: Stack):
    inputs = {"prompt": "a drummer on a rooftop at dusk", "width": 320, "height": 256, "length": 17, "seed": 3}
    request_id = queue(stack, "comfyui_video_wan22", inputs, preset="preview")
    done = record(stack, request_id, {"completed", "failed"}, timeout=90)
    assert done.status == "completed", done.error
    assert done.inputs["steps"] == 12, "the preset's steps, since none were given"
    (name,) = done.result.files
    assert name == "wan_3_001.mp4"
    response = stack.client.get(f"/api/files/{name}")
    assert response.status_code == 200 and response.headers["content-type"] == "video/mp4"
    assert int(response.headers["content-length"]) == len(response.content)
    facts = mp4_facts(response.content)
    assert (facts.codec, facts.width, facts.height, facts.frames) == ("avc1", 320, 256, 17)


@pytest.mark.parametrize(
    ("faults", "error_start"),
    [
        ({"execution_error": {"node": "KSampler", "step": 2, "message": "sampler exploded", "times": 1}},
         "execution error in node 3 (KSampler): "),
        ({"oom": {"node": "VAEDecode", "times": 1}}, "out of memory in node 8 (VAEDecode): torch.OutOfMemoryError"),
    ],
)  # fmt: skip
def test_execution_failures_fail_the_request_without_retry(stack: Stack, faults: dict[str, Any], error_start: str):
    record(stack, generate(stack), {"completed"})  # a ready pod to switch the fault on
    assert set_faults(stack, faults) >= 1
    try:
        failed = record(stack, generate(stack), {"completed", "failed"})
    finally:
        set_faults(stack, None)
    assert failed.status == "failed"
    assert failed.error.startswith(error_start), failed.error
    assert failed.attempts == 1, "a workflow error is not retried"
    status = stack.client.get(f"/api/qwen/status/{failed.id}").json()
    assert status["status"] == "failed" and status["error"] == failed.error


def test_a_pod_crash_mid_run_is_retried_on_another_pod(stack: Stack):
    record(stack, generate(stack), {"completed"})
    assert set_faults(stack, {"crash": {"node": "KSampler", "step": 2, "times": 1}}) >= 1
    done = record(stack, generate(stack, steps=8), {"completed", "failed"}, timeout=90)
    assert done.status == "completed", done.error
    assert done.attempts == 2
    assert stack.client.get(f"/api/qwen/status/{done.id}").json()["attempts"] == 2


def test_workflow_rejected_by_comfyui_fails_with_the_node_and_reason(stack: Stack, workflows_dir: Path):
    graph = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
        "2": {"class_type": "ImageWarpDrive", "inputs": {"images": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "bad"}},
    }
    add_workflow(workflows_dir, "warp_card", graph, {"file_prefix": "warp", "inputs": {}})
    failed = record(stack, queue(stack, "warp_card", {}), {"completed", "failed"})
    assert failed.status == "failed" and failed.attempts == 1
    assert "ComfyUI rejected the workflow" in failed.error and "ImageWarpDrive" in failed.error


def test_execution_timeout_interrupts_and_fails_with_timeout(stack: Stack, workflows_dir: Path):
    qwen_dir = Path(__file__).parents[2] / "contracts/src/vibewave/contracts/workflow_defs/comfyui_image_qwen"
    graph = json.loads((qwen_dir / "graph_base.json").read_text())
    definition = {
        "file_prefix": "slow",
        "timeout_s": 0.3,
        "inputs": {"steps": {"type": "int", "node": "3", "field": "steps", "default": 50, "min": 1, "max": 150}},
    }
    add_workflow(workflows_dir, "slow_qwen", graph, definition)
    failed = record(stack, queue(stack, "slow_qwen", {"steps": 150}), {"completed", "failed"})
    assert failed.status == "failed" and failed.attempts == 1
    assert "timed out after" in failed.error and "interrupted" in failed.error


def test_operator_workflow_folder_is_usable_without_a_restart(stack: Stack, workflows_dir: Path):
    graph = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "card"}},
    }
    definition = {
        "file_prefix": "card",
        "inputs": {
            "width": {"type": "int", "node": "1", "field": "width", "default": 64, "min": 16, "max": 1024},
            "height": {"type": "int", "node": "1", "field": "height", "default": 64, "min": 16, "max": 1024},
            "color": {"type": "int", "node": "1", "field": "color", "default": 0, "min": 0, "max": 16777215},
        },
    }
    unknown = stack.client.post("/api/runpod/workflows/queue", json={"workflow_name": "color_card", "inputs": {}})
    assert unknown.status_code == 400 and "workflow_name" in unknown.json()["detail"]
    add_workflow(workflows_dir, "color_card", graph, definition)
    bad = stack.client.post(
        "/api/runpod/workflows/queue", json={"workflow_name": "color_card", "inputs": {"width": 4096}}
    )
    assert bad.status_code == 400 and bad.json()["detail"].startswith("Invalid workflow input parameters: width:")
    done = record(stack, queue(stack, "color_card", {"width": 96, "height": 48, "color": 255}), {"completed", "failed"})
    assert done.status == "completed", done.error
    (name,) = done.result.files
    assert name.startswith("card_") and png_size(stack.client.get(f"/api/files/{name}").content) == (96, 48)


def test_cancel_running_pending_finished_and_unknown(stack: Stack):
    record(stack, generate(stack), {"completed"})
    set_faults(stack, {"step_time": 0.1})
    try:
        running = generate(stack, steps=50)
        record(stack, running, {"running"})
        cancelled = stack.client.delete(f"/api/runpod/workflows/{running}")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"
    finally:
        set_faults(stack, None)
    assert record(stack, running, {"cancelled"}).error == "cancelled by request"

    finished = stack.client.delete(f"/api/runpod/workflows/{running}")
    assert finished.status_code == 409
    assert finished.json()["request"]["status"] == "cancelled" and "already cancelled" in finished.json()["detail"]
    missing = stack.client.delete("/api/runpod/workflows/req-0000000000000000")
    assert missing.status_code == 404 and missing.json() == {"detail": "Request not found"}
