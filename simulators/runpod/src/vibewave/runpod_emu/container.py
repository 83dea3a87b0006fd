"""Each emulated pod's container: a process group on this machine running what the real pod would run.

The main process is the pod's start command (GraphQL `dockerArgs`, REST v2 `args`), split with `shlex` and
exec'd without a shell as Docker does, or else what the image runs by default (`images.py`). It starts when
the pod's runtime comes up, gets SIGTERM and then SIGKILL as a process group on stop, terminate, restart and
emulator exit, starts fresh on resume and restart, and is started again after it exits by itself (a restart
policy; the container's other processes die with it, as when a container's PID 1 exits).

Storage is RunPod's: `/workspace` is the attached network volume (`<work>/volumes/<id>/`, shared by every pod
that mounts it, kept until the volume is deleted), or the pod's volume disk (`<work>/pods/<id>/volume/`, kept
until terminate), or else part of the container disk (`<work>/pods/<id>/disk/`, wiped on stop, restart and
terminate). The container sees it as `VIBEWAVE_WORKSPACE`; `environment()` lists everything it gets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vibewave.runpod_emu import procfs
from vibewave.runpod_emu.config import EmuConfig
from vibewave.runpod_emu.images import Image, Runs, lookup
from vibewave.runpod_emu.model_host import ModelHost
from vibewave.runpod_emu.state import Pod, parse_ports

log = logging.getLogger("vibewave.runpod_emu")

SIM_ENV_PREFIX = "VIBEWAVE_SIM_"
STEP_TIME = SIM_ENV_PREFIX + "STEP_TIME"
MODELS_PRESENT = SIM_ENV_PREFIX + "MODELS_PRESENT"
LISTEN_HOST = "127.0.0.1"
WORKSPACE = "/workspace"
# Seconds between SIGTERM and SIGKILL when a container is stopped (docker stop waits 10).
STOP_GRACE = 3.0
# Exit code of a container whose command cannot be executed (Docker: "executable file not found").
EXEC_FAILED = 127
# Taken from the emulator's environment: the emulated container shares this machine and its Python, so its
# python3 keeps the emulator's import path, and coverage measurement follows processes through these.
HOST_VARIABLES = ("PYTHONPATH",)
HOST_PREFIXES = ("COVERAGE_", "COV_CORE_", SIM_ENV_PREFIX)
# runpod/comfyui installs ComfyUI here (comfyui-base start.sh).
COMFYUI_INSTALL = "runpod-slim/ComfyUI"
SLEEPER = "import sys, time\nprint(sys.argv[1], flush=True)\nwhile True:\n    time.sleep(3600)\n"


def free_ports(count: int) -> list[int]:
    """Distinct free local ports (all held open until all are picked)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((LISTEN_HOST, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def bootstrap_archive() -> bytes:
    """Vibewave's pod bootstrap as a zipapp, what `vibewave/pod` bakes in (imported only for such a pod)."""
    from vibewave.pod.payload import bootstrap_archive as archive

    return archive()


@dataclass(frozen=True)
class Plan:
    """What a pod's container runs: Docker's command and where it comes from."""

    image: Image
    source: str  # "start command", "image CMD" or "image ENTRYPOINT"
    command: list[str]
    error: str | None = None  # why the command cannot run (the container then exits at once)

    @property
    def start_command(self) -> bool:
        return self.source == "start command"


@dataclass(frozen=True)
class Storage:
    workspace: Path
    kind: str


@dataclass
class Container:
    """One run of a pod's container: its main process (leader of the container's process group)."""

    pod_id: str
    generation: int
    argv: list[str]
    process: asyncio.subprocess.Process
    log_path: Path
    listen_port: int
    comfyui_port: int
    started_at: float
    stopping: bool = False
    watcher: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self.process.returncode is None


@dataclass
class PodHistory:
    """Per-pod bookkeeping that outlives single runs."""

    starts: int = 0
    crashes: int = 0
    last_exit_code: int | None = None
    note: str | None = None
    error: str | None = None  # why the last start failed
    log: Path | None = None
    argv: list[str] | None = None


@dataclass
class ContainerFleet:
    """The containers of all pods of one emulator."""

    config: EmuConfig
    # Whether the pod is still up in this generation (its start_count); a stale start or restart is dropped.
    is_current: Callable[[str, int], bool]
    containers: dict[str, Container] = field(default_factory=dict)
    history: dict[str, PodHistory] = field(default_factory=dict)
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    reaper: asyncio.subprocess.Process | None = None
    reaper_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Stands in for the model hosts (Hugging Face): a pod's VIBEWAVE_MODELS is pointed at its stand-ins.
    model_host: ModelHost | None = None
    public_url: Callable[[], str] = lambda: ""

    # --- where things are -----------------------------------------------------------------------

    def pod_dir(self, pod_id: str) -> Path:
        return self.config.resolve_work_dir() / "pods" / pod_id

    def volume_dir(self, volume_id: str) -> Path:
        return self.config.resolve_work_dir() / "volumes" / volume_id

    def storage(self, pod: Pod) -> Storage:
        """Where the pod's /workspace lives; a volume mounted elsewhere is not reachable (the container only
        knows /workspace as VIBEWAVE_WORKSPACE), as a bootstrap writing /workspace would miss it on RunPod."""
        at_workspace = pod.volume_mount_path.rstrip("/") == WORKSPACE
        if pod.network_volume_id and at_workspace:
            return Storage(self.volume_dir(pod.network_volume_id), f"network volume {pod.network_volume_id}")
        if not pod.network_volume_id and pod.volume_in_gb > 0 and at_workspace:
            return Storage(self.pod_dir(pod.id) / "volume", "volume disk (kept until terminate)")
        kind = "container disk (wiped on stop, restart and terminate)"
        if pod.network_volume_id or pod.volume_in_gb > 0:
            kind += f"; the volume is mounted at {pod.volume_mount_path}, which the emulator does not map"
        return Storage(self.pod_dir(pod.id) / "disk", kind)

    def mapped_port(self, pod_id: str, port: int) -> int | None:
        """The host port behind the pod's `port` while its container runs (8188 → VIBEWAVE_LISTEN_PORT)."""
        container = self.containers.get(pod_id)
        if container is None or not container.running or port != self.config.comfyui_port:
            return None
        return container.listen_port

    # --- what runs ------------------------------------------------------------------------------

    def plan(self, pod: Pod) -> Plan:
        image = lookup(pod.image_name)
        text = (pod.docker_args or "").strip()
        try:
            start = shlex.split(text)
        except ValueError as exc:
            return Plan(image, "start command", [text], f"the start command cannot be split: {exc}")
        if image.entrypoint:
            return Plan(image, "image ENTRYPOINT", [*image.entrypoint, *start])
        if start:
            return Plan(image, "start command", start)
        return Plan(image, "image CMD", list(image.cmd))

    def _argv(self, pod: Pod, plan: Plan, storage: Storage, listen_port: int) -> list[str]:
        """The process that stands for the plan's command on this machine."""
        if plan.start_command:
            return plan.command
        if plan.image.runs is Runs.COMFYUI:
            base = storage.workspace / COMFYUI_INSTALL
            host = ["--host", LISTEN_HOST, "--port", str(listen_port), "--base-dir", str(base)]
            return [sys.executable, "-m", "vibewave.comfyui_sim", *host, *self.config.comfyui_args]
        if plan.image.runs is Runs.BOOTSTRAP:
            archive = self.pod_dir(pod.id) / "image" / "bootstrap.pyz"
            archive.parent.mkdir(parents=True, exist_ok=True)
            archive.write_bytes(bootstrap_archive())
            return ["python3", str(archive)]
        what = " ".join(plan.command) or "its command"
        message = f"vibewave-runpod-emulator: {pod.image_name} runs {what}; {plan.image.description}"
        return [sys.executable, "-c", SLEEPER, message]

    def environment(self, pod: Pod, plan: Plan, sim_env: dict[str, str], ports: tuple[int, int]) -> dict[str, str]:
        """The container's environment, lowest precedence first: host variables the emulated container needs
        (`HOST_VARIABLES`, `HOST_PREFIXES`, including the emulator's `VIBEWAVE_SIM_*`), the simulator's step
        time, the image's defaults, `sim_env`, TMPDIR, the pod's env, RunPod's variables, then the emulator's
        knobs (`VIBEWAVE_*`, PATH with the per-pod `python3` first)."""
        pod_dir = self.pod_dir(pod.id)
        env = {k: v for k, v in os.environ.items() if k in HOST_VARIABLES or k.startswith(HOST_PREFIXES)}
        env[STEP_TIME] = str(self.config.comfyui_step_time)
        if plan.image.runs is Runs.COMFYUI and not plan.start_command:
            # RunPod's image has no model files; its emulation says they are there (so graphs run) unless the
            # emulator's environment, `sim_env` or the pod's env says otherwise.
            env.setdefault(MODELS_PRESENT, "1")
        env.update(sim_env)
        env["TMPDIR"] = str(pod_dir / "tmp")
        env.update(pod.env)
        if self.model_host is not None:
            env = self.model_host.rewrite_manifest(env, self.public_url())
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
        if pod.network_volume_id:
            env["RUNPOD_VOLUME_ID"] = pod.network_volume_id
        # Named after the declared port: a symmetric one (70000/tcp) is found as RUNPOD_TCP_PORT_70000.
        for (declared, _), entry in zip(parse_ports(pod.ports), pod.runtime_ports or [], strict=False):
            if entry["type"] == "tcp" and entry["isIpPublic"]:
                env[f"RUNPOD_TCP_PORT_{declared}"] = str(entry["publicPort"])
        listen_port, comfyui_port = ports
        env.update(
            {
                "VIBEWAVE_WORKSPACE": str(self.storage(pod).workspace),
                "VIBEWAVE_COMFYUI_SIMULATOR": sys.executable,
                "VIBEWAVE_LISTEN_HOST": LISTEN_HOST,
                "VIBEWAVE_LISTEN_PORT": str(listen_port),
                "VIBEWAVE_COMFYUI_PORT": str(comfyui_port),
                "PATH": os.pathsep.join((str(pod_dir / "bin"), env.get("PATH") or os.environ.get("PATH", os.defpath))),
            }
        )
        return env

    def _python3(self, pod_id: str) -> None:
        """`bin/python3`: the emulator's interpreter. An exec wrapper, not a symlink: CPython finds a venv's
        pyvenv.cfg next to the path it is started by, so a symlinked venv interpreter would lose the venv."""
        wrapper = self.pod_dir(pod_id) / "bin" / "python3"
        wrapper.parent.mkdir(parents=True, exist_ok=True)
        wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
        wrapper.chmod(0o755)

    # --- lifecycle ------------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a lifecycle action in the background (requests never wait for process start/stop)."""
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _lock(self, pod_id: str) -> asyncio.Lock:
        return self.locks.setdefault(pod_id, asyncio.Lock())

    async def start(self, pod: Pod, sim_env: dict[str, str]) -> None:
        """Start the pod's container (unless the pod is set to never serve); serialised per pod."""
        async with self._lock(pod.id):
            await self._stop_locked(pod.id)
            history = self.history.setdefault(pod.id, PodHistory())
            history.note = None
            if pod.never_ready == "no_comfyui":
                history.note = "never_ready: no_comfyui (the container is not started; nothing listens)"
                return
            if not self.is_current(pod.id, pod.start_count):
                return
            if pod.never_ready == "hang":
                history.note = "never_ready: hang (the proxy holds requests to 8188 unanswered: 524)"
            await self._launch(pod, sim_env)

    async def _launch(self, pod: Pod, sim_env: dict[str, str]) -> None:
        self.containers.pop(pod.id, None)  # a previous run that exited by itself
        history = self.history.setdefault(pod.id, PodHistory())
        pod_dir = self.pod_dir(pod.id)
        storage = self.storage(pod)
        for directory in (pod_dir / "disk", pod_dir / "tmp", storage.workspace):
            directory.mkdir(parents=True, exist_ok=True)
        self._python3(pod.id)
        plan = self.plan(pod)
        listen_port, comfyui_port = free_ports(2)
        env = self.environment(pod, plan, sim_env, (listen_port, comfyui_port))
        log_path = pod_dir / f"container-{pod.start_count}.log"
        history.log = log_path
        try:
            if plan.error:
                raise RuntimeError(plan.error)
            argv = self._argv(pod, plan, storage, listen_port)
            history.argv = argv
            with log_path.open("ab") as log_file:
                process = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=asyncio.subprocess.STDOUT,
                    env=env,
                    cwd=pod_dir / "disk",
                    start_new_session=True,
                )
        except (OSError, RuntimeError, ImportError, AttributeError) as exc:
            message = f"vibewave-runpod-emulator: the container cannot start: {exc}"
            with log_path.open("a") as log_file:
                log_file.write(message + "\n")
            log.warning("pod %s: %s", pod.id, message)
            history.last_exit_code, history.error = EXEC_FAILED, message
            history.crashes += 1
            self.spawn(self._restart(pod, sim_env, pod.start_count, None))
            return
        await self._reap_later(f"+{process.pid}")
        container = Container(
            pod.id, pod.start_count, argv, process, log_path, listen_port, comfyui_port, time.monotonic()
        )
        self.containers[pod.id] = container
        history.starts += 1
        history.error = None
        container.watcher = asyncio.ensure_future(self._watch(pod, container, sim_env))
        log.info(
            "pod %s: container pid %s runs %s (%s); 8188 → 127.0.0.1:%s; log %s",
            pod.id,
            process.pid,
            shlex.join(argv)[:200],
            plan.source,
            listen_port,
            log_path,
        )

    async def _watch(self, pod: Pod, container: Container, sim_env: dict[str, str]) -> None:
        """The main process exited: the rest of the container goes with it, then the restart policy applies."""
        code = await container.process.wait()
        if container.stopping:
            return
        _kill_group(container.process.pid, signal.SIGKILL)
        await self._reap_later(f"-{container.process.pid}")
        history = self.history.setdefault(pod.id, PodHistory())
        history.last_exit_code = code
        history.crashes += 1
        log.warning("pod %s: container exited with %s", pod.id, code)
        await self._restart(pod, sim_env, container.generation, container)

    async def _restart(self, pod: Pod, sim_env: dict[str, str], generation: int, previous: Container | None) -> None:
        if not self.config.comfyui_restart:
            return
        await asyncio.sleep(self.config.comfyui_restart_delay)
        async with self._lock(pod.id):
            if self.containers.get(pod.id) is previous and self.is_current(pod.id, generation):
                await self._launch(pod, sim_env)

    async def stop(self, pod_id: str, wipe: bool = False, remove: bool = False) -> None:
        """Stop the container; `wipe` empties the container disk (stop, restart), `remove` deletes everything
        of the pod but network volumes (terminate)."""
        async with self._lock(pod_id):
            await self._stop_locked(pod_id)
            pod_dir = self.pod_dir(pod_id)
            if remove:
                self.history.pop(pod_id, None)
                await asyncio.to_thread(shutil.rmtree, pod_dir, True)
            elif wipe:
                for part in ("disk", "tmp"):
                    await asyncio.to_thread(shutil.rmtree, pod_dir / part, True)
        if remove:
            self.locks.pop(pod_id, None)

    async def _stop_locked(self, pod_id: str) -> None:
        container = self.containers.pop(pod_id, None)
        if container is None:
            return
        container.stopping = True
        pgid = container.process.pid
        if container.running:
            _kill_group(pgid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(container.process.wait(), STOP_GRACE)
        _kill_group(pgid, signal.SIGKILL)
        await container.process.wait()
        await self._reap_later(f"-{pgid}")
        self.history.setdefault(pod_id, PodHistory()).last_exit_code = container.process.returncode
        if container.watcher is not None and container.watcher is not asyncio.current_task():
            container.watcher.cancel()
            await asyncio.gather(container.watcher, return_exceptions=True)
        log.info("pod %s: container stopped", pod_id)

    async def kill(self, pod_id: str) -> int | None:
        """SIGKILL the process that serves the pod's 8188 (ComfyUI, or what stands in front of it), as if it
        crashed; returns its pid, or None when nothing listens there."""
        container = self.containers.get(pod_id)
        if container is None or not container.running or not procfs.listening(container.listen_port):
            return None
        pid = procfs.listener_pid(container.listen_port, container.process.pid) or container.process.pid
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        return pid

    async def crash(self, pod_id: str) -> int | None:
        """SIGKILL every process of the container, as when the host kills it (the OOM killer, say); the restart
        policy applies. Returns the main process's pid, or None when the container is not running."""
        container = self.containers.get(pod_id)
        if container is None or not container.running:
            return None
        _kill_group(container.process.pid, signal.SIGKILL)
        return container.process.pid

    def remove_volumes(self, volume_ids: list[str]) -> None:
        """Delete network volumes' files once the containers that are being stopped now have gone."""
        pending = list(self.tasks)

        async def remove() -> None:
            await asyncio.gather(*pending, return_exceptions=True)
            for volume_id in volume_ids:
                await asyncio.to_thread(shutil.rmtree, self.volume_dir(volume_id), True)

        if volume_ids:
            self.spawn(remove())

    async def _reap_later(self, line: str) -> None:
        """Tell the reaper which process groups to kill if the emulator dies without stopping them."""
        async with self.reaper_lock:
            if self.reaper is None or self.reaper.returncode is not None:
                self.reaper = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "vibewave.runpod_emu.reaper",
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.DEVNULL,
                    start_new_session=True,
                )
            assert self.reaper.stdin is not None, "started with a pipe"
            with contextlib.suppress(ConnectionError):
                self.reaper.stdin.write(f"{line}\n".encode())
                await self.reaper.stdin.drain()

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await asyncio.gather(*(self.stop(pod_id) for pod_id in list(self.containers)), return_exceptions=True)
        if self.reaper is not None and self.reaper.stdin is not None:
            self.reaper.stdin.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.reaper.wait(), 5)

    # --- diagnosis ------------------------------------------------------------------------------

    def describe(self, pod: Pod) -> dict[str, Any]:
        """What the container runs and whether anything serves 8188: for people reading /emulator/state."""
        container = self.containers.get(pod.id)
        history = self.history.get(pod.id, PodHistory())
        plan = self.plan(pod)
        storage = self.storage(pod)
        running = container is not None and container.running
        port = container.listen_port if container is not None and running else None
        listening = port is not None and procfs.listening(port)
        comfy = self.config.comfyui_port
        if running and container is not None:
            state = f"pid {container.process.pid}, running"
        elif history.error or history.note:
            state = str(history.error or history.note)
        else:
            state = "not running"
        summary = (
            f"{plan.source}: {shlex.join(plan.command) if plan.command else '(unknown)'} ({state}); "
            f"{'something listens' if listening else 'nothing listens'} on {comfy}"
            + (f" (127.0.0.1:{port})" if port else "")
            + f"; log {history.log or 'none yet'}"
        )
        return {
            "summary": summary,
            "image": pod.image_name,
            "imageDescription": plan.image.description,
            "runs": plan.source,
            "command": plan.command,
            "process": history.argv,
            "error": history.error or plan.error,
            "pid": container.process.pid if container is not None else None,
            "running": running,
            "port": port,
            "listening": listening,
            "comfyuiPort": container.comfyui_port if container is not None and running else None,
            "log": str(history.log) if history.log else None,
            "workspace": str(storage.workspace),
            "storage": storage.kind,
            "disk": str(self.pod_dir(pod.id) / "disk"),
            "starts": history.starts,
            "crashes": history.crashes,
            "lastExitCode": history.last_exit_code,
            "note": history.note,
        }


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
