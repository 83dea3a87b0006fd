"""`POST /api/runpod/generate-multiple-images` takes the API document's "Generate Multiple Images" body
(`prompts`: one image each) as well as one `prompt` with a `count`; and a page of another site can
neither post it as a form nor terminate a pod with one."""

from __future__ import annotations

import pytest

from tests.e2e.test_api_examples import EXAMPLE_3
from tests.support.stack import Stack, wait_for

pytestmark = pytest.mark.e2e

PATH = "/api/runpod/generate-multiple-images"
JSON = {"Content-Type": "application/json"}
PROMPTS = [
    "A serene mountain landscape with a crystal clear lake",
    "A futuristic cityscape with flying cars and neon lights",
    "An abstract digital art piece with vibrant colors",
]


def test_the_documents_example_makes_one_image_per_prompt(stack: Stack):
    started = stack.client.post(PATH, content=EXAMPLE_3.encode(), headers=JSON)
    assert started.status_code == 202, started.text
    batch = started.json()
    assert len(batch["request_ids"]) == 3 and batch["status"] == "pending"

    def finished():  # type: ignore[no-untyped-def]
        body = stack.client.get(batch["status_url"]).json()
        return body if body["status"] in ("completed", "failed", "cancelled") else None

    whole = wait_for(finished, 60, "the batch to finish")
    assert whole["status"] == "completed" and whole["counts"] == {"completed": 3}, whole
    by_id = {r["id"]: r for r in whole["requests"]}
    requests = [by_id[request_id] for request_id in batch["request_ids"]]
    assert [r["inputs"]["prompt"] for r in requests] == PROMPTS, "one request per prompt, in order"
    for request in requests:
        assert (request["inputs"]["width"], request["inputs"]["height"], request["inputs"]["steps"]) == (1024, 1024, 4)
        assert request["result"]["success"] is True and len(request["result"]["files"]) == 1
        image = stack.client.get(f"/api/files/{request['result']['files'][0]}")
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    files = [r["result"]["files"][0] for r in requests]
    assert len(set(files)) == 3 and sorted(whole["files"]) == sorted(files), "each its own image"


def test_one_prompt_with_a_count_still_works(stack: Stack):
    started = stack.client.post(PATH, json={"prompt": "a fox", "count": 2, "seed": 40, "width": 512, "height": 512})
    assert started.status_code == 202, started.text
    seeds = [stack.wait_status(r, {"completed"})["inputs"]["seed"] for r in started.json()["request_ids"]]
    assert seeds == [40, 41]


@pytest.mark.parametrize(
    "body, detail",
    [({"prompt": "a fox", "prompts": ["a hare"]}, "not both"),
     ({"width": 512}, "`prompts` (one image each) or `prompt` (with `count`) is required"),
     ({"prompts": ["a fox"], "count": 2}, "`count` goes with `prompt`"),
     ({"prompts": ["a fox"] * 17}, "prompts: Expected `array` of length <= 16")],
)  # fmt: skip
def test_prompts_are_given_one_way(stack: Stack, body, detail):
    response = stack.client.post(PATH, json=body)
    assert response.status_code == 400 and detail in response.json()["detail"], response.text


def test_a_cross_site_form_cannot_queue_images_or_terminate_a_pod(stack: Stack):
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert stack.client.post(PATH, content=b"prompt=a+fox&count=16", headers=form).status_code == 415
    text = {"Content-Type": "text/plain"}
    assert stack.client.post(PATH, content=EXAMPLE_3.encode(), headers=text).status_code == 415
    pod = next(p for p in stack.client.get("/api/runpod/pods").json() if p["status"] == "ready")
    for content_type in ("application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x"):
        refused = stack.client.post(f"/api/runpod/pods/{pod['id']}/terminate", headers={"Content-Type": content_type})
        assert refused.status_code == 415, refused.text
    assert stack.client.get(f"/api/runpod/pods/{pod['id']}").json()["status"] == "ready", "the pod lives on"
