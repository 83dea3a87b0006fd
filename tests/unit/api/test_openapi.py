"""The OpenAPI document tells the truth: errors with the `{"detail": …}` body they really have, the
headers, the file route's content types, the API document's examples, the workflow's own bounds."""

from __future__ import annotations

from typing import Any

import pytest
from litestar._openapi.plugin import OpenAPIPlugin

from vibewave.api.app import create_app
from vibewave.api.settings import ApiSettings
from vibewave.contracts.models import DEFAULT_WORKFLOW
from vibewave.contracts.workflows import WorkflowCatalog

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    app = create_app(ApiSettings.from_env())  # the schema is built (and refined) with the app
    schema: dict[str, Any] = app.plugins.get(OpenAPIPlugin).provide_openapi_schema()
    return schema


SPECIAL = {"qwenGenerate", "runpodGenerateImage", "workflowsCancel"}  # 408 and 409 have bodies of their own


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, op)
        for path, item in document["paths"].items()
        for method, op in item.items()
        if method in ("get", "post", "delete")
    ]


def test_every_error_is_declared_with_the_detail_body(document: dict[str, Any]) -> None:
    assert document["components"]["schemas"]["ErrorBody"]["required"] == ["detail"]
    for path, method, op in operations(document):
        own = {"408": "SyncTimeout", "409": "CancelConflict"} if op["operationId"] != "runpodCreatePod" else {}
        for code, response in op["responses"].items():
            if code.startswith(("4", "5")):
                expected = own.get(code, "ErrorBody") if op["operationId"] in SPECIAL else "ErrorBody"
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": f"#/components/schemas/{expected}"}, (path, method, code, schema)
        assert "500" in op["responses"], (path, method)
        assert "status_code" not in str(op["responses"]), (path, method)


def test_auth_limits_and_headers_are_declared(document: dict[str, Any]) -> None:
    paths = document["paths"]
    create = paths["/api/qwen/generate-async"]["post"]
    assert {"400", "401", "403", "415", "422", "429", "500", "503"} <= set(create["responses"])
    assert "Retry-After" in create["responses"]["429"]["headers"]
    assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in create["parameters"])
    assert create["security"] == [{"apiKey": []}]
    assert document["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    assert "security" not in paths["/health"]["get"] and "401" not in paths["/health"]["get"]["responses"]
    assert "408" in paths["/api/qwen/generate"]["post"]["responses"]
    assert {"404", "409"} <= set(paths["/api/runpod/workflows/{request_id}"]["delete"]["responses"])
    assert "404" in paths["/api/qwen/status/{request_id}"]["get"]["responses"]
    assert "403" not in paths["/api/qwen/presets"]["get"]["responses"]  # any key may read the presets


def test_the_file_route_declares_its_real_content_types(document: dict[str, Any]) -> None:
    ok = document["paths"]["/api/files/{filename}"]["get"]["responses"]["200"]
    assert "image/png" in ok["content"] and "application/json" not in ok["content"]
    assert ok["content"]["image/png"]["schema"] == {"type": "string", "format": "binary"}


def test_the_api_documents_examples_are_there(document: dict[str, Any]) -> None:
    body = document["paths"]["/api/runpod/generate-multiple-images"]["post"]["requestBody"]["content"]
    prompts = body["application/json"]["examples"]["prompts"]["value"]["prompts"]
    assert prompts[0] == "A serene mountain landscape with a crystal clear lake"
    generate = document["paths"]["/api/qwen/generate"]["post"]["requestBody"]["content"]["application/json"]
    assert generate["examples"]["dragon"]["value"]["steps"] == 4


def test_input_bounds_come_from_the_workflow_schema(document: dict[str, Any]) -> None:
    inputs = WorkflowCatalog(None)[DEFAULT_WORKFLOW].definition.inputs
    width = document["components"]["schemas"]["WorkflowInput"]["properties"]["width"]
    integer = next(v for v in [width, *width.get("oneOf", []), *width.get("anyOf", [])] if v.get("type") == "integer")
    assert (integer["minimum"], integer["maximum"], integer["multipleOf"]) == (
        inputs["width"].min, inputs["width"].max, inputs["width"].multiple_of,
    )  # fmt: skip
    steps = document["components"]["schemas"]["WorkflowInput"]["properties"]["steps"]
    integer = next(v for v in [steps, *steps.get("oneOf", []), *steps.get("anyOf", [])] if v.get("type") == "integer")
    assert integer["maximum"] == inputs["steps"].max


def test_the_upload_route_declares_its_image_bodies_and_errors(document: dict[str, Any]) -> None:
    upload = document["paths"]["/api/files"]["post"]
    content = upload["requestBody"]["content"]
    assert {"image/png", "image/jpeg", "image/webp", "multipart/form-data"} == set(content)
    assert content["multipart/form-data"]["schema"]["required"] == ["file"]
    assert {"400", "401", "403", "413", "415", "503"} <= set(upload["responses"])
    assert "image/png" in upload["responses"]["415"]["description"]
    ok = upload["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/FileUploaded"}
