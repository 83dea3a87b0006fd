"""Model file lists from known names or from a models directory (ComfyUI's extension filter, search paths and
mtime-invalidated cache), and the `--models-dir` setting."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vibewave.comfyui_sim.__main__ import config_from_args
from vibewave.comfyui_sim.models import SUPPORTED_PT_EXTENSIONS, ModelFiles

pytestmark = pytest.mark.unit


def test_known_names_are_listed_only_while_present() -> None:
    present = [False]
    files = ModelFiles({"loras": ["b.safetensors", "a.safetensors"]}, lambda: present[0])
    assert files.files("loras") == []
    present[0] = True
    assert files.files("loras") == ["a.safetensors", "b.safetensors"] and files.files("vae") == []


def test_a_models_directory_is_walked_filtered_and_re_read_on_change(tmp_path: Path) -> None:
    assert {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"} == SUPPORTED_PT_EXTENSIONS
    (tmp_path / "loras" / "deep" / ".git").mkdir(parents=True)
    for name in ("a.SAFETENSORS", "b.pt2", "c.safetensors.part", "d.txt", "deep/e.pkl", "deep/.git/f.pt"):
        (tmp_path / "loras" / name).write_bytes(b"x")
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "v1.yaml").write_text("x")
    (tmp_path / "configs" / "v1.safetensors").write_text("x")
    files = ModelFiles({"loras": ["known.safetensors"]}, lambda: True, tmp_path)
    assert files.files("loras") == ["a.SAFETENSORS", "b.pt2", os.path.join("deep", "e.pkl")]
    assert files.files("configs") == ["v1.yaml"] and files.files("custom_nodes") == []
    assert files.files("diffusion_models") == []  # neither unet/ nor diffusion_models/ exists yet

    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "u.safetensors").write_bytes(b"x")
    (tmp_path / "diffusion_models").mkdir()
    (tmp_path / "diffusion_models" / "d.safetensors").write_bytes(b"x")
    assert files.files("diffusion_models") == ["d.safetensors", "u.safetensors"]
    (tmp_path / "loras" / "deep" / "g.bin").write_bytes(b"x")  # only the subdirectory's mtime changes
    assert os.path.join("deep", "g.bin") in files.files("loras")
    (tmp_path / "loras" / "c.safetensors.part").rename(tmp_path / "loras" / "c.safetensors")
    assert "c.safetensors" in files.files("loras")


def test_models_dir_from_the_command_line_or_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert config_from_args([])[0].models_dir is None
    assert config_from_args(["--models-dir", str(tmp_path)])[0].models_dir == tmp_path
    monkeypatch.setenv("VIBEWAVE_SIM_MODELS_DIR", str(tmp_path / "env"))
    assert config_from_args([])[0].models_dir == tmp_path / "env"
