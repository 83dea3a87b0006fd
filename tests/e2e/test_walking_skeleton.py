"""One request through the whole system: api → scheduler → pod-manager's simulated pod → executor → back."""

import json
import struct

import pytest

from tests.support.stack import Stack

pytestmark = pytest.mark.e2e

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE, "not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_api_document_async_example_completes_with_a_downloadable_png(stack: Stack):
    body = {"prompt": "A futuristic cyberpunk cityscape at night with neon lights", "width": 1024, "height": 1024}
    accepted = stack.client.post("/api/qwen/generate-async", json=body)
    assert accepted.status_code == 202, accepted.text
    request_id = accepted.json()["request_id"]
    assert accepted.json()["status"] == "pending"

    done = stack.wait_status(request_id, {"completed", "failed"})
    assert done["status"] == "completed", done
    assert done["workflow_name"] == "comfyui_image_qwen"
    assert done["inputs"]["prompt"] == body["prompt"]
    assert isinstance(done["inputs"]["seed"], int), "a missing seed is drawn and recorded"
    assert done["pod_id"] and done["error"] is None
    files = done["result"]["files"]
    assert files and files[0] == f"qwen_{done['inputs']['seed']}_001.png"

    download = stack.client.get(f"/api/files/{files[0]}")
    assert download.status_code == 200
    assert download.headers["content-type"] == "image/png"
    assert int(download.headers["content-length"]) == len(download.content)
    assert png_size(download.content) == (1024, 1024)


def test_chosen_seed_and_size_are_honoured(stack: Stack):
    body = {"prompt": "A beautiful landscape with mountains and a lake", "negative_prompt": "blurry, low quality",
            "width": 512, "height": 768, "seed": 12345, "steps": 4}  # fmt: skip
    request_id = stack.client.post("/api/qwen/generate-async", json=body).json()["request_id"]
    done = stack.wait_status(request_id, {"completed", "failed"})
    assert done["status"] == "completed", done
    assert done["inputs"] == body
    name = done["result"]["files"][0]
    assert name.startswith("qwen_12345_") and name.endswith(".png")
    assert png_size(stack.client.get(f"/api/files/{name}").content) == (512, 768)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"prompt": "unterminated', "Invalid JSON"),
        (b'{"width": 1024, "height": 1024}', "prompt"),
        (b'{"prompt": "x", "width": 1000}', "width"),
        (b'{"prompt": "x", "unknown_field": 1}', "unknown_field"),
        (b'["not", "an", "object"]', "Invalid workflow input parameters"),
        (b'{"prompt": "x", "height": 4000}', "height"),
        (b'{"prompt": "x", "steps": 0}', "steps"),
        (b'{"prompt": "x", "seed": -5}', "seed"),
        (b'{"prompt": "x", "priority": "urgent"}', "priority"),
        (b'{"prompt": "' + b"x" * 4001 + b'"}', "prompt"),
        (b'{"prompts": []}', "prompts"),
        (b'{"prompts": [' + b",".join([b'"p"'] * 17) + b"]}", "prompts"),
    ],
)
def test_bad_input_is_a_400_with_a_detail(stack: Stack, content: bytes, expected: str):
    path = "/api/qwen/batch-generate" if b"prompts" in content else "/api/qwen/generate-async"
    response = stack.client.post(path, content=content, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert expected in response.json()["detail"]


def test_unknown_request_and_file_are_404s(stack: Stack):
    missing = stack.client.get("/api/qwen/status/req-0000000000000000")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "Request not found"}
    assert stack.client.get("/api/qwen/status/not-an-id").status_code == 404
    for name in ("nothing_here.png", "..%2Fetc%2Fpasswd", ".hidden"):
        response = stack.client.get(f"/api/files/{name}")
        assert response.status_code == 404, name
        assert "detail" in response.json()


def test_docs_and_schema_are_served(stack: Stack):
    schema = stack.client.get("/schema/openapi.json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert {"/api/qwen/generate-async", "/api/qwen/status/{request_id}", "/api/files/{filename}", "/health"} <= set(
        paths
    )
    for page in ("/docs", "/redoc"):
        response = stack.client.get(page)
        assert response.status_code == 200 and "/schema/openapi.json" in response.text
    assert stack.client.get("/no/such/route").json() == {"detail": "Not Found"}


def test_every_service_logs_json_lines_with_service_and_request_id(stack: Stack):
    request_id = stack.client.post("/api/qwen/generate-async", json={"prompt": "logs"}).json()["request_id"]
    stack.wait_status(request_id, {"completed"})
    for service in ("api", "scheduler", "executor"):
        lines = [json.loads(line) for line in (stack.home / "logs" / f"{service}.log").read_text().splitlines()]
        mine = [line for line in lines if line.get("request_id") == request_id]
        assert mine, f"{service} logged nothing for {request_id}"
        assert all(line["service"] == service for line in mine)
        assert any("trace_id" in line for line in mine)
