"""The pod's first process: from a bare runpod/pytorch container to ComfyUI behind the token proxy.

- `/start.sh` runs in the background (the image's nginx, sshd, Jupyter work as without a start command);
- without `COMFY_PROXY_TOKEN` nothing starts: ComfyUI must never be public without authentication;
- the workspace (`/workspace`, a network volume when the pod has one) holds everything;
- ComfyUI is installed once per volume (install.py) while the model files are fetched once (models.py);
- the token proxy (token_proxy.py) starts as soon as there is an interpreter for it, so the status shows
  during the install; ComfyUI starts on 127.0.0.1 when both are done, and again when it exits (supervise.py).

Each step logs `vibewave-bootstrap: ...` lines and updates the status document. A failed step leaves the
pod up with its status (`phase: failed`) and does not start ComfyUI; SIGTERM ends every child.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType

from vibewave.pod import logs, procs
from vibewave.pod.config import PINNED_COMFYUI_VERSION, ConfigError, Layout, Settings
from vibewave.pod.files import Stopped
from vibewave.pod.install import Installed, Installer, InstallError, early_interpreter, has_aiohttp
from vibewave.pod.models import FOLDERS, Fetcher, FetchError, ModelLock, ModelSpec
from vibewave.pod.status import Status
from vibewave.pod.supervise import Service, http_probe

CODE_ROOT = str(Path(os.path.abspath(__file__)).parents[2])
"""What holds `vibewave/pod/`: the bootstrap archive on a pod (the proxy's PYTHONPATH), `src/` in a checkout."""


def start_services(script: Path, children: procs.Children) -> None:
    """The image's own services: runpod/pytorch's CMD, which a start command replaces, so it is run here."""
    if not script.is_file():
        logs.say(f"no {script} in this image: no image services to start")
        return
    logs.say(f"starting {script} in the background (the image's nginx, sshd, Jupyter)")
    children.start(["bash", str(script)], capture=False, own_group=True)


def extra_model_paths(layout: Layout) -> str:
    """ComfyUI's `extra_model_paths.yaml`: the model folders on the workspace (JSON strings are YAML)."""
    lines = ["# Written by the vibewave bootstrap: the model folders on the workspace volume.", "vibewave:"]
    lines.append(f"  base_path: {json.dumps(str(layout.root))}")
    lines.append("  is_default: true")
    lines.extend(f"  {folder}: models/{folder}/" for folder in FOLDERS)
    return "\n".join(lines) + "\n"


class Boot:
    def __init__(
        self, settings: Settings, layout: Layout, status: Status, children: procs.Children, stop: threading.Event
    ) -> None:
        self.settings = settings
        self.layout = layout
        self.status = status
        self.children = children
        self.stop = stop
        self._proxy_lock = threading.Lock()
        self._proxy: Service | None = None

    def run(self) -> None:
        try:
            self._run()
        except Stopped:
            pass
        except Exception as e:  # a bug: say so in the status rather than die silently in a thread
            logs.say("the bootstrap failed:\n" + traceback.format_exc())
            self.status.fail(f"bootstrap error: {type(e).__name__}: {e}")

    def _run(self) -> None:
        settings, layout, status = self.settings, self.layout, self.status
        status.install(mode=settings.mode, commit=settings.comfyui_ref)
        layout.extra_model_paths.write_text(extra_model_paths(layout), encoding="utf-8")
        early = early_interpreter(settings, layout)
        if early is not None:
            self.start_proxy(early)
        downloads = threading.Thread(target=self._models, name="models", daemon=True)
        downloads.start()
        installed = self._install()
        downloads.join()
        if self.stop.is_set():
            return
        if installed is None or status.failed:
            logs.say(f"not starting ComfyUI ({status.document()['error']}); the status stays up, SIGTERM ends the pod")
            return
        self._comfyui(installed.python)

    def _install(self) -> Installed | None:
        settings = self.settings
        try:
            installed = Installer(settings, self.layout, self.children, self.stop, self.start_proxy).run()
        except InstallError as e:
            logs.say(f"ComfyUI install failed: {e}")
            self.status.fail(f"ComfyUI install failed: {e}")
            return None
        self.status.install(mode=settings.mode, commit=settings.comfyui_ref, skipped=installed.skipped, done=True)
        return installed

    def start_proxy(self, python: str) -> None:
        """Once, with the first interpreter that has aiohttp (the proxy serves the status during the install)."""
        with self._proxy_lock:
            if self._proxy is not None:
                return
            if not has_aiohttp(python):
                logs.say(f"{python} cannot import aiohttp, so it cannot run the token proxy")
                self.status.fail(f"{python} cannot import aiohttp: no token proxy")
                return
            settings, layout = self.settings, self.layout
            host = "127.0.0.1" if settings.listen_host in ("0.0.0.0", "::", "") else settings.listen_host
            self._proxy = Service(
                "the token proxy",
                [python, "-m", "vibewave.pod.token_proxy"],
                env=procs.child_env(
                    PYTHONPATH=os.pathsep.join(p for p in (CODE_ROOT, os.environ.get("PYTHONPATH")) if p),
                    COMFY_PROXY_TOKEN=settings.token,
                    VIBEWAVE_LISTEN_HOST=settings.listen_host,
                    VIBEWAVE_LISTEN_PORT=str(settings.listen_port),
                    VIBEWAVE_COMFYUI_PORT=str(settings.comfyui_port),
                    VIBEWAVE_STATUS_FILE=str(layout.status_file(settings.pod_id)),
                ),
                cwd=layout.state,
                log_path=layout.log_file("proxy", settings.pod_id),
                children=self.children,
                stop=self.stop,
                probe=http_probe(f"http://{host}:{settings.listen_port}/vibewave/status", expect=401),
                on_change=lambda up, restarts, pid: None,
            )
            self._proxy.start()

    def _models(self) -> None:
        settings, layout, status = self.settings, self.layout, self.status
        specs = settings.models
        status.models(
            [{"folder": s.folder, "file": s.file, "size": s.size, "bytes": 0, "state": "verifying"} for s in specs]
        )
        if not specs:
            logs.say("VIBEWAVE_MODELS names no model files")
            return
        logs.say(f"{len(specs)} model files, {logs.human_bytes(_total(specs))} in all, into {layout.models}")
        missing, free = _still_to_fetch(layout, specs), shutil.disk_usage(layout.models).free
        if missing > free:
            message = (
                f"the workspace has {logs.human_bytes(free)} free but the missing model files need "
                f"{logs.human_bytes(missing)}: give the pod a larger volume"
            )
            logs.say(message)
            status.fail(message)
            return
        fetcher = Fetcher(
            models_dir=layout.models,
            locks_dir=layout.locks,
            lock=ModelLock(layout.models_lock, layout.locks / "models-lock.lock"),
            hf_token=settings.hf_token,
            stop=self.stop,
        )
        with ThreadPoolExecutor(max_workers=settings.download_parallel, thread_name_prefix="model") as pool:
            for spec in specs:
                pool.submit(self._model, fetcher, spec)
        if not self.stop.is_set() and not status.failed:
            logs.say(f"all {len(specs)} model files are present and verified")

    def _model(self, fetcher: Fetcher, spec: ModelSpec) -> None:
        def progress(state: str, done: int, total: int | None) -> None:
            self.status.model(spec.key, state=state, done=done, size=total)

        try:
            fetcher.ensure(spec, progress)
        except Stopped:
            pass
        except FetchError as e:
            logs.say(f"model file failed: {e}")
            self.status.model(spec.key, state="failed")
            self.status.fail(str(e))
        except Exception as e:
            logs.say(f"{spec.key}: unexpected error:\n" + traceback.format_exc())
            self.status.model(spec.key, state="failed")
            self.status.fail(f"{spec.key}: {type(e).__name__}: {e}")

    def _comfyui(self, python: str) -> None:
        settings, layout = self.settings, self.layout
        port = str(settings.comfyui_port)
        main_py = str(layout.comfyui / "main.py")
        if settings.mode == "simulator":
            command = [
                python, main_py, "--host", "127.0.0.1", "--port", port, "--base-dir", str(layout.comfyui),
                "--models-dir", str(layout.models), "--comfyui-version", PINNED_COMFYUI_VERSION,
            ]  # fmt: skip
        else:
            command = [
                python, main_py, "--listen", "127.0.0.1", "--port", port,
                "--extra-model-paths-config", str(layout.extra_model_paths), "--disable-auto-launch",
            ]  # fmt: skip
        command.extend(settings.comfyui_args)
        logs.say(f"starting ComfyUI on 127.0.0.1:{port}: {' '.join(command)}")

        def on_change(up: bool, restarts: int, pid: int | None) -> None:
            self.status.comfyui(up=up, restarts=restarts, pid=pid)
            if up:
                logs.say(f"ready: ComfyUI behind the token proxy on {settings.listen_host}:{settings.listen_port}")

        Service(
            "ComfyUI",
            command,
            env=procs.child_env(),
            cwd=layout.comfyui,
            log_path=layout.log_file("comfyui", settings.pod_id),
            children=self.children,
            stop=self.stop,
            probe=http_probe(f"http://127.0.0.1:{port}/system_stats"),
            on_change=on_change,
        ).start()


def _total(specs: tuple[ModelSpec, ...]) -> int:
    return sum(s.size or 0 for s in specs)


def _still_to_fetch(layout: Layout, specs: tuple[ModelSpec, ...]) -> int:
    """Bytes the known-size files not yet on the volume still need (what a `.part` holds is already there)."""
    needed = 0
    for spec in specs:
        final = layout.models / spec.folder / spec.file
        if spec.size is None or final.exists():
            continue
        part = final.with_name(final.name + ".part")
        needed += spec.size - (part.stat().st_size if part.exists() else 0)
    return max(needed, 0)


def describe_workspace(settings: Settings) -> None:
    """Say what the workspace is, since that decides what the next pod pays again."""
    ws, again = settings.workspace, logs.human_bytes(_total(settings.models))
    if settings.network_volume:
        logs.say(f"workspace {ws}: a network volume; ComfyUI and the model files stay on it for the next pods")
    elif os.path.ismount(ws):
        logs.say(
            f"workspace {ws}: a pod volume, no network volume: it survives a stop of this pod, but every new pod "
            f"installs ComfyUI and downloads the model files ({again}) again"
        )
    else:
        logs.say(
            f"workspace {ws}: the container disk, no volume: every new pod (and every restart of this one) "
            f"installs ComfyUI and downloads the model files ({again}) again"
        )


def main() -> int:
    logs.say(f"starting (python {sys.version.split()[0]} at {sys.executable}, pid {os.getpid()})")
    stop = threading.Event()
    received: list[str] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    children = procs.Children()
    start_services(Path(os.environ.get("VIBEWAVE_START_SH") or "/start.sh"), children)
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as e:
        logs.say(f"refusing to start: {e}")
        children.terminate()
        return 2
    logs.redact(settings.token)
    logs.redact(settings.hf_token)
    layout = Layout(settings.workspace)
    try:
        layout.create()
        for folder in FOLDERS:
            (layout.models / folder).mkdir(exist_ok=True)
    except OSError as e:
        logs.say(f"refusing to start: the workspace {settings.workspace} cannot be used: {e}")
        children.terminate()
        return 2
    logs.to_file(layout.log_file("bootstrap", settings.pod_id))
    describe_workspace(settings)
    status = Status(
        layout.status_file(settings.pod_id),
        workspace=settings.workspace,
        network_volume=settings.network_volume,
        pod_id=settings.pod_id,
    )
    logs.say(f"status: {status.path} (GET /vibewave/status through the proxy)")
    boot = threading.Thread(target=Boot(settings, layout, status, children, stop).run, name="boot", daemon=True)
    boot.start()
    while not stop.wait(1.0):
        pass
    logs.say(f"{', '.join(received) or 'stop'}: stopping ComfyUI, the proxy and the image's services")
    children.terminate()
    boot.join(10)
    logs.say("stopped")
    return 0
