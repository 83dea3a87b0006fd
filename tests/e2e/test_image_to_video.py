"""Input images end to end: a still uploaded to `POST /api/files` is animated by the Wan 2.2 image-to-video
workflow, and the mp4's first frame is that still (the simulator starts its clip from the input image);
so is a still a request generated, named as its result gave it; an image input's URL at a private
address is refused at submit unless the operator allows such URLs,
and then the executor fetches it; bad uploads and another tenant's upload are refused."""

from __future__ import annotations

import io
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.e2e.conftest import StackFactory
from tests.support.media import decoded_frames, mean_difference, mp4_facts, strong_blocks
from tests.support.stack import Stack
from vibewave.devstack import nats_auth
from vibewave.devstack.nats_server import EmbeddedNats

pytestmark = pytest.mark.e2e

I2V = "comfyui_video_wan22_i2v"
SMALL = {"prompt": "the colours slowly drift", "width": 320, "height": 256, "length": 17, "steps": 2, "seed": 5}
ADMIN_KEY = "adm-" + secrets.token_urlsafe(24)


def png_of(picture: Any) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    return buffer.getvalue()


def queue(client: httpx.Client, image: str, **inputs: Any) -> httpx.Response:
    body = {"workflow_name": I2V, "inputs": {**SMALL, "image": image, **inputs}}
    return client.post("/api/runpod/workflows/queue", json=body)


def first_frame_of(stack: Stack, client: httpx.Client, request_id: str) -> Any:
    done = stack.record(request_id, {"completed", "failed"}, timeout=120)
    assert done.status == "completed", done.error
    (name,) = done.result.files
    video = client.get(f"/api/files/{name}")
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4", video.text[:200]
    facts = mp4_facts(video.content)
    assert (facts.codec, facts.width, facts.height, facts.frames) == ("avc1", 320, 256, 17)
    return decoded_frames(video.content)[0]


def test_an_uploaded_still_is_animated_and_bad_inputs_are_refused(start_own_stack: StackFactory) -> None:
    stack = start_own_stack(VIBEWAVE_ADMIN_KEY=ADMIN_KEY)
    admin = httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
    still = strong_blocks(480, 360)  # another size than the video's: the simulator resizes it

    uploaded = admin.post("/api/files", content=png_of(still), headers={"Content-Type": "image/png"})
    assert uploaded.status_code == 200, uploaded.text
    upload = uploaded.json()
    assert (upload["content_type"], upload["width"], upload["height"]) == ("image/png", 480, 360)
    assert upload["size"] == len(png_of(still)) and upload["name"].startswith("upload_")
    assert admin.get(f"/api/files/{upload['name']}").content == png_of(still), "the upload downloads as sent"

    accepted = queue(admin, upload["name"])
    assert accepted.status_code == 202, accepted.text
    frame = first_frame_of(stack, admin, accepted.json()["id"])
    assert mean_difference(frame, still) < 8, "the clip's first frame is the uploaded still"
    assert mean_difference(frame, strong_blocks(480, 360).rotate(180)) > 40, "and the comparison can tell"

    refused = queue(admin, "https://127.0.0.1/x.png")
    assert refused.status_code == 400, refused.text
    assert "image: " in refused.json()["detail"] and "loopback" in refused.json()["detail"], refused.json()
    assert queue(admin, "http://example.com/x.png").status_code == 400, "http:// only with private URLs allowed"
    unknown = queue(admin, "upload_0123456789abcdef.png")
    assert unknown.status_code == 400 and "no image" in unknown.json()["detail"], unknown.text

    not_image = admin.post("/api/files", files={"file": ("notes.png", b"just some text", "image/png")})
    assert not_image.status_code == 400 and "Not a readable" in not_image.json()["detail"], not_image.text
    huge = admin.post("/api/files", content=b"\x89PNG" + b"\x00" * (21 * 1024 * 1024),
                      headers={"Content-Type": "image/png"})  # fmt: skip
    assert huge.status_code == 413, huge.text

    def key_for(name: str) -> httpx.Client:
        created = admin.post("/api/keys", json={"name": name, "scopes": ["generate", "read"]})
        assert created.status_code == 201, created.text
        auth = {"Authorization": f"Bearer {created.json()['key']}"}
        return httpx.Client(base_url=stack.base_url, headers=auth, timeout=30)

    alice, bob = key_for("alice-i2v"), key_for("bob-i2v")
    mine = alice.post("/api/files", files={"file": ("still.png", png_of(still), "image/png")})
    assert mine.status_code == 200, mine.text
    name = mine.json()["name"]
    theirs = queue(bob, name)
    assert theirs.status_code == 400 and "no image" in theirs.json()["detail"], theirs.text
    assert bob.get(f"/api/files/{name}").status_code == 404, "nor can another tenant download it"
    assert alice.get(f"/api/files/{name}").status_code == 200
    assert queue(alice, name).status_code == 202, "its own tenant may use it"

    generated = alice.post("/api/qwen/generate-async", json={"prompt": "a red door", "width": 320, "height": 256})
    assert generated.status_code == 202, generated.text
    made = stack.record(generated.json()["request_id"], {"completed", "failed"}, timeout=120)
    assert made.status == "completed", made.error
    (still_name,) = made.result.files
    generated_still = Image.open(io.BytesIO(alice.get(f"/api/files/{still_name}").content)).convert("RGB")
    assert queue(bob, still_name).status_code == 400, "another tenant's generated still is not bob's to animate"
    animated = queue(alice, still_name)
    assert animated.status_code == 202, animated.text
    frame = first_frame_of(stack, alice, animated.json()["id"])
    assert mean_difference(frame, generated_still) < 8, "a generated still, named as it came, starts the clip"


@pytest.fixture
def image_server() -> Iterator[tuple[str, bytes]]:
    """A still served over plain HTTP on 127.0.0.1 (an operator's own image host, say)."""
    still = png_of(strong_blocks(320, 256).transpose(Image.Transpose.FLIP_LEFT_RIGHT))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(still)))
            self.end_headers()
            self.wfile.write(still)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/still.png", still
    server.shutdown()
    server.server_close()


def test_with_private_urls_allowed_the_executor_fetches_the_image(
    start_own_stack: StackFactory, image_server: tuple[str, bytes]
) -> None:
    allowed = {"VIBEWAVE_ALLOW_PRIVATE_URLS": "true"}
    stack = start_own_stack(service_env={"api": dict(allowed), "executor": dict(allowed)})
    url, still = image_server
    accepted = queue(stack.client, url)
    assert accepted.status_code == 202, accepted.text
    frame = first_frame_of(stack, stack.client, accepted.json()["id"])
    assert mean_difference(frame, Image.open(io.BytesIO(still))) < 8, "the fetched image starts the clip"

    nothing_there = queue(stack.client, "https://127.0.0.1:9/x.png")  # allowed, but nothing answers
    assert nothing_there.status_code == 202, nothing_there.text
    failed = stack.record(nothing_there.json()["id"], {"completed", "failed"}, timeout=60)
    assert failed.status == "failed" and failed.attempts == 1, "a fetch that fails is not retried elsewhere"
    assert failed.error.startswith("inputs.image: could not fetch https://127.0.0.1:9/x.png"), failed.error


def test_each_service_on_its_own_nats_user_may_store_and_read_uploads(tmp_path: Path) -> None:
    """With `nats_auth`'s least privileges the api stores the upload and the executor reads it back."""
    passwords = nats_auth.new_passwords(nats_auth.USERS)
    server = EmbeddedNats(tmp_path / "nats", authorization=nats_auth.authorization_block(passwords))
    server.start()
    (tmp_path / "home").mkdir()
    stack = Stack(server.url, tmp_path / "home", nats_passwords=passwords, MAX_PODS="1")
    try:
        stack.start()
        stack.wait_healthy(timeout=60)
        still = strong_blocks(320, 256)
        uploaded = stack.client.post("/api/files", files={"file": ("still.png", png_of(still), "image/png")})
        assert uploaded.status_code == 200, uploaded.text
        accepted = queue(stack.client, uploaded.json()["name"])
        assert accepted.status_code == 202, accepted.text
        done = stack.wait_status(accepted.json()["id"], {"completed", "failed"}, timeout=120)
        assert done["status"] == "completed", done
    finally:
        stack.close()
        server.stop()
    violations = [line for line in server.log_path.read_text().splitlines() if "Violation" in line]
    assert not violations, "the services were refused what they do:\n" + "\n".join(violations[:20])
