"""Node catalogue: the object_info entries of the node classes the simulator can run.

`data/object_info.json.gz` holds the entries copied verbatim from the 0.33.0 recording server's
`GET /object_info` (reference/comfyui/transcripts/object_info_full.json.gz);
`data/object_info_0.3.64.json.gz` the same classes as a real ComfyUI 0.3.64 answered them (ColorTransfer does
not exist there). Only the model-file combos are rewritten at runtime from the simulator's model lists
(`models.py`: the known names while they are present, or what a models directory holds), and LoadImage's
list from the input directory, just as ComfyUI rebuilds them from disk on every request.
"""

from __future__ import annotations

import copy
import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vibewave.comfyui_sim.models import ModelFiles
from vibewave.comfyui_sim.versions import DEFAULT_VERSION, dialect

DATA_DIR = Path(__file__).parent / "data"

# (class_type, input name) -> model folder whose file list is the combo's option list.
MODEL_COMBOS: dict[tuple[str, str], str] = {
    ("UNETLoader", "unet_name"): "diffusion_models",
    ("CLIPLoader", "clip_name"): "text_encoders",
    ("VAELoader", "vae_name"): "vae",
    ("LoraLoaderModelOnly", "lora_name"): "loras",
}

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

    def __init__(
        self,
        models: dict[str, list[str]],
        input_dir: Path,
        version: str = DEFAULT_VERSION,
        present: Callable[[], bool] | None = None,
        models_dir: Path | None = None,
    ) -> None:
        with gzip.open(DATA_DIR / dialect(version).catalogue_file, "rt", encoding="utf-8") as f:
            self._base: dict[str, dict[str, Any]] = json.load(f)
        self.folders = ModelFiles(models, present or (lambda: True), models_dir)
        self.input_dir = input_dir

    def __contains__(self, class_type: object) -> bool:
        return class_type in self._base

    @property
    def class_names(self) -> list[str]:
        return list(self._base)

    def model_files(self, folder: str) -> list[str]:
        """A loader's combo list: the folder's files (VAELoader adds `pixel_space`)."""
        files = self.folders.files(folder)
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

    def takes_unique_id(self, class_type: str) -> bool:
        """Whether the class has a hidden UNIQUE_ID input (its cache key then includes the node id)."""
        hidden = self._base[class_type]["input"].get("hidden", {})
        return any(v == "UNIQUE_ID" or v == ["UNIQUE_ID"] for v in hidden.values())

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
