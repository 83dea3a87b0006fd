"""The OpenAPI document as the api really behaves: refined once, after Litestar has generated it.

Litestar declares a 400 body with a required `status_code` that our errors do not have (they are
`{"detail": …}`, see `errors`) and knows nothing of what the auth middleware, the guards, the body
checks, the limits or a NATS outage answer. Here every operation gets the errors it can answer, each with
the `ErrorBody` schema; the headers it reads and sends (`Authorization`, `Idempotency-Key`,
`Retry-After`, `WWW-Authenticate`); the file routes their real content types (the upload's body is an
image, raw or multipart, not JSON), the event stream its
`text/event-stream`; the API document's examples; and the inputs' bounds are taken from the workflow's
own input schema, the one that validates them, so the document and the validation cannot disagree.
"""

from __future__ import annotations

import re
from typing import Any

from vibewave.api.auth import PUBLIC_PATHS
from vibewave.api.sse import OPENAPI_CONTENT as EVENT_STREAM
from vibewave.api.sse import OPENAPI_DESCRIPTION as EVENT_STREAM_DESCRIPTION
from vibewave.contracts.models import DEFAULT_WORKFLOW
from vibewave.contracts.workflows import WorkflowCatalog

CREATES = frozenset({
    "qwenGenerate", "qwenGenerateAsync", "qwenBatchGenerate", "workflowsQueue",
    "runpodGenerateImage", "runpodGenerateImageAsync", "runpodGenerateMultipleImages",
})  # fmt: skip
SYNC = frozenset({"qwenGenerate", "runpodGenerateImage"})
OPEN_TO_ANY_KEY = frozenset({"qwenPresets", "qwenExamples"})  # any valid key, no scope
POD_CHANGES = frozenset({
    "runpodCreatePod", "runpodStartPod", "runpodStopPod", "runpodRestartPod", "runpodTerminatePod",
})  # fmt: skip
RUNPOD_CALLS = POD_CHANGES | frozenset({
    "runpodPods", "runpodPod", "runpodPodIp", "runpodAccount", "runpodGpuTypes", "runpodCloudTypes",
    "runpodNetworkVolumes", "runpodNetworkVolume", "runpodTemplates",
})  # fmt: skip
FILE_TYPES = (
    "image/png",
    "image/jpeg",
    "image/webp",
    "image/gif",
    "video/mp4",
    "video/webm",
    "application/octet-stream",
)
METHODS = ("get", "post", "put", "patch", "delete")
UPLOAD_TYPES = ("image/png", "image/jpeg", "image/webp")

ERROR_BODY = {
    "type": "object",
    "required": ["detail"],
    "properties": {"detail": {"type": "string", "description": "What went wrong, for a person to read."}},
    "description": 'Every error\'s body (API document, "Error Handling").',
}
RETRY_AFTER = {
    "description": "Seconds to wait before retrying.",
    "schema": {"type": "string", "pattern": "^[0-9]+$"},
    "required": False,
}
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "The same key with the same body returns the first call's request instead of making a second "
    "(your tenant's keys only); with a different body, 422.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}

DRAGON = (
    "A majestic dragon soaring through clouds above a medieval castle, fantasy art style, highly detailed, "
    "epic lighting"
)
THREE_PROMPTS = [
    "A serene mountain landscape with a crystal clear lake",
    "A futuristic cityscape with flying cars and neon lights",
    "An abstract digital art piece with vibrant colors",
]
WORKFLOW_INPUT_EXAMPLES = {
    "workflowInput": {
        "summary": "WorkflowInput (API document)",
        "value": {
            "prompt": "A beautiful landscape with mountains and a lake",
            "negative_prompt": "blurry, low quality, distorted",
            "width": 1024,
            "height": 1024,
            "seed": 12345,
            "steps": 4,
        },
    },
    "dragon": {
        "summary": "Generate a single image (API document, example 1)",
        "value": {"prompt": DRAGON, "width": 1024, "height": 1024, "steps": 4},
    },
    "cyberpunk": {
        "summary": "Generate a single image asynchronously (API document, example 2)",
        "value": {
            "prompt": "A futuristic cyberpunk cityscape at night with neon lights",
            "width": 1024,
            "height": 1024,
        },
    },
}
BATCH_EXAMPLE = {
    "summary": "Generate multiple images (API document, example 3)",
    "value": {"prompts": THREE_PROMPTS, "width": 1024, "height": 1024, "steps": 4},
}
BODY_EXAMPLES: dict[str, dict[str, Any]] = {
    "qwenGenerate": WORKFLOW_INPUT_EXAMPLES,
    "qwenGenerateAsync": WORKFLOW_INPUT_EXAMPLES,
    "runpodGenerateImage": WORKFLOW_INPUT_EXAMPLES,
    "runpodGenerateImageAsync": WORKFLOW_INPUT_EXAMPLES,
    "qwenBatchGenerate": {"prompts": BATCH_EXAMPLE},
    "runpodGenerateMultipleImages": {
        "prompts": BATCH_EXAMPLE,
        "count": {
            "summary": "Four images of one prompt (seeds 12345 to 12348)",
            "value": {"prompt": "A beautiful landscape", "count": 4, "seed": 12345},
        },
    },
    "workflowsQueue": {
        "comfyUIRequest": {
            "summary": "Any workflow with its inputs (ComfyUIRequest, API document)",
            "value": {
                "workflow_name": "comfyui_image_qwen",
                "inputs": {
                    "prompt": "A beautiful landscape",
                    "negative_prompt": "blurry, low quality",
                    "width": 1024,
                    "height": 1024,
                    "seed": 12345,
                    "steps": 4,
                },
            },
        }
    },
}
RESPONSE_EXAMPLES: dict[str, dict[str, Any]] = {
    "qwenGenerate": {
        "success": True,
        "files": ["qwen_12345_001.png", "qwen_12345_002.png"],
        "error": None,
        "request_id": "req-12345",
        "pod_id": "pod-67890",
        "pod_ip": "192.168.1.100",
    },
    "runpodStats": {
        "active_pods": 2,
        "pending_requests": 1,
        "completed_requests": 15,
        "failed_requests": 0,
        "total_requests": 16,
    },
    "workflowsQueueStatus": {
        "active_pods": [
            {
                "id": "pod-67890",
                "name": "comfyui_image_qwen-pod",
                "status": "running",
                "ip": "192.168.1.100",
                "workflow_name": "comfyui_image_qwen",
            }
        ],
        "pending_requests": [],
        "completed_requests": [{"id": "req-12345", "workflow_name": "comfyui_image_qwen", "status": "completed"}],
        "failed_requests": [],
    },
}
RESPONSE_EXAMPLES["runpodGenerateImage"] = RESPONSE_EXAMPLES["qwenGenerate"]


def _error(description: str, **headers: dict[str, Any]) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }
    if headers:
        response["headers"] = {name.replace("_", "-"): spec for name, spec in headers.items()}
    return response


def errors_of(path: str, method: str, operation: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The errors this operation can answer, and why."""
    op_id = operation.get("operationId", "")
    public = any(re.match(pattern, path) for pattern in PUBLIC_PATHS)
    has_body = "requestBody" in operation
    queried = any(p.get("in") == "query" for p in operation.get("parameters", []))
    found: dict[str, dict[str, Any]] = {}
    if has_body or queried or op_id in CREATES:
        found["400"] = _error(
            "Invalid input: the body or a parameter, named in `detail` (or a malformed body)"
            + ("; or a webhook refused: a private address, or no secret to sign it" if op_id in CREATES else "")
        )
    if not public:
        found["401"] = _error(
            "No API key, or an unknown or revoked one (when keys are on)",
            WWW_Authenticate={"description": "`Bearer`", "schema": {"type": "string"}},
        )
        if op_id not in OPEN_TO_ANY_KEY:
            found["403"] = _error(
                "The key lacks the scope this needs"
                + ("; or the pod is not Vibewave's (POD_MANAGE_FOREIGN)" if op_id in POD_CHANGES else "")
                + ("; or a browser sent it from a page of another origin" if method != "get" else "")
            )
    if "{" in path:
        found["404"] = _error("Not found (an unknown id, or another tenant's)")
    if op_id in POD_CHANGES:
        found["409"] = _error("The fleet is at MAX_PODS, or the provider cannot do this to the pod now")
    if has_body:
        found["413"] = _error("The body is too large")
    if method in ("post", "put", "patch", "delete"):
        found["415"] = _error("A body that is not `application/json` (JSON bodies only)")
    if op_id in CREATES:
        found["422"] = _error("The Idempotency-Key was already used with a different body")
        found["429"] = _error(
            "The key is over its requests per minute or its open requests at once", Retry_After=RETRY_AFTER
        )
    found["500"] = _error(
        'RunPod API error: "RunPod API error: <reason>"' if op_id in RUNPOD_CALLS else "An unexpected error"
    )
    if not path.startswith(("/docs", "/redoc", "/schema")):
        found["503"] = _error(
            "A part of the system is unreachable (NATS, pod-manager) or the api is still loading; retry",
            Retry_After=RETRY_AFTER,
        )
    return found


def _workflow_bounds(schema: dict[str, Any], catalog: WorkflowCatalog) -> None:
    """WorkflowInput's bounds from the default workflow's input schema (what `resolve_inputs` checks)."""
    model = schema["components"]["schemas"].get("WorkflowInput")
    workflow = catalog.get(DEFAULT_WORKFLOW)
    if model is None or workflow is None:
        return
    for name, spec in workflow.definition.inputs.items():
        prop = model.get("properties", {}).get(name)
        if prop is None:
            continue
        for variant in [prop, *prop.get("oneOf", []), *prop.get("anyOf", [])]:
            if variant.get("type") not in ("integer", "number", "string"):
                continue
            if variant["type"] == "string":
                if spec.max_length is not None:
                    variant["maxLength"] = spec.max_length
                continue
            if spec.min is not None:
                variant["minimum"] = spec.min
            if spec.max is not None:
                variant["maximum"] = spec.max
            if spec.multiple_of and not spec.offset:
                variant["multipleOf"] = spec.multiple_of


def _numeric_unions(node: Any) -> None:
    """`int | float` is `oneOf` integer, number — but 256 is both, so no integer is valid: make it `anyOf`."""
    if isinstance(node, dict):
        alternatives = node.get("oneOf")
        if isinstance(alternatives, list):
            types = {a.get("type") for a in alternatives if isinstance(a, dict)}
            if {"integer", "number"} <= types:
                node["anyOf"] = node.pop("oneOf")
        for value in node.values():
            _numeric_unions(value)
    elif isinstance(node, list):
        for value in node:
            _numeric_unions(value)


def _presets(schema: dict[str, Any], catalog: WorkflowCatalog) -> None:
    """`preset` is one of the workflow's presets: say which. (`workflow_name` stays a string: the catalogue
    can grow while the api runs, from WORKFLOWS_DIR.)"""
    workflow = catalog.get(DEFAULT_WORKFLOW)
    models = schema["components"]["schemas"]
    presets = sorted(workflow.definition.presets) if workflow else []
    for name, model in models.items():
        props = model.get("properties", {})
        preset = props.get("preset")
        if preset is not None and presets and name != "WorkflowQueueRequest":
            for variant in [preset, *preset.get("oneOf", []), *preset.get("anyOf", [])]:
                if variant.get("type") == "string":
                    variant["enum"] = presets


def _file_content(operation: dict[str, Any]) -> None:
    ok = operation["responses"].setdefault("200", {"description": "The file"})
    ok["description"] = "The file, streamed, with its own content type"
    ok["content"] = {kind: {"schema": {"type": "string", "format": "binary"}} for kind in FILE_TYPES}
    ok["headers"] = {
        "Content-Length": {"schema": {"type": "string"}, "description": "The file's size in bytes"},
        "Content-Disposition": {"schema": {"type": "string"}, "description": "inline, with the file's name"},
    }


def _upload(operation: dict[str, Any]) -> None:
    """`POST /api/files` reads its body itself: an image, raw or as a multipart form's `file`."""
    binary = {"schema": {"type": "string", "format": "binary"}}
    form = {"type": "object", "required": ["file"], "properties": {"file": {"type": "string", "format": "binary"}}}
    operation["requestBody"] = {
        "required": True,
        "description": "A PNG, JPEG or WebP image of at most 20 MiB and 25 megapixels: the raw body, or the field "
        "`file` of a multipart form (`curl -F file=@still.png`). Its name in the answer is what an image input takes.",
        "content": {**{kind: binary for kind in UPLOAD_TYPES}, "multipart/form-data": {"schema": form}},
    }
    responses = operation["responses"]
    responses["400"] = _error("Not a readable PNG, JPEG or WebP image, too many pixels, or no `file` field")
    responses["413"] = _error("The image is larger than 20 MiB")
    responses["415"] = _error("A body that is neither image/png, image/jpeg, image/webp nor multipart/form-data")


def _only(response: dict[str, Any], model: str) -> None:
    for content in response.get("content", {}).values():
        content["schema"] = {"$ref": f"#/components/schemas/{model}"}


def refine(schema: dict[str, Any], catalog: WorkflowCatalog) -> dict[str, Any]:
    """Refine Litestar's generated document in place (see the module docstring); returns it."""
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {})["ErrorBody"] = ERROR_BODY
    components["securitySchemes"] = {
        "apiKey": {
            "type": "http",
            "scheme": "bearer",
            "description": "A Vibewave API key: `Authorization: Bearer <key>` (VIBEWAVE_ADMIN_KEY, or one made at "
            "`POST /api/keys`). Without keys configured the api is open on loopback only.",
        }
    }
    for path, item in schema.get("paths", {}).items():
        for method in METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            op_id = operation.get("operationId", "")
            responses = operation.setdefault("responses", {})
            for code, response in errors_of(path, method, operation).items():
                responses[code] = response
            if "400" in responses and "status_code" in str(responses["400"]):  # Litestar's own, for parameters
                responses["400"] = _error("Invalid input: a parameter, named in `detail`")
            if not any(re.match(pattern, path) for pattern in PUBLIC_PATHS):
                operation["security"] = [{"apiKey": []}]
            if op_id in CREATES:
                operation.setdefault("parameters", []).append(IDEMPOTENCY_KEY)
            if op_id == "downloadFile":
                _file_content(operation)
            if op_id == "uploadFile":
                _upload(operation)
            if op_id == "requestEvents":  # Server-Sent Events (see `sse`)
                responses["200"] = {"description": EVENT_STREAM_DESCRIPTION, "content": EVENT_STREAM}
            if op_id in SYNC:  # the union of the handler's type: 200 is the result, 408 the timeout
                _only(responses["200"], "WorkflowResult")
            if op_id == "workflowsCancel":
                _only(responses["200"], "ComfyUIRequest")
                responses["202"] = {
                    **responses["200"],
                    "description": "Asked to stop, not ended yet within the wait: the request as it stands",
                }
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None and op_id in BODY_EXAMPLES:
                body["examples"] = BODY_EXAMPLES[op_id]
            example = RESPONSE_EXAMPLES.get(op_id)
            success = responses.get("200") or responses.get("202")
            if example is not None and success is not None:
                for content in success.get("content", {}).values():
                    content["example"] = example
    _workflow_bounds(schema, catalog)
    _presets(schema, catalog)
    _numeric_unions(schema)
    return schema
