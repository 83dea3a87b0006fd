"""Missing model files and the two dialects, as a real ComfyUI answers (0.3.64 checked on this machine kind).

Expected bodies are the ones a real 0.3.64 with empty model folders returned for the shipped graphs, and the
0.3.64 transcripts (v0.3.64/07, 11, 13-like probes); see the simulator README, "Checked against a real
ComfyUI 0.3.64".
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from vibewave.comfyui_sim.app import RunningSimulator, serve
from vibewave.comfyui_sim.config import Faults, SimConfig

pytestmark = pytest.mark.integration

GRAPHS = Path(__file__).parents[2] / "unit" / "comfyui_sim" / "graphs"
Start = Callable[..., Awaitable[RunningSimulator]]


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    running: list[RunningSimulator] = []

    async def go(**config: Any) -> RunningSimulator:
        config.setdefault("faults", Faults(step_time=0.01))
        sim = await serve(SimConfig(port=0, base_dir=tmp_path / str(len(running)), **config))
        running.append(sim)
        return sim

    yield go
    for sim in running:
        await sim.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


def basic(color: int = 1) -> dict[str, Any]:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": color}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "v"}},
    }


def not_in_list(name: str, value: str, options: list[str], output: str, class_type: str) -> dict[str, Any]:
    return {
        "errors": [
            {
                "type": "value_not_in_list",
                "message": "Value not in list",
                "details": f"{name}: '{value}' not in {options}",
                "extra_info": {"input_name": name, "input_config": [options, {}], "received_value": value},
            }
        ],
        "dependent_outputs": [output],
        "class_type": class_type,
    }


async def post(http: aiohttp.ClientSession, sim: RunningSimulator, body: Any) -> tuple[int, Any]:
    async with http.post(f"{sim.url}/prompt", json=body) as resp:
        return resp.status, await resp.json()


async def get(http: aiohttp.ClientSession, sim: RunningSimulator, path: str) -> Any:
    async with http.get(sim.url + path) as resp:
        assert resp.status == 200, path
        return await resp.json()


async def run(http: aiohttp.ClientSession, sim: RunningSimulator, prompt: dict[str, Any]) -> list[dict[str, Any]]:
    """Post with a client socket and return the frames up to `executing null`."""
    async with http.ws_connect(f"{sim.url}/ws?clientId=v") as ws:
        await ws.receive_json()
        status, body = await post(http, sim, {"prompt": prompt, "client_id": "v"})
        assert status == 200, body
        frames = []
        while True:
            msg = await ws.receive(timeout=10)
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue  # binary preview / text frames
            frame = json.loads(msg.data)
            frames.append(frame)
            if frame["type"] == "executing" and frame["data"] == {"node": None, "prompt_id": body["prompt_id"]}:
                return frames


@pytest.mark.parametrize("version", ["0.33.0", "0.3.64"])
async def test_absent_models_fail_validation_on_every_loader(
    start: Start, http: aiohttp.ClientSession, version: str
) -> None:
    sim = await start(comfyui_version=version)
    status, body = await post(http, sim, {"prompt": json.loads((GRAPHS / "qwen_image_api.json").read_text())})
    assert status == 400
    assert body == {
        "error": {
            "type": "prompt_outputs_failed_validation",
            "message": "Prompt outputs failed validation",
            "details": "",
            "extra_info": {},
        },
        "node_errors": {
            "37": not_in_list("unet_name", "qwen_image_fp8_e4m3fn.safetensors", [], "60", "UNETLoader"),
            "38": not_in_list("clip_name", "qwen_2.5_vl_7b_fp8_scaled.safetensors", [], "60", "CLIPLoader"),
            "39": not_in_list("vae_name", "qwen_image_vae.safetensors", ["pixel_space"], "60", "VAELoader"),
        },
    }
    assert await get(http, sim, "/models/diffusion_models") == []
    assert await get(http, sim, "/models/vae") == []
    info = await get(http, sim, "/object_info/VAELoader")
    assert info["VAELoader"]["input"]["required"]["vae_name"][0] == ["pixel_space"]
    assert (await get(http, sim, "/history")) == {}


async def test_models_present_switch(start: Start, http: aiohttp.ClientSession) -> None:
    sim = await start()
    assert (await get(http, sim, "/vibewave-sim/faults"))["models_present"] is False
    async with http.post(f"{sim.url}/vibewave-sim/faults", json={"models_present": True}) as resp:
        assert (await resp.json())["models_present"] is True
    prompt = json.loads((GRAPHS / "qwen_image_lightning4_api.json").read_text())
    prompt["58"]["inputs"].update(width=64, height=64)
    frames = await run(http, sim, prompt)
    assert "execution_success" in [f["type"] for f in frames]
    assert "qwen_image_fp8_e4m3fn.safetensors" in await get(http, sim, "/models/diffusion_models")
    async with http.post(f"{sim.url}/vibewave-sim/faults", json={"models_present": "yes"}) as resp:
        assert resp.status == 400
    async with http.delete(f"{sim.url}/vibewave-sim/faults") as resp:
        assert (await resp.json())["models_present"] is False
    assert (await get(http, sim, "/vibewave-sim/info"))["models_present"] is False
    present = await start(models_present=True)
    status, _ = await post(http, present, {"prompt": json.loads((GRAPHS / "wan22_t2v_5b_api.json").read_text())})
    assert status == 200


async def test_unknown_routes_answer_like_the_static_route(start: Start, http: aiohttp.ClientSession) -> None:
    for version in ("0.33.0", "0.3.64"):
        sim = await start(comfyui_version=version)
        for path in ("/nonexistent", "/api/nonexistent"):
            async with http.get(sim.url + path) as resp:
                assert resp.status == 404 and resp.headers["Content-Type"] == "application/octet-stream"
                assert "Content-Length" not in resp.headers and await resp.read() == b""
            async with http.post(sim.url + path, json={}) as resp:
                assert resp.status == 405 and resp.headers["Allow"] == "GET,HEAD"
                assert await resp.text() == "405: Method Not Allowed"
        async with http.get(sim.url + "/") as resp:
            assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/html")
            assert f"a simulator of ComfyUI {version}" in await resp.text()


async def test_0364_dialect(start: Start, http: aiohttp.ClientSession) -> None:
    sim = await start(comfyui_version="0.3.64")
    stats = await get(http, sim, "/system_stats")
    system = stats["system"]
    assert (system["comfyui_version"], system["os"]) == ("0.3.64", "posix")
    assert "comfy_package_versions" not in system and "deploy_environment" not in system
    assert system["required_frontend_version"] == "1.27.10"
    assert "vibewave-comfyui-simulator" in system["pytorch_version"] + stats["devices"][0]["name"]
    assert await get(http, sim, "/features") == {"supports_preview_metadata": True, "max_upload_size": 104857600}
    assert len(await get(http, sim, "/models")) == 20
    assert await get(http, sim, "/object_info/ColorTransfer") == {}

    unknown = basic()
    unknown["3"] = {"class_type": "NoSuchNodeClass", "inputs": {}}
    assert (await post(http, sim, {"prompt": unknown}))[1]["error"] == {
        "type": "invalid_prompt",
        "message": "Cannot execute because node NoSuchNodeClass does not exist.",
        "details": "Node ID '#3'",
        "extra_info": {},
    }
    untyped = basic()
    untyped["3"] = {"inputs": {}}
    error = (await post(http, sim, {"prompt": untyped}))[1]["error"]
    assert error["message"] == "Cannot execute because a node is missing the class_type property."
    for sent, got in (("my-job-1", "my-job-1"), (None, "None"), (5, "5")):
        status, body = await post(http, sim, {"prompt": basic(color=hash(got) & 0xFFFFFF), "prompt_id": sent})
        assert (status, body["prompt_id"]) == (200, got)

    frames = await run(http, sim, basic(color=7))
    pid = next(f for f in frames if f["type"] == "execution_start")["data"]["prompt_id"]
    entry = (await get(http, sim, f"/history/{pid}"))[pid]
    assert entry["prompt"][3] == {"client_id": "v"}  # no create_time before 0.33
    async with http.get(f"{sim.url}/view?filename=v_00001_.png&type=output") as resp:
        assert resp.status == 200 and "X-Content-Type-Options" not in resp.headers
    async with http.get(f"{sim.url}/api/jobs/{pid}") as resp:
        assert resp.status == 404 and resp.headers["Content-Type"] == "application/octet-stream"
    async with http.post(f"{sim.url}/api/jobs/{pid}/cancel") as resp:
        assert resp.status == 405


async def test_0364_classic_cache_keeps_only_what_the_next_prompt_uses(
    start: Start, http: aiohttp.ClientSession
) -> None:
    """Seen on the real 0.3.64: A, B, A runs A's nodes again; 0.33 (RAM-pressure cache) serves them from cache."""
    for version, cached_third in (("0.3.64", []), ("0.33.0", ["1", "2"])):
        sim = await start(comfyui_version=version)
        seen = []
        for prompt in (basic(color=0x123456), basic(color=0x654321), basic(color=0x123456)):
            frames = await run(http, sim, prompt)
            seen.append(next(f for f in frames if f["type"] == "execution_cached")["data"]["nodes"])
        assert seen == [[], [], cached_third], version


async def test_node_id_is_part_of_the_cache_key_for_unique_id_nodes(start: Start, http: aiohttp.ClientSession) -> None:
    """GetImageSize has a hidden UNIQUE_ID input: the same graph under another id runs it again (real 0.3.64)."""
    sim = await start()
    cached = []
    for node_id in ("2", "7"):
        prompt = {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 96, "height": 64, "batch_size": 1, "color": 4242}},
            node_id: {"class_type": "GetImageSize", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "PreviewAny", "inputs": {"source": [node_id, 0]}},
        }
        frames = await run(http, sim, prompt)
        cached.append(next(f for f in frames if f["type"] == "execution_cached")["data"]["nodes"])
    assert cached == [[], ["1"]]


async def test_0364_queue_quirks(start: Start, http: aiohttp.ClientSession) -> None:
    """0.3.64 shows the API key in /queue (stripped only in history) and sends two status frames when the last
    pending prompt is deleted (delete_queue_item -> wipe_queue)."""
    sim = await start(comfyui_version="0.3.64", faults=Faults(step_time=0.01, node_time=1.0))
    async with http.ws_connect(f"{sim.url}/ws?clientId=q") as ws:
        await ws.receive_json()
        _, running = await post(http, sim, {"prompt": basic(color=1), "client_id": "q"})
        secret = {"prompt": basic(color=2), "extra_data": {"api_key_comfy_org": "k"}}
        _, pending = await post(http, sim, secret)
        queue = await get(http, sim, "/queue")
        assert queue["queue_pending"][0][3] == {"api_key_comfy_org": "k"}
        while True:
            frame = await ws.receive_json(timeout=5)
            if frame["type"] == "status" and frame["data"]["status"]["exec_info"]["queue_remaining"] == 2:
                break
        async with http.post(f"{sim.url}/queue", json={"delete": [pending["prompt_id"]]}):
            pass
        statuses = []
        while len(statuses) < 2:
            frame = await ws.receive_json(timeout=5)
            if frame["type"] == "status":
                statuses.append(frame["data"]["status"]["exec_info"]["queue_remaining"])
        assert statuses == [1, 1]
        async with http.post(f"{sim.url}/interrupt"):
            pass
    assert running["prompt_id"]
