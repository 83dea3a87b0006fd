"""Queue position, ETA, timings and cost end to end, on a one-pod fleet of the RunPod emulator: ten
requests wait at positions 1..9 behind the one running, their ETAs fall as the queue drains, and each
finished request's timings add up to its wall time and its cost is the emulator's price of its pod times
its GPU-seconds."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from functools import partial
from typing import Any
from uuid import uuid4

import pytest

from tests.e2e.conftest import StackFactory
from tests.support.emulator import Emulator
from tests.support.stack import Stack, wait_for

pytestmark = pytest.mark.e2e

KEY = f"rpa_E2ECOST_{uuid4().hex}"
REQUESTS = 10
STEP_TIME_S, STEPS = 0.09, 50  # 4.5 s per run: long enough to measure, short enough for ten in a row
WORKFLOW = "comfyui_image_qwen"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    running = Emulator(tmp_path_factory.mktemp("emulator-cost"), KEY, "--comfyui-step-time", str(STEP_TIME_S))
    yield running
    running.close()


def statuses(stack: Stack, ids: list[str]) -> dict[str, dict[str, Any]]:
    return {request_id: stack.client.get(f"/api/qwen/status/{request_id}").json() for request_id in ids}


def waiting(snapshot: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {i: s for i, s in snapshot.items() if s["status"] == "pending"}


def completed(snapshot: dict[str, dict[str, Any]]) -> int:
    return sum(1 for s in snapshot.values() if s["status"] == "completed")


def on_pod(snapshot: dict[str, dict[str, Any]]) -> list[str]:
    return [i for i, s in snapshot.items() if s["status"] in ("assigned", "running")]


def after_a_completion(stack: Stack, ids: list[str], done: int) -> dict[str, dict[str, Any]] | None:
    snapshot = statuses(stack, ids)
    return snapshot if completed(snapshot) > done else None


def ms_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds() * 1000


def test_positions_etas_timings_and_cost_on_a_one_pod_fleet(start_own_stack: StackFactory, emulator: Emulator):
    stack = start_own_stack(
        service_env={"pod-manager": emulator.pod_manager_env()}, MAX_PODS="1", POD_SYNC_INTERVAL="1"
    )
    ids = [stack.generate(f"queue {n}", steps=STEPS) for n in range(REQUESTS)]

    def one_running_nine_waiting() -> dict[str, dict[str, Any]] | None:
        snapshot = statuses(stack, ids)
        return snapshot if len(on_pod(snapshot)) == 1 and len(waiting(snapshot)) == REQUESTS - 1 else None

    first = wait_for(one_running_nine_waiting, 90, "one request on the pod, nine waiting", interval=0.1)
    queue = sorted(waiting(first).values(), key=lambda s: s["created_at"])
    assert [s["queue_position"] for s in queue] == list(range(1, REQUESTS)), "positions 1..9, oldest first"
    assert all(s["eta_seconds"] > 0 for s in queue)
    assert first[on_pod(first)[0]]["queue_position"] is None and first[on_pod(first)[0]]["eta_seconds"] is not None
    etas = [s["eta_seconds"] for s in queue]
    assert etas == sorted(etas) and len(set(etas)) == len(etas), "the further back, the later"

    previous, samples = first, 0
    while waiting(previous):  # sample at each completion: every request still waiting expects to finish sooner
        current = wait_for(partial(after_a_completion, stack, ids, completed(previous)), 60, "a completion", 0.1)
        for request_id, now in waiting(current).items():
            before = previous[request_id]
            assert before["status"] == "pending", "nothing goes back to waiting"
            assert now["queue_position"] < before["queue_position"]
            assert now["eta_seconds"] < before["eta_seconds"], (request_id, before["eta_seconds"], now["eta_seconds"])
        previous, samples = current, samples + 1
    assert samples >= 3

    finished = {r: stack.wait_status(r, {"completed", "failed"}, timeout=120) for r in ids}
    assert {s["status"] for s in finished.values()} == {"completed"}
    (price,) = {p["costPerHr"] for p in emulator.pods()}
    assert price > 0
    listed = [p for p in stack.client.get("/api/runpod/pods").json() if p["managed"]]
    assert [p["cost_per_hr"] for p in listed] == [price], "pod-manager reads the provider's price"
    for request_id, status in finished.items():
        t = status["timings"]
        parts = t["queued_ms"] + t["boot_wait_ms"] + t["run_ms"] + t["upload_ms"]
        assert abs(parts - t["total_ms"]) <= 0.05 * t["total_ms"], (request_id, t)
        wall = ms_between(status["created_at"], status["updated_at"])
        assert abs(wall - t["total_ms"]) <= 0.05 * wall, (request_id, wall, t)
        assert t["run_ms"] >= STEPS * STEP_TIME_S * 1000 * 0.9, "the run is the sampler's time at least"
        ran_s = (t["run_ms"] + t["upload_ms"]) / 1000
        assert status["gpu_seconds"] == pytest.approx(ran_s, rel=0.05), (request_id, status["gpu_seconds"], t)
        assert status["cost"] == pytest.approx(price * status["gpu_seconds"] / 3600, rel=1e-3)
    boot_waits = [s["timings"]["boot_wait_ms"] for s in finished.values()]
    assert max(boot_waits) > 0, "the pod booted after they came: part of their wait was its boot"

    stats = stack.client.get("/api/runpod/stats").json()
    assert stats["gpu_seconds"] == pytest.approx(sum(s["gpu_seconds"] for s in finished.values()), rel=1e-3)
    assert stats["cost"] == pytest.approx(sum(s["cost"] for s in finished.values()), rel=1e-3)
    per_workflow = stats["workflows"][WORKFLOW]
    assert (per_workflow["total"], per_workflow["completed"], per_workflow["failed"]) == (REQUESTS, REQUESTS, 0)
    assert per_workflow["cost"] == pytest.approx(stats["cost"], rel=1e-3)
    assert per_workflow["mean_run_seconds"] == pytest.approx(STEPS * STEP_TIME_S, rel=0.5)
