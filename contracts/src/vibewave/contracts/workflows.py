"""Workflows as data: an API-format ComfyUI graph plus a typed map from request inputs to graph fields.

A workflow is a folder holding `workflow.json` (name, kind, inputs, file prefix) and the graph it names.
The shipped folders live beside this module; operators add more through a directory of their own.
Rendering is pure: validate the inputs, draw a seed when none is given, write each value into its node.
"""

from __future__ import annotations

import copy
import json
import secrets
from pathlib import Path
from typing import Any, Literal

import msgspec

SHIPPED_DIR = Path(__file__).with_name("workflow_defs")


class InputSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    type: Literal["string", "int", "float", "bool"]
    node: str
    field: str
    required: bool = False
    default: Any = None
    min: int | float | None = None
    max: int | float | None = None
    multiple_of: int | None = None
    min_length: int | None = None
    max_length: int | None = None
    random_default: bool = False


class WorkflowDef(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str
    description: str = ""
    kind: Literal["image", "video", "audio"] = "image"
    file_prefix: str
    graph: str
    inputs: dict[str, InputSpec]


class InvalidInput(ValueError):
    """An input does not fit the workflow's schema; `field` names it for a 400 at the edge."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class Workflow(msgspec.Struct, frozen=True, kw_only=True):
    definition: WorkflowDef
    graph: dict[str, Any]

    @property
    def name(self) -> str:
        return self.definition.name

    def resolve_inputs(self, given: dict[str, Any]) -> dict[str, Any]:
        """Validate `given` against the schema and fill defaults; a missing random seed is drawn here."""
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
        return resolved

    def render(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """The API-format graph with `inputs` (already resolved) written into their nodes."""
        graph = copy.deepcopy(self.graph)
        for name, value in inputs.items():
            spec = self.definition.inputs[name]
            graph[spec.node]["inputs"][spec.field] = value
        return graph


def _check(name: str, spec: InputSpec, value: Any) -> Any:
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
    if spec.multiple_of and int(number) % spec.multiple_of:
        raise InvalidInput(name, f"must be a multiple of {spec.multiple_of}")
    return number


def _fmt(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else str(bound)


def load_workflow(folder: Path) -> Workflow:
    definition = msgspec.json.decode((folder / "workflow.json").read_bytes(), type=WorkflowDef)
    graph = json.loads((folder / definition.graph).read_text())
    for name, spec in definition.inputs.items():
        if spec.node not in graph:
            raise ValueError(f"{folder}: input {name!r} points at missing node {spec.node!r}")
    return Workflow(definition=definition, graph=graph)


def load_catalog(extra_dir: Path | None = None) -> dict[str, Workflow]:
    """Shipped workflows, then the operator's (same name replaces the shipped one)."""
    catalog: dict[str, Workflow] = {}
    for root in (SHIPPED_DIR, extra_dir):
        if root is None or not root.is_dir():
            continue
        for folder in sorted(p for p in root.iterdir() if (p / "workflow.json").is_file()):
            workflow = load_workflow(folder)
            catalog[workflow.name] = workflow
    return catalog
