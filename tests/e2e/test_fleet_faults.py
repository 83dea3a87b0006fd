"""The fleet against RunPod as it really behaves — the RunPod emulator with its documented failures
switched on — one test per paid loop, each counting the provider calls and pods created from the
emulator's own state: a stopped pod that cannot resume is replaced at once, pods that never become ready
stop after the configured number and the requests get the diagnosis, a failed terminate is retried
until it lands, rate limits are waited out, a GPU type typo stops pod-manager at start, and a pod fault
is retried on a pod not known to be down."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from tests.e2e.conftest import StackFactory
from tests.support.emulator import Emulator
from tests.support.stack import Stack, wait_for
from vibewave.runtime.pod_token import POD_TOKEN_KEY_ENV, new_key

pytestmark = pytest.mark.e2e

KEY = f"rpa_FAULTS_{uuid4().hex}"
FIXTURE_WORKFLOWS = Path(__file__).resolve().parents[1] / "fixtures" / "workflows"
FAST = {"POD_SYNC_INTERVAL": "1", "POD_TERMINATE_TIMEOUT": "600", "SCHEDULER_QUEUE_TTL": "120"}

FleetFactory = Callable[..., tuple[Stack, Emulator]]
# The REST v2 operations pod-manager calls (RUNPOD_API=rest, the default), as the emulator counts them.
CREATE, RESUME, TERMINATE = "rest:createPod", "rest:podAction:start", "rest:deletePod"


@pytest.fixture
def fleet(start_own_stack: StackFactory, tmp_path: Path) -> Iterator[FleetFactory]:
    """A stack whose pod-manager uses an emulator of the test's own, with faults set before it starts."""
    emulators: list[Emulator] = []

    def start(
        faults: dict[str, Any] | None = None, emulator_args: tuple[str, ...] = (), **settings: str
    ) -> tuple[Stack, Emulator]:
        emulator = Emulator(tmp_path, KEY, *emulator_args)
        emulators.append(emulator)
        if faults:
            emulator.faults(faults)
        stack = start_own_stack(service_env={"pod-manager": emulator.pod_manager_env()}, **(FAST | settings))
        return stack, emulator

    yield start
    for emulator in emulators:
        emulator.close()


def emulator_pod(emulator: Emulator, pod_id: str) -> dict[str, Any] | None:
    return next((p for p in emulator.pods() if p["id"] == pod_id), None)


def test_a_stopped_pod_whose_host_is_busy_is_terminated_and_a_new_pod_serves(fleet: FleetFactory):
    stack, emulator = fleet(MAX_PODS="1", POD_IDLE_TIMEOUT="1")
    first = stack.record(stack.generate(), {"completed", "failed"})
    assert first.status == "completed" and first.pod_id
    old = first.pod_id
    wait_for(lambda: (emulator_pod(emulator, old) or {}).get("desiredStatus") == "EXITED", 30, "the idle stop")
    emulator.faults({"host_busy": {"pod_ids": [old]}})  # its host's GPU was rented out: every resume fails

    refused = stack.client.post(f"/api/runpod/pods/{old}/start")
    assert refused.status_code == 500 and "not enough free GPUs" in refused.json()["detail"]
    assert stack.client.get(f"/api/runpod/pods/{old}").json()["status"] == "stopped", "never ready while stopped"

    second = stack.record(stack.generate(), {"completed", "failed"})
    assert second.status == "completed" and second.pod_id != old, "a new pod served it"
    state = emulator.state()
    assert state["calls"][RESUME] == 2, "the admin's try and one by the fleet: no resume loop"
    assert state["podsCreated"] == 2 and old in state["terminatedPodIds"]
    assert [p["id"] for p in state["pods"]] == [second.pod_id]


def test_pods_that_never_become_ready_stop_after_the_attempts_with_a_diagnosis(fleet: FleetFactory):
    stack, emulator = fleet({"never_ready": {"mode": "no_comfyui"}}, MAX_PODS="3", POD_READY_TIMEOUT="2",
                            POD_READY_ATTEMPTS="2")  # fmt: skip
    failed = stack.record(stack.generate(), {"completed", "failed"}, timeout=60)
    assert failed.status == "failed"
    assert failed.error is not None and failed.error.startswith(
        "no pod can be started for it: 2 pods in a row never became ready: ComfyUI did not answer within 2s ("
    ), failed.error
    assert "image runpod/pytorch:2.1.0-py3.10-cuda11.8.0-devel-ubuntu22.04" in failed.error
    state = emulator.state()
    assert state["podsCreated"] == 2 and state["calls"][CREATE] == 2
    assert len(state["terminatedPodIds"]) == 2 and state["pods"] == [], "both terminated: nothing left billing"

    health = stack.client.get("/api/runpod/health")
    assert health.status_code == 503
    assert "circuit breaker open: 2 pods in a row never became ready" in health.json()["detail"]
    overall = stack.client.get("/health")
    assert overall.status_code == 503 and "fleet" in overall.json()["unhealthy"]
    assert "never became ready: ComfyUI did not answer" in overall.json()["fleet"]["detail"]

    started = time.monotonic()
    again = stack.record(stack.generate(), {"completed", "failed"}, timeout=30)
    assert again.status == "failed" and again.error == failed.error and time.monotonic() - started < 10
    assert emulator.state()["podsCreated"] == 2, "no pod is created while the breaker is open"


def test_a_failed_terminate_is_retried_until_the_pod_is_gone(fleet: FleetFactory):
    stack, emulator = fleet(MAX_PODS="2")
    created = stack.client.post("/api/runpod/pods", json={})
    assert created.status_code == 201, created.text
    pod_id = created.json()["id"]
    emulator.faults({"internal_error": {"operations": [TERMINATE], "times": 2}})
    refused = stack.client.post(f"/api/runpod/pods/{pod_id}/terminate")
    assert refused.status_code == 409 and "pod-manager keeps trying" in refused.json()["detail"]
    assert stack.client.get(f"/api/runpod/pods/{pod_id}").json()["status"] == "terminating"
    wait_for(lambda: emulator_pod(emulator, pod_id) is None, 30, "the terminate to land on a later try")
    state = emulator.state()
    assert state["calls"][TERMINATE] == 3 and state["terminatedPodIds"] == [pod_id]
    wait_for(lambda: stack.client.get(f"/api/runpod/pods/{pod_id}").status_code == 404, 10, "the record to follow")


def test_rate_limits_are_waited_out_then_the_call_succeeds(fleet: FleetFactory):
    stack, emulator = fleet({"rate_limit": {"operations": [CREATE], "times": 2,
                                            "retry_after": 1}})  # fmt: skip
    started = time.monotonic()
    done = stack.record(stack.generate(), {"completed", "failed"}, timeout=60)
    assert done.status == "completed", done.error
    assert time.monotonic() - started >= 2, "Retry-After (1 s, twice) was honoured"
    state = emulator.state()
    assert state["calls"][CREATE] == 3 and state["rateLimited"] == 2
    assert state["podsCreated"] == 1


def test_an_unknown_gpu_type_id_is_a_start_up_error_naming_the_valid_ones(tmp_path: Path):
    emulator = Emulator(tmp_path, KEY)
    try:
        env = {**os.environ, **emulator.pod_manager_env(), "RUNPOD_GPU_TYPES": "NVIDIA GeForce RTX 4090x",
               "NATS_URL": "nats://127.0.0.1:1", "VIBEWAVE_HOME": str(tmp_path / "home"),
               POD_TOKEN_KEY_ENV: new_key()}  # fmt: skip
        run = subprocess.run([sys.executable, "-m", "vibewave.pod_manager"], env=env, capture_output=True,
                             timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip
        output = (run.stdout + run.stderr).decode(errors="replace")
        assert run.returncode == 78, output[-2000:]
        assert "RUNPOD_GPU_TYPES names GPU types RunPod does not have: 'NVIDIA GeForce RTX 4090x'" in output
        assert "valid ids: " in output and "NVIDIA GeForce RTX 4090," in output
        assert "Traceback" not in output
        calls = emulator.state()["calls"]
        assert calls.get(CREATE, 0) == calls.get("podFindAndDeployOnDemand", 0) == 0, calls
        assert emulator.state()["podsCreated"] == 0
    finally:
        emulator.close()


def test_an_idle_pod_whose_comfyui_was_killed_costs_at_most_one_attempt(fleet: FleetFactory):
    stack, emulator = fleet(MAX_PODS="1", MIN_WARM_PODS="1", POD_PROBE_INTERVAL="2", POD_IDLE_TIMEOUT="600")
    warm = wait_for(lambda: [p for p in stack.client.get("/api/runpod/pods").json() if p["status"] == "ready"],
                    60, "the warm pod")  # fmt: skip
    pod_id = warm[0]["id"]
    emulator.kill_comfyui(pod_id)  # SIGKILL to what serves 8188 (the bootstrap's token proxy); it comes back shortly
    done = stack.record(stack.generate(), {"completed", "failed"}, timeout=60)
    assert done.status == "completed", done.error
    assert done.attempts <= 2 and done.pod_id == pod_id
    for note in done.attempt_log:
        assert note.kind == "pod_fault" and note.pod_id == pod_id


def test_a_ready_pod_that_stays_silent_is_terminated_after_the_unhealthy_timeout(fleet: FleetFactory):
    stack, emulator = fleet(emulator_args=("--comfyui-no-restart",), MAX_PODS="1", MIN_WARM_PODS="1",
                            POD_UNHEALTHY_TIMEOUT="2", POD_IDLE_TIMEOUT="600")  # fmt: skip
    warm = wait_for(lambda: [p for p in stack.client.get("/api/runpod/pods").json() if p["status"] == "ready"],
                    60, "the warm pod")  # fmt: skip
    dead = warm[0]["id"]
    emulator.kill_container(dead)  # ComfyUI, its proxy and the bootstrap; never restarted: the pod bills for nothing
    wait_for(lambda: dead in emulator.state()["terminatedPodIds"], 30, "the silent pod to be terminated")
    done = stack.record(stack.generate(), {"completed", "failed"}, timeout=60)
    assert done.status == "completed" and done.pod_id != dead, "a new pod serves"
    state = emulator.state()
    assert state["calls"][TERMINATE] == 1 and state["podsCreated"] == 2


def test_when_every_attempt_faults_the_error_lists_each_attempt(fleet: FleetFactory):
    stack, emulator = fleet({"sim_env": {"VIBEWAVE_SIM_CRASH_NODE": "KSampler"}}, MAX_PODS="2")
    failed = stack.record(stack.generate(), {"completed", "failed"}, timeout=90)
    assert failed.status == "failed" and failed.attempts == 3
    assert failed.error is not None and failed.error.startswith("failed after 3 attempts: #1 on pod ")
    assert "; #2 on pod " in failed.error and "; #3 on pod " in failed.error
    assert [n.attempt for n in failed.attempt_log] == [1, 2, 3]
    assert {n.kind for n in failed.attempt_log} == {"pod_fault"}
    assert emulator.state()["podsCreated"] == 1, "the fault was the run's, not a reason for more pods"


def test_a_workflow_that_needs_a_bigger_gpu_runs_only_on_a_pod_that_has_it(fleet: FleetFactory, tmp_path: Path):
    workflows = tmp_path / "workflows"
    for name, needs in (("still_48gb", 48), ("still_200gb", 200)):
        shutil.copytree(FIXTURE_WORKFLOWS / "still_blur", workflows / name)
        definition = json.loads((workflows / name / "workflow.json").read_text())
        (workflows / name / "workflow.json").write_text(json.dumps({**definition, "name": name,
                                                                     "min_gpu_memory_gb": needs}))  # fmt: skip
    stack, emulator = fleet(MAX_PODS="3", WORKFLOWS_DIR=str(workflows))

    def queue(workflow: str) -> str:
        response = stack.client.post("/api/runpod/workflows/queue", json={"workflow_name": workflow, "inputs": {}})
        assert response.status_code == 202, response.text
        request_id: str = response.json()["id"]
        return request_id

    big, small = queue("still_48gb"), stack.generate()
    done = {request_id: stack.record(request_id, {"completed", "failed"}) for request_id in (big, small)}
    assert [r.status for r in done.values()] == ["completed", "completed"], [r.error for r in done.values()]
    pods = {p["id"]: p for p in stack.client.get("/api/runpod/pods").json()}
    assert pods[done[big].pod_id or ""]["gpu_type"] == "RTX A6000", "the first preferred GPU type with 48 GB"
    creates = emulator.state()["calls"][CREATE]
    impossible = stack.record(queue("still_200gb"), {"completed", "failed"}, timeout=30)
    assert impossible.status == "failed" and impossible.error is not None
    assert "no GPU type of RUNPOD_GPU_TYPES has 200 GB or more" in impossible.error, impossible.error
    assert emulator.state()["calls"][CREATE] == creates, "no pod is created for it"
