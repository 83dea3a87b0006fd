"""REST v2 request schemas and a small validator that words its errors the way RunPod's server does.

RunPod rejects a body that does not match its JSON schema with 422 `Request validation failed.` and one string
per failure, e.g. `$: missing property 'dataCenter'`, `$: additional properties 'dataCenterId' not allowed`,
`$.action: value must be one of 'start', 'stop', 'restart', 'terminate'` (recorded live, reference-v2 §2.3).
Those texts are santhosh-tekuri/jsonschema's; the other kinds here (`got string, want integer`,
`minimum: got 0, want 1`, `... does not match pattern ...`, `maxItems: got 2, want 1`) are that library's
wording too, but were not seen from RunPod, and neither was the location of an array item (`$.ports[0]`).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

VALIDATION_FAILED = "Request validation failed."
CUDA_PATTERN = r"^\d+\.\d+$"
PORT_PATTERN = r"^\d+/(http|tcp)$"
ACTIONS = ("start", "stop", "restart", "terminate")


@dataclass(frozen=True)
class Str:
    min_length: int = 0
    pattern: str | None = None
    enum: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Int:
    minimum: int | None = None
    maximum: int | None = None


@dataclass(frozen=True)
class Bool:
    pass


@dataclass(frozen=True)
class Arr:
    items: Schema
    max_items: int | None = None


@dataclass(frozen=True)
class Obj:
    """An object; with `values` set it is a map whose every value has that schema (like `env`)."""

    properties: dict[str, Schema] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    values: Schema | None = None


@dataclass(frozen=True)
class Nullable:
    inner: Schema


Schema = Str | Int | Bool | Arr | Obj | Nullable


def _quote(name: str) -> str:
    return "'" + name.replace("'", "\\'") + "'"


def _joined(names: list[str]) -> str:
    return ", ".join(_quote(n) for n in names)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def validate(schema: Schema, value: Any, at: str = "$") -> list[str]:
    """Every failure of `value` against `schema`, depth first; at one object, missing before additional."""
    if isinstance(schema, Nullable):
        return [] if value is None else validate(schema.inner, value, at)
    if isinstance(schema, Str):
        return _string(schema, value, at)
    if isinstance(schema, Int):
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
            return [f"{at}: got {_json_type(value)}, want integer"]
        if schema.minimum is not None and value < schema.minimum:
            return [f"{at}: minimum: got {int(value)}, want {schema.minimum}"]
        if schema.maximum is not None and value > schema.maximum:
            return [f"{at}: maximum: got {int(value)}, want {schema.maximum}"]
        return []
    if isinstance(schema, Bool):
        return [] if isinstance(value, bool) else [f"{at}: got {_json_type(value)}, want boolean"]
    if isinstance(schema, Arr):
        if not isinstance(value, list):
            return [f"{at}: got {_json_type(value)}, want array"]
        errors = []
        if schema.max_items is not None and len(value) > schema.max_items:
            errors.append(f"{at}: maxItems: got {len(value)}, want {schema.max_items}")
        for index, item in enumerate(value):
            errors.extend(validate(schema.items, item, f"{at}[{index}]"))
        return errors
    return _object(schema, value, at)


def _string(schema: Str, value: Any, at: str) -> list[str]:
    if not isinstance(value, str):
        return [f"{at}: got {_json_type(value)}, want string"]
    if schema.enum is not None and value not in schema.enum:
        return [f"{at}: value must be one of {_joined(list(schema.enum))}"]
    if len(value) < schema.min_length:
        return [f"{at}: minLength: got {len(value)}, want {schema.min_length}"]
    if schema.pattern is not None and re.search(schema.pattern, value) is None:
        return [f"{at}: {_quote(value)} does not match pattern {_quote(schema.pattern)}"]
    return []


def _object(schema: Obj, value: Any, at: str) -> list[str]:
    if not isinstance(value, dict):
        return [f"{at}: got {_json_type(value)}, want object"]
    errors = []
    missing = [name for name in schema.required if name not in value]
    if len(missing) == 1:
        errors.append(f"{at}: missing property {_quote(missing[0])}")
    elif missing:
        errors.append(f"{at}: missing properties {_joined(missing)}")
    if schema.values is not None:
        for key, item in value.items():
            errors.extend(validate(schema.values, item, f"{at}.{key}"))
        return errors
    extra = [key for key in value if key not in schema.properties]
    if extra:
        errors.append(f"{at}: additional properties {_joined(extra)} not allowed")
    for name, sub in schema.properties.items():
        if name in value:
            errors.extend(validate(sub, value[name], f"{at}.{name}"))
    return errors


CUDA = Str(pattern=CUDA_PATTERN)

# SPEC-2.9 CreatePodRequest (`unevaluatedProperties: false`), plus the later `gpu.minRamPerGpu` and
# `gpu.minVcpuCountPerGpu` placement filters. `image` is required unless `templateId` is set (`create_pod_errors`);
# RunPod then also lists every other property as not allowed (its schema branches), which is not mimicked.
CREATE_POD = Obj(
    properties={
        "name": Str(min_length=1),
        "image": Str(min_length=1),
        "args": Str(),
        "disk": Int(minimum=1),
        "ports": Arr(Str(pattern=PORT_PATTERN)),
        "env": Obj(values=Str()),
        "registry": Nullable(Str()),
        "cloud": Str(enum=("SECURE", "COMMUNITY")),
        "dataCenterIds": Arr(Str(min_length=1)),
        "gpu": Obj(
            properties={
                "id": Str(min_length=1),
                "count": Int(minimum=1),
                "allowedCudaVersions": Arr(CUDA),
                "minCudaVersion": CUDA,
                "minRamPerGpu": Int(minimum=1),
                "minVcpuCountPerGpu": Int(minimum=1),
            },
            required=("id",),
        ),
        "cpu": Obj(properties={"id": Str(min_length=1), "vcpuCount": Int(minimum=2)}, required=("id", "vcpuCount")),
        "mounts": Obj(
            properties={
                "persistent": Obj(
                    properties={"size": Int(minimum=10), "path": Str(min_length=1)}, required=("size", "path")
                ),
                "network": Arr(
                    Obj(
                        properties={"volumeId": Str(min_length=1), "path": Str(min_length=1)},
                        required=("volumeId", "path"),
                    ),
                    max_items=1,
                ),
            }
        ),
        "globalNetworking": Bool(),
        "startSsh": Bool(),
        "startJupyter": Bool(),
        "templateId": Str(min_length=1),
    },
    required=("name",),
)

CREATE_NETWORK_VOLUME = Obj(
    properties={
        "name": Str(min_length=1),
        "size": Int(minimum=10, maximum=4096),
        "dataCenter": Str(min_length=1),
        "type": Str(enum=("STANDARD", "HIGH_PERFORMANCE")),
    },
    required=("name", "size", "dataCenter"),
)

POD_ACTION = Obj(properties={"action": Str(enum=ACTIONS)}, required=("action",))


def create_pod_errors(body: Any) -> list[str]:
    """CreatePodRequest failures; without `templateId`, `image` is required like `name`."""
    schema = CREATE_POD
    if isinstance(body, dict) and "templateId" not in body:
        schema = dataclasses.replace(CREATE_POD, required=("name", "image"))
    return validate(schema, body)
