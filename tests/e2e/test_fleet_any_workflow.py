"""Pods serve any workflow: one static ComfyUI runs two workflows back to back, and on a full fleet a
burst of one workflow delays another by one run at most.

The static server is a ComfyUI simulator process the test starts — or, with `VIBEWAVE_STATIC_COMFYUI_URL`
set, any ComfyUI the caller runs (a real one, e.g. 0.3.64 on this CPU): the model-free test's two
workflows (`tests/fixtures/workflows`) run on a real server without model files."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import StackFactory
from tests.support.events import request_events
from tests.support.stack import Stack, free_port, wait_for

pytestmark = pytest.mark.e2e

FIXTURE_WORKFLOWS = Path(__file__).resolve().parents[1] / "fixtures" / "workflows"
WAN_SMALL = {"prompt": "a drummer on a rooftop", "width": 256, "height": 256, "length": 9, "steps": 4, "seed": 7}


@pytest.fixture(scope="module")
def static_comfyui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One ComfyUI simulator process with its models, standing in for a ComfyUI server of the operator's."""
    if os.environ.get("VIBEWAVE_STATIC_COMFYUI_URL"):
        yield os.environ["VIBEWAVE_STATIC_COMFYUI_URL"].rstrip("/")
        return
    work: Path = tmp_path_factory.mktemp("static-comfyui")
    port = free_port()
    log = (work / "comfyui.out").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "vibewave.comfyui_sim", "--port", str(port), "--base-dir", str(work),
         "--step-time", "0.02"],
        env={**os.environ, "VIBEWAVE_SIM_MODELS_PRESENT": "1"}, stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/system_stats", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(up, 30, "the static ComfyUI")
    yield url
    process.terminate()
    process.wait(10)
    log.close()


def submit_video(stack: Stack) -> str:
    response = stack.client.post(
        "/api/runpod/workflows/queue", json={"workflow_name": "comfyui_video_wan22", "inputs": WAN_SMALL}
    )
    assert response.status_code == 202, response.text
    request_id: str = response.json()["id"]
    return request_id


def test_one_static_comfyui_serves_two_workflows_back_to_back(start_own_stack: StackFactory, static_comfyui: str):
    stack = start_own_stack(POD_PROVIDER="static", STATIC_COMFYUI_URLS=static_comfyui, POD_IDLE_TIMEOUT="600")
    image, video = stack.generate("a harbour at dawn", steps=8), submit_video(stack)
    done = {request_id: stack.record(request_id, {"completed", "failed"}) for request_id in (image, video)}
    assert [r.status for r in done.values()] == ["completed", "completed"], [r.error for r in done.values()]
    assert {r.pod_id for r in done.values()} == {"static-0"}, "the one server ran both workflows"
    events = request_events(stack.env["NATS_URL"])
    first, second = sorted((image, video), key=lambda r: events[r]["started"][0])
    gap = events[second]["started"][0] - events[first]["completed"][0]
    assert gap < timedelta(seconds=1), f"the second workflow waited {gap} beyond the first one's run"


def test_one_static_comfyui_runs_two_model_free_workflows_back_to_back(
    start_own_stack: StackFactory, static_comfyui: str
):
    stack = start_own_stack(POD_PROVIDER="static", STATIC_COMFYUI_URLS=static_comfyui, POD_IDLE_TIMEOUT="600",
                            WORKFLOWS_DIR=str(FIXTURE_WORKFLOWS))  # fmt: skip
    ids = []
    for workflow, inputs in (("still_blur", {"color": 0x3366FF}), ("still_invert", {"color": 0x00FF00})):
        response = stack.client.post("/api/runpod/workflows/queue", json={"workflow_name": workflow, "inputs": inputs})
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    done = [stack.record(request_id, {"completed", "failed"}, timeout=120) for request_id in ids]
    assert [r.status for r in done] == ["completed", "completed"], [r.error for r in done]
    assert {r.pod_id for r in done} == {"static-0"}
    for record in done:
        (name,) = record.result.files if record.result else ()
        assert stack.client.get(f"/api/files/{name}").content[:8] == b"\x89PNG\r\n\x1a\n"
    events = request_events(stack.env["NATS_URL"])
    gap = events[ids[1]]["started"][0] - events[ids[0]]["completed"][0]
    assert gap < timedelta(seconds=1), f"the second workflow waited {gap} beyond the first one's run"


def test_a_burst_of_one_workflow_delays_another_by_one_run_at_most(start_own_stack: StackFactory):
    stack = start_own_stack(MAX_PODS="2", MIN_WARM_PODS="2", POD_IDLE_TIMEOUT="600")
    warm = [stack.generate("a harbour at dawn", steps=4, width=256, height=256) for _ in range(2)]
    for request_id in warm:
        assert stack.record(request_id, {"completed", "failed"}).status == "completed"
    burst = [stack.generate("a harbour at dawn", steps=25, width=256, height=256, seed=n) for n in range(12)]
    wait_for(lambda: sum(stack.client.get(f"/api/qwen/status/{r}").json()["status"] == "running" for r in burst) == 2,
             30, "both pods busy with the burst")  # fmt: skip
    video = submit_video(stack)
    assert stack.record(video, {"completed", "failed"}, timeout=120).status == "completed"
    for request_id in burst:
        assert stack.record(request_id, {"completed", "failed"}, timeout=120).status == "completed"
    events = request_events(stack.env["NATS_URL"])
    submitted, started = events[video]["submitted"][0], events[video]["started"][0]
    runs = [events[r]["completed"][0] - events[r]["started"][0] for r in burst]
    overtook = [r for r in burst if submitted < events[r]["started"][0] < started]
    assert len(overtook) <= 1, f"{len(overtook)} burst requests started before the video, which waited"
    assert started - submitted <= max(runs) + timedelta(seconds=1), (started - submitted, max(runs))
