"""Hostile bodies never get a 500, and a cross-site page cannot post a form or `text/plain` to us.

Every state-changing route of the app's own route table is covered, so a route added later is too:
a non-JSON body is a 415 (on routes without a body as well: a form posted at `/pods/{id}/terminate`
from another site), invalid UTF-8, 5,000-deep nesting, garbage and non-objects are 400s, a value of
the wrong JSON type is a 400 naming the field (never coerced), and a normal JSON body still works.
A route that takes its own kind of body (the image upload) is refused everything else, a cross-site
page cannot post it either, and its hostile bodies (garbage, broken multipart, too large) are 400 or 413.
"""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.routes import HTTPRoute
from litestar.testing import AsyncTestClient
from PIL import Image

from vibewave.api.app import create_app
from vibewave.api.body import MAX_DEPTH, body_type_of, media_types_of
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


def unsafe_routes(app: Litestar, own_bodies: bool = False) -> list[tuple[str, str, bool]]:
    """(method, path with its parameters filled in, whether it takes a body) of every such route: the JSON
    ones, or (`own_bodies`) those that take bodies of other media types."""
    found = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            if bool(media_types_of(handler)) != own_bodies:
                continue
            for method in sorted(set(handler.http_methods) & set(UNSAFE)):
                path = re.sub(r"\{[^}]+\}", "x", route.path_format)
                found.append((method, path, body_type_of(handler) is not None))
    return sorted(found)


# building the app connects nothing: the route table is read at collection
APP = create_app(ApiSettings.from_env())
ROUTES = unsafe_routes(APP)
OWN_BODIES = unsafe_routes(APP, own_bodies=True)
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


def png(width: int = 8, height: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def test_the_upload_is_the_route_with_its_own_bodies():
    assert OWN_BODIES == [("POST", "/api/files", False)]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml",
                                          "application/json", "image/svg+xml", "image/gif"])  # fmt: skip
async def test_the_upload_refuses_other_bodies_415(client, content_type):
    response = await client.post("/api/files", content=png(), headers={"Content-Type": content_type})
    assert response.status_code == 415, response.text
    assert "image/png" in response.json()["detail"] or "application/json" in response.json()["detail"]
    bare = await client.post("/api/files", content=png())
    assert bare.status_code == 415, bare.text


@pytest.mark.parametrize("headers", [{"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"}])
async def test_a_cross_site_page_cannot_upload(client, headers):
    raw = await client.post("/api/files", content=png(), headers={"Content-Type": "image/png", **headers})
    form = await client.post("/api/files", files={"file": ("a.png", png(), "image/png")}, headers=headers)
    assert raw.status_code == form.status_code == 403, (raw.text, form.text)


UPLOAD_HOSTILE = {
    "garbage as image/png": (b"\x00\x01 not an image", "image/png", "Not a readable PNG, JPEG or WebP image"),
    "a truncated PNG": (png(64, 64)[:-40], "image/png", "Not a readable PNG, JPEG or WebP image"),
    "an empty body": (b"", "image/png", "No image in the body"),
    "a GIF called image/png": (b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "image/png", "Not a readable"),
    "broken multipart": (b"--x\r\nnot a part", "multipart/form-data; boundary=x", "Invalid multipart/form-data"),
    "multipart without a boundary": (b"--x\r\n", "multipart/form-data", "boundary"),
    "multipart without `file`": (
        b'--x\r\nContent-Disposition: form-data; name="other"\r\n\r\nhello\r\n--x--\r\n',
        "multipart/form-data; boundary=x",
        "no file field `file`",
    ),
}


@pytest.mark.parametrize("case", UPLOAD_HOSTILE, ids=list(UPLOAD_HOSTILE))
async def test_a_hostile_upload_is_400_with_a_clear_detail(client, case):
    body, content_type, reason = UPLOAD_HOSTILE[case]
    response = await client.post("/api/files", content=body, headers={"Content-Type": content_type})
    assert response.status_code == 400, response.text
    assert reason in response.json()["detail"], response.json()


async def test_an_oversized_upload_is_413(client):
    huge = b"\x89PNG" + b"\x00" * (21 * 1024 * 1024)
    for headers in ({"Content-Type": "image/png"}, {"Content-Type": "multipart/form-data; boundary=x"}):
        response = await client.post("/api/files", content=huge, headers=headers)
        assert response.status_code == 413, response.text


async def test_an_image_uploads_raw_and_as_multipart(client):
    raw = await client.post("/api/files", content=png(24, 16), headers={"Content-Type": "image/png"})
    form = await client.post("/api/files", files={"file": ("still.png", png(24, 16), "application/octet-stream")})
    for response in (raw, form):
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["content_type"], body["width"], body["height"]) == ("image/png", 24, 16)
        assert re.match(r"^upload_[0-9a-f]{16}\.png$", body["name"])
        assert (await client.get(f"/api/files/{body['name']}")).content == png(24, 16)
