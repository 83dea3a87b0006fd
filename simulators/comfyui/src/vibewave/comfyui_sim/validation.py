"""Prompt validation, ported from ComfyUI 0.33 `execution.validate_prompt` / `validate_inputs`.

0.3.64 differs only in the graph-level wording for unknown or missing class types (`_missing_node`); its
looser per-input checks follow from its own catalogue (legacy list combos, no dynamic combos).

The error dicts, their order, the coercion of widget values (which mutates the prompt, as upstream does,
so /queue and /history show the coerced values) and the quirks (e.g. `dependent_outputs` accumulating over
every failing output) follow the upstream code and the recorded 400 bodies in transcript 07.
"""

from __future__ import annotations

import logging
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any

from vibewave.comfyui_sim.catalogue import Catalogue, InputSpec
from vibewave.comfyui_sim.versions import DEFAULT_VERSION, DIALECTS, Dialect

log = logging.getLogger("vibewave.comfyui_sim")

DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
Validated = dict[str, tuple[bool, list[dict[str, Any]], str]]


@dataclass
class ValidationResult:
    ok: bool
    error: dict[str, Any] | None
    outputs: list[str]
    node_errors: dict[str, Any] = field(default_factory=dict)


def full_type_name(typ: type) -> str:
    module = typ.__module__
    return typ.__qualname__ if module == "builtins" else f"{module}.{typ.__qualname__}"


def is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def types_compatible(received: Any, expected: Any) -> bool:
    """ComfyUI's validate_node_input: equal, wildcard, or overlapping comma-separated type sets."""
    if received == expected:
        return True
    if isinstance(expected, list):
        return received in ("COMBO", "*")
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    if received == "*" or expected == "*":
        return True
    got = {t.strip() for t in received.split(",")}
    want = {t.strip() for t in expected.split(",")}
    return bool(got & want)


def _dynamic_sub_inputs(spec: InputSpec, value: Any) -> list[InputSpec]:
    """Expand a V3 dynamic combo into the dotted sub-inputs of the chosen option (`codec.encoding.crf`)."""
    for option in spec.extra.get("options", []):
        if option.get("key") != value:
            continue
        subs: list[InputSpec] = []
        for category in ("required", "optional"):
            for name, sub in option.get("inputs", {}).get(category, {}).items():
                extra = sub[1] if len(sub) > 1 and isinstance(sub[1], dict) else {}
                subs.append(InputSpec(f"{spec.name}.{name}", category, sub[0], extra))
        return subs
    return []


def _custom_validation(class_type: str, name: str, value: Any, catalogue: Catalogue) -> str | None:
    """The VALIDATE_INPUTS hooks of the supported nodes; returns the failure text or None."""
    if class_type == "LoadImage" and name == "image":
        path = str(value)
        if path.endswith("]") and " [" in path:
            path = path[: path.rindex(" [")]
        target = (catalogue.input_dir / path).resolve()
        if not target.is_relative_to(catalogue.input_dir) or not target.is_file():
            return f"Invalid image file: {value}"
    return None


CUSTOM_VALIDATED = {("LoadImage", "image")}


def validate_inputs(catalogue: Catalogue, prompt: dict[str, Any], unique_id: str, validated: Validated) -> Any:
    if unique_id in validated:
        return validated[unique_id]

    inputs = prompt[unique_id]["inputs"]
    class_type = prompt[unique_id]["class_type"]
    errors: list[dict[str, Any]] = []
    valid = True
    custom_inputs: list[tuple[str, Any]] = []

    pending = list(catalogue.inputs(class_type))
    while pending:
        spec = pending.pop(0)
        x = spec.name
        info = spec.config
        if x not in inputs:
            if spec.category == "required":
                errors.append(
                    {
                        "type": "required_input_missing",
                        "message": "Required input is missing",
                        "details": f"{x}",
                        "extra_info": {"input_name": x},
                    }
                )
            continue

        val = inputs[x]
        if isinstance(val, list):
            if len(val) != 2:
                errors.append(
                    {
                        "type": "bad_linked_input",
                        "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                        "details": f"{x}",
                        "extra_info": {"input_name": x, "input_config": info, "received_value": val},
                    }
                )
                continue
            o_id = val[0]
            o_class_type = prompt[o_id]["class_type"]
            received_type = catalogue.return_types(o_class_type)[val[1]]
            if not types_compatible(received_type, spec.type):
                errors.append(
                    {
                        "type": "return_type_mismatch",
                        "message": "Return type mismatch between linked nodes",
                        "details": f"{x}, received_type({received_type}) mismatch input_type({spec.type})",
                        "extra_info": {
                            "input_name": x,
                            "input_config": info,
                            "received_type": received_type,
                            "linked_node": val,
                        },
                    }
                )
                continue
            try:
                r = validate_inputs(catalogue, prompt, o_id, validated)
                if r[0] is False:
                    valid = False
                    continue
            except Exception as ex:
                typ, _, tb = sys.exc_info()
                assert typ is not None
                valid = False
                validated[o_id] = (
                    False,
                    [
                        {
                            "type": "exception_during_inner_validation",
                            "message": "Exception when validating inner node",
                            "details": str(ex),
                            "extra_info": {
                                "input_name": x,
                                "input_config": info,
                                "exception_message": str(ex),
                                "exception_type": full_type_name(typ),
                                "traceback": traceback.format_tb(tb),
                                "linked_node": val,
                            },
                        }
                    ],
                    o_id,
                )
            continue

        try:
            if isinstance(val, dict) and "__value__" in val:
                val = val["__value__"]
                inputs[x] = val
            if spec.type == "INT":
                val = int(val)
                inputs[x] = val
            if spec.type == "FLOAT":
                val = float(val)
                inputs[x] = val
            if spec.type == "STRING":
                val = str(val)
                inputs[x] = val
            if spec.type == "BOOLEAN":
                val = bool(val)
                inputs[x] = val
        except Exception as ex:
            errors.append(
                {
                    "type": "invalid_input_type",
                    "message": f"Failed to convert an input value to a {spec.type} value",
                    "details": f"{x}, {val}, {ex}",
                    "extra_info": {
                        "input_name": x,
                        "input_config": info,
                        "received_value": val,
                        "exception_message": str(ex),
                    },
                }
            )
            continue

        if (class_type, x) in CUSTOM_VALIDATED:
            custom_inputs.append((x, val))
            continue

        error = _range_or_combo_error(spec, val)
        if error is not None:
            errors.append(error)
            continue
        if spec.type == DYNAMIC_COMBO:
            pending[0:0] = _dynamic_sub_inputs(spec, val)

    for x, val in custom_inputs:
        failure = _custom_validation(class_type, x, val, catalogue)
        if failure is not None:
            errors.append(
                {
                    "type": "custom_validation_failed",
                    "message": "Custom validation failed for node",
                    "details": f"{x} - {failure}",
                    "extra_info": {"input_name": x},
                }
            )

    ret = (False, errors, unique_id) if errors or valid is not True else (True, [], unique_id)
    validated[unique_id] = ret
    return ret


def _range_or_combo_error(spec: InputSpec, val: Any) -> dict[str, Any] | None:
    x, info, extra = spec.name, spec.config, spec.extra
    try:
        if "min" in extra and val < extra["min"]:
            return {
                "type": "value_smaller_than_min",
                "message": "Value {} smaller than min of {}".format(val, extra["min"]),
                "details": f"{x}",
                "extra_info": {"input_name": x, "input_config": info, "received_value": val},
            }
        if "max" in extra and val > extra["max"]:
            return {
                "type": "value_bigger_than_max",
                "message": "Value {} bigger than max of {}".format(val, extra["max"]),
                "details": f"{x}",
                "extra_info": {"input_name": x, "input_config": info, "received_value": val},
            }
    except TypeError:
        return None
    if isinstance(spec.type, list) or spec.type in ("COMBO", DYNAMIC_COMBO):
        if isinstance(spec.type, list):
            options: list[Any] = spec.type
        elif spec.type == DYNAMIC_COMBO:
            options = [o.get("key") for o in extra.get("options", [])]
        else:
            options = extra.get("options", [])
        if extra.get("multiselect", False) and isinstance(val, list):
            invalid = [v for v in val if v not in options]
        else:
            invalid = [val] if val not in options else []
        if invalid:
            input_config: Any = info
            if len(options) > 20:
                list_info = f"(list of length {len(options)})"
                input_config = None
            else:
                list_info = str(options)
            return {
                "type": "value_not_in_list",
                "message": "Value not in list",
                "details": f"{x}: '{val}' not in {list_info}",
                "extra_info": {"input_name": x, "input_config": input_config, "received_value": val},
            }
    return None


def _missing_node(x: str, node: Any, catalogue: Catalogue, dialect: Dialect) -> dict[str, Any] | None:
    """The graph-level error for a node without a known class_type, worded as the claimed release does."""
    has_type = isinstance(node, dict) and "class_type" in node
    if has_type and isinstance(node["class_type"], str) and node["class_type"] in catalogue:
        return None
    if not dialect.missing_node_type:
        message = (
            f"Cannot execute because node {node['class_type']} does not exist."
            if has_type
            else "Cannot execute because a node is missing the class_type property."
        )
        return {"type": "invalid_prompt", "message": message, "details": f"Node ID '#{x}'", "extra_info": {}}
    meta = node.get("_meta", {}) if isinstance(node, dict) else {}
    if not has_type:
        title = meta.get("title") if isinstance(meta, dict) else None
        return {
            "type": "missing_node_type",
            "message": f"Node '{title or f'ID #{x}'}' has no class_type. "
            "The workflow may be corrupted or a custom node is missing.",
            "details": f"Node ID '#{x}'",
            "extra_info": {"node_id": x, "class_type": None, "node_title": title},
        }
    class_type = node["class_type"]
    title = meta.get("title", class_type) if isinstance(meta, dict) else class_type
    return {
        "type": "missing_node_type",
        "message": f"Node '{title}' not found. The custom node may not be installed.",
        "details": f"Node ID '#{x}'",
        "extra_info": {"node_id": x, "class_type": class_type, "node_title": title},
    }


def validate_prompt(
    catalogue: Catalogue,
    prompt: dict[str, Any],
    partial_targets: list[str] | None = None,
    dialect: Dialect = DIALECTS[DEFAULT_VERSION],
) -> ValidationResult:
    outputs: list[str] = []
    for x in prompt:
        error = _missing_node(x, prompt[x], catalogue, dialect)
        if error is not None:
            return ValidationResult(False, error, [])
        class_type = prompt[x]["class_type"]
        if catalogue.is_output(class_type) and (partial_targets is None or x in partial_targets):
            outputs.append(x)

    if not outputs:
        return ValidationResult(
            False,
            {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "", "extra_info": {}},
            [],
        )

    good_outputs: list[str] = []
    failed: list[tuple[str, list[dict[str, Any]]]] = []
    node_errors: dict[str, Any] = {}
    validated: Validated = {}
    for o in outputs:
        try:
            valid, reasons, _ = validate_inputs(catalogue, prompt, o, validated)
        except Exception as ex:
            typ, _, tb = sys.exc_info()
            assert typ is not None
            valid = False
            reasons = [
                {
                    "type": "exception_during_validation",
                    "message": "Exception when validating node",
                    "details": str(ex),
                    "extra_info": {"exception_type": full_type_name(typ), "traceback": traceback.format_tb(tb)},
                }
            ]
            validated[o] = (False, reasons, o)

        if valid is True:
            good_outputs.append(o)
            continue
        log.warning("Failed to validate prompt for output %s: %s", o, [r["message"] for r in reasons])
        failed.append((o, reasons))
        for node_id, (node_valid, node_reasons, _) in validated.items():
            if node_valid is not True and node_reasons:
                if node_id not in node_errors:
                    node_errors[node_id] = {
                        "errors": node_reasons,
                        "dependent_outputs": [],
                        "class_type": prompt[node_id]["class_type"],
                    }
                node_errors[node_id]["dependent_outputs"].append(o)

    if not good_outputs:
        details = "\n".join(f"{e['message']}: {e['details']}" for _, errs in failed for e in errs)
        return ValidationResult(
            False,
            {
                "type": "prompt_outputs_failed_validation",
                "message": "Prompt outputs failed validation",
                "details": details,
                "extra_info": {},
            },
            [],
            node_errors,
        )
    return ValidationResult(True, None, good_outputs, node_errors)
