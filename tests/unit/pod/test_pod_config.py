"""The pod's environment, read once: what it defaults to, and what makes a pod refuse to start."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vibewave.pod.config import PINNED_COMFYUI_REF, ConfigError, Settings

pytestmark = pytest.mark.unit

TOKEN = {"COMFY_PROXY_TOKEN": "t"}
VAE = {"folder": "vae", "file": "v.safetensors", "url": "https://example.org/v", "size": 1, "sha256": None}


def test_the_defaults_are_a_runpod_pod_on_its_volume() -> None:
    settings = Settings.from_env({"COMFY_PROXY_TOKEN": "t", "RUNPOD_POD_ID": "abc", "RUNPOD_VOLUME_ID": "vol"})

    assert settings.workspace == Path("/workspace")
    assert settings.mode == "pip" and settings.models == ()
    assert settings.comfyui_ref == PINNED_COMFYUI_REF
    assert settings.comfyui_source == f"https://github.com/comfyanonymous/ComfyUI/archive/{PINNED_COMFYUI_REF}.tar.gz"
    assert (settings.listen_host, settings.listen_port, settings.comfyui_port) == ("0.0.0.0", 8188, 18188)
    assert settings.pod_id == "abc" and settings.network_volume is True
    assert settings.torch_index == "https://download.pytorch.org/whl/cu128"


def test_the_overrides_pick_the_mode() -> None:
    base = {"COMFY_PROXY_TOKEN": "t"}
    assert Settings.from_env({**base, "VIBEWAVE_COMFYUI_PYTHON": "/opt/venv/bin/python"}).mode == "python"
    simulated = Settings.from_env(
        {**base, "VIBEWAVE_COMFYUI_SIMULATOR": "/usr/bin/python3", "VIBEWAVE_COMFYUI_PYTHON": "x"}
    )
    assert simulated.mode == "simulator"
    assert Settings.from_env({**base, "VIBEWAVE_COMFYUI_ARGS": "--cpu --preview-method 'auto'"}).comfyui_args == (
        "--cpu",
        "--preview-method",
        "auto",
    )


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({}, "COMFY_PROXY_TOKEN is not set"),
        ({"COMFY_PROXY_TOKEN": "  "}, "COMFY_PROXY_TOKEN is not set"),
        ({**TOKEN, "VIBEWAVE_MODELS": "{not json"}, "not JSON"),
        ({**TOKEN, "VIBEWAVE_MODELS": json.dumps(VAE)}, "must be a JSON list"),
        ({**TOKEN, "VIBEWAVE_MODELS": json.dumps([VAE, VAE])}, "names a file twice: vae/v.safetensors"),
        ({**TOKEN, "VIBEWAVE_MODELS": json.dumps([{**VAE, "folder": "clip"}])}, "folder 'clip'"),
        ({**TOKEN, "VIBEWAVE_LISTEN_PORT": "http"}, "must be an integer"),
        ({**TOKEN, "VIBEWAVE_COMFYUI_PORT": "70000"}, "must be a TCP port"),
        ({**TOKEN, "VIBEWAVE_COMFYUI_ARGS": "--x 'unclosed"}, "cannot be split"),
    ],
)
def test_a_pod_that_cannot_work_refuses_to_start(env: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        Settings.from_env(env)
