"""Where pods come from. Each provider creates, lists and terminates pods and knows their ComfyUI URL.

`local`: a pod is a ComfyUI process on this machine, on a free port — the bundled ComfyUI simulator by
default, or the operator's command (`LOCAL_COMFYUI_COMMAND`, with `{port}` and `{output_dir}` filled in)
to run a real ComfyUI on a local GPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

log = logging.getLogger("vibewave.pod_manager.providers")


@dataclass(frozen=True)
class ProvidedPod:
    id: str
    comfyui_url: str
    ip: str | None


class Provider(Protocol):
    name: str

    async def create(self, pod_id: str, workflow_name: str) -> ProvidedPod: ...

    async def terminate(self, pod_id: str) -> None: ...

    def alive(self, pod_id: str) -> bool: ...

    async def close(self) -> None: ...


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """Linux: the pod process gets SIGTERM if pod-manager dies, so no local pod is ever orphaned."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class LocalProvider:
    name = "local"

    def __init__(self, home: Path, *, command: list[str] | None, step_time_s: float) -> None:
        self.home = home
        self.command = command
        self.step_time_s = step_time_s
        self._processes: dict[str, asyncio.subprocess.Process] = {}

    async def create(self, pod_id: str, workflow_name: str) -> ProvidedPod:
        port = _free_port()
        output_dir = self.home / "pods" / pod_id
        output_dir.mkdir(parents=True, exist_ok=True)
        if self.command:
            argv = [part.format(port=port, output_dir=output_dir) for part in self.command]
        else:
            argv = [
                sys.executable, "-m", "vibewave.comfyui_sim",
                "--host", "127.0.0.1", "--port", str(port),
                "--output-dir", str(output_dir), "--step-time", str(self.step_time_s),
            ]  # fmt: skip
        log_path = self.home / "logs" / f"pod-{pod_id}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log_file:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                preexec_fn=_die_with_parent,
            )
        self._processes[pod_id] = process
        log.info("local pod %s started (pid %d, port %d)", pod_id, process.pid, port, extra={"pod_id": pod_id})
        return ProvidedPod(id=pod_id, comfyui_url=f"http://127.0.0.1:{port}", ip="127.0.0.1")

    def alive(self, pod_id: str) -> bool:
        process = self._processes.get(pod_id)
        return process is not None and process.returncode is None

    async def terminate(self, pod_id: str) -> None:
        process = self._processes.pop(pod_id, None)
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def close(self) -> None:
        await asyncio.gather(*(self.terminate(pod_id) for pod_id in list(self._processes)))


def create_provider(name: str, home: Path, command: list[str] | None, step_time_s: float) -> Provider:
    if name == "local":
        return LocalProvider(home, command=command, step_time_s=step_time_s)
    raise ValueError(f"unknown POD_PROVIDER {name!r} (available: local)")
