"""`local`: a pod is a ComfyUI process on this machine, on a free port.

By default the process is the bundled ComfyUI simulator (told that its model files are there: a
simulated pod has them); `LOCAL_COMFYUI_COMMAND` (with `{port}` and `{output_dir}` filled in) runs a
real ComfyUI instead, e.g. one per local GPU. A stopped pod has no process; starting it runs a new one;
a restart is a new process for the same pod. Processes die with pod-manager, so none is ever orphaned.

A pod writes what it generates into its folder (`<home>/pods/<pod id>`), and the executor stores each
file in the object store as soon as the run ends: the pod's copy is then a duplicate, and would grow
for ever. So every file in these folders older than `LOCAL_OUTPUT_KEEP` (a few minutes: long past the
executor's download) is removed by a periodic sweep, a terminated pod's folder at once, and a folder
left by an earlier pod-manager (its pods died with it) once it is empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any
from uuid import uuid4

from vibewave.pod_manager.providers.base import (
    NoFittingGpu,
    PodBoot,
    PodNotFound,
    ProviderPod,
    ProviderState,
    no_cloud_catalogue,
)

log = logging.getLogger("vibewave.pod_manager.local")

SECRETS = ("RUNPOD_API_KEY", "NATS_USER", "NATS_PASSWORD")  # a pod is no NATS client of ours either
MAX_SWEEP_INTERVAL_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """Linux: the pod process gets SIGTERM if pod-manager dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class LocalProvider:
    name = "local"
    ephemeral = True
    capacity: int | None = None
    restarts_in_place = True

    def __init__(
        self,
        home: Path,
        *,
        command: list[str] | None,
        step_time_s: float,
        gpu_memory_gb: int | None = None,
        output_keep_s: float = 300.0,
        cost_per_hr: float | None = None,
    ) -> None:
        self.home = home
        self.cost_per_hr = cost_per_hr  # LOCAL_GPU_COST_PER_HR; None: its runs cost nothing
        self.command = command
        self.step_time_s = step_time_s
        self.gpu_memory_gb = gpu_memory_gb
        self.output_keep_s = output_keep_s  # 0: outputs are kept (never swept)
        self.origin = f"local {home}"
        self._names: dict[str, str] = {}
        self._processes: dict[str, asyncio.subprocess.Process] = {}
        self._ports: dict[str, int] = {}
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def outputs(self) -> Path:
        return self.home / "pods"

    def output_dir(self, pod_id: str) -> Path:
        return self.outputs / pod_id

    async def validate(self) -> None:
        return None

    def describe(self) -> str:
        if self.command:
            return f"local command {' '.join(self.command)[:120]!r}"
        return "the bundled ComfyUI simulator (a local process)"

    def new_pod_price(self, min_gpu_memory_gb: int) -> float | None:
        return self.cost_per_hr

    async def create(
        self, name: str, min_gpu_memory_gb: int = 0, boot: PodBoot | None = None, max_price: float | None = None
    ) -> ProviderPod:
        """`boot` is ignored: these pods run no container of the provider's making.
        So is `max_price`: every pod costs `cost_per_hr`, which the spend cap was checked against."""
        if min_gpu_memory_gb and self.gpu_memory_gb is not None and self.gpu_memory_gb < min_gpu_memory_gb:
            raise NoFittingGpu(
                f"local GPUs have {self.gpu_memory_gb} GB (LOCAL_GPU_MEMORY_GB), {min_gpu_memory_gb} needed"
            )
        pod_id = f"local-{uuid4().hex[:10]}"
        self._names[pod_id] = name
        await self._spawn(pod_id)
        return self._view(pod_id)

    async def _spawn(self, pod_id: str) -> None:
        port = free_port()
        output_dir = self.output_dir(pod_id)
        output_dir.mkdir(parents=True, exist_ok=True)
        if self._sweeper is None and self.output_keep_s > 0:
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="local-pods:output-sweep")
        if self.command:
            argv = [part.format(port=port, output_dir=output_dir) for part in self.command]
        else:
            argv = [
                sys.executable, "-m", "vibewave.comfyui_sim",
                "--host", "127.0.0.1", "--port", str(port),
                "--output-dir", str(output_dir), "--step-time", str(self.step_time_s),
            ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k not in SECRETS}  # a pod's ComfyUI needs no key of ours
        if not self.command:
            env["VIBEWAVE_SIM_MODELS_PRESENT"] = "1"
        log_path = self.home / "logs" / f"pod-{pod_id}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log_file:
            process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=log_file, env=env,
                preexec_fn=_die_with_parent,
            )  # fmt: skip
        self._processes[pod_id], self._ports[pod_id] = process, port
        log.info("local pod %s started (pid %d, port %d)", pod_id, process.pid, port, extra={"pod_id": pod_id})

    def _view(self, pod_id: str) -> ProviderPod:
        process = self._processes.get(pod_id)
        if process is None:
            state = ProviderState.STOPPED
        elif process.returncode is None:
            state = ProviderState.RUNNING
        else:
            state = ProviderState.STOPPED
        port = self._ports.get(pod_id)
        running = state == ProviderState.RUNNING
        return ProviderPod(
            id=pod_id,
            name=self._names[pod_id],
            state=state,
            comfyui_url=f"http://127.0.0.1:{port}" if running and port else None,
            ip="127.0.0.1",
            gpu_type="local",
            gpu_memory_gb=self.gpu_memory_gb,
            cost_per_hr=self.cost_per_hr,
            details={"pid": process.pid if process else None, "port": port if running else None,
                     "exit_code": process.returncode if process else None},
        )  # fmt: skip

    async def get(self, pod_id: str) -> ProviderPod | None:
        return self._view(pod_id) if pod_id in self._names else None

    async def list(self) -> list[ProviderPod]:
        return [self._view(pod_id) for pod_id in self._names]

    async def start(self, pod_id: str) -> ProviderPod:
        if pod_id not in self._names:
            raise PodNotFound(f"pod {pod_id} not found")
        if self._view(pod_id).state != ProviderState.RUNNING:
            await self._spawn(pod_id)
        return self._view(pod_id)

    async def stop(self, pod_id: str) -> None:
        if pod_id not in self._names:
            raise PodNotFound(f"pod {pod_id} not found")
        process = self._processes.pop(pod_id, None)
        self._ports.pop(pod_id, None)
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 5)
            except TimeoutError:
                process.kill()
                await process.wait()

    async def restart(self, pod_id: str) -> None:
        await self.stop(pod_id)
        await self.start(pod_id)

    async def terminate(self, pod_id: str) -> None:
        await self.stop(pod_id)
        del self._names[pod_id]
        await asyncio.to_thread(shutil.rmtree, self.output_dir(pod_id), ignore_errors=True)

    # ---------------------------------------------------------------------------------- outputs

    async def _sweep_forever(self) -> None:
        interval = min(max(self.output_keep_s / 2, 1.0), MAX_SWEEP_INTERVAL_S)
        while True:
            await asyncio.sleep(interval)
            try:
                removed = await self.sweep_outputs()
            except OSError as exc:
                log.warning("sweeping local pods' outputs failed: %s", exc)
                continue
            if removed:
                log.debug("removed %d local pod output files older than %.0fs", removed, self.output_keep_s)

    async def sweep_outputs(self) -> int:
        """Remove pod output files older than the keep time; returns how many were removed."""
        return await asyncio.to_thread(self._sweep, time.time() - self.output_keep_s, set(self._names))

    def _sweep(self, older_than: float, live: set[str]) -> int:
        if not self.outputs.is_dir():
            return 0
        removed = 0
        for pod_dir in self.outputs.iterdir():
            if not pod_dir.is_dir():
                continue
            for root, dirs, files in os.walk(pod_dir, topdown=False):
                for name in files:
                    path = Path(root, name)
                    with contextlib.suppress(FileNotFoundError):
                        if path.lstat().st_mtime < older_than:
                            path.unlink()
                            removed += 1
                for name in dirs:  # emptied subfolders (a real ComfyUI's `subfolder`s)
                    with contextlib.suppress(OSError):
                        Path(root, name).rmdir()
            if pod_dir.name not in live:  # an earlier pod-manager's pod: its process is gone
                with contextlib.suppress(OSError):
                    pod_dir.rmdir()
        return removed

    async def catalogue(self, kind: str) -> Any:
        """The local fleet's truth: no cloud account, GPUs or volumes to report."""
        note = "local provider: pods are ComfyUI processes on this machine; there is no RunPod account"
        account = {"provider": self.name, "note": note, "balance": None, "current_spend_per_hr": 0.0}
        return no_cloud_catalogue(kind, account)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for pod_id in list(self._processes):
            await self.stop(pod_id)
