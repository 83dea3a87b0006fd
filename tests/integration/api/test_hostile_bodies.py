"""Hostile bodies never get a 500, and a cross-site page cannot post a form or `text/plain` to us.

Every state-changing route of the app's own route table is covered, so a route added later is too:
a non-JSON body is a 415 (on routes without a body as well: a form posted at `/pods/{id}/terminate`
from another site), invalid UTF-8, 5,000-deep nesting, garbage and non-objects are 400s, a value of
the wrong JSON type is a 400 naming the field (never coerced), and a normal JSON body still works.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.routes import HTTPRoute
from litestar.testing import AsyncTestClient

from vibewave.api.app import create_app
from vibewave.api.body import MAX_DEPTH, body_type_of
from vibewave.api.settings import ApiSettings
from vibewave.runtime.settings import CommonSettings

pytestmark = pytest.mark.integration

UNSAFE = ("POST", "PUT", "PATCH", "DELETE")
JSON = {"Content-Type": "application/json"}
PROMPT = {"prompt": "a lighthouse in a storm", "width": 512, "height": 512}
# A body each route accepts, and what it answers here (the api and NATS only: nothing runs a request,
# no pod-manager answers); a route with a body that is missing here fails `test_a_normal_json_body_works`.
VALID: dict[str, tuple[dict[str, Any], str, set[int]]] = {
    "/api/qwen/generate": (PROMPT, "?timeout=0.2", {408}),
    "/api/qwen/generate-async": (PROMPT, "", {202}),
    "/api/qwen/batch-generate": ({"prompts": ["a fox", "a hare"], "steps": 4}, "", {202}),
    "/api/runpod/workflows/queue": ({"workflow_name": "comfyui_image_qwen", "inputs": PROMPT}, "", {202}),
    "/api/runpod/generate-image": (PROMPT, "?timeout=0.2", {408}),
    "/api/runpod/generate-image-async": (PROMPT, "", {202}),
    "/api/runpod/generate-multiple-images": ({"prompts": ["a fox", "a hare"], "steps": 4}, "", {202}),
    "/api/runpod/pods": ({"workflow_name": "comfyui_image_qwen"}, "", {503}),  # reached pod-manager's call
    "/api/keys": ({"name": "hostile-bodies"}, "", {201}),
}


def unsafe_routes(app: Litestar) -> list[tuple[str, str, bool]]:
    """(method, path with its parameters filled in, whether it takes a body) of every such route."""
    found = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            for method in sorted(set(handler.http_methods) & set(UNSAFE)):
                path = re.sub(r"\{[^}]+\}", "x", route.path_format)
                found.append((method, path, body_type_of(handler) is not None))
    return sorted(found)


# building the app connects nothing: the route table is read at collection
ROUTES = unsafe_routes(create_app(ApiSettings.from_env()))
WITH_BODY = [r for r in ROUTES if r[2]]
WITHOUT_BODY = [r for r in ROUTES if not r[2]]


def ids(route: tuple[str, str, bool]) -> str:
    return f"{route[0]} {route[1]}"


@pytest.fixture(scope="module")
async def client(nats_server: Any, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AsyncTestClient[Any]]:
    home = tmp_path_factory.mktemp("hostile-home")
    common = CommonSettings(nats_url=nats_server.url, home=Path(home), log_level="INFO", debug=False, replicas=1)
    app = create_app(ApiSettings.from_env(common))
    async with AsyncTestClient(app, timeout=30) as test_client:
        yield test_client


def test_the_route_table_has_the_documented_routes():
    """The parametrization is not silently empty: the API document's 8 POST routes with a body are in it."""
    assert {p for m, p, _ in WITH_BODY if m == "POST"} >= set(VALID) - {"/api/keys"}
    assert ("POST", "/api/runpod/pods/x/terminate", False) in WITHOUT_BODY


@pytest.mark.parametrize("content_type", ["text/plain", "text/plain;charset=UTF-8", "multipart/form-data; boundary=x",
                                          "application/x-www-form-urlencoded", "application/xml"])  # fmt: skip
@pytest.mark.parametrize("route", ROUTES, ids=ids)
async def test_a_body_that_is_not_json_is_415(client, route, content_type):
    method, path, _ = route
    response = await client.request(method, path, content=b'{"prompt": "x"}', headers={"Content-Type": content_type})
    assert response.status_code == 415, response.text
    assert "application/json" in response.json()["detail"] or "no request body" in response.json()["detail"]


@pytest.mark.parametrize("route", ROUTES, ids=ids)
async def test_a_cross_site_form_without_fields_is_415(client, route):
    """`<form method=post enctype=text/plain>` with no fields: an empty body, but a form's type."""
    method, path, _ = route
    for content_type in ("application/x-www-form-urlencoded", "text/plain"):
        response = await client.request(method, path, content=b"", headers={"Content-Type": content_type})
        assert response.status_code == 415, response.text
        assert f"'{content_type}'" in response.json()["detail"]


@pytest.mark.parametrize("route", ROUTES, ids=ids)
async def test_a_body_without_a_content_type_is_415(client, route):
    method, path, _ = route
    response = await client.request(method, path, content=b'{"prompt": "x"}')
    assert response.status_code == 415, response.text


@pytest.mark.parametrize("route", WITHOUT_BODY, ids=ids)
async def test_a_route_without_a_body_ignores_a_json_one_and_works_without(client, route):
    method, path, _ = route
    ignored = await client.request(method, path, content=b"{}", headers=JSON)
    assert ignored.status_code not in (415, 500), ignored.text
    refused = await client.request(method, path, content=b"a=1", headers={"Content-Type": "text/plain"})
    assert refused.status_code == 415, refused.text
    cross = await client.request(method, path, headers={"Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403 and "Cross-site" in cross.json()["detail"]
    bare = await client.request(method, path)  # no body, no Content-Type: what curl -X POST sends
    assert bare.status_code not in (415, 500), bare.text


HOSTILE = {
    "invalid UTF-8": (b'{"prompt": "caf\xc3\x28 \xff\xfe"}', "not valid UTF-8"),
    "an overlong UTF-8 encoding": (b'{"prompt": "\xc0\xaf"}', "not valid UTF-8"),
    "a lone surrogate in UTF-8": (b'{"prompt": "\xed\xa0\x80"}', "not valid UTF-8"),
    "5,000-deep arrays": (b"[" * 5000 + b"]" * 5000, f"nested deeper than {MAX_DEPTH} levels"),
    "5,000-deep objects": (b'{"a":' * 5000 + b"1" + b"}" * 5000, f"nested deeper than {MAX_DEPTH} levels"),
    "5,000-deep inside a field": (b'{"inputs": {"prompt": ' + b"[" * 5000 + b"]" * 5000 + b"}}", "nested deeper"),
    "5,000 unclosed arrays": (b"[" * 5000, f"nested deeper than {MAX_DEPTH} levels"),
    "unbalanced brackets": (b'{"inputs": ' + b"[]" * 70 + b"]}}", "its brackets do not balance"),
    "truncated JSON": (b'{"prom', "Invalid JSON body: Input data was truncated"),
    "garbage": (b"\x00\x01 not json at all", "Invalid JSON body: JSON is malformed: invalid character (byte 0)"),
    "an array": (b'["a fox"]', "Expected `object`, got `array`"),
    "a string": (b'"a fox"', "Expected `object`, got `str`"),
    "a number": (b"12", "Expected `object`, got `int`"),
    "null": (b"null", "Expected `object`, got `null`"),
}


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
@pytest.mark.parametrize("route", WITH_BODY, ids=ids)
async def test_a_malformed_body_is_400_with_a_clear_detail(client, route, case):
    method, path, _ = route
    body, reason = HOSTILE[case]
    response = await client.request(method, path, content=body, headers=JSON)
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert set(response.json()) == {"detail"} and reason in detail, detail


@pytest.mark.parametrize("route", WITH_BODY, ids=ids)
async def test_a_normal_json_body_works(client, route):
    method, path, _ = route
    assert path in VALID, f"add a body that {method} {path} accepts to VALID"
    body, query, statuses = VALID[path]
    for content_type in ("application/json", "application/json; charset=utf-8", "application/merge-patch+json"):
        response = await client.request(method, path + query, json=body, headers={"Content-Type": content_type})
        assert response.status_code in statuses, response.text


STRICT = [
    ("/api/qwen/generate-async", {**PROMPT, "width": "1024"}, "width: Expected `int | null`, got `str`"),
    ("/api/qwen/generate-async", {**PROMPT, "steps": 4.5}, "steps: Expected `int | null`, got `float`"),
    ("/api/qwen/generate-async", {**PROMPT, "height": True}, "height: Expected `int | null`, got `bool`"),
    ("/api/qwen/generate-async", {**PROMPT, "seed": "7"}, "seed: Expected `int | null`, got `str`"),
    ("/api/qwen/generate-async", {"prompt": 5}, "prompt: Expected `str`, got `int`"),
    ("/api/qwen/generate-async", {**PROMPT, "priority": 1}, "priority: Expected `str`, got `int`"),
    ("/api/runpod/generate-image-async", {**PROMPT, "width": "512"}, "width: Expected `int | null`, got `str`"),
    ("/api/runpod/generate-image", {**PROMPT, "steps": "4"}, "steps: Expected `int | null`, got `str`"),
    ("/api/qwen/generate", {**PROMPT, "width": 512.0}, "width: Expected `int | null`, got `float`"),
    ("/api/qwen/batch-generate", {"prompts": ["a", 3]}, "prompts[1]: Expected `str`, got `int`"),
    ("/api/qwen/batch-generate", {"prompts": "a fox"}, "prompts: Expected `array`, got `str`"),
    ("/api/runpod/generate-multiple-images", {"prompt": "a", "count": "3"}, "count: Expected `int | null`, got `str`"),
    ("/api/runpod/workflows/queue", {"inputs": {**PROMPT, "width": "1024"}}, "width: must be a number (int)"),
    ("/api/runpod/workflows/queue", {"inputs": []}, "inputs: Expected `object`, got `array`"),
    ("/api/runpod/pods", {"workflow_name": 7}, "workflow_name: Expected `str`, got `int`"),
]


@pytest.mark.parametrize(("path", "body", "detail"), STRICT, ids=[f"{p} {d}" for p, _, d in STRICT])
async def test_a_value_of_the_wrong_type_is_400_naming_the_field_not_coerced(client, path, body, detail):
    response = await client.post(path, json=body)
    assert response.status_code == 400, response.text
    assert response.json() == {"detail": f"Invalid workflow input parameters: {detail}"}
