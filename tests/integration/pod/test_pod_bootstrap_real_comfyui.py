"""The real thing, opt-in: the bootstrap archive installs and starts a real ComfyUI (CPU) behind its proxy.

Set `VIBEWAVE_REAL_COMFYUI` to a ComfyUI checkout whose `.venv` has ComfyUI's requirements (torch CPU is
enough). The bootstrap copies the checkout onto the test's workspace (`VIBEWAVE_COMFYUI_SOURCE`), runs it
with that venv's Python (`VIBEWAVE_COMFYUI_PYTHON`: no pip here) and `--cpu`, fetches small stand-in model
files from a local server, then a model-free workflow runs through the token proxy over HTTP and over the
WebSocket. What only a GPU pod can check (the venv, torch from the cu128 index, the real model files) is
not covered here.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.pod.harness import Pod, eventually
from tests.support.model_files import ModelFileServer
from tests.unit.pod.test_pod_payload import QWEN
from vibewave.executor.comfyui import ComfyUIClient, PodFault

CHECKOUT = os.environ.get("VIBEWAVE_REAL_COMFYUI", "")
PYTHON = Path(CHECKOUT, ".venv", "bin", "python")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        not CHECKOUT or not PYTHON.exists() or not Path(CHECKOUT, "main.py").exists(),
        reason="set VIBEWAVE_REAL_COMFYUI to a ComfyUI checkout with a working .venv to run a real ComfyUI",
    ),
]

GRAPH = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 16744448}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "pod_real"}},
}


@pytest.fixture
async def files(tmp_path: Path) -> AsyncIterator[ModelFileServer]:
    async with ModelFileServer(tmp_path / "served") as server:
        yield server


async def prompt(pod: Pod, client_id: str) -> str:
    # A browser-like Origin: ComfyUI answers 403 to a loopback Host with a foreign Origin, unless it is dropped.
    code, body = await pod.request(
        "POST", "/prompt", json={"prompt": GRAPH, "client_id": client_id}, headers={"Origin": "https://app.example"}
    )
    assert code == 200, body
    prompt_id: str = body["prompt_id"]
    return prompt_id


async def finished(pod: Pod, prompt_id: str) -> dict[str, Any]:
    async def entry() -> dict[str, Any] | None:
        code, body = await pod.get(f"/history/{prompt_id}")
        return body[prompt_id] if code == 200 and prompt_id in body else None

    return await eventually(entry, 120, f"prompt {prompt_id} in ComfyUI's history", interval=0.25)


async def test_a_real_comfyui_runs_a_workflow_behind_the_token_proxy(tmp_path: Path, files: ModelFileServer) -> None:
    models = files.stand_in_models(QWEN, keep_unknown=True)
    workspace = tmp_path / "workspace"
    async with Pod(
        tmp_path / "pod", workspace, models, pod_id=f"real-{uuid.uuid4().hex[:6]}",
        VIBEWAVE_COMFYUI_SOURCE=CHECKOUT, VIBEWAVE_COMFYUI_PYTHON=str(PYTHON), VIBEWAVE_COMFYUI_ARGS="--cpu",
    ) as pod:  # fmt: skip
        ready = await pod.wait_phase("ready", timeout=300)
        assert ready["install"]["mode"] == "python" and ready["install"]["skipped"] is False
        assert (workspace / "ComfyUI" / "main.py").is_file() and not (workspace / "ComfyUI" / ".venv").exists()

        code, stats = await pod.get("/system_stats")
        assert code == 200, stats
        assert stats["system"]["comfyui_version"] == "0.3.64"
        assert [d["type"] for d in stats["devices"]] == ["cpu"]
        # The model files on the workspace, through extra_model_paths.yaml, as ComfyUI lists them.
        for folder in ("diffusion_models", "text_encoders", "vae", "loras"):
            code, listed = await pod.get(f"/models/{folder}")
            assert code == 200 and sorted(listed) == sorted(m["file"] for m in models if m["folder"] == folder)
        assert (await pod.get("/system_stats", token=False))[0] == 401

        # Over HTTP: POST /prompt with the Bearer header, then the history and the image.
        prompt_id = await prompt(pod, "http-client")
        entry = await finished(pod, prompt_id)
        assert entry["status"]["status_str"] == "success", entry["status"]
        [image] = entry["outputs"]["2"]["images"]
        code, png = await pod.get("/view", params={"filename": image["filename"], "type": "output"})
        assert code == 200 and png.startswith(b"\x89PNG")
        print(f"HTTP: prompt {prompt_id} ran, {image['filename']} is {len(png)} bytes")

        # Over the WebSocket, the Bearer header on the upgrade.
        assert pod.session is not None
        async with pod.session.ws_connect(f"{pod.url}/ws?clientId=ws-client", headers=pod.auth) as ws:
            hello = await ws.receive_json(timeout=30)
            assert hello["type"] == "status"
            prompt_id = await prompt(pod, "ws-client")
            seen: list[str] = []
            while True:
                frame = await ws.receive(timeout=120)
                assert frame.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), frame
                if frame.type == aiohttp.WSMsgType.TEXT:
                    message = frame.json()
                    seen.append(message["type"])
                    if message["type"] == "executing" and message["data"]["node"] is None:
                        assert message["data"]["prompt_id"] == prompt_id
                        break
        assert "executed" in seen
        print(f"WebSocket: prompt {prompt_id} ran; frames {seen}")

        # The executor's own ComfyUI client, as it runs an assignment: the token on every call and the upgrade.
        assert pod.session is not None
        client = ComfyUIClient(pod.url, pod.session, token=pod.token)
        started: list[bool] = []

        async def on_started() -> None:
            started.append(True)

        async def on_progress(_progress: object) -> None:
            return None

        executor_prompt = str(uuid.uuid4())
        outputs = await client.run(GRAPH, executor_prompt, on_started=on_started, on_progress=on_progress, timeout=120)
        assert started and [ref.filename for ref in outputs] and outputs[0].filename.startswith("pod_real")
        data, content_type = await client.download(outputs[0])
        assert data.startswith(b"\x89PNG") and content_type == "image/png"
        refused = ComfyUIClient(pod.url, pod.session)  # no token: the proxy lets nothing through
        with pytest.raises(PodFault, match="401"):
            await refused.run(GRAPH, str(uuid.uuid4()), on_started=on_started, on_progress=on_progress, timeout=30)
        print(f"executor: prompt {executor_prompt} ran through the proxy, {outputs[0].filename} downloaded")

        for name, text in {"stdout": pod.output(), **pod.state_files()}.items():
            assert pod.token not in text, f"the token leaked into {name}"
        assert await pod.stop() == 0
        await pod.wait_gone()
        print("\n".join(line for line in pod.output().splitlines() if line.startswith("vibewave-")))
