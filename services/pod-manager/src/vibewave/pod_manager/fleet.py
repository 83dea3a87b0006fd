"""How many pods to have: demand in, actions out. No I/O.

Per workflow the target is its demand (waiting + running requests, one pod each), at least the warm
minimum, never more than the fleet maximum of running pods across all workflows. Missing pods come from
resuming stopped ones first (their disk and image are already there), then from creating new ones. A
pod beyond the target that has been idle longer than the idle timeout is stopped; a stopped pod that
stays unneeded longer than the terminate timeout is terminated. A busy pod is never touched.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vibewave.contracts.events import PodRecord, PodStatus

LIVE = (PodStatus.CREATING, PodStatus.STARTING, PodStatus.READY)


@dataclass
class FleetPlan:
    create: list[str] = field(default_factory=list)  # one workflow name per pod to create
    resume: list[str] = field(default_factory=list)  # pod ids
    stop: list[str] = field(default_factory=list)
    terminate: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FleetLimits:
    max_pods: int
    min_warm: int
    idle_timeout_s: float
    terminate_timeout_s: float
    warm_workflows: tuple[str, ...] = ()


def plan_fleet(
    demand: dict[str, int],
    pods: list[PodRecord],
    busy: set[str],
    idle_for: dict[str, float],
    stopped_for: dict[str, float],
    limits: FleetLimits,
) -> FleetPlan:
    plan = FleetPlan()
    live = [p for p in pods if p.status in LIVE]
    running = len(live)
    workflows = sorted(
        set(demand) | {p.workflow_name for p in live} | (set(limits.warm_workflows) if limits.min_warm else set())
    )
    for workflow in workflows:
        mine = [p for p in live if p.workflow_name == workflow]
        target = max(demand.get(workflow, 0), limits.min_warm)
        stopped = sorted(
            (p for p in pods if p.status == PodStatus.STOPPED and p.workflow_name == workflow),
            key=lambda p: stopped_for.get(p.id, 0.0),
        )
        missing = target - len(mine)
        while missing > 0 and running < limits.max_pods:
            if stopped:
                plan.resume.append(stopped.pop(0).id)
            else:
                plan.create.append(workflow)
            running += 1
            missing -= 1
        surplus = len(mine) - target
        idle = sorted(
            (p for p in mine if p.status == PodStatus.READY and p.id not in busy),
            key=lambda p: -idle_for.get(p.id, 0.0),
        )
        for pod in idle:
            if surplus <= 0:
                break
            if idle_for.get(pod.id, 0.0) >= limits.idle_timeout_s:
                plan.stop.append(pod.id)
                surplus -= 1
    resumed = set(plan.resume)
    for pod in pods:
        unneeded = pod.status == PodStatus.STOPPED and pod.id not in resumed
        if unneeded and stopped_for.get(pod.id, 0.0) >= limits.terminate_timeout_s:
            plan.terminate.append(pod.id)
    return plan
