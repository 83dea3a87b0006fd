"""A `runpod/comfyui` pod's container is a ComfyUI simulator behind `/proxy/{podId}-8188`: HTTP, WebSocket,
502/524 cases, stop/resume/terminate, crashes, never-ready pods and simulator faults passed through pod env."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.runpod_emu.helpers import graph, wait_for
from vibewave.runpod_emu import RunningEmulator

pytestmark = pytest.mark.integration

AUTH = {"Authorization": "Bearer test-key"}
CREATE = """mutation($input: PodFindAndDeployOnDemandInput!) { podFindAndDeployOnDemand(input: $input) { id } }"""


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def gql(http: aiohttp.ClientSession, emu: RunningEmulator, query: str, variables: dict[str, Any]) -> Any:
    async with http.post(f"{emu.url}/graphql", json={"query": query, "variables": variables}, headers=AUTH) as resp:
        body = await resp.json()
        assert "errors" not in body, body
        return body["data"]


async def create(http: aiohttp.ClientSession, emu: RunningEmulator, **extra: Any) -> str:
    inp: dict[str, Any] = {
        "name": "comfy",
        "imageName": "runpod/comfyui:latest",
        "gpuTypeId": "NVIDIA GeForce RTX 4090",
    }
    inp |= {"cloudType": "SECURE", "ports": "8188/http,22/tcp", "containerDiskInGb": 40} | extra
    return str((await gql(http, emu, CREATE, {"input": inp}))["podFindAndDeployOnDemand"]["id"])


async def status_of(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(url) as resp:
        assert resp.headers["X-Vibewave-Emulator"] == "runpod"
        if resp.status in (502, 524):
            assert resp.content_type == "text/html"
        return resp.status


async def ready(http: aiohttp.ClientSession, emu: RunningEmulator, pod_id: str) -> None:
    url = emu.proxy_url(pod_id) + "/system_stats"
    await wait_for(lambda: _is(http, url, 200), timeout=15)


async def _is(http: aiohttp.ClientSession, url: str, status: int) -> bool:
    return await status_of(http, url) == status


async def pod_state(http: aiohttp.ClientSession, emu: RunningEmulator, pod_id: str) -> dict[str, Any]:
    async with http.get(f"{emu.url}/emulator/state") as resp:
        state = await resp.json()
    return next(p for p in state["pods"] if p["id"] == pod_id)


async def test_proxy_reaches_comfyui_over_http_and_websocket(http: aiohttp.ClientSession, emu: RunningEmulator) -> None:
    pod_id = await create(http, emu)
    base = emu.proxy_url(pod_id)
    assert await status_of(http, base + "/system_stats") == 502  # runtime still null: nothing listens
    await ready(http, emu, pod_id)
    async with http.get(base + "/system_stats") as resp:
        stats = await resp.json()
    assert stats["system"]["deploy_environment"] == "vibewave-comfyui-simulator"

    prompt = json.loads(graph("qwen_image_lightning4_api.json").read_text())
    prompt["58"]["inputs"].update(width=64, height=64)
    async with http.ws_connect(base.replace("http://", "ws://") + "/ws?clientId=emu-test") as ws:
        hello = json.loads((await ws.receive(timeout=5)).data)
        assert hello == {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "emu-test"}}
        async with http.post(base + "/prompt", json={"prompt": prompt, "client_id": "emu-test"}) as resp:
            assert resp.status == 200
            prompt_id = (await resp.json())["prompt_id"]
        seen: list[str] = []
        while "execution_success" not in seen:
            msg = await ws.receive(timeout=10)
            if msg.type == aiohttp.WSMsgType.TEXT:
                seen.append(json.loads(msg.data)["type"])
            else:
                assert msg.type == aiohttp.WSMsgType.BINARY  # previews pass through as binary frames
    assert "executing" in seen and "progress" in seen
    async with http.get(f"{base}/history/{prompt_id}") as resp:
        outputs = (await resp.json())[prompt_id]["outputs"]
    image = next(img for out in outputs.values() for img in out.get("images", []))
    async with http.get(f"{base}/view", params={"filename": image["filename"], "type": "output"}) as resp:
        assert resp.status == 200 and (await resp.read()).startswith(b"\x89PNG")
    container = (await pod_state(http, emu, pod_id))["container"]
    output_dir = Path(container["workspace"]) / "runpod-slim" / "ComfyUI" / "output"
    assert (output_dir / image["filename"]).is_file()
    assert container["runs"] == "image ENTRYPOINT" and container["listening"] is True

    assert await status_of(http, emu.proxy_url(pod_id, 8888) + "/") == 502  # not a declared port
    assert await status_of(http, emu.proxy_url("nopodnopodnopo") + "/") == 502
    async with http.get(f"{emu.url}/proxy/NotATarget/") as resp:
        assert resp.status == 404


async def test_stop_resume_terminate_restart_the_simulator(http: aiohttp.ClientSession, emu: RunningEmulator) -> None:
    pod_id = await create(http, emu)
    await ready(http, emu, pod_id)
    first = (await pod_state(http, emu, pod_id))["container"]
    await asyncio.to_thread((Path(first["workspace"]) / "scratch.txt").write_text, "on the container disk")
    ws_url = emu.proxy_url(pod_id).replace("http://", "ws://") + "/ws"
    headers = {"Origin": emu.url}  # a browser's Origin must not trip ComfyUI's loopback check behind the proxy
    async with http.ws_connect(ws_url, headers=headers) as ws:
        assert (await ws.receive(timeout=5)).type == aiohttp.WSMsgType.TEXT
        await gql(http, emu, "mutation($i: PodStopInput!) { podStop(input: $i) { id } }", {"i": {"podId": pod_id}})
        closing = await ws.receive(timeout=5)  # the pod's ComfyUI goes away: the proxied socket closes
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
    assert await status_of(http, emu.proxy_url(pod_id) + "/system_stats") == 502
    await emu.emulator.settle()
    stopped = (await pod_state(http, emu, pod_id))["container"]
    assert stopped["running"] is False and stopped["listening"] is False
    assert not await asyncio.to_thread(Path(first["workspace"]).exists), "RunPod wipes the container disk on stop"
    resume = "mutation($i: PodResumeInput!) { podResume(input: $i) { id } }"
    await gql(http, emu, resume, {"i": {"podId": pod_id, "gpuCount": 1}})
    await ready(http, emu, pod_id)
    state = await pod_state(http, emu, pod_id)
    assert state["container"]["pid"] != first["pid"] and state["container"]["starts"] == 2
    assert not await asyncio.to_thread((Path(first["workspace"]) / "scratch.txt").exists)
    pod_dir = Path(state["container"]["log"]).parent
    assert pod_dir.is_dir()
    await gql(http, emu, "mutation($i: PodTerminateInput!) { podTerminate(input: $i) }", {"i": {"podId": pod_id}})
    assert await status_of(http, emu.proxy_url(pod_id) + "/system_stats") == 502
    await emu.emulator.settle()
    assert not pod_dir.exists()


async def test_crash_is_restarted_and_platform_exit(http: aiohttp.ClientSession, emu: RunningEmulator) -> None:
    pod_id = await create(http, emu)
    await ready(http, emu, pod_id)
    async with http.post(f"{emu.url}/emulator/pods/{pod_id}/kill-comfyui") as resp:
        assert resp.status == 200
    await wait_for(lambda: _crashed(http, emu, pod_id))
    await ready(http, emu, pod_id)
    async with http.post(f"{emu.url}/emulator/pods/{pod_id}/exit") as resp:
        exited = await resp.json()
    assert exited["desiredStatus"] == "EXITED" and exited["lastStatusChange"].startswith("Exited by Runpod: ")
    assert await status_of(http, emu.proxy_url(pod_id) + "/system_stats") == 502


async def _crashed(http: aiohttp.ClientSession, emu: RunningEmulator, pod_id: str) -> bool:
    return int((await pod_state(http, emu, pod_id))["container"]["crashes"]) >= 1


async def test_never_ready_modes(http: aiohttp.ClientSession, emu: RunningEmulator) -> None:
    emu.emulator.config.proxy_timeout = 0.5
    async with http.post(f"{emu.url}/emulator/faults", json={"never_ready": {"mode": "no_comfyui", "times": 1}}) as r:
        assert r.status == 200
    silent = await create(http, emu)
    async with http.post(f"{emu.url}/emulator/faults", json={"never_ready": {"mode": "hang", "times": 1}}) as r:
        assert r.status == 200
    hanging = await create(http, emu)
    async with http.post(f"{emu.url}/emulator/faults", json={"never_ready": {"mode": "no_runtime", "times": 1}}) as r:
        assert r.status == 200
    stuck = await create(http, emu)
    healthy = await create(http, emu)
    await ready(http, emu, healthy)

    assert (await pod_state(http, emu, silent))["runtime"] is not None
    assert await status_of(http, emu.proxy_url(silent) + "/system_stats") == 502
    hanging_state = await pod_state(http, emu, hanging)
    assert hanging_state["runtime"] is not None
    await wait_for(lambda: _listening(http, emu, hanging))
    assert await status_of(http, emu.proxy_url(hanging) + "/system_stats") == 524
    assert (await pod_state(http, emu, stuck))["runtime"] is None


async def _listening(http: aiohttp.ClientSession, emu: RunningEmulator, pod_id: str) -> bool:
    port = (await pod_state(http, emu, pod_id))["container"]["port"]
    if port is None:
        return False
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


async def test_simulator_faults_via_pod_env_and_emulator(http: aiohttp.ClientSession, emu: RunningEmulator) -> None:
    async with http.post(f"{emu.url}/emulator/faults", json={"sim_env": {"VIBEWAVE_SIM_NODE_TIME": "0.25"}}) as r:
        assert r.status == 200
    env = [{"key": "VIBEWAVE_SIM_OOM_NODE", "value": "VAEDecode"}, {"key": "VIBEWAVE_SIM_STEP_TIME", "value": "0.03"}]
    pod_id = await create(http, emu, env=env)
    await ready(http, emu, pod_id)
    async with http.get(emu.proxy_url(pod_id) + "/vibewave-sim/faults") as resp:
        faults = await resp.json()
    assert faults["oom"]["node"] == "VAEDecode" and faults["step_time"] == 0.03 and faults["node_time"] == 0.25
