"""A pod on the RunPod account that Vibewave did not create — made straight through RunPod's REST API on
the emulator, as someone else sharing the key would — is read-only through `/api/runpod/pods` unless
pod-manager runs with POD_MANAGE_FOREIGN=true."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest

from tests.e2e.conftest import StackFactory
from tests.support.emulator import Emulator
from tests.support.stack import Stack, wait_for

pytestmark = pytest.mark.e2e

KEY = f"rpa_E2EFOREIGN_{uuid4().hex}"


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Emulator]:
    running = Emulator(tmp_path / "emulator", KEY)
    yield running
    running.close()


def create_foreign_pod(emulator: Emulator) -> str:
    """`POST /v2/pods` with the account's key: a pod with a name not Vibewave's."""
    body = {"name": "someone-elses-notebook", "image": "runpod/base:0.5.1-cpu", "gpu": {"id": "NVIDIA RTX A6000"}}
    response = httpx.post(f"{emulator.url}/v2/pods", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 201, response.text
    pod_id: str = response.json()["id"]
    return pod_id


def on_emulator(emulator: Emulator, pod_id: str) -> dict[str, Any] | None:
    return next((p for p in emulator.pods() if p["id"] == pod_id), None)


def restart_pod_manager(stack: Stack, **env: str) -> None:
    stack.stop("pod-manager")
    stack.service_env["pod-manager"].update(env)
    stack.start("pod-manager")
    wait_for(lambda: stack.client.get("/api/runpod/health").status_code == 200, 60, "pod-manager back", interval=0.2)


def test_a_foreign_pod_is_not_terminated_unless_pod_manage_foreign(start_own_stack: StackFactory, emulator: Emulator):
    stack = start_own_stack(service_env={"pod-manager": emulator.pod_manager_env()})
    pod_id = create_foreign_pod(emulator)
    listed = {p["id"]: p for p in stack.client.get("/api/runpod/pods").json()}
    assert listed[pod_id]["managed"] is False
    assert stack.client.get(f"/api/runpod/pods/{pod_id}").status_code == 200, "reading it stays allowed"

    refused = stack.client.post(f"/api/runpod/pods/{pod_id}/terminate")
    assert refused.status_code == 403, refused.text
    assert refused.json()["detail"] == (
        f"pod {pod_id} is not managed by Vibewave; set POD_MANAGE_FOREIGN=true to terminate pods it did not create"
    )
    assert stack.client.post(f"/api/runpod/pods/{pod_id}/stop").status_code == 403
    still = on_emulator(emulator, pod_id)
    assert still is not None and still["desiredStatus"] == "RUNNING", "the pod runs on, untouched"
    assert emulator.calls("rest:deletePod") == 0 and emulator.calls("rest:podAction:stop") == 0

    restart_pod_manager(stack, POD_MANAGE_FOREIGN="true")
    assert on_emulator(emulator, pod_id) is not None, "pod-manager's restart left the foreign pod alone"
    terminated = stack.client.post(f"/api/runpod/pods/{pod_id}/terminate")
    assert terminated.status_code == 200, terminated.text
    assert terminated.json()["status"] == "terminated" and terminated.json()["managed"] is False
    assert on_emulator(emulator, pod_id) is None, "gone from the account"
