from datetime import UTC, datetime

import pytest

from vibewave.contracts.events import PodNeed, PodRecord, PodStatus
from vibewave.pod_manager.fleet import FleetLimits, plan_fleet

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def pod(n: int, status: PodStatus = PodStatus.READY, memory: int | None = None) -> PodRecord:
    return PodRecord(
        id=f"p{n}", name=f"p{n}", provider="local", status=status, gpu_memory_gb=memory,
        created_at=T0, updated_at=T0,
    )  # fmt: skip


def need(waiting: int = 0, running: int = 0, gb: int = 0) -> PodNeed:
    return PodNeed(min_gpu_memory_gb=gb, waiting=waiting, running=running)


def plan(needs, pods, busy=(), idle=None, stopped=None, blocked=(), unresumable=(), **kw):
    options = {"max_pods": 5, "min_warm": 0, "idle_timeout_s": 60.0, "terminate_timeout_s": 600.0} | kw
    return plan_fleet(needs, pods, set(busy), idle or {}, stopped or {}, FleetLimits(**options),
                      blocked=blocked, unresumable=unresumable)  # fmt: skip


def test_scales_up_to_demand_but_never_past_the_maximum():
    assert plan([need(3)], []).create == [0, 0, 0]
    assert plan([need(9)], [pod(1)]).create == [0] * 4
    assert plan([need(9)], [pod(n) for n in range(5)]).create == []
    assert len(plan([need(4), need(4, gb=48)], []).create) == 5, "the maximum is for the whole fleet"


def test_demand_is_fleet_wide_not_per_workflow():
    assert plan([need(1, running=1)], [pod(1)]).create == [0], "one running, one waiting: one more pod"
    assert plan([need(0, running=1)], [pod(1)]).create == []


def test_starting_and_suspect_pods_count_toward_the_target():
    pods = [pod(1, PodStatus.STARTING), pod(2, PodStatus.CREATING), pod(3, PodStatus.SUSPECT)]
    assert plan([need(3)], pods).create == []


def test_a_class_needing_more_gpu_memory_gets_pods_that_have_it():
    result = plan([need(1, gb=48), need(1)], [pod(1, memory=24)])
    assert result.create == [48], "the small pod serves the small request; the big one needs its own"
    assert plan([need(2, gb=48)], [pod(1, memory=80)]).create == [48]
    assert plan([need(1)], [pod(1, memory=80)]).create == [], "a big pod serves small requests too"


def test_stopped_pods_are_resumed_before_any_is_created():
    result = plan([need(3)], [pod(1, PodStatus.STOPPED), pod(2, PodStatus.STOPPED, memory=24)])
    assert sorted(result.resume) == ["p1", "p2"] and result.create == [0]
    big = plan([need(1, gb=48)], [pod(1, PodStatus.STOPPED, memory=24)])
    assert big.resume == [] and big.create == [48], "a stopped pod too small for the class is not resumed for it"


def test_a_pod_that_cannot_resume_is_not_planned_again():
    result = plan([need(1)], [pod(1, PodStatus.STOPPED)], unresumable={"p1"})
    assert result.resume == [] and result.create == [0]


def test_a_class_with_an_open_breaker_gets_no_new_pods():
    assert plan([need(2, gb=48), need(1)], [], blocked={48}).create == [0]
    assert plan([need(2)], [], blocked={0}).create == []


def test_idle_pods_stop_after_the_idle_timeout_and_never_when_busy():
    pods = [pod(1), pod(2)]
    assert plan([], pods, idle={"p1": 10, "p2": 10}).stop == []
    assert sorted(plan([], pods, idle={"p1": 61, "p2": 61}).stop) == ["p1", "p2"]
    assert plan([need(running=1)], pods, busy=["p1"], idle={"p1": 0, "p2": 99}).stop == ["p2"]
    assert plan([], pods, busy=["p1", "p2"], idle={"p1": 99, "p2": 99}).stop == []


def test_the_big_pod_stays_while_its_class_needs_it():
    pods = [pod(1, memory=24), pod(2, memory=80)]
    result = plan([need(1, gb=48)], pods, idle={"p1": 99, "p2": 99})
    assert result.stop == ["p1"], "the small idle pod goes, the only one that fits the waiting request stays"


def test_stopped_pods_terminate_after_the_longer_timeout_unless_needed_again():
    pods = [pod(1, PodStatus.STOPPED)]
    assert plan([], pods, stopped={"p1": 599}).terminate == []
    assert plan([], pods, stopped={"p1": 601}).terminate == ["p1"]
    needed = plan([need(1)], pods, stopped={"p1": 601})
    assert needed.resume == ["p1"] and needed.terminate == []


def test_warm_pool_is_kept_without_demand():
    assert plan([], [], min_warm=1).create == [0]
    assert plan([], [pod(1)], min_warm=1, idle={"p1": 999}).stop == []
