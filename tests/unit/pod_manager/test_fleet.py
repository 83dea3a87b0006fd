from datetime import UTC, datetime

import pytest

from vibewave.contracts.events import PodRecord, PodStatus
from vibewave.pod_manager.fleet import FleetLimits, plan_fleet

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def pod(n: int, status: PodStatus = PodStatus.READY, workflow: str = "wf") -> PodRecord:
    return PodRecord(
        id=f"p{n}", name=f"p{n}", provider="local", workflow_name=workflow, status=status,
        created_at=T0, updated_at=T0,
    )  # fmt: skip


def plan(demand, pods, busy=(), idle=None, stopped=None, **kw):
    options = {"max_pods": 5, "min_warm": 0, "idle_timeout_s": 60.0, "terminate_timeout_s": 600.0} | kw
    return plan_fleet(demand, pods, set(busy), idle or {}, stopped or {}, FleetLimits(**options))


def test_scales_up_to_demand_but_never_past_the_maximum():
    assert plan({"wf": 3}, []).create == ["wf"] * 3
    assert plan({"wf": 9}, [pod(1)]).create == ["wf"] * 4
    assert plan({"wf": 9}, [pod(n) for n in range(5)]).create == []
    assert len(plan({"a": 4, "b": 4}, []).create) == 5, "the maximum is for all workflows together"


def test_starting_pods_count_toward_the_target():
    assert plan({"wf": 2}, [pod(1, PodStatus.STARTING), pod(2, PodStatus.CREATING)]).create == []


def test_stopped_pods_are_resumed_before_any_is_created():
    result = plan({"wf": 3}, [pod(1, PodStatus.STOPPED), pod(2, PodStatus.STOPPED, workflow="other")])
    assert result.resume == ["p1"] and result.create == ["wf", "wf"]


def test_idle_pods_stop_after_the_idle_timeout_and_never_when_busy():
    pods = [pod(1), pod(2)]
    assert plan({}, pods, idle={"p1": 10, "p2": 10}).stop == []
    assert sorted(plan({}, pods, idle={"p1": 61, "p2": 61}).stop) == ["p1", "p2"]
    assert plan({"wf": 1}, pods, busy=["p1"], idle={"p1": 0, "p2": 99}).stop == ["p2"]
    assert plan({}, pods, busy=["p1", "p2"], idle={"p1": 99, "p2": 99}).stop == []


def test_stopped_pods_terminate_after_the_longer_timeout_unless_needed_again():
    pods = [pod(1, PodStatus.STOPPED)]
    assert plan({}, pods, stopped={"p1": 599}).terminate == []
    assert plan({}, pods, stopped={"p1": 601}).terminate == ["p1"]
    needed = plan({"wf": 1}, pods, stopped={"p1": 601})
    assert needed.resume == ["p1"] and needed.terminate == []


def test_warm_pool_is_kept_without_demand():
    assert plan({}, [], min_warm=1, warm_workflows=("wf",)).create == ["wf"]
    assert plan({}, [pod(1)], min_warm=1, warm_workflows=("wf",), idle={"p1": 999}).stop == []
