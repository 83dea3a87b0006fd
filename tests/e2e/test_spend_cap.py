"""The spend cap in the real stack, on the RunPod emulator: with MAX_HOURLY_SPEND room for one pod and not two,
requests that would get a second pod wait for the one instead — their status and `/health` say it is the cap —
and every one of them still completes, on that pod."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import pytest

from tests.e2e.conftest import StackFactory
from tests.support.emulator import Emulator
from tests.support.stack import Stack, wait_for
from vibewave.pod_manager.settings import DEFAULT_GPU_TYPES
from vibewave.runpod_emu.catalogue import default_gpu_types

TERMINAL = {"completed", "failed", "cancelled"}
REQUESTS = 3
STEP_S = 0.5  # the pods' ComfyUI simulator's time per sampling step: a run of the default preset takes seconds


@pytest.fixture
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    emu = Emulator(
        tmp_path_factory.mktemp("emulator-spend-cap"), f"rpa_E2ESPEND_{uuid4().hex}",
        "--comfyui-step-time", str(STEP_S),
    )  # fmt: skip
    yield emu
    emu.close()


def cap_for_one_pod() -> tuple[float, float]:
    """(the first pod's price, a cap with room for it and for no second pod of any listed type or cloud).

    A new pod takes the first fitting type of RUNPOD_GPU_TYPES in Secure first (the emulator has capacity for
    it); whatever the cap leaves after it must be less than the cheapest offer of the list."""
    listed = DEFAULT_GPU_TYPES.split(",")
    gpus = {gpu.id: gpu for gpu in default_gpu_types() if gpu.id in listed}
    first = gpus[listed[0]].secure_price
    assert first is not None
    cheapest = min(p for gpu in gpus.values() for p in (gpu.secure_price, gpu.community_price) if p is not None)
    return first, round(first + cheapest / 2, 4)


def status(stack: Stack, request_id: str) -> dict[str, Any]:
    body: dict[str, Any] = stack.client.get(f"/api/qwen/status/{request_id}").json()
    return body


def fleet_detail(stack: Stack, *, naming_the_cap: bool) -> str | None:
    """`/health`'s fleet detail once it does (or does not) name the spend cap; None until then."""
    response = stack.health()
    detail: str = (response.json()["fleet"]["detail"] or "") if response is not None else ""
    return detail if detail and ("spend cap" in detail) == naming_the_cap else None


def test_requests_wait_at_the_spend_cap_and_all_complete_on_the_one_pod_it_allows(
    start_own_stack: StackFactory, emulator: Emulator
) -> None:
    price, cap = cap_for_one_pod()
    stack = start_own_stack(
        service_env={
            "pod-manager": {**emulator.pod_manager_env(), "FLEET_POLICY": "demand", "MAX_HOURLY_SPEND": str(cap)},
        },
        MAX_PODS="3",
    )
    ids = [stack.generate(f"at the spend cap {n}") for n in range(REQUESTS)]

    def held() -> dict[str, Any] | None:
        waiting = [s for s in (status(stack, r) for r in ids) if s["status"] == "pending"]
        return next((s for s in waiting if "spend cap" in (s.get("waiting_reason") or "")), None)

    waiting = wait_for(held, 60, "a waiting request's status to name the spend cap")
    assert "MAX_HOURLY_SPEND" in waiting["waiting_reason"]
    detail = wait_for(lambda: fleet_detail(stack, naming_the_cap=True), 30, "/health to name the spend cap")
    assert f"${cap:.2f}/h" in detail

    finished = [stack.wait_status(r, TERMINAL, timeout=120) for r in ids]
    assert [f["status"] for f in finished] == ["completed"] * REQUESTS, finished
    assert len({f["pod_id"] for f in finished}) == 1, "every request ran on the one pod the cap allows"
    assert all(f.get("waiting_reason") is None for f in finished), "a finished request waits for nothing"

    created = sum(n for call, n in emulator.state()["calls"].items() if "createpod" in call.lower())
    assert created == 1, emulator.state()["calls"]
    (pod,) = emulator.pods()
    assert pod["costPerHr"] == pytest.approx(price), "the pod the cap was chosen for"
    wait_for(lambda: fleet_detail(stack, naming_the_cap=False), 30, "the hold to lift once nothing waits")
