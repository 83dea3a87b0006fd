"""Model-free nodes take real time and are not interrupted while they run (transcript 10, both versions)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from vibewave.comfyui_sim.app import RunningSimulator, serve
from vibewave.comfyui_sim.config import Faults, SimConfig
from vibewave.comfyui_sim.costs import blur_seconds

pytestmark = pytest.mark.integration

TRANSCRIPT = Path(__file__).parents[2] / "conformance" / "transcripts" / "10_interrupt_running.json"
BLUR = blur_seconds(1536, 1536, 1, 31)  # ~1.6 s, as the real 0.3.64 took here


def blur_chain() -> dict[str, Any]:
    """EmptyImage 1536x1536 -> 8 x ImageBlur(radius 31) -> SaveImage, exactly as recorded."""
    events = json.loads(TRANSCRIPT.read_text())["events"]
    post = next(e for e in events if e["kind"] == "http" and e["request"]["path"] == "/prompt")
    prompt: dict[str, Any] = post["request"]["json"]["prompt"]
    return prompt


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[RunningSimulator]:
    running = await serve(SimConfig(port=0, base_dir=tmp_path, faults=Faults(step_time=0.01)))
    yield running
    await running.close()


async def test_blur_chain_is_interrupted_after_the_running_node(sim: RunningSimulator) -> None:
    loop = asyncio.get_running_loop()
    seen: list[tuple[float, dict[str, Any]]] = []
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{sim.url}/ws?clientId=blur") as ws:

        async def until(kind: str, node: str | None = None) -> float:
            while True:
                frame = await ws.receive_json(timeout=10)
                seen.append((loop.time(), frame))
                if frame["type"] == kind and (node is None or frame["data"].get("node") == node):
                    return loop.time()

        async with http.post(f"{sim.url}/prompt", json={"prompt": blur_chain(), "client_id": "blur"}) as resp:
            prompt_id = (await resp.json())["prompt_id"]
        first = await until("executing", "10")
        second = await until("executing", "11")
        async with http.post(f"{sim.url}/interrupt", json={"prompt_id": prompt_id}) as resp:
            assert resp.status == 200
        interrupted_at = loop.time()
        stopped = await until("execution_interrupted")
        await until("executing", None)

    # The first blur took its real time; the second ran to its end although interrupted at its start.
    assert second - first == pytest.approx(BLUR, rel=0.2)
    assert stopped - interrupted_at >= BLUR * 0.8
    assert stopped - second == pytest.approx(BLUR, rel=0.2)
    frames = [f for _, f in seen if f["type"] not in ("progress_state", "status")]
    tail = [(f["type"], f["data"].get("node", f["data"].get("node_id"))) for f in frames[-3:]]
    assert tail == [("executing", "12"), ("execution_interrupted", "12"), ("executing", None)]
    data = frames[-2]["data"]
    assert data["node_type"] == "ImageBlur" and set(data["executed"]) == {"1", "10", "11"}


async def test_cost_scale_zero_is_instant(sim: RunningSimulator) -> None:
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{sim.url}/vibewave-sim/faults", json={"node_cost_scale": 0}) as resp:
            assert (await resp.json())["node_cost_scale"] == 0
        async with http.ws_connect(f"{sim.url}/ws?clientId=fast") as ws:
            started = loop.time()
            async with http.post(f"{sim.url}/prompt", json={"prompt": blur_chain(), "client_id": "fast"}) as resp:
                prompt_id = (await resp.json())["prompt_id"]
            while True:
                frame = await ws.receive_json(timeout=10)
                if frame["type"] == "execution_success":
                    break
            assert frame["data"]["prompt_id"] == prompt_id
            assert loop.time() - started < 1.0
