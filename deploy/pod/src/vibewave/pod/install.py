"""ComfyUI onto the workspace, once: the pinned source, a venv, the torch it needs, its requirements.

The marker `.vibewave/comfyui-installed.json` is written last, only after every step worked, so a boot
that finds it for the same commit and mode skips the whole install; a boot that finds none (a first boot,
or one that died half-way) does it again from the top, reusing what pip already has. The whole install
holds a lock, since two pods on one network volume may boot at once.

Modes: `pip` (the real install), `python` (`VIBEWAVE_COMFYUI_PYTHON`: a prebuilt interpreter, so only the
source is put in place) and `simulator` (`VIBEWAVE_COMFYUI_SIMULATOR`: a labelled stand-in, for the RunPod
emulator). Markers, locks and the skip on a second boot are the same in every mode.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tarfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from vibewave.pod import logs, procs
from vibewave.pod.config import PINNED_COMFYUI_VERSION, TORCH_MINIMUM, TORCH_PINS, Layout, Settings
from vibewave.pod.files import Stopped, flock, read_json, write_json

KEPT_ON_REINSTALL = ("input", "output", "user")
"""What a previous ComfyUI on the volume made (images, settings): carried into the new tree, not deleted."""
NOT_COPIED = {".git", ".venv", "venv", "__pycache__", "output", "temp", "user", "logs"}
"""Left out when the source is a local checkout: its own venv and run-time files."""

SIMULATED = """\
This is not ComfyUI. The vibewave bootstrap ran in simulator mode (VIBEWAVE_COMFYUI_SIMULATOR={python}):
main.py starts vibewave.comfyui_sim, a GPU-free stand-in that behaves as ComfyUI {version} and lists the
model files really present under {models}/<folder>/.
"""
LAUNCHER = '''\
"""Not ComfyUI: the vibewave bootstrap's simulator mode (see SIMULATED) starts vibewave.comfyui_sim."""
import os
import sys

os.execv(sys.executable, [sys.executable, "-m", "vibewave.comfyui_sim", *sys.argv[1:]])
'''


class InstallError(Exception):
    """The install cannot finish; the pod reports it in its status and does not start ComfyUI."""


@dataclass(frozen=True)
class Installed:
    python: str  # the interpreter ComfyUI and the token proxy run with
    skipped: bool
    torch: str | None


def has_aiohttp(python: str) -> bool:
    """Can `python` run the token proxy? aiohttp is a ComfyUI requirement, so a ComfyUI interpreter can."""
    return procs.output([python, "-c", "import aiohttp"], timeout=120) is not None


def early_interpreter(settings: Settings, layout: Layout) -> str | None:
    """An interpreter for the token proxy before any install step: the one given, or an earlier boot's venv."""
    given = settings.simulator_python or settings.comfyui_python
    if given:
        return given
    if layout.venv_python.exists() and has_aiohttp(str(layout.venv_python)):
        return str(layout.venv_python)
    return None


def torch_version(python: str) -> str | None:
    out = procs.output([python, "-c", "import torch; print(torch.__version__)"])
    return out.splitlines()[-1] if out else None


def _older_than_minimum(version: str | None) -> bool:
    match = re.match(r"(\d+)\.(\d+)", version or "")
    return match is None or (int(match[1]), int(match[2])) < TORCH_MINIMUM


class Installer:
    def __init__(
        self,
        settings: Settings,
        layout: Layout,
        children: procs.Children,
        stop: threading.Event,
        on_interpreter: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.layout = layout
        self.children = children
        self.stop = stop
        self.on_interpreter = on_interpreter  # called as soon as an interpreter with aiohttp exists
        self.log: TextIO | None = None

    def run(self) -> Installed:
        settings, layout = self.settings, self.layout
        with flock(layout.locks / "install.lock", "the ComfyUI install", self.stop):
            marker = read_json(layout.installed_marker)
            if self._valid(marker):
                logs.say(f"ComfyUI {settings.comfyui_ref} already installed on the volume ({settings.mode} mode)")
                python = str(marker["python"])
                self.on_interpreter(python)
                return Installed(python=python, skipped=True, torch=marker.get("torch"))
            started = time.monotonic()
            logs.say(f"installing ComfyUI {settings.comfyui_ref} onto {layout.comfyui} ({settings.mode} mode)")
            self.log = layout.log_file("install", settings.pod_id).open("a", encoding="utf-8")
            try:
                installed = self._install()
            finally:
                self.log.close()
            write_json(
                layout.installed_marker,
                {
                    "commit": settings.comfyui_ref,
                    "mode": settings.mode,
                    "python": installed.python,
                    "python_version": procs.output(
                        [installed.python, "-c", "import sys; print(sys.version.split()[0])"]
                    ),
                    "torch": installed.torch,
                    "source": settings.comfyui_source,
                    "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                },
            )
            logs.say(f"ComfyUI {settings.comfyui_ref} installed in {time.monotonic() - started:.0f} s")
            return installed

    def _valid(self, marker: Any) -> bool:
        """A marker for this commit and mode, over an install still there (a venv whose Python still runs)."""
        if not isinstance(marker, dict) or not isinstance(marker.get("python"), str):
            return False
        if marker.get("commit") != self.settings.comfyui_ref or marker.get("mode") != self.settings.mode:
            return False
        if not (self.layout.comfyui / "main.py").is_file():
            return False
        python = str(marker["python"])
        if self.settings.mode == "pip":
            return has_aiohttp(python)
        return python == (self.settings.simulator_python or self.settings.comfyui_python)

    def _install(self) -> Installed:
        settings = self.settings
        if settings.simulator_python:
            self._simulated(settings.simulator_python)
            self.on_interpreter(settings.simulator_python)
            return Installed(python=settings.simulator_python, skipped=False, torch=None)
        if settings.comfyui_python:
            self.on_interpreter(settings.comfyui_python)
            self._source()
            return Installed(
                python=settings.comfyui_python, skipped=False, torch=torch_version(settings.comfyui_python)
            )
        python = self._venv()
        self.on_interpreter(python)
        torch = self._torch(python)
        self._source()
        self._pip(python, "-r", str(self.layout.comfyui / "requirements.txt"), "requests")
        return Installed(python=python, skipped=False, torch=torch)

    def _run(self, *command: str, what: str) -> None:
        code = procs.run(self.children, command, log=self.log, stop=self.stop)
        if code != 0:
            raise InstallError(
                f"{what} failed (exit code {code}); see {self.layout.log_file('install', self.settings.pod_id)}"
            )

    def _pip(self, python: str, *args: str) -> None:
        self._run(
            python, "-m", "pip", "install", "--no-input", "--disable-pip-version-check", "--progress-bar", "off", *args,
            what=f"pip install {' '.join(args)}",
        )  # fmt: skip

    def _venv(self) -> str:
        """`<ws>/venv` with `--system-site-packages` (the image's torch stays usable) and aiohttp for the proxy."""
        venv, python = self.layout.venv, str(self.layout.venv_python)
        if procs.output([python, "-c", "pass"], timeout=60) is None:
            shutil.rmtree(venv, ignore_errors=True)
            logs.say(f"creating the venv {venv} (--system-site-packages, {sys.executable} {sys.version.split()[0]})")
            base = [sys.executable, "-m", "venv", "--system-site-packages"]
            if procs.run(self.children, [*base, str(venv)], log=self.log, stop=self.stop) != 0:
                logs.say(
                    "python3 -m venv failed (no ensurepip in this image?): making one without pip, using the image's"
                )
                shutil.rmtree(venv, ignore_errors=True)
                self._run(*base, "--without-pip", str(venv), what="python3 -m venv")
        logs.say("installing aiohttp into the venv (the token proxy runs on it)")
        self._pip(python, "aiohttp")
        return python

    def _torch(self, python: str) -> str:
        version = torch_version(python)
        if not _older_than_minimum(version):
            logs.say(f"torch {version} from the image is new enough")
            return str(version)
        minimum = ".".join(map(str, TORCH_MINIMUM))
        found = f"torch {version} is older than {minimum}" if version else "torch is not installed"
        logs.say(f"{found}: installing {' '.join(TORCH_PINS)} from {self.settings.torch_index} into the venv")
        self._pip(python, *TORCH_PINS, "--index-url", self.settings.torch_index)
        version = torch_version(python)
        if version is None:
            raise InstallError("torch was installed but cannot be imported")
        return version

    def _source(self) -> None:
        """The ComfyUI tree at `<ws>/ComfyUI`, from a URL, a local .tar.gz or a local directory."""
        source, new = self.settings.comfyui_source, self.layout.root / "ComfyUI.new"
        shutil.rmtree(new, ignore_errors=True)
        if re.match(r"https?://", source):
            archive = self.layout.state / "comfyui-source.tar.gz"
            self._download(source, archive)
            _extract(archive, new)
            archive.unlink()
        elif Path(source).is_dir():
            logs.say(f"copying ComfyUI from {source}")
            shutil.copytree(source, new, symlinks=True, ignore=_not_copied)
        elif Path(source).is_file():
            _extract(Path(source), new)
        else:
            raise InstallError(f"VIBEWAVE_COMFYUI_SOURCE={source!r} is neither a URL, a .tar.gz nor a directory")
        if not (new / "main.py").is_file():
            raise InstallError(f"{source} holds no ComfyUI (no main.py at its top)")
        _swap(new, self.layout.comfyui)

    def _download(self, url: str, dest: Path, attempts: int = 3) -> None:
        logs.say(f"downloading {url}")
        for attempt in range(1, attempts + 1):
            try:
                request = urllib.request.Request(url, headers={"User-Agent": "vibewave-pod-bootstrap/0.1 (urllib)"})
                with urllib.request.urlopen(request, timeout=60) as response, dest.open("wb") as out:
                    while chunk := response.read(1 << 20):
                        if self.stop.is_set():
                            raise Stopped
                        out.write(chunk)
                return
            except OSError as e:
                if attempt == attempts:
                    raise InstallError(f"cannot download {url}: {e}") from e
                logs.say(f"downloading {url} failed ({e}); retrying in {5 * attempt} s")
                if self.stop.wait(5 * attempt):
                    raise Stopped from e

    def _simulated(self, python: str) -> None:
        new = self.layout.root / "ComfyUI.new"
        shutil.rmtree(new, ignore_errors=True)
        new.mkdir(parents=True)
        (new / "SIMULATED").write_text(
            SIMULATED.format(python=python, version=PINNED_COMFYUI_VERSION, models=self.layout.models), encoding="utf-8"
        )
        (new / "main.py").write_text(LAUNCHER, encoding="utf-8")
        _swap(new, self.layout.comfyui)


def _not_copied(directory: str, names: list[str]) -> set[str]:
    return {n for n in names if n in NOT_COPIED or n.endswith((".pyc", ".log"))}


def _extract(archive: Path, dest: Path) -> None:
    """Unpack a source archive (GitHub's has one top directory, `ComfyUI-<commit>/`, which becomes `dest`)."""
    logs.say(f"unpacking {archive.name}")
    scratch = dest.with_name(dest.name + ".unpack")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                parts = Path(member.name).parts
                link = Path(member.linkname).parts if member.issym() or member.islnk() else ()
                if member.name.startswith("/") or ".." in parts or ".." in link or member.linkname.startswith("/"):
                    raise InstallError(f"{archive.name}: refusing the unsafe member {member.name!r}")
                if member.isdev():
                    raise InstallError(f"{archive.name}: refusing the device file {member.name!r}")
            if hasattr(tarfile, "data_filter"):  # 3.10.12+; the checks above cover older ones
                tar.extractall(scratch, members, filter="data")
            else:
                tar.extractall(scratch, members)
    except (tarfile.TarError, OSError) as e:
        raise InstallError(f"cannot unpack {archive}: {e}") from e
    entries = list(scratch.iterdir())
    top = entries[0] if len(entries) == 1 and entries[0].is_dir() else scratch
    os.replace(top, dest)
    shutil.rmtree(scratch, ignore_errors=True)


def _swap(new: Path, current: Path) -> None:
    """Put the `new` tree in place of `current`, carrying over what a previous ComfyUI made."""
    if current.exists():
        for name in KEPT_ON_REINSTALL:
            if (current / name).exists():
                shutil.rmtree(new / name, ignore_errors=True)
                os.replace(current / name, new / name)
        old = current.with_name(current.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(current, old)
        shutil.rmtree(old, ignore_errors=True)
    os.replace(new, current)
