"""The "container" of each emulated pod: a real `python -m vibewave.comfyui_sim` process.

Started when the pod's runtime comes up, killed on stop/terminate/emulator exit, started fresh on resume and on
a REST v2 restart, restarted after a crash (a container whose main process exits is restarted). Each pod has a
directory under the emulator's work dir: `output/` etc. survive stop/resume/restart (like the pod volume) and go
on terminate.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vibewave.runpod_emu.config import EmuConfig
from vibewave.runpod_emu.state import Pod, parse_ports

log = logging.getLogger("vibewave.runpod_emu")

SIM_ENV_PREFIX = "VIBEWAVE_SIM_"
MODELS_PRESENT = SIM_ENV_PREFIX + "MODELS_PRESENT"
# never_ready mode "hang": ComfyUI accepts connections but delays every answer this long.
HANG_SECONDS = "86400"
PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> Callable[[], None] | None:
    """On Linux, make the child get SIGTERM if the emulator dies, so no orphan simulators outlive a test run."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def set_pdeathsig() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

    return set_pdeathsig


@dataclass
class SimProcess:
    """One running ComfyUI simulator and where it listens."""

    pod_id: str
    generation: int
    port: int
    process: asyncio.subprocess.Process
    log_path: Path
    started_at: float
    stopping: bool = False
    watcher: asyncio.Task[None] | None = None


@dataclass
class PodProcesses:
    """Per-pod bookkeeping that outlives single processes."""

    starts: int = 0
    crashes: int = 0
    last_exit_code: int | None = None
    note: str | None = None


@dataclass
class ComfyFleet:
    """All per-pod simulators of one emulator."""

    config: EmuConfig
    is_current: Callable[[str, int], bool]
    procs: dict[str, SimProcess] = field(default_factory=dict)
    info: dict[str, PodProcesses] = field(default_factory=dict)
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def pod_dir(self, pod_id: str) -> Path:
        return self.config.resolve_work_dir() / "pods" / pod_id

    def port_for(self, pod_id: str) -> int | None:
        proc = self.procs.get(pod_id)
        return None if proc is None or proc.process.returncode is not None else proc.port

    def wants_comfyui(self, pod: Pod) -> bool:
        return self.config.comfyui and any(n == self.config.comfyui_port for n, _ in parse_ports(pod.ports))

    def describe(self, pod_id: str) -> dict[str, Any]:
        proc = self.procs.get(pod_id)
        info = self.info.get(pod_id, PodProcesses())
        return {
            "pid": proc.process.pid if proc else None,
            "port": self.port_for(pod_id),
            "running": proc is not None and proc.process.returncode is None,
            "log": str(proc.log_path) if proc else None,
            "outputDir": str(self.pod_dir(pod_id) / "output"),
            "starts": info.starts,
            "crashes": info.crashes,
            "lastExitCode": info.last_exit_code,
            "note": info.note,
        }

    def spawn(self, coro: Any) -> None:
        """Run a lifecycle action in the background (requests never wait for process start/stop)."""
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _lock(self, pod_id: str) -> asyncio.Lock:
        return self.locks.setdefault(pod_id, asyncio.Lock())

    async def start(self, pod: Pod, sim_env: dict[str, str]) -> None:
        """Launch the pod's simulator (unless the pod is set to never serve); serialised per pod."""
        async with self._lock(pod.id):
            await self._stop_locked(pod.id)
            info = self.info.setdefault(pod.id, PodProcesses())
            if pod.never_ready == "no_comfyui":
                info.note = "never_ready: no_comfyui (nothing listens)"
                return
            if not self.is_current(pod.id, pod.start_count):
                return
            await self._launch(pod, sim_env, info)

    async def _launch(self, pod: Pod, sim_env: dict[str, str], info: PodProcesses) -> None:
        base = self.pod_dir(pod.id)
        output = base / "output"
        output.mkdir(parents=True, exist_ok=True)
        port = free_port()
        env = dict(os.environ)
        env.pop(SIM_ENV_PREFIX + "STEP_TIME", None)  # --step-time below; pod/emulator overrides still win
        # A pod's image ships its model files; the simulator's loaders fail on absent models unless told so.
        env.setdefault(MODELS_PRESENT, "1")
        env.update(sim_env)
        env.update({k: v for k, v in pod.env if k.startswith(SIM_ENV_PREFIX)})
        env.update(
            {
                "RUNPOD_POD_ID": pod.id,
                "RUNPOD_DC_ID": pod.machine.data_center_id,
                "RUNPOD_POD_HOSTNAME": pod.pod_host_id,
                "RUNPOD_GPU_COUNT": str(pod.gpu_count),
                "RUNPOD_CPU_COUNT": str(pod.vcpu_count),
                "RUNPOD_PUBLIC_IP": pod.machine.public_ip,
            }
        )
        if pod.never_ready == "hang":
            env[SIM_ENV_PREFIX + "HTTP_DELAY"] = HANG_SECONDS
            info.note = "never_ready: hang (accepts connections, never answers)"
        args = [
            sys.executable,
            "-m",
            "vibewave.comfyui_sim",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--base-dir",
            str(base),
            "--output-dir",
            str(output),
            "--step-time",
            env.get(SIM_ENV_PREFIX + "STEP_TIME") or str(self.config.comfyui_step_time),
            *self.config.comfyui_args,
        ]
        log_path = base / f"comfyui-{pod.start_count}.log"
        with log_path.open("ab") as log_file:
            process = await asyncio.create_subprocess_exec(
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                env=env,
                preexec_fn=_die_with_parent(),
            )
        proc = SimProcess(pod.id, pod.start_count, port, process, log_path, time.monotonic())
        self.procs[pod.id] = proc
        info.starts += 1
        proc.watcher = asyncio.ensure_future(self._watch(pod, proc, sim_env))
        log.info("pod %s: ComfyUI simulator pid %s on 127.0.0.1:%s (log %s)", pod.id, process.pid, port, log_path)

    async def _watch(self, pod: Pod, proc: SimProcess, sim_env: dict[str, str]) -> None:
        """Notice crashes; restart like a container restart policy while the pod is still meant to run."""
        code = await proc.process.wait()
        info = self.info.setdefault(pod.id, PodProcesses())
        info.last_exit_code = code
        if proc.stopping:
            return
        info.crashes += 1
        log.warning("pod %s: ComfyUI simulator exited with %s", pod.id, code)
        if not self.config.comfyui_restart:
            return
        await asyncio.sleep(self.config.comfyui_restart_delay)
        async with self._lock(pod.id):
            if self.procs.get(pod.id) is proc and self.is_current(pod.id, proc.generation):
                await self._launch(pod, sim_env, info)

    async def stop(self, pod_id: str, remove_dir: bool = False) -> None:
        async with self._lock(pod_id):
            await self._stop_locked(pod_id)
            if remove_dir:
                self.info.pop(pod_id, None)
                await asyncio.to_thread(shutil.rmtree, self.pod_dir(pod_id), True)
        if remove_dir:
            self.locks.pop(pod_id, None)

    async def _stop_locked(self, pod_id: str) -> None:
        proc = self.procs.pop(pod_id, None)
        if proc is None:
            return
        proc.stopping = True
        if proc.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.process.terminate()
            try:
                await asyncio.wait_for(proc.process.wait(), 3.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.process.kill()
                await proc.process.wait()
        self.info.setdefault(pod_id, PodProcesses()).last_exit_code = proc.process.returncode
        if proc.watcher is not None and proc.watcher is not asyncio.current_task():
            proc.watcher.cancel()
            await asyncio.gather(proc.watcher, return_exceptions=True)
        log.info("pod %s: ComfyUI simulator stopped", pod_id)

    async def kill(self, pod_id: str) -> bool:
        """Crash the pod's simulator (SIGKILL) as if ComfyUI died; the restart policy applies."""
        proc = self.procs.get(pod_id)
        if proc is None or proc.process.returncode is not None:
            return False
        with contextlib.suppress(ProcessLookupError):
            proc.process.kill()
        return True

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await asyncio.gather(*(self.stop(pod_id) for pod_id in list(self.procs)), return_exceptions=True)
