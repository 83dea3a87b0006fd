"""`python -m vibewave.runpod_emu` as a real process: banner, env configuration, pods' containers (with the
processes they started) die with it."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.runpod_emu.helpers import wait_for

pytestmark = pytest.mark.integration

BANNER = re.compile(rb"EMULATOR of RunPod.*listening on http://127\.0\.0\.1:(\d+)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


# A container whose main process starts a child of its own, as a bootstrap starts ComfyUI.
FORKING = (
    "python3 -c 'import subprocess, sys, time; "
    'child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]); '
    "print(child.pid, flush=True); time.sleep(600)'"
)
CREATE = """mutation($input: PodFindAndDeployOnDemandInput!) { podFindAndDeployOnDemand(input: $input) { id } }"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
async def test_cli_serves_and_its_pods_die_with_it(tmp_path: Path, sig: signal.Signals) -> None:
    """SIGTERM shuts down cleanly; even after SIGKILL no process of any pod's container outlives the emulator."""
    env = {**os.environ, "VIBEWAVE_RUNPOD_EMU_BOOT_DELAY": "0", "VIBEWAVE_RUNPOD_EMU_API_KEYS": "cli-key"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vibewave.runpod_emu",
        "--port",
        "0",
        "--work-dir",
        str(tmp_path),
        "--capacity-error",
        "1",
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert proc.stderr is not None
    try:
        while True:
            line = await asyncio.wait_for(proc.stderr.readline(), 10)
            assert line, "emulator exited before listening"
            match = BANNER.search(line)
            if match:
                break
        url = f"http://127.0.0.1:{int(match.group(1))}"
        headers = {"Authorization": "Bearer cli-key"}
        create = {
            "query": 'mutation { podFindAndDeployOnDemand(input: {name: "c", imageName: "runpod/comfyui", '
            'gpuTypeId: "NVIDIA GeForce RTX 3090", ports: "8188/http"}) { id } }'
        }
        forking = {"name": "f", "imageName": "runpod/pytorch:2.1.0", "gpuTypeId": "NVIDIA GeForce RTX 3090"}
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{url}/graphql", json=create, headers=headers) as resp:
                assert (await resp.json())["errors"][0]["message"].startswith("There are no longer any instances")
            async with http.post(f"{url}/graphql", json=create, headers=headers) as resp:
                pod_id = (await resp.json())["data"]["podFindAndDeployOnDemand"]["id"]
            variables = {"input": forking | {"dockerArgs": FORKING}}
            async with http.post(f"{url}/graphql", json={"query": CREATE, "variables": variables}, headers=headers):
                pass

            async def containers() -> dict[str, dict[str, Any]]:
                async with http.get(f"{url}/emulator/state") as resp:
                    return {p["id"]: p["container"] for p in (await resp.json())["pods"]}

            async def comfy_pid() -> int | None:
                pod = (await containers())[pod_id]
                async with http.get(f"{url}/proxy/{pod_id}-8188/system_stats") as resp:
                    return int(pod["pid"]) if resp.status == 200 else None

            async def forked_pids() -> list[int] | None:
                (forked,) = [c for i, c in (await containers()).items() if i != pod_id]
                printed = (await asyncio.to_thread(Path(forked["log"]).read_text)).split() if forked["log"] else []
                return [int(forked["pid"]), int(printed[0])] if printed else None

            sim_pid = await wait_for(comfy_pid, timeout=15)
            pids = [sim_pid, *await wait_for(forked_pids, timeout=15)]
        assert all(_alive(pid) for pid in pids)
        proc.send_signal(sig)
        assert await asyncio.wait_for(proc.wait(), 10) == (0 if sig == signal.SIGTERM else -sig)
        await wait_for(lambda: not any(_alive(pid) for pid in pids), timeout=5)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
