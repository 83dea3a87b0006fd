"""The bootstrap's settings, all from environment variables (the pod's `env`), and the workspace layout.

Every variable is named once, at the field that reads it; `deploy/pod/README.md` documents them.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from vibewave.pod.models import ModelSpec

PINNED_COMFYUI_REF = "a125cd84b054a57729b5eecab930ca9408719832"
"""ComfyUI v0.3.64 (2025-10-11): the release the graphs and the simulator's 0.3.64 mode were checked against."""
PINNED_COMFYUI_VERSION = "0.3.64"
COMFYUI_ARCHIVE = "https://github.com/comfyanonymous/ComfyUI/archive/{ref}.tar.gz"
TORCH_INDEX = "https://download.pytorch.org/whl/cu128"
TORCH_PINS = ("torch==2.8.0", "torchvision==0.23.0", "torchaudio==2.8.0")
TORCH_MINIMUM = (2, 8)
"""Older images (the API document's torch 2.1/CUDA 11.8) get these wheels in the venv; see the reference §1.6."""


class ConfigError(ValueError):
    """The pod's environment cannot work; the bootstrap exits with this message."""


@dataclass(frozen=True)
class Settings:
    token: str  # COMFY_PROXY_TOKEN: required, ComfyUI is never served without it
    workspace: Path  # VIBEWAVE_WORKSPACE
    models: tuple[ModelSpec, ...]  # VIBEWAVE_MODELS: a JSON list
    comfyui_ref: str  # VIBEWAVE_COMFYUI_REF
    comfyui_source: str  # VIBEWAVE_COMFYUI_SOURCE: a URL, a local .tar.gz or a local directory
    comfyui_python: str | None  # VIBEWAVE_COMFYUI_PYTHON: a prebuilt interpreter, no venv and no pip
    simulator_python: str | None  # VIBEWAVE_COMFYUI_SIMULATOR: run vibewave.comfyui_sim with this interpreter
    comfyui_args: tuple[str, ...]  # VIBEWAVE_COMFYUI_ARGS: shell-split, appended to ComfyUI's command line
    comfyui_port: int  # VIBEWAVE_COMFYUI_PORT: ComfyUI on 127.0.0.1 only
    listen_host: str  # VIBEWAVE_LISTEN_HOST: the token proxy
    listen_port: int  # VIBEWAVE_LISTEN_PORT
    torch_index: str  # VIBEWAVE_TORCH_INDEX
    download_parallel: int  # VIBEWAVE_DOWNLOAD_PARALLEL: model files fetched at once
    hf_token: str | None  # HF_TOKEN: sent to huggingface.co only
    pod_id: str  # RUNPOD_POD_ID, else this process's pid: names the per-pod files on a shared volume
    network_volume: bool  # RUNPOD_VOLUME_ID is set
    start_sh: Path  # VIBEWAVE_START_SH: the image's service script (runpod/pytorch: /start.sh)

    @property
    def mode(self) -> str:
        """How ComfyUI gets onto the pod: `pip` (a venv on the volume), `python` (given), `simulator`."""
        if self.simulator_python:
            return "simulator"
        return "python" if self.comfyui_python else "pip"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        token = env.get("COMFY_PROXY_TOKEN", "").strip()
        if not token:
            raise ConfigError(
                "COMFY_PROXY_TOKEN is not set: ComfyUI has no authentication of its own and must never be "
                "reachable without the token proxy, so this pod will not start it"
            )
        ref = env.get("VIBEWAVE_COMFYUI_REF") or PINNED_COMFYUI_REF
        return cls(
            token=token,
            workspace=Path(env.get("VIBEWAVE_WORKSPACE") or "/workspace"),
            models=_models(env.get("VIBEWAVE_MODELS") or "[]"),
            comfyui_ref=ref,
            comfyui_source=env.get("VIBEWAVE_COMFYUI_SOURCE") or COMFYUI_ARCHIVE.format(ref=ref),
            comfyui_python=env.get("VIBEWAVE_COMFYUI_PYTHON") or None,
            simulator_python=env.get("VIBEWAVE_COMFYUI_SIMULATOR") or None,
            comfyui_args=_args(env.get("VIBEWAVE_COMFYUI_ARGS", "")),
            comfyui_port=_port(env, "VIBEWAVE_COMFYUI_PORT", 18188),
            listen_host=env.get("VIBEWAVE_LISTEN_HOST") or "0.0.0.0",
            listen_port=_port(env, "VIBEWAVE_LISTEN_PORT", 8188),
            torch_index=env.get("VIBEWAVE_TORCH_INDEX") or TORCH_INDEX,
            download_parallel=max(1, _int(env, "VIBEWAVE_DOWNLOAD_PARALLEL", 3)),
            hf_token=env.get("HF_TOKEN") or None,
            pod_id=env.get("RUNPOD_POD_ID") or str(os.getpid()),
            network_volume=bool(env.get("RUNPOD_VOLUME_ID")),
            start_sh=Path(env.get("VIBEWAVE_START_SH") or "/start.sh"),
        )


def _models(raw: str) -> tuple[ModelSpec, ...]:
    try:
        entries = json.loads(raw)
    except ValueError as e:
        raise ConfigError(f"VIBEWAVE_MODELS is not JSON: {e}") from None
    if not isinstance(entries, list):
        raise ConfigError("VIBEWAVE_MODELS must be a JSON list of {folder, file, url, size, sha256}")
    try:
        specs = tuple(ModelSpec.parse(entry) for entry in entries)
    except ValueError as e:
        raise ConfigError(f"VIBEWAVE_MODELS: {e}") from None
    keys = [spec.key for spec in specs]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise ConfigError(f"VIBEWAVE_MODELS names a file twice: {', '.join(duplicates)}")
    return specs


def _args(raw: str) -> tuple[str, ...]:
    try:
        return tuple(shlex.split(raw))
    except ValueError as e:
        raise ConfigError(f"VIBEWAVE_COMFYUI_ARGS cannot be split like a shell line: {e}") from None


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, not {raw!r}") from None


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    port = _int(env, name, default)
    if not 0 < port < 65536:
        raise ConfigError(f"{name} must be a TCP port, not {port}")
    return port


@dataclass(frozen=True)
class Layout:
    """Where everything lives on the workspace (a network volume when the pod has one)."""

    root: Path

    @property
    def comfyui(self) -> Path:
        return self.root / "ComfyUI"

    @property
    def venv(self) -> Path:
        return self.root / "venv"

    @property
    def venv_python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def state(self) -> Path:
        """Markers, locks, status documents and logs: `.vibewave/`."""
        return self.root / ".vibewave"

    @property
    def locks(self) -> Path:
        return self.state / "locks"

    @property
    def installed_marker(self) -> Path:
        return self.state / "comfyui-installed.json"

    @property
    def models_lock(self) -> Path:
        """The sha256 of every verified model file, and the pins of files that have no published checksum."""
        return self.state / "models.lock.json"

    @property
    def extra_model_paths(self) -> Path:
        return self.state / "extra_model_paths.yaml"

    def status_file(self, pod_id: str) -> Path:
        return self.state / f"status-{pod_id}.json"

    def log_file(self, name: str, pod_id: str) -> Path:
        """`comfyui`, `proxy`, `install`, `bootstrap`: one file per pod, since pods may share the volume."""
        return self.state / f"{name}-{pod_id}.log"

    def create(self) -> None:
        for path in (self.state, self.locks, self.models):
            path.mkdir(parents=True, exist_ok=True)
