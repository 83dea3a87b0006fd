"""The economic fleet policy in the real pod-manager, on the RunPod emulator: its pod takes the cheapest GPU type
and cloud that fits, and once idle it is let go after its warm hold — terminated, not stopped, because with
no resume seen yet a resume is expected to take as long as the create it would spare."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import uuid4

import pytest

from tests.e2e.conftest import StackFactory
from tests.support.emulator import Emulator
from tests.support.stack import wait_for
from vibewave.pod_manager.settings import DEFAULT_GPU_TYPES
from vibewave.runpod_emu.catalogue import default_gpu_types

TERMINAL = {"completed", "failed", "cancelled"}


@pytest.fixture
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    emu = Emulator(tmp_path_factory.mktemp("emulator-policy"), f"rpa_E2EPOLICY_{uuid4().hex}")
    yield emu
    emu.close()


def test_the_economic_policy_rents_the_cheapest_fitting_gpu_and_lets_it_go_when_idle(
    start_own_stack: StackFactory, emulator: Emulator
) -> None:
    stack = start_own_stack(
        service_env={"pod-manager": {**emulator.pod_manager_env(), "FLEET_POLICY": "economic"}},
        MAX_PODS="3",
        POD_SYNC_INTERVAL="1",
    )
    request_id = stack.generate("the cheapest pod")
    assert stack.wait_status(request_id, TERMINAL, timeout=120)["status"] == "completed"

    listed = DEFAULT_GPU_TYPES.split(",")
    offers = [
        (price, gpu.id)
        for gpu in default_gpu_types()
        if gpu.id in listed
        for price in (gpu.secure_price, gpu.community_price)
        if price is not None
    ]
    cheapest_price, cheapest_gpu = min(offers)
    assert emulator.calls("rest:createPod") == 1

    finished = stack.wait_status(request_id, TERMINAL)
    assert finished["cost"] is not None and finished["gpu_seconds"] > 0
    assert finished["cost"] == pytest.approx(finished["gpu_seconds"] * cheapest_price / 3600, rel=0.05, abs=1e-6), (
        f"billed at the {cheapest_gpu}'s ${cheapest_price}/h, the cheapest fitting offer of {listed}"
    )

    wait_for(lambda: not emulator.pods(), 60, "the idle pod to be let go after its warm hold")
    calls = emulator.state()["calls"]
    assert calls.get("rest:deletePod") == 1 and "rest:podAction" not in calls, f"terminated, never stopped: {calls}"
