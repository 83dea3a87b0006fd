"""Real first use on the RunPod emulator: pods boot our bootstrap (deploy/pod) with a token of their own.

The emulator runs each pod's start command as its container, with the ComfyUI simulator standing in for
the ComfyUI install and its model host standing in for Hugging Face (the workflow's files, scaled down,
with their real checksums). Pods mount one network volume, so the second pod finds ComfyUI and the models
there. The API document's image without the bootstrap serves nothing, and the fleet says so."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import httpx
import pytest

from tests.e2e.conftest import StackFactory
from tests.support.emulator import Emulator
from tests.support.stack import Stack, wait_for
from vibewave.contracts.workflows import load_catalog

pytestmark = pytest.mark.e2e

KEY = f"rpa_BOOTSECRET_{uuid4().hex}"
VOLUME = "agv6w2qcg7"  # seeded in the emulator (EU-RO-1)
QWEN = load_catalog()["comfyui_image_qwen"]
FLEET_FILES = [m.key for m in QWEN.models if not m.optional]
CORRUPTED = "vae/qwen_image_vae.safetensors"
COMFYUI_ROUTES = [
    ("GET", "/system_stats"), ("GET", "/queue"), ("GET", "/history"), ("GET", "/object_info"),
    ("GET", "/models/loras"), ("GET", "/view?filename=x.png&type=output"), ("GET", "/api/system_stats"),
    ("POST", "/prompt"), ("POST", "/interrupt"), ("POST", "/queue"), ("POST", "/upload/image"),
    ("GET", "/ws?clientId=abc"), ("GET", "/vibewave/status"),
]  # fmt: skip


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    running = Emulator(tmp_path_factory.mktemp("boot-emulator"), KEY)
    running.faults({"model_host": {"corrupt": {CORRUPTED: 1}}})  # the first download of the VAE is damaged
    yield running
    running.close()


@pytest.fixture(scope="module")
def stack(start_stack: StackFactory, emulator: Emulator) -> Stack:
    return start_stack(
        service_env={"pod-manager": {**emulator.pod_manager_env(), "RUNPOD_NETWORK_VOLUME_ID": VOLUME}},
        MAX_PODS="1", POD_READY_TIMEOUT="60", POD_SYNC_INTERVAL="1", POD_IDLE_TIMEOUT="600",
    )  # fmt: skip


def host_requests(emulator: Emulator) -> dict[str, int]:
    files: dict[str, Any] = emulator.state()["modelHost"]["files"]
    return {key: counts["full"] + counts["ranged"] for key, counts in files.items()}


def bootstrap_status(emulator: Emulator, stack: Stack, pod: dict[str, Any]) -> dict[str, Any]:
    response = httpx.get(
        f"{emulator.url}/proxy/{pod['id']}-8188/vibewave/status",
        headers={"Authorization": f"Bearer {stack.pod_token(pod['name'])}"}, timeout=10,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    status: dict[str, Any] = response.json()
    return status


def test_the_first_pod_installs_downloads_verifies_and_serves_a_qwen_request(stack: Stack, emulator: Emulator):
    done = stack.record(stack.generate("a lighthouse in fog", steps=4), {"completed", "failed"}, timeout=120)
    assert done.status == "completed", done.error
    pod = stack.client.get(f"/api/runpod/pods/{done.pod_id}").json()
    assert pod["status"] == "ready" and sorted(pod["models"]) == sorted(FLEET_FILES)
    status = bootstrap_status(emulator, stack, pod)
    assert status["phase"] == "ready" and status["install"]["skipped"] is False
    assert status["install"]["mode"] == "simulator" and status["volume"]["network_volume"] is True
    fetched = host_requests(emulator)
    assert set(fetched) == set(FLEET_FILES), "exactly the fleet's files were fetched"
    assert fetched[CORRUPTED] == 2, "the damaged download failed its checksum and was fetched again"
    assert all(n == 1 for key, n in fetched.items() if key != CORRUPTED)

    health = stack.client.get("/api/qwen/health").json()
    listed = {p["pod_id"]: p for p in health["models"]["pods"]}
    assert listed[done.pod_id]["missing"] == [] and listed[done.pod_id]["checked"] is True
    assert set(listed[done.pod_id]["present"]) >= set(FLEET_FILES)
    assert health["pods"]["ready"] == 1


def test_a_second_pod_on_the_same_volume_is_ready_without_installing_or_downloading(stack: Stack, emulator: Emulator):
    first = stack.client.get("/api/runpod/pods").json()
    first_ids = [p["id"] for p in first if p["status"] not in ("terminated",)]
    before = host_requests(emulator)
    for pod_id in first_ids:
        assert stack.client.post(f"/api/runpod/pods/{pod_id}/terminate").status_code == 200
    wait_for(lambda: not [p for p in emulator.pods() if p["id"] in first_ids], 30, "the first pod gone")

    done = stack.record(stack.generate("a harbour at dawn", steps=4), {"completed", "failed"}, timeout=120)
    assert done.status == "completed", done.error
    assert done.pod_id not in first_ids, "a new pod served it"
    pod = stack.client.get(f"/api/runpod/pods/{done.pod_id}").json()
    status = bootstrap_status(emulator, stack, pod)
    assert status["install"]["skipped"] is True, "ComfyUI was already on the volume"
    assert all(m["state"] == "present" for m in status["models"])
    assert host_requests(emulator) == before, "not one model file was downloaded again"


def test_every_comfyui_route_refuses_a_request_without_the_pods_token(stack: Stack, emulator: Emulator):
    pods = [p for p in stack.client.get("/api/runpod/pods").json() if p["status"] == "ready"]
    assert pods, "a ready pod to knock on"
    pod = pods[0]
    base = f"{emulator.url}/proxy/{pod['id']}-8188"
    other_pod_token = stack.pod_token("vibewave-000000")
    for method, route in COMFYUI_ROUTES:
        for headers in ({}, {"Authorization": f"Bearer {other_pod_token}"}, {"Authorization": "Basic eDp5"}):
            response = httpx.request(method, base + route, headers=headers, timeout=10)
            assert response.status_code in (401, 403), (method, route, headers, response.status_code)
    ok = httpx.get(base + "/system_stats", headers={"Authorization": f"Bearer {stack.pod_token(pod['name'])}"})
    assert ok.status_code == 200
    listed = stack.client.get(f"/api/runpod/pods/{pod['id']}").text
    assert stack.pod_token(pod["name"]) not in listed and "COMFY_PROXY_TOKEN" not in listed.replace(
        '"COMFY_PROXY_TOKEN":"<hidden>"', ""
    ), "the admin view shows env keys, never their values"


def test_the_api_documents_image_without_the_bootstrap_fails_with_a_diagnosis(
    start_own_stack: StackFactory, tmp_path_factory: pytest.TempPathFactory
):
    emulator = Emulator(tmp_path_factory.mktemp("plain-image"), KEY)
    try:
        stack = start_own_stack(
            service_env={"pod-manager": {**emulator.pod_manager_env(), "RUNPOD_BOOTSTRAP": "off"}},
            MAX_PODS="3", POD_READY_TIMEOUT="3", POD_READY_ATTEMPTS="2", POD_SYNC_INTERVAL="1",
        )  # fmt: skip
        failed = stack.record(stack.generate(), {"completed", "failed"}, timeout=60)
        assert failed.status == "failed"
        assert failed.error is not None and "2 pods in a row never became ready" in failed.error, failed.error
        assert "runpod/pytorch:2.1.0-py3.10-cuda11.8.0-devel-ubuntu22.04 starts no ComfyUI by itself" in failed.error
        assert "RUNPOD_BOOTSTRAP=on" in failed.error
        state = emulator.state()
        assert state["podsCreated"] == 2, "no more pods than POD_READY_ATTEMPTS"
        assert state["pods"] == [], "both terminated: nothing left billing"
        health = stack.client.get("/api/runpod/health")
        assert health.status_code == 503 and "starts no ComfyUI by itself" in health.json()["detail"]
    finally:
        emulator.close()
