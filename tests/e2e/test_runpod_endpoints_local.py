"""`/api/runpod/*` under the local provider: answered with the local fleet's truth, not invented cloud data."""

import pytest

from tests.support.stack import Stack

pytestmark = pytest.mark.e2e


def test_catalogue_endpoints_say_there_is_no_cloud(stack: Stack):
    health = stack.client.get("/api/runpod/health")
    assert health.status_code == 200 and health.json()["provider"] == "local" and health.json()["healthy"]
    account = stack.client.get("/api/runpod/account").json()
    assert account["provider"] == "local" and "no RunPod account" in account["account"]["note"]
    for path, key in [
        ("/api/runpod/gpu-types", "gpu_types"),
        ("/api/runpod/cloud-types", "cloud_types"),
        ("/api/runpod/network-volumes", "network_volumes"),
        ("/api/runpod/templates", "templates"),
    ]:
        body = stack.client.get(path).json()
        assert body == {"provider": "local", key: []}, path  # fmt: skip
    assert stack.client.get("/api/runpod/network-volumes/vol-1").status_code == 404


def test_pod_lifecycle_through_the_api(stack: Stack):
    created = stack.client.post("/api/runpod/pods", json={})
    assert created.status_code == 201, created.text
    pod = created.json()
    assert pod["managed"] and pod["provider"] == "local" and pod["workflow_name"] is None, "it serves every workflow"
    pod_id = pod["id"]
    assert pod_id in [p["id"] for p in stack.client.get("/api/runpod/pods").json()]
    assert stack.client.get(f"/api/runpod/pods/{pod_id}").json()["id"] == pod_id
    stopped = stack.client.post(f"/api/runpod/pods/{pod_id}/stop").json()
    assert (stopped["status"], stopped["provider_state"]) == ("stopped", "stopped")
    started = stack.client.post(f"/api/runpod/pods/{pod_id}/start").json()
    assert (started["status"], started["provider_state"]) == ("starting", "running")
    assert stack.client.post(f"/api/runpod/pods/{pod_id}/restart").json()["provider_state"] == "running"
    address = stack.client.get(f"/api/runpod/pods/{pod_id}/ip").json()
    assert address["ip"] == "127.0.0.1" and address["comfyui_url"].startswith("http://127.0.0.1:")
    assert stack.client.post(f"/api/runpod/pods/{pod_id}/terminate").json()["status"] == "terminated"
    assert stack.client.get(f"/api/runpod/pods/{pod_id}").status_code == 404


def test_pods_created_through_the_api_count_toward_max_pods(stack: Stack):
    created = []
    try:
        while True:
            response = stack.client.post("/api/runpod/pods", json={})
            if response.status_code != 201:
                break
            created.append(response.json()["id"])
            assert len(created) <= 5, "MAX_PODS is 5"
        assert response.status_code == 409 and "MAX_PODS (5)" in response.json()["detail"], response.text
        live = [p for p in stack.client.get("/api/runpod/pods").json() if p["status"] in ("starting", "ready")]
        assert len(live) == 5, "the fleet is at the maximum, not beyond"
    finally:
        for pod_id in created:
            stack.client.post(f"/api/runpod/pods/{pod_id}/terminate")


def test_errors(stack: Stack):
    for method, path in [
        ("GET", "/api/runpod/pods/nope"),
        ("GET", "/api/runpod/pods/nope/ip"),
        ("POST", "/api/runpod/pods/nope/start"),
        ("POST", "/api/runpod/pods/nope/stop"),
        ("POST", "/api/runpod/pods/nope/restart"),
        ("POST", "/api/runpod/pods/nope/terminate"),
    ]:
        response = stack.client.request(method, path)
        assert response.status_code == 404 and response.json() == {"detail": "Pod not found"}, path  # fmt: skip
    bad = stack.client.post("/api/runpod/pods", json={"workflow_name": "nope"})
    assert bad.status_code == 400 and "workflow_name" in bad.json()["detail"]
    assert stack.client.post("/api/runpod/pods", json={"gpu": "H100"}).status_code == 400
