"""What pod-manager hands RunPod: the start command, the bootstrap archive and the pod's environment."""

from __future__ import annotations

import base64
import io
import json
import os
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.unit.pod.interpreters import python310
from vibewave.pod.payload import (
    BOOTSTRAP_MODULES,
    ENV_BUDGET,
    PINNED,
    START_COMMAND,
    bootstrap_archive,
    env_size,
    pod_env,
)

pytestmark = pytest.mark.unit

QWEN = [
    {
        "folder": "diffusion_models",
        "file": "qwen_image_fp8_e4m3fn.safetensors",
        "url": "https://huggingface.co/Comfy-Org/Qwen-Image_ComfyUI/resolve/1f12b17be14c89b026c51a91d67c32f84bb047bc/split_files/diffusion_models/qwen_image_fp8_e4m3fn.safetensors",
        "size": 20_430_635_136,
        "sha256": "98763a127701eb6fb59096f7742cb3aa7d64ed510b9f4e882d8351f8176e3ce3",
    },
    {
        "folder": "text_encoders",
        "file": "qwen_2.5_vl_7b_fp8_scaled.safetensors",
        "url": "https://huggingface.co/Comfy-Org/Qwen-Image_ComfyUI/resolve/1f12b17be14c89b026c51a91d67c32f84bb047bc/split_files/text_encoders/qwen_2.5_vl_7b_fp8_scaled.safetensors",
        "size": 9_384_670_680,
        "sha256": "cb5636d852a0ea6a9075ab1bef496c0db7aef13c02350571e388aea959c5c0b4",
    },
    {
        "folder": "vae",
        "file": "qwen_image_vae.safetensors",
        "url": "https://huggingface.co/Comfy-Org/Qwen-Image_ComfyUI/resolve/1f12b17be14c89b026c51a91d67c32f84bb047bc/split_files/vae/qwen_image_vae.safetensors",
        "size": 253_806_246,
        "sha256": "a70580f0213e67967ee9c95f05bb400e8fb08307e017a924bf3441223e023d1f",
    },
    {
        "folder": "loras",
        "file": "Qwen-Image-Lightning-8steps-V1.0.safetensors",
        "url": "https://huggingface.co/lightx2v/Qwen-Image-Lightning/resolve/main/Qwen-Image-Lightning-8steps-V1.0.safetensors",
        "size": 1_698_951_104,
        "sha256": "07b5a999881437f63124979844ba1949ce2438f65b6220628a196a7d30a4fff9",
    },
    {
        "folder": "loras",
        "file": "Qwen-Image-Lightning-4steps-V1.0.safetensors",
        "url": "https://huggingface.co/lightx2v/Qwen-Image-Lightning/resolve/main/Qwen-Image-Lightning-4steps-V1.0.safetensors",
        "size": None,
        "sha256": None,
    },
]
TOKEN = "tok_" + "x" * 43  # a 32-byte token, url-safe base64


def test_the_start_command_is_bash_c_with_single_quotes_only() -> None:
    argv = shlex.split(START_COMMAND)

    assert argv[:2] == ["bash", "-c"] and len(argv) == 3
    assert '"' not in START_COMMAND  # runpod-python pastes dockerArgs into GraphQL text unescaped
    assert "mktemp -d" in argv[2] and "base64 -d" in argv[2] and "exec python3" in argv[2]


def test_the_archive_is_deterministic_and_holds_only_the_bootstrap_modules() -> None:
    first = bootstrap_archive()
    bootstrap_archive.cache_clear()
    second = bootstrap_archive()

    assert first == second
    with zipfile.ZipFile(io.BytesIO(first)) as archive:
        names = archive.namelist()
        assert {i.date_time for i in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert names == sorted(names[:2]) + sorted(names[2:])  # the directory entries, then the files in order
    assert set(names) == {"vibewave/", "vibewave/pod/", "__main__.py"} | {
        f"vibewave/pod/{m}" for m in BOOTSTRAP_MODULES
    }
    assert "vibewave/pod/payload.py" not in names


def test_the_pod_env_carries_the_bootstrap_the_token_and_a_compact_manifest() -> None:
    env = pod_env(TOKEN, QWEN)

    assert set(env) == {"VIBEWAVE_BOOTSTRAP", "COMFY_PROXY_TOKEN", "VIBEWAVE_MODELS"}
    assert base64.b64decode(env["VIBEWAVE_BOOTSTRAP"]) == bootstrap_archive()
    assert env["COMFY_PROXY_TOKEN"] == TOKEN
    assert env["VIBEWAVE_MODELS"] == json.dumps(QWEN, separators=(",", ":"))
    assert pod_env(TOKEN, QWEN, comfyui_ref="v0.3.65")["VIBEWAVE_COMFYUI_REF"] == "v0.3.65"
    assert "VIBEWAVE_COMFYUI_REF" not in pod_env(TOKEN, QWEN, comfyui_ref=PINNED)


def test_a_create_body_with_the_pod_env_stays_far_under_runpods_limit() -> None:
    env = pod_env(TOKEN, QWEN)
    body = {
        "name": "vibewave-0123456789abcdef",
        "imageName": "runpod/pytorch:2.1.0-py3.10-cuda11.8.0-devel-ubuntu22.04",
        "gpuTypeIds": ["NVIDIA GeForce RTX 4090", "NVIDIA L40S", "NVIDIA H100 80GB HBM3"],
        "cloudType": "SECURE",
        "containerDiskInGb": 50,
        "volumeInGb": 0,
        "networkVolumeId": "abcdefghij",
        "volumeMountPath": "/workspace",
        "ports": ["8188/http", "22/tcp"],
        "dockerStartCmd": shlex.split(START_COMMAND),
        "env": {**env, "JUPYTER_PASSWORD": "p" * 32, "HF_TOKEN": "hf_" + "x" * 34},
    }

    assert env_size(env) < ENV_BUDGET
    assert len(json.dumps(body).encode()) < 102_400 * 0.6


def test_a_bad_manifest_or_token_fails_at_pod_manager() -> None:
    with pytest.raises(ValueError, match="folder"):
        pod_env(TOKEN, [{**QWEN[0], "folder": "unet"}])
    with pytest.raises(ValueError, match="token"):
        pod_env("", QWEN)


def _start(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The real start command, as RunPod runs it, with `python3` being this machine's 3.10 when it has one."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "python3").unlink(missing_ok=True)
    (bin_dir / "python3").symlink_to(python310() or sys.executable)
    return subprocess.run(
        shlex.split(START_COMMAND),
        env={
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "HOME": str(tmp_path),
            "TMPDIR": str(tmp_path),
            "VIBEWAVE_START_SH": str(tmp_path / "no-start.sh"),
            **env,
        },
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_the_start_command_runs_the_archive_which_refuses_to_start_without_a_token(tmp_path: Path) -> None:
    env = pod_env(TOKEN, QWEN)
    del env["COMFY_PROXY_TOKEN"]

    done = _start(tmp_path, {**env, "VIBEWAVE_WORKSPACE": str(tmp_path / "ws")})

    assert done.returncode == 2, done.stdout + done.stderr
    assert "vibewave-bootstrap: refusing to start: COMFY_PROXY_TOKEN is not set" in done.stdout
    assert not (tmp_path / "ws").exists()  # nothing happened before the refusal


def test_the_start_command_says_so_when_the_bootstrap_is_missing(tmp_path: Path) -> None:
    done = _start(tmp_path, {})

    assert done.returncode == 64
    assert "VIBEWAVE_BOOTSTRAP is empty" in done.stderr
