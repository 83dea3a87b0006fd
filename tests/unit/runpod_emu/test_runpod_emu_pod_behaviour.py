"""Realistic pod behaviour: boot delays drawn from a range per create and per resume, and resumes that fail
with the busy-host error at a given rate, all reproducible from `rng_seed`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from vibewave.runpod_emu.__main__ import config_from_args
from vibewave.runpod_emu.catalogue import Seed
from vibewave.runpod_emu.config import EmuConfig
from vibewave.runpod_emu.faults import HOST_BUSY_MESSAGE, Faults
from vibewave.runpod_emu.state import ApiError, World

pytestmark = pytest.mark.unit

GPU = "NVIDIA GeForce RTX 4090"
POD = {"name": "w", "imageName": "img", "gpuTypeId": GPU, "cloudType": "SECURE", "ports": "8188/http"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_world(rng_seed: int | None = 7, **faults: Any) -> tuple[World, Clock]:
    config = EmuConfig(seed=Seed.default(), faults=Faults(boot_delay=30.0), rng_seed=rng_seed)
    config.faults.update(faults)
    clock = Clock()
    return World(config, clock=clock, wall=lambda: datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)), clock


def stop_resume(world: World, pod_id: str) -> float:
    world.stop_pod(pod_id)
    return world.resume_pod(pod_id, None).boot_delay


def test_without_ranges_every_boot_takes_boot_delay() -> None:
    world, _ = make_world()
    pods = [world.create_pod(POD, cpu=False) for _ in range(5)]
    assert {p.boot_delay for p in pods} == {30.0}
    assert {stop_resume(world, p.id) for p in pods} == {30.0}


def test_create_and_resume_delays_are_drawn_from_their_ranges() -> None:
    world, _ = make_world(boot_delay_max=120.0, resume_delay=30.0, resume_delay_max=60.0)
    pods = [world.create_pod(POD, cpu=False) for _ in range(40)]
    creates = [p.boot_delay for p in pods]
    resumes = [stop_resume(world, p.id) for p in pods]
    assert all(30.0 <= d <= 120.0 for d in creates) and len(set(creates)) == len(creates)
    assert all(30.0 <= d <= 60.0 for d in resumes) and len(set(resumes)) == len(resumes)
    assert max(creates) > 60.0, "create delays span the whole range, not the resume range"


def test_runtime_comes_up_after_the_drawn_delay() -> None:
    world, clock = make_world(boot_delay_max=120.0)
    pod = world.create_pod(POD, cpu=False)
    clock.now += pod.boot_delay - 0.01
    world.advance()
    assert pod.runtime_ports is None
    clock.now += 0.02
    world.advance()
    assert pod.runtime_ports is not None


def test_resume_without_its_own_range_uses_the_create_range() -> None:
    world, _ = make_world(boot_delay_max=120.0)
    pod = world.create_pod(POD, cpu=False)
    assert all(30.0 <= stop_resume(world, pod.id) <= 120.0 for _ in range(20))


def test_same_seed_same_draws_and_the_same_ids_as_without_ranges() -> None:
    def run(**faults: Any) -> tuple[list[str], list[float]]:
        world, _ = make_world(**faults)
        pods = [world.create_pod(POD, cpu=False) for _ in range(5)]
        return [p.id for p in pods], [p.boot_delay for p in pods]

    ranged = run(boot_delay_max=120.0)
    assert ranged == run(boot_delay_max=120.0)
    assert ranged[0] == run()[0], "the delay stream is separate: ids do not depend on the delays drawn"


def test_resumes_fail_with_the_busy_host_error_at_the_given_rate() -> None:
    world, _ = make_world(resume_failure_rate=0.2)
    pod = world.create_pod(POD, cpu=False)
    world.stop_pod(pod.id)
    failures = 0
    for _ in range(1000):
        try:
            world.resume_pod(pod.id, None)
        except ApiError as error:
            assert error.message == HOST_BUSY_MESSAGE
            failures += 1
            assert not world.pods[pod.id].running, "a failed resume leaves the pod stopped"
            continue
        world.stop_pod(pod.id)
    assert 150 <= failures <= 250
    assert world.resumes == 1000 - failures


def test_rate_zero_and_one() -> None:
    world, _ = make_world(resume_failure_rate=1.0)
    pod = world.create_pod(POD, cpu=False)
    world.stop_pod(pod.id)
    with pytest.raises(ApiError, match="not enough free GPUs"):
        world.resume_pod(pod.id, None)
    world.faults.update({"resume_failure_rate": 0})
    assert world.resume_pod(pod.id, None).running


@pytest.mark.parametrize(
    "update",
    [
        {"resume_failure_rate": 1.5},
        {"resume_failure_rate": -0.1},
        {"boot_delay_max": -1},
        {"resume_delay": "30"},
        {"resume_delay_max": True},
    ],
)
def test_bad_values_are_refused(update: dict[str, Any]) -> None:
    faults = Faults()
    with pytest.raises(ValueError):
        faults.update(update)
    assert faults.to_json() == Faults().to_json()


def test_switches_round_trip_and_copy() -> None:
    faults = Faults()
    faults.update({"boot_delay_max": 9, "resume_delay": 2, "resume_delay_max": None, "resume_failure_rate": 0.25})
    data = faults.to_json()
    assert (data["boot_delay_max"], data["resume_delay"], data["resume_delay_max"]) == (9.0, 2.0, None)
    assert data["resume_failure_rate"] == 0.25
    assert faults.copy().to_json() == data
    assert faults.boot_range(resumed=False) == (3.0, 9.0)
    assert faults.boot_range(resumed=True) == (2.0, 2.0)


def test_cli_flags_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIBEWAVE_RUNPOD_EMU_RESUME_FAILURE_RATE", "0.2")
    config, _ = config_from_args(
        ["--boot-delay", "0.5", "--boot-delay-max", "2", "--resume-delay", "0.5", "--resume-delay-max", "1"]
    )
    faults = config.faults
    assert faults.boot_range(resumed=False) == (0.5, 2.0) and faults.boot_range(resumed=True) == (0.5, 1.0)
    assert faults.resume_failure_rate == 0.2
    monkeypatch.delenv("VIBEWAVE_RUNPOD_EMU_RESUME_FAILURE_RATE")
    default, _ = config_from_args([])
    assert default.faults.boot_range(resumed=True) == (3.0, 3.0) and default.faults.resume_failure_rate == 0.0
    flag_wins, _ = config_from_args(["--faults", '{"resume_failure_rate": 0.5}', "--resume-failure-rate", "0.1"])
    assert flag_wins.faults.resume_failure_rate == 0.1
