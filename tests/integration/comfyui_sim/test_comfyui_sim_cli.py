"""`python -m vibewave.comfyui_sim` as a real process: fast start, env configuration, a real crash."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

pytestmark = pytest.mark.integration

GRAPHS = Path(__file__).parents[2] / "unit" / "comfyui_sim" / "graphs"
BANNER = re.compile(rb"listening on http://127\.0\.0\.1:(\d+)")


@asynccontextmanager
async def simulator_process(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str, float]]:
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vibewave.comfyui_sim",
        "--port",
        "0",
        "--base-dir",
        str(tmp_path),
        *args,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    assert proc.stderr is not None
    try:
        while True:
            line = await asyncio.wait_for(proc.stderr.readline(), 10)
            assert line, "simulator exited before listening"
            match = BANNER.search(line)
            if match:
                break
        url = f"http://127.0.0.1:{int(match.group(1))}"
        yield proc, url, time.monotonic() - started
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()


async def test_starts_fast_and_reads_env(tmp_path: Path) -> None:
    env = {
        "VIBEWAVE_SIM_STEP_TIME": "0.02",
        "VIBEWAVE_SIM_OOM_NODE": "VAEDecode",
        "VIBEWAVE_SIM_MODELS_PRESENT": "1",
        "VIBEWAVE_SIM_NODE_COST_SCALE": "0.5",
    }
    async with simulator_process(tmp_path, env=env) as (_, url, startup), aiohttp.ClientSession() as http:
        async with http.get(f"{url}/system_stats") as resp:
            assert resp.status == 200
            assert (await resp.json())["system"]["deploy_environment"] == "vibewave-comfyui-simulator"
        assert startup < 3.0
        async with http.get(f"{url}/vibewave-sim/faults") as resp:
            faults = await resp.json()
        assert faults["step_time"] == 0.02 and faults["oom"]["node"] == "VAEDecode"
        assert faults["models_present"] is True and faults["node_cost_scale"] == 0.5


async def test_version_from_env_and_flags_win(tmp_path: Path) -> None:
    env = {"VIBEWAVE_SIM_COMFYUI_VERSION": "0.3.64", "VIBEWAVE_SIM_MODELS_PRESENT": "1"}
    args = ("--no-models-present",)
    async with simulator_process(tmp_path, *args, env=env) as (_, url, _), aiohttp.ClientSession() as http:
        async with http.get(f"{url}/system_stats") as resp:
            assert (await resp.json())["system"]["comfyui_version"] == "0.3.64"
        async with http.get(f"{url}/vibewave-sim/faults") as resp:
            assert (await resp.json())["models_present"] is False


async def test_crash_fault_kills_the_process(tmp_path: Path) -> None:
    args = ("--crash-node", "KSampler", "--crash-step", "2", "--step-time", "0.01", "--crash-exit-code", "137")
    args += ("--models-present",)
    async with simulator_process(tmp_path, *args) as (proc, url, _), aiohttp.ClientSession() as http:
        prompt = json.loads((GRAPHS / "qwen_image_lightning4_api.json").read_text())
        prompt["58"]["inputs"].update(width=64, height=64)
        async with http.ws_connect(f"{url}/ws?clientId=cli") as ws:
            async with http.post(f"{url}/prompt", json={"prompt": prompt, "client_id": "cli"}) as resp:
                assert resp.status == 200
            seen = []
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                seen.append(json.loads(msg.data)["type"])
        assert await asyncio.wait_for(proc.wait(), 10) == 137
        assert "progress" in seen and "execution_error" not in seen and "execution_success" not in seen
