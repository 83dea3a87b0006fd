"""Simulator settings and fault switches.

Everything a test may want to vary lives here, so the CLI, the environment and the runtime control route
all write into the same two dataclasses.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "VIBEWAVE_SIM_"

# Model files the simulator pretends are installed: everything the shipped Qwen-Image graphs (base,
# Lightning 4-step, Lightning 8-step) and the Wan 2.2 graphs reference. Folder names are ComfyUI's.
DEFAULT_MODELS: dict[str, list[str]] = {
    "checkpoints": [],
    "diffusion_models": [
        "qwen_image_fp8_e4m3fn.safetensors",
        "qwen_image_distill_full_fp8_e4m3fn.safetensors",
        "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors",
        "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors",
        "wan2.2_ti2v_5B_fp16.safetensors",
    ],
    "text_encoders": [
        "qwen_2.5_vl_7b_fp8_scaled.safetensors",
        "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
    ],
    "vae": [
        "qwen_image_vae.safetensors",
        "wan2.2_vae.safetensors",
        "wan_2.1_vae.safetensors",
    ],
    "loras": [
        "Qwen-Image-Lightning-4steps-V1.0.safetensors",
        "Qwen-Image-Lightning-8steps-V1.0.safetensors",
        "wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors",
        "wan2.2_t2v_lightx2v_4steps_lora_v1.1_low_noise.safetensors",
    ],
}

OOM_TIPS = (
    "This error means you ran out of memory on your GPU.\n\n"
    "TIPS: If the workflow worked before you might have accidentally set the batch_size to a large number."
)
DEFAULT_OOM_MESSAGE = (
    "Allocation on device 0 would exceed allowed memory. (out of memory)\n"
    "Currently allocated     : 22.41 GiB\n"
    "Requested               : 2.00 GiB\n"
    "Device limit            : 23.55 GiB\n"
    "Free (according to CUDA): 1.06 GiB\n"
    "PyTorch limit (set by user-supplied memory fraction)\n"
    "                        : 17179869184.00 GiB"
)


@dataclass
class NodeFault:
    """One injected failure: which node (class_type or node id) and, for samplers, which step."""

    node: str
    step: int | None = None
    times: int | None = None
    message: str | None = None
    exception_type: str | None = None
    exit_code: int = 1

    def matches(self, node_id: str, class_type: str) -> bool:
        return self.node in (node_id, class_type) and (self.times is None or self.times > 0)

    def consume(self) -> None:
        if self.times is not None:
            self.times -= 1

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> NodeFault | None:
        if data is None:
            return None
        if isinstance(data, str):
            return cls(node=data)
        if not isinstance(data, dict) or not isinstance(data.get("node"), str):
            raise ValueError("a fault must be null, a node name, or an object with a string 'node'")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        fault = cls(**data)
        for name in ("step", "times"):
            value = getattr(fault, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise ValueError(f"fault field {name!r} must be an integer or null")
        return fault


@dataclass
class Faults:
    """Runtime-switchable behaviour; the control route replaces fields of this object in place."""

    step_time: float = 0.1
    node_time: float = 0.0
    load_time: float = 0.0
    http_delay: float = 0.0
    progress_throttle: float = 0.0
    node_cost_scale: float = 1.0
    execution_error: NodeFault | None = None
    oom: NodeFault | None = None
    crash: NodeFault | None = None

    FAULT_FIELDS = ("execution_error", "oom", "crash")
    NUMBER_FIELDS = ("step_time", "node_time", "load_time", "http_delay", "progress_throttle", "node_cost_scale")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: getattr(self, name) for name in self.NUMBER_FIELDS}
        for name in self.FAULT_FIELDS:
            fault: NodeFault | None = getattr(self, name)
            out[name] = None if fault is None else fault.to_json()
        return out

    def update(self, data: dict[str, Any]) -> None:
        """Apply a partial update; validates everything before changing anything."""
        changes: dict[str, Any] = {}
        for key, value in data.items():
            if key in self.NUMBER_FIELDS:
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    raise ValueError(f"{key} must be a non-negative number")
                changes[key] = float(value)
            elif key in self.FAULT_FIELDS:
                changes[key] = NodeFault.from_json(value)
            else:
                raise ValueError(f"unknown field {key!r}")
        for key, value in changes.items():
            setattr(self, key, value)

    def copy(self) -> Faults:
        def clone(fault: NodeFault | None) -> NodeFault | None:
            return None if fault is None else dataclasses.replace(fault)

        return Faults(
            step_time=self.step_time,
            node_time=self.node_time,
            load_time=self.load_time,
            http_delay=self.http_delay,
            progress_throttle=self.progress_throttle,
            node_cost_scale=self.node_cost_scale,
            execution_error=clone(self.execution_error),
            oom=clone(self.oom),
            crash=clone(self.crash),
        )


@dataclass
class SimConfig:
    """Static settings fixed at start-up (paths, network, catalogue) plus the initial fault switches.

    `comfyui_version` picks the dialect (wording, routes, catalogue) of one recorded ComfyUI release.
    `models_present` says whether the files in `models` are on disk: False (the default) behaves like a
    ComfyUI whose model folders are empty, so model combos list nothing and model graphs fail validation.
    It is the start-up value; the control route can switch it at runtime. `models_dir` replaces both: the
    folders then list the files really present below it (ComfyUI's `models/` directory).
    """

    host: str = "127.0.0.1"
    port: int = 8188
    base_dir: Path | None = None
    output_dir: Path | None = None
    input_dir: Path | None = None
    temp_dir: Path | None = None
    startup_delay: float = 0.0
    cache_size: int = 1000
    history_size: int = 10000
    max_upload_size: int = 100 * 1024 * 1024
    models: dict[str, list[str]] = field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_MODELS.items()})
    models_present: bool = False
    models_dir: Path | None = None
    comfyui_version: str = "0.33.0"
    faults: Faults = field(default_factory=Faults)

    def resolve_dirs(self) -> None:
        """Fill in missing directories below base_dir (a fresh temporary directory if unset) and create them."""
        if self.base_dir is None and None in (self.output_dir, self.input_dir, self.temp_dir):
            self.base_dir = Path(tempfile.mkdtemp(prefix="vibewave-comfyui-sim-"))
        base = self.base_dir or Path.cwd()
        self.output_dir = Path(self.output_dir or base / "output").resolve()
        self.input_dir = Path(self.input_dir or base / "input").resolve()
        self.temp_dir = Path(self.temp_dir or base / "temp").resolve()
        for d in (self.output_dir, self.input_dir, self.temp_dir):
            d.mkdir(parents=True, exist_ok=True)
        if self.models_dir is not None:
            self.models_dir = Path(self.models_dir).resolve()  # not created: a missing folder lists nothing

    @property
    def out(self) -> Path:
        assert self.output_dir is not None, "resolve_dirs() not called"
        return self.output_dir

    @property
    def inp(self) -> Path:
        assert self.input_dir is not None, "resolve_dirs() not called"
        return self.input_dir

    @property
    def tmp(self) -> Path:
        assert self.temp_dir is not None, "resolve_dirs() not called"
        return self.temp_dir


def env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(ENV_PREFIX + name, default)


def parse_bool(value: str) -> bool:
    """An environment-style switch: 1/true/yes/on or 0/false/no/off (any case)."""
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {value!r}")
