"""A pod's container runs what a real pod would: its start command, or its image's CMD (`runpod/pytorch` serves
nothing on 8188). The proxy reaches what listens on the container's mapped port with the request unchanged,
and storage behaves like RunPod's: the container disk goes on stop, a network volume stays and is shared."""

from __future__ import annotations

import asyncio
import io
import os
import shlex
import sys
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from tests.integration.runpod_emu.helpers import wait_for
from vibewave.runpod_emu import RunningEmulator, container

pytestmark = pytest.mark.integration

AUTH = {"Authorization": "Bearer test-key"}
PYTORCH = "runpod/pytorch:2.1.0-py3.10-cuda11.8.0-devel-ubuntu22.04"
VOLUME = "agv6w2qcg7"  # seeded, in EU-RO-1
CREATE = """mutation($input: PodFindAndDeployOnDemandInput!) { podFindAndDeployOnDemand(input: $input) { id } }"""

# What a test's start command runs: an HTTP server on the container's mapped port that echoes what it got and
# reads and writes files below /workspace.
SERVER = """\
import http.server, json, os, sys
from pathlib import Path

workspace = Path(os.environ["VIBEWAVE_WORKSPACE"])


class Handler(http.server.BaseHTTPRequestHandler):
    def answer(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path.startswith("/files/"):
            path = workspace / self.path[len("/files/"):]
            return self.answer(200, path.read_bytes()) if path.is_file() else self.answer(404, b"")
        seen = {"path": self.path, "authorization": self.headers.get("Authorization"),
                "host": self.headers.get("Host"), "env": dict(os.environ), "executable": sys.executable,
                "cwd": os.getcwd()}
        self.answer(200, json.dumps(seen).encode())

    def do_PUT(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        (workspace / self.path[len("/files/"):]).write_bytes(body)
        self.answer(201, b"")

    def log_message(self, *args):
        pass


address = (os.environ["VIBEWAVE_LISTEN_HOST"], int(os.environ["VIBEWAVE_LISTEN_PORT"]))
http.server.ThreadingHTTPServer(address, Handler).serve_forever()
"""


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def server(tmp_path: Path) -> str:
    """The start command that runs SERVER (python3 is the per-pod one on PATH: the emulator's interpreter)."""
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    return f"python3 {shlex.quote(str(script))}"


async def gql(http: aiohttp.ClientSession, emu: RunningEmulator, query: str, variables: dict[str, Any]) -> Any:
    async with http.post(f"{emu.url}/graphql", json={"query": query, "variables": variables}, headers=AUTH) as resp:
        body = await resp.json()
        assert "errors" not in body, body
        return body["data"]


async def create(http: aiohttp.ClientSession, emu: RunningEmulator, **extra: Any) -> str:
    inp = {"name": "c", "imageName": PYTORCH, "gpuTypeId": "NVIDIA GeForce RTX 4090", "cloudType": "SECURE"}
    inp |= {"ports": "8188/http,22/tcp"} | extra
    return str((await gql(http, emu, CREATE, {"input": inp}))["podFindAndDeployOnDemand"]["id"])


async def lifecycle(http: aiohttp.ClientSession, emu: RunningEmulator, operation: str, pod_id: str) -> None:
    kind = {"podStop": "PodStopInput", "podResume": "PodResumeInput", "podTerminate": "PodTerminateInput"}[operation]
    selection = "" if operation == "podTerminate" else " { id }"
    await gql(http, emu, f"mutation($i: {kind}!) {{ {operation}(input: $i){selection} }}", {"i": {"podId": pod_id}})


async def described(http: aiohttp.ClientSession, emu: RunningEmulator, pod_id: str) -> dict[str, Any]:
    async with http.get(f"{emu.url}/emulator/state") as resp:
        pods = (await resp.json())["pods"]
    return dict(next(p for p in pods if p["id"] == pod_id))


async def status(http: aiohttp.ClientSession, url: str | URL, **kwargs: Any) -> int:
    async with http.get(url, **kwargs) as resp:
        return resp.status


async def serving(http: aiohttp.ClientSession, emu: RunningEmulator, pod_id: str, path: str = "/echo") -> None:
    async def up() -> bool:
        return await status(http, emu.proxy_url(pod_id) + path) == 200

    await wait_for(up, timeout=15)


async def files(http: aiohttp.ClientSession, emu: RunningEmulator, pod_id: str, name: str) -> tuple[int, bytes]:
    async with http.get(f"{emu.proxy_url(pod_id)}/files/{name}") as resp:
        return resp.status, await resp.read()


async def test_the_default_image_without_start_command_serves_nothing(
    http: aiohttp.ClientSession, emu: RunningEmulator
) -> None:
    pod_id = await create(http, emu)
    unknown = await create(http, emu, imageName="vibewave/comfyui:0.33")

    async def up(pod: str) -> dict[str, Any] | None:
        state = await described(http, emu, pod)
        return state if state["runtime"] and state["container"]["running"] else None

    state = await wait_for(lambda: up(pod_id), timeout=15)
    assert state["desiredStatus"] == "RUNNING"
    box = state["container"]
    assert (box["runs"], box["command"], box["listening"]) == ("image CMD", ["/start.sh"], False)
    assert "nothing serves 8188" in box["imageDescription"] and "nothing listens on 8188" in box["summary"]
    assert "nothing serves 8188" in await asyncio.to_thread(Path(box["log"]).read_text)
    assert await status(http, emu.proxy_url(pod_id) + "/system_stats") == 502
    async with http.post(f"{emu.url}/emulator/pods/{pod_id}/kill-comfyui") as resp:
        assert resp.status == 404  # nothing to kill on 8188

    other = (await wait_for(lambda: up(unknown), timeout=15))["container"]
    assert other["imageDescription"].startswith("image not in the emulator's catalogue: nothing serves 8188")
    assert await status(http, emu.proxy_url(unknown) + "/") == 502
    assert (await described(http, emu, pod_id))["container"]["crashes"] == 0, "it keeps sleeping"


async def test_a_start_command_serves_through_the_proxy_unchanged(
    http: aiohttp.ClientSession, emu: RunningEmulator, server: str
) -> None:
    pod_id = await create(http, emu, dockerArgs=server, env=[{"key": "COMFY_PROXY_TOKEN", "value": "t0k"}])
    await serving(http, emu, pod_id)
    raw = URL(f"{emu.proxy_url(pod_id)}/echo/a%2Fb?token=x%2By%3D&clientId=c1", encoded=True)
    async with http.get(raw, headers={"Authorization": "Bearer s3cr3t+/="}) as resp:
        seen = await resp.json()
    assert seen["path"] == "/echo/a%2Fb?token=x%2By%3D&clientId=c1"
    assert seen["authorization"] == "Bearer s3cr3t+/=" and seen["host"] == f"{pod_id}-8188.proxy.runpod.net"
    box = (await described(http, emu, pod_id))["container"]
    assert (box["runs"], box["listening"], box["command"][0]) == ("start command", True, "python3")
    env = seen["env"]
    assert env["COMFY_PROXY_TOKEN"] == "t0k" and env["RUNPOD_POD_ID"] == pod_id
    assert env["VIBEWAVE_LISTEN_PORT"] == str(box["port"]) and env["VIBEWAVE_COMFYUI_PORT"] == str(box["comfyuiPort"])
    assert env["VIBEWAVE_WORKSPACE"] == box["workspace"] == seen["cwd"] == box["disk"]
    assert env["VIBEWAVE_COMFYUI_SIMULATOR"] == sys.executable and seen["executable"] == sys.executable
    assert "RUNPOD_VOLUME_ID" not in env

    async with http.post(f"{emu.url}/emulator/pods/{pod_id}/kill-comfyui") as resp:
        assert (await resp.json())["pid"] == box["pid"]  # the server is the container's main process
    await wait_for(lambda: _restarted(http, emu, pod_id), timeout=15)
    await serving(http, emu, pod_id)


async def _restarted(http: aiohttp.ClientSession, emu: RunningEmulator, pod_id: str) -> bool:
    box = (await described(http, emu, pod_id))["container"]
    return bool(box["crashes"] == 1 and box["starts"] == 2 and box["lastExitCode"] == -9)


async def test_container_disk_is_wiped_and_a_network_volume_is_kept_and_shared(
    http: aiohttp.ClientSession, emu: RunningEmulator, server: str
) -> None:
    on_volume = await create(http, emu, dockerArgs=server, networkVolumeId=VOLUME)
    body = {
        "name": "rest",
        "image": PYTORCH,
        "args": server,
        "gpu": {"id": "NVIDIA GeForce RTX 4090", "count": 1},
        "ports": ["8188/http"],
        "mounts": {"network": [{"volumeId": VOLUME, "path": "/workspace"}]},
    }
    async with http.post(f"{emu.url}/v2/pods", json=body, headers=AUTH) as resp:
        rest_pod = await resp.json()
    assert rest_pod["dataCenterId"] == "EU-RO-1"  # the volume's data center
    on_disk = await create(http, emu, dockerArgs=server)
    for pod_id in (on_volume, rest_pod["id"], on_disk):
        await serving(http, emu, pod_id)
    async with http.get(f"{emu.url}/v2/pods/{on_volume}", headers=AUTH) as resp:
        assert (await resp.json())["dataCenterId"] == "EU-RO-1"

    async with http.put(f"{emu.proxy_url(on_volume)}/files/shared.txt", data=b"models") as resp:
        assert resp.status == 201
    assert await files(http, emu, rest_pod["id"], "shared.txt") == (200, b"models")
    async with http.put(f"{emu.proxy_url(on_disk)}/files/scratch.txt", data=b"gone soon") as resp:
        assert resp.status == 201
    volume_box = (await described(http, emu, on_volume))["container"]
    assert volume_box["storage"] == f"network volume {VOLUME}"
    async with http.get(f"{emu.proxy_url(on_volume)}/echo") as resp:
        assert (await resp.json())["env"]["RUNPOD_VOLUME_ID"] == VOLUME

    for pod_id in (on_volume, on_disk):
        await lifecycle(http, emu, "podStop", pod_id)
        await lifecycle(http, emu, "podResume", pod_id)
    for pod_id in (on_volume, on_disk):
        await serving(http, emu, pod_id)
    assert await files(http, emu, on_volume, "shared.txt") == (200, b"models")
    assert (await files(http, emu, on_disk, "scratch.txt"))[0] == 404, "RunPod wipes the container disk"

    async with http.put(f"{emu.proxy_url(on_disk)}/files/scratch.txt", data=b"again") as resp:
        assert resp.status == 201
    async with http.post(f"{emu.url}/v2/pods/{on_disk}/action", json={"action": "restart"}, headers=AUTH) as resp:
        assert resp.status == 200
    await serving(http, emu, on_disk)
    assert (await files(http, emu, on_disk, "scratch.txt"))[0] == 404, "a restart wipes it too"

    for pod_id in (on_volume, rest_pod["id"]):
        await lifecycle(http, emu, "podTerminate", pod_id)
    await emu.emulator.settle()
    volume_dir = Path(volume_box["workspace"])
    assert await asyncio.to_thread((volume_dir / "shared.txt").read_bytes) == b"models", "the volume stays"
    await gql(
        http, emu, "mutation($i: DeleteNetworkVolumeInput) { deleteNetworkVolume(input: $i) }", {"i": {"id": VOLUME}}
    )
    await emu.emulator.settle()
    assert not await asyncio.to_thread(volume_dir.exists)


async def test_runpod_comfyui_ignores_a_start_command_and_a_failing_command_restarts(
    http: aiohttp.ClientSession, emu: RunningEmulator
) -> None:
    comfy = await create(http, emu, imageName="runpod/comfyui:latest", dockerArgs="python3 -c 'raise SystemExit(3)'")
    missing = await create(http, emu, dockerArgs="no-such-program --serve")
    await serving(http, emu, comfy, "/system_stats")
    box = (await described(http, emu, comfy))["container"]
    assert box["runs"] == "image ENTRYPOINT" and box["command"][:2] == ["/start.sh", "python3"]

    async def failed_twice() -> dict[str, Any] | None:
        state = (await described(http, emu, missing))["container"]
        return state if state["crashes"] >= 2 else None

    failed = await wait_for(failed_twice, timeout=15)
    assert failed["lastExitCode"] == 127 and failed["running"] is False and failed["starts"] == 0
    assert "no-such-program" in failed["error"]
    assert "cannot start" in await asyncio.to_thread(Path(failed["log"]).read_text)
    assert await status(http, emu.proxy_url(missing) + "/") == 502


async def test_the_vibewave_pod_image_runs_its_baked_in_bootstrap(
    http: aiohttp.ClientSession, emu: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as pyz:
        pyz.writestr("__main__.py", SERVER)
    monkeypatch.setattr(container, "bootstrap_archive", archive.getvalue)
    pod_id = await create(http, emu, imageName="vibewave/pod:latest")
    await serving(http, emu, pod_id)
    box = (await described(http, emu, pod_id))["container"]
    assert (box["runs"], box["command"]) == ("image CMD", ["python3", "/opt/vibewave/bootstrap.pyz"])
    assert box["process"][0] == "python3"
    assert await asyncio.to_thread(Path(box["process"][1]).read_bytes) == archive.getvalue()
    async with http.get(f"{emu.proxy_url(pod_id)}/echo") as resp:
        env = (await resp.json())["env"]
    assert env["VIBEWAVE_COMFYUI_SIMULATOR"] == sys.executable and env["VIBEWAVE_LISTEN_HOST"] == "127.0.0.1"


def _group(pgid: int) -> set[int]:
    """The live processes of a process group (from /proc)."""
    members = set()
    for entry in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except (OSError, ValueError):
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if entry.isdigit() and int(fields[2]) == pgid and fields[0] != "Z":
            members.add(int(entry))
    return members


async def test_the_container_is_a_process_group_that_dies_and_restarts_whole(
    http: aiohttp.ClientSession, emu: RunningEmulator, server: str
) -> None:
    sleeper = "python3 -c 'import time; time.sleep(600)'"
    pod_id = await create(http, emu, dockerArgs=f"bash -c {shlex.quote(f'{sleeper} & exec {server}')}")
    await serving(http, emu, pod_id)
    first = (await described(http, emu, pod_id))["container"]
    members = await wait_for(lambda: len(_group(first["pid"])) == 2 and _group(first["pid"]), timeout=10)
    async with http.post(f"{emu.url}/emulator/pods/{pod_id}/kill-container") as resp:
        assert (await resp.json())["pid"] == first["pid"]
    await wait_for(lambda: not _group(first["pid"]), timeout=5)
    await wait_for(lambda: _restarted(http, emu, pod_id), timeout=15)
    await serving(http, emu, pod_id)
    second = (await described(http, emu, pod_id))["container"]
    assert second["pid"] not in members and len(await wait_for(lambda: _group(second["pid"]), timeout=5)) == 2

    await lifecycle(http, emu, "podStop", pod_id)
    await emu.emulator.settle()
    assert not _group(second["pid"]), "a stopped pod leaves no process behind"
    async with http.post(f"{emu.url}/emulator/pods/{pod_id}/kill-container") as resp:
        assert resp.status == 404
