"""A pod on this machine: the real bootstrap archive, started by the real start command, as RunPod runs it.

The environment is what a pod gets (pod-manager's `pod_env`, RunPod's `RUNPOD_*`) plus the overrides a
test needs (ports, workspace, the ComfyUI mode), and nothing of the test's own environment but PATH and
HOME: the bootstrap must not depend on the machine it boots on. `python3` is this machine's Python 3.10
when there is one, like the default image's. The pod runs in a process group of its own, so whatever it
leaves behind can be found (and is killed at the end).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from tests.support.stack import free_port
from tests.unit.pod.interpreters import python310
from vibewave.pod.payload import START_COMMAND, pod_env

T = TypeVar("T")

FAKE_START_SH = """#!/bin/bash
# Stands for runpod/pytorch's /start.sh: says it started, then sleeps for ever, as the real one ends.
echo $$ > {pid_file}
echo "fake /start.sh: Pod Started"
sleep infinity
"""


async def eventually(probe: Callable[[], Awaitable[T | None]], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll `probe` until it returns something other than None (or False), or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def alive(pid: int) -> bool:
    """Is `pid` a live process (a zombie is not)?"""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


class Pod:
    def __init__(
        self,
        root: Path,
        workspace: Path,
        models: list[dict[str, Any]],
        *,
        pod_id: str,
        token: str = "pod-token-" + "k" * 32,
        **env: str,
    ) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.workspace = workspace
        self.pod_id = pod_id
        self.token = token
        self.port = free_port()
        self.comfyui_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.start_sh_pid_file = root / "start.sh.pid"
        start_sh = root / "start.sh"
        start_sh.write_text(FAKE_START_SH.format(pid_file=self.start_sh_pid_file))
        bin_dir = root / "bin"
        bin_dir.mkdir(exist_ok=True)
        if not (bin_dir / "python3").exists():
            (bin_dir / "python3").symlink_to(python310() or sys.executable)
        (root / "tmp").mkdir(exist_ok=True)
        self.env = {
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "HOME": str(root),
            "TMPDIR": str(root / "tmp"),
            **pod_env(token, models),
            "RUNPOD_POD_ID": pod_id,
            "VIBEWAVE_WORKSPACE": str(workspace),
            "VIBEWAVE_LISTEN_HOST": "127.0.0.1",
            "VIBEWAVE_LISTEN_PORT": str(self.port),
            "VIBEWAVE_COMFYUI_PORT": str(self.comfyui_port),
            "VIBEWAVE_START_SH": str(start_sh),
            **env,
        }
        self.log_path = root / "pod.out"
        self.process: subprocess.Popen[bytes] | None = None
        self.session: aiohttp.ClientSession | None = None

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def __aenter__(self) -> Pod:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start(self) -> None:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                shlex.split(START_COMMAND), env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def get(self, path: str, *, token: str | bool | None = True, **kwargs: Any) -> tuple[int, Any]:
        return await self.request("GET", path, token=token, **kwargs)

    async def request(
        self, method: str, path: str, *, token: str | bool | None = True, **kwargs: Any
    ) -> tuple[int, Any]:
        """`(status, body)`: the JSON body when there is one, else the bytes. `token=False`: none sent."""
        assert self.session is not None
        headers = dict(kwargs.pop("headers", {}))
        if token is True:
            headers.update(self.auth)
        elif isinstance(token, str):
            headers["Authorization"] = f"Bearer {token}"
        async with self.session.request(method, self.url + path, headers=headers, **kwargs) as response:
            body = await response.read()
            if response.content_type == "application/json":
                return response.status, json.loads(body)
            return response.status, body

    async def status(self) -> dict[str, Any] | None:
        try:
            code, body = await self.get("/vibewave/status")
        except aiohttp.ClientError:
            return None  # the proxy is not listening yet
        return body if code == 200 else None

    async def wait_phase(self, phase: str, timeout: float = 60) -> dict[str, Any]:
        async def reached() -> dict[str, Any] | None:
            self.check_running()
            status = await self.status()
            if status is not None and status["phase"] == "failed" and phase != "failed":
                raise AssertionError(f"the pod failed: {status['error']}\n{self.output()}")
            return status if status is not None and status["phase"] == phase else None

        return await eventually(reached, timeout, f"phase {phase!r} on pod {self.pod_id}")

    def check_running(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the bootstrap exited with {self.process.returncode}:\n{self.output()}")

    def state_files(self) -> dict[str, str]:
        """Every log and status file the pod wrote under `.vibewave/`, by name."""
        state = self.workspace / ".vibewave"
        return {p.name: p.read_text(errors="replace") for p in state.glob("*") if p.suffix in (".log", ".json")}

    def start_sh_pid(self) -> int:
        return int(self.start_sh_pid_file.read_text())

    async def stop(self, timeout: float = 30) -> int:
        """SIGTERM to the bootstrap alone, as `docker stop` does to PID 1; its exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

        async def exited() -> int | None:
            assert self.process is not None
            return self.process.poll()

        code = await eventually(exited, timeout, "the bootstrap to exit after SIGTERM")
        return int(code) if code is not None else -1

    def leftovers(self) -> list[int]:
        """Live processes of the pod's process group (ComfyUI, the proxy), after the bootstrap is gone."""
        assert self.process is not None
        pgid = self.process.pid
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, ValueError):
                    if os.getpgid(int(entry.name)) == pgid and alive(int(entry.name)):
                        found.append(int(entry.name))
        return found

    async def wait_gone(self, timeout: float = 30) -> None:
        """Until nothing of the pod's process group is left (its children are reaped after it exits)."""

        async def gone() -> bool:
            return not self.leftovers()

        await eventually(gone, timeout, f"the processes of pod {self.pod_id} to end")

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for pgid in (self.process.pid, *([self.start_sh_pid()] if self.start_sh_pid_file.exists() else [])):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
