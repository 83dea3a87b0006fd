"""Workflows as data: API-format ComfyUI graphs plus a typed map from request inputs to graph fields.

A workflow is a folder holding `workflow.json` (name, kind, inputs, variants, presets, file prefix) and
the graphs it names. A workflow may have graph variants, chosen by the inputs (e.g. the Qwen Lightning
LoRA made for the requested step count); presets are named input sets. The shipped folders live beside
this module; operators add more through a directory of their own (`WORKFLOWS_DIR`), no code needed.
Rendering is pure: validate the inputs, draw a seed when none is given, write each value into its node.
An `image` input names a stored file — an upload, or an image a request generated (so a studio animates
its own still without downloading it) — or an http(s) URL; only its shape is checked here (no I/O): the
api checks that the file is the caller's and where the URL points, the executor fetches it.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import secrets
import time
from pathlib import Path
from typing import Any, Literal, Protocol

import msgspec

SHIPPED_DIR = Path(__file__).with_name("workflow_defs")

log = logging.getLogger("vibewave.contracts.workflows")

IMAGE_TYPES = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
"""The image formats an `image` input takes (uploaded or fetched), with the file extension each gets."""
MAX_IMAGE_BYTES = 20 * 1024 * 1024  # an uploaded or fetched input image
MAX_IMAGE_URL = 2048
UPLOAD_NAME = re.compile(r"^upload_[0-9a-f]{16}\.(?:png|jpg|webp)$")
STORED_IMAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,250}\.(?:png|jpg|jpeg|webp)$")
"""A stored image's name: an upload's, or a generated output's (`qwen_12345_001.png`)."""
"""What `POST /api/files` names an upload (and nothing else is)."""


class InputSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    type: Literal["string", "int", "float", "bool", "image"]
    node: str
    field: str
    required: bool = False
    default: Any = None
    min: int | float | None = None
    max: int | float | None = None
    multiple_of: int | None = None
    offset: int = 0  # with multiple_of: value - offset must be a multiple (e.g. 4k+1 video frames)
    min_length: int | None = None
    max_length: int | None = None
    random_default: bool = False


class Bounds(msgspec.Struct, forbid_unknown_fields=True):
    min: int | float | None = None
    max: int | float | None = None

    def holds(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)


class VariantDef(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A graph used when every input named in `when` is within its bounds (first match wins)."""

    name: str
    graph: str
    when: dict[str, Bounds] = msgspec.field(default_factory=dict)
    description: str = ""


class PresetDef(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    inputs: dict[str, Any]
    description: str = ""
    expected_seconds: tuple[float, float] | None = None
    timeout_s: float | None = None  # execution timeout on the pod
    sync_timeout_s: float | None = None  # how long a synchronous call waits before answering 408


MODEL_EXTENSIONS = (".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft")
"""What ComfyUI lists in a model folder (`folder_paths.supported_pt_extensions`): `x.safetensors.part` is hidden."""
MODEL_FOLDERS = ("checkpoints", "diffusion_models", "text_encoders", "vae", "loras")
"""ComfyUI's own folder names (`folder_paths` keys: `GET /models/{folder}` answers only these, not `unet`/`clip`)."""


class ModelFile(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """One model file a workflow's graphs load: where it goes, where it comes from, what it must be.

    `sha256` is None only where no checksum is published (the pod pins the hash of its first download and
    checks every later boot against it); `variants` names the graph variants that load it (empty: all).
    An `optional` file is fetched only when the operator asks for it (a large file few requests need)."""

    folder: Literal["checkpoints", "diffusion_models", "text_encoders", "vae", "loras"]
    file: str
    url: str
    size: int | None
    sha256: str | None
    variants: tuple[str, ...] = ()
    optional: bool = False
    source: str = ""  # where size and checksum come from

    @property
    def key(self) -> str:
        """`folder/file`: how requests name what they need and pods what they have."""
        return f"{self.folder}/{self.file}"

    def manifest_entry(self) -> dict[str, Any]:
        """What the pod bootstrap reads (`VIBEWAVE_MODELS`)."""
        return {"folder": self.folder, "file": self.file, "url": self.url, "size": self.size, "sha256": self.sha256}


class WorkflowDef(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str
    description: str = ""
    kind: Literal["image", "video", "audio"] = "image"
    file_prefix: str
    timeout_s: float = 900.0
    min_gpu_memory_gb: int = 0  # only pods with at least this much GPU memory run it (e.g. Wan 2.2 14B)
    graph: str | None = None
    variants: list[VariantDef] = msgspec.field(default_factory=list)
    inputs: dict[str, InputSpec]
    default_preset: str | None = None
    presets: dict[str, PresetDef] = msgspec.field(default_factory=dict)
    notes: dict[str, Any] = msgspec.field(default_factory=dict)
    examples: list[dict[str, Any]] = msgspec.field(default_factory=list)
    tips: list[str] = msgspec.field(default_factory=list)

    def all_variants(self) -> list[VariantDef]:
        """The variants, with a plain `graph` as the catch-all last one."""
        tail = [VariantDef(name="default", graph=self.graph)] if self.graph else []
        return [*self.variants, *tail]


class InvalidInput(ValueError):
    """An input does not fit the workflow's schema; `field` names it for a 400 at the edge."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class Workflow(msgspec.Struct, frozen=True, kw_only=True):
    definition: WorkflowDef
    graphs: dict[str, dict[str, Any]]  # by file name
    models: tuple[ModelFile, ...] = ()  # `models.json`: every file any variant loads

    def models_for(self, inputs: dict[str, Any]) -> list[ModelFile]:
        """The files the graph variant these (resolved) inputs pick loads."""
        variant = self.variant_for(inputs).name
        return [m for m in self.models if not m.variants or variant in m.variants]

    @property
    def name(self) -> str:
        return self.definition.name

    def preset_inputs(self, preset: str | None) -> dict[str, Any]:
        if preset is None:
            return {}
        found = self.definition.presets.get(preset)
        if found is None:
            known = ", ".join(sorted(self.definition.presets)) or "none"
            raise InvalidInput("preset", f"unknown preset {preset!r} (known: {known})")
        return dict(found.inputs)

    def preset_for(self, inputs: dict[str, Any], named: str | None = None) -> str | None:
        """The named preset, else the first whose inputs the resolved inputs match, else the default."""
        if named is not None:
            return named
        for name, preset in self.definition.presets.items():
            if all(inputs.get(k) == v for k, v in preset.inputs.items()):
                return name
        return self.definition.default_preset

    def sync_timeout_for(self, preset: str | None, default: float) -> float:
        found = self.definition.presets.get(preset or "")
        return found.sync_timeout_s if found is not None and found.sync_timeout_s else default

    def timeout_for(self, preset: str | None) -> float:
        found = self.definition.presets.get(preset or self.definition.default_preset or "")
        return found.timeout_s if found is not None and found.timeout_s else self.definition.timeout_s

    def variant_for(self, inputs: dict[str, Any]) -> VariantDef:
        for variant in self.definition.all_variants():
            if all(bounds.holds(inputs.get(name)) for name, bounds in variant.when.items()):
                return variant
        raise InvalidInput(next(iter(self.definition.inputs)), "no graph variant of this workflow fits these inputs")

    def resolve_inputs(self, given: dict[str, Any], preset: str | None = None) -> dict[str, Any]:
        """Validate `given` (over the preset's inputs) and fill defaults; a missing random seed is drawn."""
        given = {**self.preset_inputs(preset), **{k: v for k, v in given.items() if v is not None}}
        unknown = sorted(set(given) - set(self.definition.inputs))
        if unknown:
            raise InvalidInput(unknown[0], f"unknown input for workflow {self.name!r}")
        resolved: dict[str, Any] = {}
        for name, spec in self.definition.inputs.items():
            value = given.get(name)
            if value is None:
                if spec.required:
                    raise InvalidInput(name, "is required")
                if spec.random_default:
                    value = secrets.randbelow(int(spec.max or 2**32) + 1)
                elif spec.default is None:
                    continue
                else:
                    value = spec.default
            resolved[name] = _check(name, spec, value)
        self.variant_for(resolved)
        return resolved

    def render(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """The API-format graph of the variant that fits `inputs` (resolved), with them written in."""
        graph = copy.deepcopy(self.graphs[self.variant_for(inputs).graph])
        for name, value in inputs.items():
            spec = self.definition.inputs[name]
            graph[spec.node]["inputs"][spec.field] = value
        return graph


class Catalog(Protocol):
    """What looks workflows up by name: a loaded catalogue (`load_catalog`) or a `WorkflowCatalog`."""

    def get(self, name: str, /) -> Workflow | None: ...


def expected_run_s(catalog: Catalog, workflow_name: str, preset: str | None) -> float | None:
    """The midpoint of the preset's `expected_seconds` (the workflow's default preset when none is named): what
    a run is expected to take, for ETAs and scaling. None when the workflow, or its preset's expected time, is
    unknown."""
    workflow = catalog.get(workflow_name)
    if workflow is None:
        return None
    definition = workflow.definition
    found = definition.presets.get(preset or definition.default_preset or "")
    if found is None or found.expected_seconds is None:
        return None
    low, high = found.expected_seconds
    return (low + high) / 2


def is_upload(value: str) -> bool:
    """A name `POST /api/files` gave."""
    return UPLOAD_NAME.match(value) is not None


def is_stored_image(value: str) -> bool:
    """An image input's value names a stored file (an upload or an output), else it is a URL."""
    return STORED_IMAGE_NAME.match(value) is not None and ".." not in value


def image_inputs(workflow: Workflow, inputs: dict[str, Any]) -> dict[str, str]:
    """The (resolved) image inputs: name → the upload name or URL given."""
    specs = workflow.definition.inputs
    return {k: v for k, v in inputs.items() if k in specs and specs[k].type == "image" and isinstance(v, str)}


def _check_image(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidInput(name, "must be a string: a stored image's name (an upload, an output) or an https:// URL")
    if is_stored_image(value):
        return value
    if value.startswith(("https://", "http://")) and len(value) <= MAX_IMAGE_URL and value.isprintable():
        return value  # http:// only where private URLs are allowed: the api's URL check decides
    if len(value) > MAX_IMAGE_URL:
        raise InvalidInput(name, f"must be at most {MAX_IMAGE_URL} characters")
    raise InvalidInput(
        name,
        "must be a stored image's name (an upload from POST /api/files, or a PNG/JPEG/WebP a request generated) "
        "or an https:// URL",
    )


def _check(name: str, spec: InputSpec, value: Any) -> Any:
    if spec.type == "image":
        return _check_image(name, value)
    if spec.type == "string":
        if not isinstance(value, str):
            raise InvalidInput(name, "must be a string")
        if spec.min_length is not None and len(value.strip()) < spec.min_length:
            raise InvalidInput(name, "must not be empty")
        if spec.max_length is not None and len(value) > spec.max_length:
            raise InvalidInput(name, f"must be at most {spec.max_length} characters")
        return value
    if spec.type == "bool":
        if not isinstance(value, bool):
            raise InvalidInput(name, "must be a boolean")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(name, f"must be a number ({spec.type})")
    if spec.type == "int" and not (isinstance(value, int) or float(value).is_integer()):
        raise InvalidInput(name, "must be an integer")
    number: int | float = int(value) if spec.type == "int" else float(value)
    if spec.min is not None and number < spec.min:
        raise InvalidInput(name, f"must be at least {_fmt(spec.min)}")
    if spec.max is not None and number > spec.max:
        raise InvalidInput(name, f"must be at most {_fmt(spec.max)}")
    if spec.multiple_of and (int(number) - spec.offset) % spec.multiple_of:
        shape = f"{spec.multiple_of}k+{spec.offset}" if spec.offset else f"a multiple of {spec.multiple_of}"
        raise InvalidInput(name, f"must be {shape}")
    return number


def _fmt(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else str(bound)


def load_workflow(folder: Path) -> Workflow:
    """Read and check a workflow folder: every input must point at a node of every graph variant."""
    definition = msgspec.json.decode((folder / "workflow.json").read_bytes(), type=WorkflowDef)
    variants = definition.all_variants()
    if not variants:
        raise ValueError(f"{folder}: a workflow needs `graph` or `variants`")
    graphs = {v.graph: json.loads((folder / v.graph).read_text()) for v in variants}
    for file, graph in graphs.items():
        for name, spec in definition.inputs.items():
            if spec.node not in graph or spec.field not in graph[spec.node].get("inputs", {}):
                raise ValueError(f"{folder}/{file}: input {name!r} points at missing {spec.node}.{spec.field}")
    for preset, found in definition.presets.items():
        unknown = set(found.inputs) - set(definition.inputs)
        if unknown:
            raise ValueError(f"{folder}: preset {preset!r} sets unknown inputs {sorted(unknown)}")
    models_path = folder / "models.json"
    models = tuple(msgspec.json.decode(models_path.read_bytes(), type=list[ModelFile])) if models_path.is_file() else ()
    _check_models(folder, variants, graphs, models)
    return Workflow(definition=definition, graphs=graphs, models=models)


def graph_model_files(graph: dict[str, Any]) -> set[str]:
    """The model file names a graph's loader nodes name (inputs ending in `_name` with a model extension)."""
    found: set[str] = set()
    for node in graph.values():
        for key, value in (node.get("inputs") or {}).items():
            if key.endswith("_name") and isinstance(value, str) and value.endswith(MODEL_EXTENSIONS):
                found.add(value)
    return found


def _check_models(
    folder: Path, variants: list[VariantDef], graphs: dict[str, dict[str, Any]], models: tuple[ModelFile, ...]
) -> None:
    """With a `models.json`, each variant's graph loads exactly the files declared for it: what a pod fetches
    is what the graphs will ask for."""
    if not models:
        return
    names = {v.name for v in variants}
    for model in models:
        unknown = set(model.variants) - names
        if unknown:
            raise ValueError(f"{folder}/models.json: {model.file} names unknown variants {sorted(unknown)}")
        if model.sha256 is not None and len(model.sha256) != 64:
            raise ValueError(f"{folder}/models.json: {model.file} has a malformed sha256")
    for variant in variants:
        declared = {m.file for m in models if not m.variants or variant.name in m.variants}
        loaded = graph_model_files(graphs[variant.graph])
        if declared != loaded:
            raise ValueError(
                f"{folder}: variant {variant.name!r} loads {sorted(loaded)} but models.json declares {sorted(declared)}"
            )


def load_catalog(extra_dir: Path | None = None) -> dict[str, Workflow]:
    """Shipped workflows, then the operator's (same name replaces the shipped one).

    A broken shipped workflow is a bug and raises; a broken operator folder is logged and skipped, so one
    bad folder does not take the others down.
    """
    catalog: dict[str, Workflow] = {}
    for root in (SHIPPED_DIR, extra_dir):
        if root is None or not root.is_dir():
            continue
        for folder in sorted(p for p in root.iterdir() if (p / "workflow.json").is_file()):
            try:
                workflow = load_workflow(folder)
            except (OSError, ValueError, msgspec.DecodeError) as exc:
                if root == SHIPPED_DIR:
                    raise
                log.error("workflow folder %s skipped: %s", folder, exc)
                continue
            catalog[workflow.name] = workflow
    return catalog


class WorkflowCatalog:
    """The catalogue, re-read when files of the operator's directory change (checked at most once a second),
    so a folder added to `WORKFLOWS_DIR` is usable without a restart."""

    def __init__(self, extra_dir: Path | None = None, check_interval_s: float = 1.0) -> None:
        self.extra_dir = extra_dir
        self.check_interval_s = check_interval_s
        self._signature = self._scan()
        self._workflows = load_catalog(extra_dir)
        self._checked_at = time.monotonic()

    def _scan(self) -> tuple[tuple[str, int, int], ...]:
        if self.extra_dir is None or not self.extra_dir.is_dir():
            return ()
        found: list[tuple[str, int, int]] = []
        for path in self.extra_dir.glob("*/*"):
            if path.is_file():
                stat = path.stat()
                found.append((str(path), stat.st_mtime_ns, stat.st_size))
        return tuple(sorted(found))

    def refresh(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked_at < self.check_interval_s:
            return
        self._checked_at = now
        signature = self._scan()
        if signature != self._signature:
            self._signature = signature
            self._workflows = load_catalog(self.extra_dir)
            log.info("workflow catalogue reloaded: %s", ", ".join(sorted(self._workflows)))

    def get(self, name: str) -> Workflow | None:
        """The workflow, looking at the directory again on a miss (it may have just been added)."""
        self.refresh()
        if name not in self._workflows:
            self.refresh(force=True)
        return self._workflows.get(name)

    def __getitem__(self, name: str) -> Workflow:
        found = self.get(name)
        if found is None:
            raise KeyError(name)
        return found

    def names(self) -> list[str]:
        self.refresh()
        return sorted(self._workflows)
