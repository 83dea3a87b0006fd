"""The simulator in-process on a free port, driven over HTTP + WebSocket like a ComfyUI client.

Expected frame sequences are the ones recorded from ComfyUI 0.33 (transcripts 01, 02, 07, 08, 10, 11, 14,
15, 22 in reference/comfyui).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from vibewave.comfyui_sim import render, webp
from vibewave.comfyui_sim.app import RunningSimulator, serve
from vibewave.comfyui_sim.config import Faults, SimConfig

pytestmark = pytest.mark.integration

GRAPHS = Path(__file__).parents[2] / "unit" / "comfyui_sim" / "graphs"
TIMEOUT = 10.0


def graph(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((GRAPHS / name).read_text())
    return data


def basic(color: int = 0xFF8000, prefix: str = "golden_basic") -> dict[str, Any]:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 512, "height": 512, "batch_size": 1, "color": color}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


def qwen(steps: int = 4, seed: int = 1, prefix: str = "Qwen-Image", size: int = 256) -> dict[str, Any]:
    prompt = graph("qwen_image_lightning4_api.json")
    prompt["3"]["inputs"].update(steps=steps, seed=seed)
    prompt["58"]["inputs"].update(width=size, height=size)
    prompt["60"]["inputs"]["filename_prefix"] = prefix
    return prompt


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[RunningSimulator]:
    config = SimConfig(
        port=0, base_dir=tmp_path, models_present=True, faults=Faults(step_time=0.01, progress_throttle=0.0)
    )
    running = await serve(config)
    yield running
    await running.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:
        yield session


class Socket:
    """A WebSocket client that keeps every frame it received."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[Any] = []

    async def next(self, timeout: float = TIMEOUT) -> Any:
        msg = await self.ws.receive(timeout=timeout)
        frame: Any = json.loads(msg.data) if msg.type == aiohttp.WSMsgType.TEXT else msg.data
        self.frames.append(frame)
        return frame

    async def until(self, predicate: Any, timeout: float = TIMEOUT) -> list[Any]:
        start = len(self.frames)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = await self.next(max(0.01, deadline - loop.time()))
            if predicate(frame):
                return self.frames[start:]

    async def until_done(self, prompt_id: str) -> list[Any]:
        return await self.until(
            lambda f: (
                isinstance(f, dict) and f["type"] == "executing" and f["data"] == {"node": None, "prompt_id": prompt_id}
            )
        )

    async def quiet(self, seconds: float = 0.2) -> list[Any]:
        got = []
        try:
            while True:
                got.append(await self.next(seconds))
        except TimeoutError:
            return got


async def connect(http: aiohttp.ClientSession, sim: RunningSimulator, client_id: str | None) -> Socket:
    query = f"?clientId={client_id}" if client_id else ""
    socket = Socket(await http.ws_connect(f"{sim.url}/ws{query}"))
    await socket.next()
    return socket


async def post(http: aiohttp.ClientSession, sim: RunningSimulator, body: Any) -> tuple[int, Any]:
    async with http.post(f"{sim.url}/prompt", json=body) as resp:
        return resp.status, await resp.json()


async def get_json(http: aiohttp.ClientSession, sim: RunningSimulator, path: str) -> Any:
    async with http.get(sim.url + path) as resp:
        assert resp.status == 200
        return await resp.json()


def types(frames: list[Any]) -> list[str]:
    return [f["type"] if isinstance(f, dict) else f"binary:{int.from_bytes(f[:4], 'big')}" for f in frames]


def states(frame: dict[str, Any]) -> dict[str, tuple[str, Any, Any]]:
    return {k: (v["state"], v["value"], v["max"]) for k, v in frame["data"]["nodes"].items()}


async def test_happy_path_frames_history_and_view(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    ws = await connect(http, sim, "golden-client-01")
    assert ws.frames[0] == {
        "type": "status",
        "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "golden-client-01"},
    }
    status, body = await post(http, sim, {"prompt": basic(), "client_id": "golden-client-01"})
    assert status == 200
    assert body == {"prompt_id": body["prompt_id"], "number": 0, "node_errors": {}}
    pid = body["prompt_id"]
    frames = await ws.until_done(pid)
    assert types(frames) == [
        "status",
        "status",
        "execution_start",
        "execution_cached",
        "progress_state",
        "executing",
        "progress_state",
        "progress_state",
        "executing",
        "executed",
        "progress_state",
        "execution_success",
        "status",
        "executing",
    ]
    assert [f["data"]["status"]["exec_info"]["queue_remaining"] for f in frames if f["type"] == "status"] == [1, 1, 0]
    assert states(frames[4]) == {"1": ("running", 0.0, 1.0)}
    assert states(frames[10]) == {"1": ("finished", 1.0, 1.0), "2": ("finished", 1.0, 1.0)}
    image = {"filename": "golden_basic_00001_.png", "subfolder": "", "type": "output"}
    assert frames[9]["data"] == {"node": "2", "display_node": "2", "output": {"images": [image]}, "prompt_id": pid}

    history = await get_json(http, sim, f"/history/{pid}")
    entry = history[pid]
    assert list(entry) == ["prompt", "outputs", "status", "meta"]
    assert entry["prompt"][:2] == [0, pid] and entry["prompt"][4] == ["2"]
    assert set(entry["prompt"][3]) == {"client_id", "create_time"}
    assert entry["outputs"] == {"2": {"images": [image]}}
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
    assert [m[0] for m in entry["status"]["messages"]] == ["execution_start", "execution_cached", "execution_success"]
    assert entry["meta"] == {"2": {"node_id": "2", "display_node": "2", "parent_node": None, "real_node_id": "2"}}

    async with http.get(
        f"{sim.url}/view", params={"filename": image["filename"], "subfolder": "", "type": "output"}
    ) as r:
        data = await r.read()
        assert r.status == 200
        assert r.headers["Content-Type"] == "image/png"
        assert r.headers["Content-Disposition"] == 'filename="golden_basic_00001_.png"'
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert "Etag" in r.headers and r.headers["Accept-Ranges"] == "bytes"
        assert data.startswith(b"\x89PNG") and int.from_bytes(data[16:20], "big") == 512
    assert await get_json(http, sim, "/queue") == {"queue_running": [], "queue_pending": []}
    assert await get_json(http, sim, "/api/prompt") == {"exec_info": {"queue_remaining": 0}}


async def test_cached_rerun_replays_old_files(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    ws = await connect(http, sim, "c2")
    _, first = await post(http, sim, {"prompt": basic(), "client_id": "c2"})
    await ws.until_done(first["prompt_id"])
    _, second = await post(http, sim, {"prompt": basic(), "client_id": "c2"})
    pid = second["prompt_id"]
    frames = await ws.until_done(pid)
    assert types(frames) == [
        "status",
        "status",
        "execution_start",
        "execution_cached",
        "executed",
        "progress_state",
        "execution_success",
        "status",
        "executing",
    ]
    assert frames[3]["data"]["nodes"] == ["1", "2"]
    assert frames[4]["data"]["output"]["images"][0]["filename"] == "golden_basic_00001_.png"
    assert frames[5]["data"]["nodes"]["2"]["value"] == 1 and isinstance(frames[5]["data"]["nodes"]["2"]["value"], int)
    assert len(list(sim.simulator.config.out.glob("golden_basic_*"))) == 1

    _, third = await post(http, sim, {"prompt": basic(color=0x00FF00), "client_id": "c2"})
    frames = await ws.until_done(third["prompt_id"])
    executed = next(f for f in frames if f["type"] == "executed")
    assert executed["data"]["output"]["images"][0]["filename"] == "golden_basic_00002_.png"
    assert next(f for f in frames if f["type"] == "execution_cached")["data"]["nodes"] == []


async def test_post_prompt_errors_and_counter(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    ws = await connect(http, sim, "c7")
    status, body = await post(http, sim, {"client_id": "c7"})
    assert (status, body["error"]["type"], body["node_errors"]) == (400, "no_prompt", {})
    for bad in ("my-job-1", "8D39F2E9-CAEE-4436-97CF-6EE0D23AD2A8"):
        status, body = await post(http, sim, {"prompt": basic(), "prompt_id": bad})
        assert status == 400
        assert body["error"] == {
            "type": "invalid_prompt_id",
            "message": "prompt_id must be a valid UUID",
            "details": "prompt_id must be a UUID string in canonical lowercase hyphenated form; "
            "omit it to let the server generate one",
            "extra_info": {},
        }
    wrong_type = basic()
    wrong_type["1"]["inputs"]["width"] = "abc"
    status, body = await post(http, sim, {"prompt": wrong_type})
    assert status == 400 and body["node_errors"]["1"]["errors"][0]["type"] == "invalid_input_type"
    async with http.post(f"{sim.url}/prompt", data=b"{not json") as resp:
        assert resp.status == 500
        assert resp.headers["Content-Type"].startswith("text/plain")
        assert await resp.text() == "500 Internal Server Error\n\nServer got itself in trouble"
    async with http.post(
        f"{sim.url}/api/prompt", json={"prompt": basic()}, headers={"Origin": "http://evil.example"}
    ) as resp:
        assert resp.status == 403 and await resp.read() == b""
    assert await ws.quiet() == []

    pid = str(uuid.uuid4())
    status, body = await post(http, sim, {"prompt": basic(color=1), "client_id": "c7", "prompt_id": pid})
    assert status == 200 and body["prompt_id"] == pid and body["number"] == 4
    status, body = await post(http, sim, {"prompt": basic(color=2), "number": 5.5})
    assert body["number"] == 5.5
    status, body = await post(http, sim, {"prompt": basic(color=3), "front": True})
    assert body["number"] == -5
    await ws.until_done(pid)


async def test_execution_error_and_oom_faults(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    ws = await connect(http, sim, "c8")
    async with http.post(
        f"{sim.url}/vibewave-sim/faults", json={"execution_error": {"node": "KSampler", "step": 2, "message": "boom"}}
    ) as resp:
        assert resp.status == 200
        assert (await resp.json())["execution_error"]["node"] == "KSampler"
    _, body = await post(http, sim, {"prompt": qwen(seed=11), "client_id": "c8"})
    pid = body["prompt_id"]
    frames = await ws.until_done(pid)
    assert types(frames)[-4:] == ["progress", "execution_error", "status", "executing"]
    assert [f["data"]["value"] for f in frames if f["type"] == "progress"] == [1]
    error = frames[-3]["data"]
    assert (error["node_id"], error["node_type"], error["exception_type"]) == ("3", "KSampler", "RuntimeError")
    assert error["exception_message"] == "boom\n"
    assert error["current_inputs"]["steps"] == [4] and error["current_outputs"] == list(qwen())
    assert "3" not in error["executed"] and "66" in error["executed"]
    entry = (await get_json(http, sim, f"/history/{pid}"))[pid]
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    assert entry["status"]["messages"][-1][0] == "execution_error" and entry["outputs"] == {}

    async with http.post(f"{sim.url}/vibewave-sim/faults", json={"execution_error": None, "oom": "VAEDecode"}):
        pass
    _, body = await post(http, sim, {"prompt": qwen(seed=12), "client_id": "c8"})
    frames = await ws.until_done(body["prompt_id"])
    error = next(f for f in frames if f["type"] == "execution_error")["data"]
    assert (error["node_id"], error["exception_type"]) == ("8", "torch.OutOfMemoryError")
    assert error["exception_message"].endswith(
        "\nThis error means you ran out of memory on your GPU.\n\n"
        "TIPS: If the workflow worked before you might have accidentally set the batch_size to a large number."
    )
    async with http.post(f"{sim.url}/vibewave-sim/faults", json={"bogus": 1}) as resp:
        assert resp.status == 400
    async with http.delete(f"{sim.url}/vibewave-sim/faults") as resp:
        assert (await resp.json())["oom"] is None


async def test_alloc_error_like_scenario_08(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    ws = await connect(http, sim, "c8b")
    prompt = basic(prefix="never_written")
    prompt["1"]["inputs"].update(width=16384, height=16384, batch_size=4096)
    _, body = await post(http, sim, {"prompt": prompt, "client_id": "c8b"})
    frames = await ws.until_done(body["prompt_id"])
    assert types(frames)[2:] == [
        "execution_start",
        "execution_cached",
        "progress_state",
        "executing",
        "execution_error",
        "status",
        "executing",
    ]
    error = frames[-3]["data"]
    assert error["exception_type"] == "RuntimeError"
    assert "you tried to allocate 4398046511104 bytes" in error["exception_message"]
    assert error["current_inputs"] == {"width": [16384], "height": [16384], "batch_size": [4096], "color": [16744448]}


async def test_prompt_scoped_interrupt(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    ws = await connect(http, sim, "c10")
    _, running = await post(http, sim, {"prompt": qwen(steps=400, seed=21), "client_id": "c10"})
    _, pending = await post(http, sim, {"prompt": basic(prefix="after"), "client_id": "c10"})
    await ws.until(lambda f: f["type"] == "progress" and f["data"]["value"] >= 3)
    async with http.post(f"{sim.url}/interrupt", json={"prompt_id": pending["prompt_id"]}) as resp:
        assert resp.status == 200 and await resp.read() == b""
    queue = await get_json(http, sim, "/queue")
    assert [item[1] for item in queue["queue_running"]] == [running["prompt_id"]]
    assert [item[1] for item in queue["queue_pending"]] == [pending["prompt_id"]]
    async with http.post(f"{sim.url}/interrupt", json={"prompt_id": running["prompt_id"]}) as resp:
        assert resp.status == 200
    frames = await ws.until_done(running["prompt_id"])
    assert types(frames)[-3:] == ["execution_interrupted", "status", "executing"]
    data = frames[-3]["data"]
    assert (data["node_id"], data["node_type"]) == ("3", "KSampler")
    assert "3" not in data["executed"] and "39" in data["executed"]
    entry = (await get_json(http, sim, f"/history/{running['prompt_id']}"))[running["prompt_id"]]
    assert entry["status"]["status_str"] == "error"
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"
    frames = await ws.until_done(pending["prompt_id"])
    assert "execution_success" in types(frames)


async def test_queue_front_delete_and_clear(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    ws = await connect(http, sim, "c11")
    _, a = await post(http, sim, {"prompt": qwen(steps=400, seed=31), "client_id": "c11"})
    await ws.until(lambda f: f["type"] == "progress")
    ids = {}
    for name in "BCE":
        _, ids[name] = await post(http, sim, {"prompt": basic(color=ord(name), prefix=f"q_{name}"), "client_id": "c11"})
    _, ids["D"] = await post(http, sim, {"prompt": basic(color=4, prefix="q_D"), "client_id": "c11", "front": True})
    assert ids["D"]["number"] == -4
    queue = await get_json(http, sim, "/queue")
    assert [item[0] for item in queue["queue_pending"]] == [-4, 1, 3, 2]
    assert len(queue["queue_running"][0]) == 5

    async with http.post(f"{sim.url}/queue", json={"delete": [ids["C"]["prompt_id"], "unknown"]}) as resp:
        assert resp.status == 200 and await resp.read() == b""
    async with http.post(f"{sim.url}/interrupt") as resp:
        assert resp.status == 200
    done = []
    for name in "DBE":
        frames = await ws.until_done(ids[name]["prompt_id"])
        done.append(name)
        assert not any(
            f["type"] == "execution_start" and f["data"]["prompt_id"] == ids["C"]["prompt_id"] for f in frames
        )
    assert done == ["D", "B", "E"]
    assert await get_json(http, sim, f"/history/{ids['C']['prompt_id']}") == {}
    assert (await get_json(http, sim, f"/history/{a['prompt_id']}"))[a["prompt_id"]]["status"]["status_str"] == "error"

    _, f = await post(http, sim, {"prompt": qwen(steps=400, seed=32), "client_id": "c11"})
    await ws.until(lambda fr: fr["type"] == "progress")
    _, g = await post(http, sim, {"prompt": basic(color=99), "client_id": "c11"})
    async with http.post(f"{sim.url}/queue", json={"clear": True}):
        pass
    queue = await get_json(http, sim, "/queue")
    assert queue["queue_pending"] == [] and queue["queue_running"][0][1] == f["prompt_id"]
    async with http.post(f"{sim.url}/interrupt", json={}):
        pass
    await ws.until_done(f["prompt_id"])

    history = await get_json(http, sim, "/history?max_items=2")
    assert list(history) == [ids["E"]["prompt_id"], f["prompt_id"]]
    async with http.post(f"{sim.url}/history", json={"delete": [f["prompt_id"]]}) as resp:
        assert await resp.read() == b""
    assert await get_json(http, sim, f"/history/{f['prompt_id']}") == {}
    assert g["prompt_id"] not in await get_json(http, sim, "/history")


async def test_view_error_codes_range_and_head(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    ws = await connect(http, sim, "cv")
    _, body = await post(http, sim, {"prompt": basic(prefix="sub/pic"), "client_id": "cv"})
    await ws.until_done(body["prompt_id"])
    cases = {
        "filename=nope.png&type=output": 404,
        "filename=../secret.png&type=output": 400,
        "filename=x.png&type=bogus": 400,
        "filename=x.png&subfolder=../../etc&type=output": 403,
        "type=output": 404,
    }
    for query, code in cases.items():
        async with http.get(f"{sim.url}/view?{query}") as resp:
            assert resp.status == code, query
            assert await resp.read() == b""
    url = f"{sim.url}/api/view?filename=pic_00001_.png&subfolder=sub&type=output"
    async with http.get(url, headers={"Range": "bytes=0-7"}) as resp:
        assert resp.status == 206 and await resp.read() == b"\x89PNG\r\n\x1a\n"
    async with http.head(url) as resp:
        assert resp.status == 200 and int(resp.headers["Content-Length"]) > 8
    async with http.get(url + "&channel=a") as resp:
        assert resp.status == 200 and resp.headers["Content-Type"] == "image/png"


async def test_routing_without_client_id(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    observer = await connect(http, sim, "observer")
    _, body = await post(http, sim, {"prompt": qwen(steps=3, seed=41)})
    frames = await observer.until(
        lambda f: f["type"] == "status" and f["data"]["status"]["exec_info"]["queue_remaining"] == 0
    )
    kinds = set(types(frames))
    assert {"progress_state", "progress", "status"} == kinds
    assert all(f["data"]["prompt_id"] == body["prompt_id"] for f in frames if f["type"] == "progress")

    await post(http, sim, {"prompt": qwen(steps=3, seed=42), "client_id": "someone-else"})
    frames = await observer.until(
        lambda f: f["type"] == "status" and f["data"]["status"]["exec_info"]["queue_remaining"] == 0
    )
    assert set(types(frames)) == {"status"}


async def test_reconnect_gets_current_node(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    first = await connect(http, sim, "rc")
    _, body = await post(http, sim, {"prompt": qwen(steps=400, seed=51), "client_id": "rc"})
    await first.until(lambda f: f["type"] == "progress")
    await first.ws.close()
    second = await connect(http, sim, "rc")
    assert second.frames[0]["data"]["sid"] == "rc"
    assert await second.next() == {"type": "executing", "data": {"node": "3"}}
    async with http.post(f"{sim.url}/interrupt", json={"prompt_id": body["prompt_id"]}):
        pass
    await second.until_done(body["prompt_id"])


async def test_generated_sid_feature_flags_and_websocket_images(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    ws = await http.ws_connect(f"{sim.url}/ws")
    await ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
    modern = Socket(ws)
    hello = await modern.next()
    sid = hello["data"]["sid"]
    assert len(sid) == 32
    flags = await modern.next()
    assert flags["type"] == "feature_flags" and flags["data"]["supports_preview_metadata"] is True
    legacy = await connect(http, sim, "legacy")
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 3, "color": 0xFF00FF}},
        "2": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}},
    }
    _, body = await post(http, sim, {"prompt": prompt, "client_id": sid})
    frames = await modern.until_done(body["prompt_id"])
    assert types(frames)[-13:] == [
        *(["progress_state", "binary:4", "progress"] * 3),
        "progress_state",
        "execution_success",
        "status",
        "executing",
    ]
    binaries = [f for f in frames if isinstance(f, bytes)]
    assert len(binaries) == 3 and all(b[:4] == b"\x00\x00\x00\x04" for b in binaries)
    meta_len = int.from_bytes(binaries[0][4:8], "big")
    assert json.loads(binaries[0][8 : 8 + meta_len])["image_type"] == "image/png"
    assert binaries[0][8 + meta_len :].startswith(b"\x89PNG")
    assert [f["data"]["value"] for f in frames if isinstance(f, dict) and f["type"] == "progress"] == [0, 1, 2]
    assert (await get_json(http, sim, f"/history/{body['prompt_id']}"))[body["prompt_id"]]["outputs"] == {}

    _, body = await post(http, sim, {"prompt": prompt, "client_id": "legacy"})
    frames = await legacy.until_done(body["prompt_id"])
    binaries = [f for f in frames if isinstance(f, bytes)]
    assert len(binaries) == 3 and all(b[:8] == b"\x00\x00\x00\x01\x00\x00\x00\x02" for b in binaries)
    assert types(frames).index("progress") < types(frames).index("binary:1")
    await ws.close()


async def test_text_frames_are_broadcast(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    owner, other = await connect(http, sim, "t-owner"), await connect(http, sim, "t-other")
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 96, "height": 64, "batch_size": 2, "color": 1}},
        "2": {"class_type": "GetImageSize", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
    }
    _, body = await post(http, sim, {"prompt": prompt, "client_id": "t-owner"})
    frames = await owner.until_done(body["prompt_id"])
    executed = next(f for f in frames if isinstance(f, dict) and f["type"] == "executed")
    assert executed["data"]["output"] == {"text": ["96"]}
    text = next(f for f in await other.quiet(0.3) if isinstance(f, bytes))
    assert text == b"\x00\x00\x00\x03\x00\x00\x00\x012" + b"width: 96, height: 64\n batch size: 2"


async def test_qwen_render_is_deterministic(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    ws = await connect(http, sim, "qd")
    names = []
    for prefix, seed in (("a", 7), ("b", 7), ("c", 8)):
        _, body = await post(http, sim, {"prompt": qwen(seed=seed, prefix=prefix, size=1328), "client_id": "qd"})
        frames = await ws.until_done(body["prompt_id"])
        names.append(next(f for f in frames if f["type"] == "executed")["data"]["output"]["images"][0]["filename"])
    pictures = [(sim.simulator.config.out / n).read_bytes() for n in names]
    assert int.from_bytes(pictures[0][16:20], "big") == 1328
    idat = [p[p.index(b"IDAT") :] for p in pictures]
    assert idat[0] == idat[1] and idat[0] != idat[2]


async def test_video_output(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    ws = await connect(http, sim, "vid")
    prompt = graph("wan22_t2v_5b_api.json")
    prompt["55"]["inputs"].update(width=320, height=192, length=9)
    prompt["3"]["inputs"]["steps"] = 2
    prompt["60"] = {
        "class_type": "SaveAnimatedPNG",
        "inputs": {"images": ["8", 0], "filename_prefix": "apng", "fps": 12.0, "compress_level": 4},
    }
    _, body = await post(http, sim, {"prompt": prompt, "client_id": "vid"})
    frames = await ws.until_done(body["prompt_id"])
    assert "execution_success" in types(frames)
    outputs = (await get_json(http, sim, f"/history/{body['prompt_id']}"))[body["prompt_id"]]["outputs"]
    assert outputs["58"] == {
        "images": [{"filename": "ComfyUI_00001_.mp4", "subfolder": "video", "type": "output"}],
        "animated": [True],
    }
    assert outputs["60"]["animated"] == [True] and outputs["60"]["images"][0]["filename"] == "apng_00001_.png"
    async with http.get(f"{sim.url}/view?filename=ComfyUI_00001_.mp4&subfolder=video&type=output") as resp:
        assert resp.status == 200 and resp.headers["Content-Type"] == "video/mp4"
        assert (await resp.read())[4:8] == b"ftyp"
    async with http.get(
        f"{sim.url}/view?filename=ComfyUI_00001_.mp4&subfolder=video&type=output&preview=webp;50"
    ) as resp:
        assert resp.status == 500


async def test_upload_and_load_image(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    async def upload(content: bytes, **fields: str) -> tuple[int, Any]:
        form = aiohttp.FormData()
        form.add_field("image", content, filename="up.png", content_type="image/png")
        for key, value in fields.items():
            form.add_field(key, value)
        async with http.post(f"{sim.url}/upload/image", data=form) as resp:
            return resp.status, (await resp.json() if resp.status == 200 else None)

    png = render.encode_png(40, 30, render.Frame.solid(1))
    assert await upload(png) == (200, {"name": "up.png", "subfolder": "", "type": "input"})
    assert await upload(png) == (200, {"name": "up.png", "subfolder": "", "type": "input"})
    assert await upload(png + b"x") == (200, {"name": "up (1).png", "subfolder": "", "type": "input"})
    assert await upload(png + b"x", overwrite="true") == (200, {"name": "up.png", "subfolder": "", "type": "input"})
    assert await upload(png, subfolder="sub") == (200, {"name": "up.png", "subfolder": "sub", "type": "input"})
    async with http.post(f"{sim.url}/upload/image", data={"type": "input"}) as resp:
        assert resp.status == 400
    info = await get_json(http, sim, "/object_info/LoadImage")
    assert info["LoadImage"]["input"]["required"]["image"][0] == ["up (1).png", "up.png"]

    ws = await connect(http, sim, "up")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "sub/up.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "loaded"}},
    }
    _, body = await post(http, sim, {"prompt": prompt, "client_id": "up"})
    await ws.until_done(body["prompt_id"])
    saved = (sim.simulator.config.out / "loaded_00001_.png").read_bytes()
    assert int.from_bytes(saved[16:20], "big") == 40


async def test_introspection(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    stats = await get_json(http, sim, "/system_stats")
    assert stats["system"]["comfyui_version"] == "0.33.0"
    assert stats["system"]["deploy_environment"] == "vibewave-comfyui-simulator"
    assert (await get_json(http, sim, "/api/features"))["max_upload_size"] == 104857600
    assert await get_json(http, sim, "/object_info/NoSuchNode") == {}
    everything = await get_json(http, sim, "/object_info")
    assert {"KSampler", "SaveImage", "UNETLoader", "SaveVideo"} <= set(everything)
    unet = everything["UNETLoader"]["input"]["required"]["unet_name"][0]
    assert "qwen_image_fp8_e4m3fn.safetensors" in unet
    assert "Qwen-Image-Lightning-8steps-V1.0.safetensors" in await get_json(http, sim, "/models/loras")
    async with http.get(f"{sim.url}/models/nope") as resp:
        assert resp.status == 404
    async with http.get(f"{sim.url}/ws") as resp:
        assert resp.status == 400


async def test_crash_fault_exits_the_process(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    exits: list[int] = []
    sim.simulator.worker.exit_process = exits.append
    async with http.post(
        f"{sim.url}/vibewave-sim/faults", json={"crash": {"node": "KSampler", "step": 2, "exit_code": 9, "times": 1}}
    ):
        pass
    ws = await connect(http, sim, "crash")
    _, body = await post(http, sim, {"prompt": qwen(seed=61), "client_id": "crash"})
    await ws.until_done(body["prompt_id"])
    assert exits == [9]
    assert (await get_json(http, sim, "/vibewave-sim/faults"))["crash"]["times"] == 0


async def test_progress_is_throttled_like_033(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{sim.url}/vibewave-sim/faults", json={"progress_throttle": 0.1, "step_time": 0.02}):
        pass
    ws = await connect(http, sim, "thr")
    _, body = await post(http, sim, {"prompt": qwen(steps=20, seed=71), "client_id": "thr"})
    frames = await ws.until_done(body["prompt_id"])
    values = [f["data"]["value"] for f in frames if f["type"] == "progress"]
    assert values[0] == 1 and values[-1] == 20 and len(values) < 20


async def test_jobs_api(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    ws = await connect(http, sim, "jobs")
    _, done = await post(http, sim, {"prompt": basic(prefix="job"), "client_id": "jobs"})
    await ws.until_done(done["prompt_id"])
    job = await get_json(http, sim, f"/api/jobs/{done['prompt_id']}")
    assert list(job) == [
        "id",
        "status",
        "priority",
        "create_time",
        "execution_start_time",
        "execution_end_time",
        "outputs_count",
        "previewable_outputs_count",
        "preview_output",
        "outputs",
        "execution_status",
        "workflow",
    ]
    assert job["status"] == "completed" and job["outputs_count"] == 1
    assert job["preview_output"] == {
        "filename": "job_00001_.png",
        "subfolder": "",
        "type": "output",
        "nodeId": "2",
        "mediaType": "images",
    }

    _, running = await post(http, sim, {"prompt": qwen(steps=400, seed=81), "client_id": "jobs"})
    await ws.until(lambda f: f["type"] == "progress")
    _, pending = await post(http, sim, {"prompt": basic(color=5), "client_id": "jobs"})
    listing = await get_json(http, sim, "/api/jobs?status=pending,in_progress")
    assert [(j["id"], j["status"]) for j in listing["jobs"]] == [
        (pending["prompt_id"], "pending"),
        (running["prompt_id"], "in_progress"),
    ]
    async with http.post(f"{sim.url}/api/jobs/{pending['prompt_id']}/cancel") as resp:
        assert await resp.json() == {"cancelled": True}
    async with http.post(f"{sim.url}/api/jobs/{pending['prompt_id']}/cancel") as resp:
        assert await resp.json() == {"cancelled": False}
    async with http.post(f"{sim.url}/api/jobs/cancel", json={"job_ids": [running["prompt_id"]]}) as resp:
        assert await resp.json() == {"cancelled": True}
    await ws.until_done(running["prompt_id"])
    assert (await get_json(http, sim, f"/api/jobs/{running['prompt_id']}"))["status"] == "cancelled"
    async with http.get(f"{sim.url}/api/jobs/{pending['prompt_id']}") as resp:
        assert resp.status == 404 and await resp.json() == {"error": "Job not found"}
    async with http.get(f"{sim.url}/api/jobs?status=bogus") as resp:
        assert resp.status == 400
    async with http.post(f"{sim.url}/api/jobs/cancel", json={"job_ids": ["not-a-uuid"]}) as resp:
        assert resp.status == 400 and (await resp.json())["invalid_ids"] == ["not-a-uuid"]
    page = await get_json(http, sim, "/api/jobs?limit=1")
    assert page["pagination"] == {"offset": 0, "limit": 1, "total": 2, "has_more": True}


async def test_duplicate_client_id_quirk(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    old = await connect(http, sim, "dup")
    new = await connect(http, sim, "dup")
    await old.ws.close()
    await asyncio.sleep(0.05)
    _, body = await post(http, sim, {"prompt": basic(color=77), "client_id": "dup"})
    frames = await new.quiet(0.3)
    assert set(types(frames)) <= {"status"}
    assert body["prompt_id"] in await get_json(http, sim, "/history")


async def test_new_seed_reuses_cached_loaders(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    ws = await connect(http, sim, "seeds")
    _, first = await post(http, sim, {"prompt": qwen(seed=91), "client_id": "seeds"})
    await ws.until_done(first["prompt_id"])
    _, second = await post(http, sim, {"prompt": qwen(seed=92), "client_id": "seeds"})
    frames = await ws.until_done(second["prompt_id"])
    cached = next(f for f in frames if f["type"] == "execution_cached")["data"]["nodes"]
    assert sorted(cached) == sorted(["37", "38", "39", "66", "6", "7", "58", "73"])
    executing = [f["data"]["node"] for f in frames if f["type"] == "executing"]
    assert executing == ["3", "8", "60", None]


async def test_slow_start_and_http_delay(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    running = await serve(SimConfig(port=0, base_dir=tmp_path, startup_delay=0.3))
    try:
        assert loop.time() - started >= 0.3
        async with http.post(f"{running.url}/vibewave-sim/faults", json={"http_delay": 0.2}):
            pass
        before = loop.time()
        assert await get_json(http, running, "/prompt") == {"exec_info": {"queue_remaining": 0}}
        assert loop.time() - before >= 0.2
    finally:
        await running.close()


async def test_save_animated_webp(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    """Shape of transcript 22 (prompt 2): history under `images` with `animated`, /view as image/webp."""
    ws = await connect(http, sim, "webp")
    prompt = {
        "0": {"class_type": "EmptyImage", "inputs": {"width": 256, "height": 192, "batch_size": 12, "color": 1}},
        "1": {"class_type": "ImageAddNoise", "inputs": {"image": ["0", 0], "seed": 42, "strength": 0.5}},
        "5": {
            "class_type": "SaveAnimatedWEBP",
            "inputs": {
                "images": ["1", 0],
                "filename_prefix": "golden_anim",
                "fps": 12.0,
                "lossless": False,
                "quality": 80,
                "method": "default",
            },
        },
        "6": {
            "class_type": "SaveAnimatedWEBP",
            "inputs": {
                "images": ["0", 0],
                "filename_prefix": "flat",
                "fps": 6.0,
                "lossless": True,
                "quality": 80,
                "method": "fastest",
            },
        },
    }
    _, body = await post(http, sim, {"prompt": prompt, "client_id": "webp"})
    frames = await ws.until_done(body["prompt_id"])
    anim = {"images": [{"filename": "golden_anim_00001_.webp", "subfolder": "", "type": "output"}], "animated": [True]}
    executed = {f["data"]["node"]: f["data"]["output"] for f in frames if f["type"] == "executed"}
    assert executed["5"] == anim
    entry = (await get_json(http, sim, f"/history/{body['prompt_id']}"))[body["prompt_id"]]
    assert entry["outputs"]["5"] == anim
    assert entry["outputs"]["6"]["animated"] == [True]  # 12 identical frames: still image, still "animated"

    async with http.get(f"{sim.url}/view?filename=golden_anim_00001_.webp&subfolder=&type=output") as resp:
        assert resp.status == 200 and resp.headers["Content-Type"] == "image/webp"
        assert resp.headers["Content-Disposition"] == 'filename="golden_anim_00001_.webp"'
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        data = await resp.read()
    chunks = webp.read_chunks_webp(data)
    kinds = [kind for kind, _ in chunks]
    assert kinds == [b"VP8X", b"ANIM", *[b"ANMF"] * 12, b"EXIF"]
    assert all(payload[16:20] == b"VP8L" for kind, payload in chunks if kind == b"ANMF")
    assert all(int.from_bytes(payload[12:15], "little") == 83 for kind, payload in chunks if kind == b"ANMF")
    assert b"prompt:" in chunks[-1][1] and b"vibewave-comfyui-simulator" in chunks[-1][1]
    flat = webp.read_chunks_webp((sim.simulator.config.out / "flat_00001_.webp").read_bytes())
    assert [kind for kind, _ in flat] == [b"VP8X", b"VP8L", b"EXIF"]
