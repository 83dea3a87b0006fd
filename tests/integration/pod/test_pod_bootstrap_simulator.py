"""The real bootstrap archive, in simulator mode, against the local model file server: what a pod does.

`VIBEWAVE_COMFYUI_SIMULATOR` replaces only the install and the ComfyUI binary; the markers, the locks, the
downloads, the status, the token proxy and the supervision are the ones a RunPod pod runs.
"""

from __future__ import annotations

import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.pod.harness import Pod, alive, eventually
from tests.support.model_files import ModelFileServer
from tests.unit.pod.test_pod_payload import QWEN
from vibewave.pod.payload import PINNED

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

GRAPH = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 3355443}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "pod_bootstrap"}},
}
SLOW_FILE = "diffusion_models/qwen_image_fp8_e4m3fn.safetensors"


@pytest.fixture
async def files(tmp_path: Path) -> AsyncIterator[ModelFileServer]:
    async with ModelFileServer(tmp_path / "served") as server:
        yield server


def simulator_pod(root: Path, workspace: Path, models: list[dict[str, Any]], pod_id: str, **env: str) -> Pod:
    return Pod(
        root, workspace, models, pod_id=pod_id,
        VIBEWAVE_COMFYUI_SIMULATOR=sys.executable,
        VIBEWAVE_COMFYUI_ARGS="--step-time 0.01 --node-cost-scale 0",
        RUNPOD_VOLUME_ID="vol-test",
        **env,
    )  # fmt: skip


async def run_prompt(pod: Pod, client_id: str) -> str:
    code, body = await pod.request(
        "POST",
        "/prompt",
        json={"prompt": GRAPH, "client_id": client_id},
        headers={"Origin": "https://elsewhere.example"},
    )
    assert code == 200, body
    prompt_id: str = body["prompt_id"]
    return prompt_id


async def history_of(pod: Pod, prompt_id: str) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        code, body = await pod.get(f"/history/{prompt_id}")
        return body[prompt_id] if code == 200 and prompt_id in body else None

    return await eventually(done, 60, f"prompt {prompt_id} in the history")


async def test_a_first_boot_serves_comfyui_behind_the_token_once_the_models_are_verified(
    tmp_path: Path, files: ModelFileServer
) -> None:
    models = files.stand_in_models(QWEN, keep_unknown=True)  # the 4-step LoRA keeps its null size and sha256
    gate = files.hold(SLOW_FILE)  # the pod waits for this file until the test has seen it downloading
    files.drop(SLOW_FILE)  # and then the connection is cut mid-file once: the pod resumes it
    workspace = tmp_path / "workspace"
    async with simulator_pod(tmp_path / "pod-a", workspace, models, "pod-a") as pod:
        downloading = await pod.wait_phase("downloading")
        assert downloading["install"] == {"skipped": False, "mode": "simulator", "comfyui_commit": PINNED}
        code, body = await pod.get("/system_stats")
        assert (code, body) == (502, {"detail": "ComfyUI is not up yet (phase downloading)"})
        gate.set()

        ready = await pod.wait_phase("ready")
        assert ready["error"] is None
        assert ready["volume"] == {"path": str(workspace), "network_volume": True}
        assert ready["comfyui"]["up"] is True and ready["comfyui"]["restarts"] == 0
        assert [(m["folder"], m["file"], m["state"]) for m in ready["models"]] == [
            (m["folder"], m["file"], "present") for m in models
        ]
        assert (files.requests(SLOW_FILE).full, files.requests(SLOW_FILE).ranged) == (1, 1)

        # ComfyUI's routes, through the proxy, with the token.
        code, stats = await pod.get("/system_stats")
        assert code == 200 and stats["system"]["comfyui_version"] == "0.3.64"
        for folder in ("diffusion_models", "text_encoders", "vae", "loras"):
            code, listed = await pod.get(f"/models/{folder}")
            assert code == 200 and sorted(listed) == sorted(m["file"] for m in models if m["folder"] == folder)
        assert not any(p.name.endswith(".part") for p in (workspace / "models").rglob("*"))

        # A model-free workflow over HTTP (an Origin header is dropped on the way), then its image.
        prompt_id = await run_prompt(pod, "http-client")
        entry = await history_of(pod, prompt_id)
        [image] = entry["outputs"]["2"]["images"]
        code, png = await pod.get("/view", params={"filename": image["filename"], "type": "output"})
        assert code == 200 and png.startswith(b"\x89PNG")

        # The same over the WebSocket, with the token in the query (clients that cannot set headers).
        assert pod.session is not None
        async with pod.session.ws_connect(f"{pod.url}/ws?clientId=ws-client&token={pod.token}") as ws:
            first = await ws.receive_json(timeout=10)
            assert first["type"] == "status"
            prompt_id = await run_prompt(pod, "ws-client")
            while True:
                frame = await ws.receive(timeout=30)
                if frame.type == aiohttp.WSMsgType.TEXT:
                    message = frame.json()
                    if message["type"] == "executing" and message["data"]["node"] is None:
                        assert message["data"]["prompt_id"] == prompt_id
                        break

        # An upload streams its body through.
        form = aiohttp.FormData()
        form.add_field(
            "image", b"\x89PNG\r\n\x1a\n" + os.urandom(2048), filename="upload.png", content_type="image/png"
        )
        code, uploaded = await pod.request("POST", "/upload/image", data=form)
        assert code == 200 and uploaded["name"] == "upload.png"

        # Without the token, or with a wrong one, nothing gets through.
        for method, path in [
            ("GET", "/system_stats"), ("POST", "/prompt"), ("GET", "/history"), ("GET", "/ws?clientId=x"),
            ("GET", "/models/loras"), ("GET", "/vibewave/status"), ("GET", "/view?filename=x&type=output"),
        ]:  # fmt: skip
            for token in (False, "wrong-token"):
                code, body = await pod.request(method, path, token=token)
                assert code == 401 and "token" in body["detail"], (method, path, token)
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await pod.session.ws_connect(f"{pod.url}/ws?clientId=x&token=wrong")
        assert refused.value.status == 401

        # ComfyUI dies: the bootstrap starts it again and says so.
        os.kill(ready["comfyui"]["pid"], signal.SIGKILL)

        async def restarted() -> dict[str, Any] | None:
            status = await pod.status()
            return status if status and status["comfyui"]["restarts"] == 1 and status["phase"] == "ready" else None

        again = await eventually(restarted, 60, "ComfyUI restarted")
        assert (await pod.get("/system_stats"))[0] == 200

        # The image's services ran, the token is nowhere in the logs or the status.
        assert "fake /start.sh: Pod Started" in pod.output()
        written = pod.state_files()
        assert {"bootstrap-pod-a.log", "comfyui-pod-a.log", "proxy-pod-a.log", "status-pod-a.json"} <= set(written)
        for name, text in {"stdout": pod.output(), **written}.items():
            assert pod.token not in text, f"the token leaked into {name}"

        # SIGTERM ends the pod: the bootstrap, ComfyUI, the proxy and the image's services.
        start_sh = pod.start_sh_pid()
        assert await pod.stop() == 0
        await pod.wait_gone()
        assert not alive(again["comfyui"]["pid"]) and not alive(start_sh)
        assert "stopped" in pod.output().splitlines()[-1]


async def test_a_second_pod_on_the_volume_skips_the_install_and_downloads_nothing(
    tmp_path: Path, files: ModelFileServer
) -> None:
    models = files.stand_in_models(QWEN, keep_unknown=True)
    workspace = tmp_path / "workspace"
    async with simulator_pod(tmp_path / "pod-a", workspace, models, "pod-a") as first:
        await first.wait_phase("ready")
        assert await first.stop() == 0
    requests = {path: counters.total for path, counters in files.counters.items()}
    assert requests == {f"{m['folder']}/{m['file']}": 1 for m in models}
    marker = (workspace / ".vibewave" / "comfyui-installed.json").read_text()

    async with simulator_pod(tmp_path / "pod-b", workspace, models, "pod-b") as second:
        ready = await second.wait_phase("ready")
        assert ready["install"]["skipped"] is True
        assert f"ComfyUI {PINNED} already installed on the volume" in second.output()
        assert all(m["state"] == "present" for m in ready["models"])
        code, listed = await second.get("/models/loras")
        assert code == 200 and len(listed) == 2
        assert await second.stop() == 0

    assert {path: counters.total for path, counters in files.counters.items()} == requests
    assert (workspace / ".vibewave" / "comfyui-installed.json").read_text() == marker
    assert {"status-pod-a.json", "status-pod-b.json"} <= set(os.listdir(workspace / ".vibewave"))


async def test_a_file_that_never_verifies_fails_the_pod_but_keeps_its_status_up(
    tmp_path: Path, files: ModelFileServer
) -> None:
    models = files.stand_in_models(QWEN[2:3])  # the VAE
    files.corrupt("vae/qwen_image_vae.safetensors", times=100)
    async with simulator_pod(tmp_path / "pod", tmp_path / "workspace", models, f"pod-{uuid.uuid4().hex[:6]}") as pod:
        failed = await pod.wait_phase("failed", timeout=90)  # three downloads, 2 s then 4 s apart
        assert "gave up after 3 downloads" in failed["error"]
        assert failed["models"][0]["state"] == "failed" and failed["comfyui"]["up"] is False
        code, body = await pod.get("/system_stats")
        assert code == 502 and "phase failed" in body["detail"]
        assert files.requests("vae/qwen_image_vae.safetensors").total == 3
        assert await pod.stop() == 0


async def test_a_volume_too_small_for_the_models_fails_before_downloading(
    tmp_path: Path, files: ModelFileServer
) -> None:
    huge = {"folder": "diffusion_models", "file": "huge.safetensors", "url": files.url_for("diffusion_models/huge")}
    models = [{**huge, "size": 10**17, "sha256": None}]  # 100 PB
    async with simulator_pod(tmp_path / "pod", tmp_path / "workspace", models, "pod-small") as pod:
        failed = await pod.wait_phase("failed")
        assert "give the pod a larger volume" in failed["error"]
        assert files.counters == {}
        assert await pod.stop() == 0
