"""Node catalogue: the object_info entries of the node classes the simulator can run.

`data/object_info.json.gz` holds the entries copied verbatim from the recording server's
`GET /object_info` (reference/comfyui/transcripts/object_info_full.json.gz, ComfyUI 0.33.0); only the
model-file combos are rewritten at runtime from the simulator's "installed" model lists, and LoadImage's
list from the input directory, just as ComfyUI rebuilds them from disk on every request.
"""

from __future__ import annotations

import copy
import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATA_FILE = Path(__file__).parent / "data" / "object_info.json.gz"

# (class_type, input name) -> model folder whose file list is the combo's option list.
MODEL_COMBOS: dict[tuple[str, str], str] = {
    ("UNETLoader", "unet_name"): "diffusion_models",
    ("CLIPLoader", "clip_name"): "text_encoders",
    ("VAELoader", "vae_name"): "vae",
    ("LoraLoaderModelOnly", "lora_name"): "loras",
}

# Folders listed by GET /models on the recording server (order preserved).
MODEL_FOLDERS = [
    "checkpoints",
    "configs",
    "loras",
    "vae",
    "text_encoders",
    "diffusion_models",
    "clip_vision",
    "style_models",
    "embeddings",
    "diffusers",
    "vae_approx",
    "controlnet",
    "gligen",
    "upscale_models",
    "latent_upscale_models",
    "custom_nodes",
    "datasets",
    "hypernetworks",
    "photomaker",
    "classifiers",
    "model_patches",
    "audio_encoders",
    "background_removal",
    "frame_interpolation",
    "geometry_estimation",
    "optical_flow",
    "detection",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


@dataclass(frozen=True)
class InputSpec:
    """One declared input: its type (a string, or the option list of a legacy combo) and its options."""

    name: str
    category: str  # required | optional
    type: Any
    extra: dict[str, Any]

    @property
    def config(self) -> list[Any]:
        """The `input_config` ComfyUI echoes in validation errors: `[type, extra]`."""
        return [self.type, self.extra]


class Catalogue:
    """Node definitions plus the dynamic combo lists; one instance per simulator."""

    def __init__(self, models: dict[str, list[str]], input_dir: Path) -> None:
        with gzip.open(DATA_FILE, "rt", encoding="utf-8") as f:
            self._base: dict[str, dict[str, Any]] = json.load(f)
        self.models = models
        self.input_dir = input_dir

    def __contains__(self, class_type: object) -> bool:
        return class_type in self._base

    @property
    def class_names(self) -> list[str]:
        return list(self._base)

    def model_files(self, folder: str) -> list[str]:
        files = sorted(self.models.get(folder, []))
        if folder == "vae":
            files.append("pixel_space")
        return files

    def input_images(self) -> list[str]:
        if not self.input_dir.is_dir():
            return []
        return sorted(p.name for p in self.input_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)

    def info(self, class_type: str) -> dict[str, Any]:
        """The object_info entry with the live combo lists filled in."""
        info = copy.deepcopy(self._base[class_type])
        required = info["input"].get("required", {})
        for (cls, name), folder in MODEL_COMBOS.items():
            if cls == class_type and name in required:
                spec = required[name]
                required[name] = [self.model_files(folder), *spec[1:]]
        if class_type == "LoadImage":
            required["image"] = [self.input_images(), *required["image"][1:]]
        return info

    def object_info(self) -> dict[str, Any]:
        return {name: self.info(name) for name in self._base}

    def is_output(self, class_type: str) -> bool:
        return bool(self._base[class_type]["output_node"])

    def return_types(self, class_type: str) -> list[str]:
        return list(self._base[class_type]["output"])

    def inputs(self, class_type: str) -> list[InputSpec]:
        """Required then optional inputs, in the server's input_order."""
        info = self.info(class_type)
        specs: list[InputSpec] = []
        order = info.get("input_order", {})
        for category in ("required", "optional"):
            declared = info["input"].get(category, {})
            for name in order.get(category, list(declared)):
                spec = declared[name]
                extra = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                specs.append(InputSpec(name, category, spec[0], extra))
        return specs
