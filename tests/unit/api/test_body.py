"""The body checks as plain functions: which Content-Types pass, how deep is too deep (brackets in
strings do not count), and how a body is decoded: strictly, with 400s that name the field."""

from __future__ import annotations

import time

import pytest
from litestar.exceptions import ClientException, ValidationException

from vibewave.api.body import MAX_DEPTH, cross_site, decode_body, nesting_problem, refusal
from vibewave.api.errors import validation_detail
from vibewave.contracts.models import MultipleImagesRequest, WorkflowInput

pytestmark = pytest.mark.unit


def headers(content_type: str | None = None, length: int | None = None) -> list[tuple[bytes, bytes]]:
    found = [(b"host", b"api")]
    if content_type is not None:
        found.append((b"content-type", content_type.encode()))
    if length is not None:
        found.append((b"content-length", str(length).encode()))
    return found


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", 'Application/JSON;charset="UTF-8"',
     "application/merge-patch+json", "application/vnd.vibewave+json; charset=utf8"],
)  # fmt: skip
def test_json_types_pass(content_type):
    assert refusal(headers(content_type, 20), takes_body=True) is None
    assert refusal(headers(content_type, 0), takes_body=False) is None


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data; boundary=b",
     "application/xml", "text/json", "", "application/json; charset=utf-16", "application/json; charset=latin-1"],
)  # fmt: skip
@pytest.mark.parametrize("length", [0, 20])
def test_other_types_are_refused_with_or_without_a_body(content_type, length):
    reason = refusal(headers(content_type, length), takes_body=True)
    assert reason is not None and "application/json" in reason


def test_without_a_content_type_only_an_empty_request_passes():
    assert refusal(headers(), takes_body=False) is None
    assert refusal(headers(length=0), takes_body=False) is None
    assert refusal(headers(length=2), takes_body=True) == "A request body needs 'Content-Type: application/json'"
    chunked = [*headers(), (b"transfer-encoding", b"chunked")]
    assert refusal(chunked, takes_body=True) is not None


def test_a_route_without_a_body_ignores_a_json_one_and_refuses_others():
    assert refusal(headers("application/json", 2), takes_body=False) is None
    assert "application/json" in (refusal(headers("text/plain", 2), takes_body=False) or "")


@pytest.mark.parametrize(
    ("given", "refused"),
    [
        ([(b"sec-fetch-site", b"cross-site")], True),
        ([(b"sec-fetch-site", b"same-site")], True),  # another port of localhost: another origin
        ([(b"sec-fetch-site", b"same-origin"), (b"origin", b"http://evil.example")], False),
        ([(b"sec-fetch-site", b"none")], False),
        ([(b"origin", b"http://evil.example"), (b"host", b"127.0.0.1:8000")], True),
        ([(b"origin", b"null"), (b"host", b"127.0.0.1:8000")], True),
        ([(b"origin", b"http://127.0.0.1:8000"), (b"host", b"127.0.0.1:8000")], False),
        ([(b"host", b"127.0.0.1:8000")], False),  # curl, httpx, a service: no browser headers
    ],
)
def test_a_browser_request_from_another_origin_is_cross_site(given, refused):
    assert cross_site(given) is refused


@pytest.mark.parametrize("opener, closer", [(b"[", b"]"), (b'{"a":', b"}")])
def test_the_depth_limit_is_exact(opener, closer):
    inner = b"1" if opener != b"[" else b""
    assert nesting_problem(opener * MAX_DEPTH + inner + closer * MAX_DEPTH, MAX_DEPTH) is None
    deeper = opener * (MAX_DEPTH + 1) + inner + closer * (MAX_DEPTH + 1)
    assert nesting_problem(deeper, MAX_DEPTH) == f"nested deeper than {MAX_DEPTH} levels"


def test_brackets_inside_strings_do_not_count():
    text = b"[[{{" * 1000 + b'\\" ]]'  # brackets, and an escaped quote that does not end the string
    hostile_looking = b'{"prompt": "' + text + b'", "tags": [[1], [2], {"a": [3]}]}'
    assert nesting_problem(hostile_looking, MAX_DEPTH) is None
    assert nesting_problem(b'["\\\\"' + b",[" * 100 + b"]" * 100 + b"]", MAX_DEPTH) == "nested deeper than 64 levels"


def test_many_shallow_containers_pass_and_unbalanced_ones_do_not():
    assert nesting_problem(b"[" + b"[1],{}," * 10_000 + b"[]]", MAX_DEPTH) is None
    assert nesting_problem(b"[" * 100, MAX_DEPTH) == "nested deeper than 64 levels"  # unclosed, and deep
    assert nesting_problem(b"[]" * 70 + b"]", MAX_DEPTH) == "its brackets do not balance"
    assert nesting_problem(b"]" * 100 + b"[" * 100, MAX_DEPTH) == "its brackets do not balance"
    assert nesting_problem(b"]" * 100, MAX_DEPTH) is None  # too few openers to nest: left to the decoder


def test_a_hostile_megabyte_is_scanned_quickly():
    """Chains just under the limit, the slowest shape for the scan: one level per pass."""
    chains = b"[" + b",".join([b"[" * 62 + b"]" * 62] * (1_000_000 // 126)) + b"]"
    started = time.perf_counter()
    assert nesting_problem(chains, MAX_DEPTH) is None
    assert time.perf_counter() - started < 0.5  # ~25 ms here; bounded for a shared machine


def test_a_body_is_decoded_strictly_with_the_field_named():
    assert decode_body(b'{"prompt": "a fox", "width": 512}', WorkflowInput) == WorkflowInput(prompt="a fox", width=512)
    for body, detail in [
        (b'{"prompt": "a fox", "width": "512"}', "width: Expected `int | null`, got `str`"),
        (b'{"prompt": "a fox", "steps": 4.5}', "steps: Expected `int | null`, got `float`"),
        (b'{"prompt": "a fox", "seed": true}', "seed: Expected `int | null`, got `bool`"),
        (b'{"width": 512}', "body: Object missing required field `prompt`"),
        (b"[]", "body: Expected `object`, got `array`"),
    ]:
        with pytest.raises(ValidationException) as raised:
            decode_body(body, WorkflowInput)
        assert validation_detail(raised.value) == f"Invalid workflow input parameters: {detail}"


@pytest.mark.parametrize(
    "body, detail",
    [(b'{"prompt": "\xff"}', "Invalid JSON body: not valid UTF-8 (byte 12)"),
     (b'{"prompt": ', "Invalid JSON body: Input data was truncated"),
     (b"[" * 5000 + b"]" * 5000, f"Invalid JSON body: nested deeper than {MAX_DEPTH} levels")],
)  # fmt: skip
@pytest.mark.parametrize("body_type", [WorkflowInput, None], ids=["typed", "any"])
def test_an_unreadable_body_is_a_400(body, detail, body_type):
    with pytest.raises(ClientException) as raised:
        decode_body(body, body_type)
    assert raised.value.status_code == 400 and raised.value.detail == detail


def test_multiple_images_take_prompts_or_a_prompt_and_a_count():
    batch = decode_body(b'{"prompts": ["a", "b", "c"], "seed": 7}', MultipleImagesRequest)
    assert batch.prompts == ["a", "b", "c"] and [batch.inputs_for(p, i)["seed"] for i, p in enumerate("abc")] == [
        7,
        8,
        9,
    ]
    assert decode_body(b'{"prompt": "a", "count": 2}', MultipleImagesRequest).prompts == ["a", "a"]
    assert decode_body(b'{"prompt": "a"}', MultipleImagesRequest).prompts == ["a"] * 4
    for body, detail in [
        (b'{"prompt": "a", "prompts": ["b"]}', "not both"),
        (b'{"width": 512}', "is required"),
        (b'{"prompts": ["a"], "count": 2}', "`count` goes with `prompt`"),
        (b'{"prompts": []}', "prompts: Expected `array` of length >= 1"),
        (b'{"prompt": "a", "count": 17}', "count: Expected `int` <= 16"),
    ]:
        with pytest.raises(ValidationException) as raised:
            decode_body(body, MultipleImagesRequest)
        assert detail in validation_detail(raised.value)
