"""How many pods to have: demand in, pods to create and pods to retire out. No I/O.

Per workflow the target is the demand (waiting + running requests, one pod each), at least the warm
minimum, and never more than the fleet maximum across all workflows. A pod that is not needed and has
been idle longer than the idle timeout is retired; a busy pod never is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vibewave.contracts.events import PodRecord, PodStatus

LIVE = (PodStatus.CREATING, PodStatus.STARTING, PodStatus.READY)


@dataclass
class FleetPlan:
    create: list[str] = field(default_factory=list)  # one workflow name per pod to create
    retire: list[str] = field(default_factory=list)  # pod ids


def plan_fleet(
    demand: dict[str, int],
    pods: list[PodRecord],
    busy: set[str],
    idle_for: dict[str, float],
    *,
    max_pods: int,
    min_warm: int,
    idle_timeout_s: float,
    warm_workflows: tuple[str, ...] = (),
) -> FleetPlan:
    plan = FleetPlan()
    live = [p for p in pods if p.status in LIVE]
    total = len(live)
    workflows = sorted(set(demand) | {p.workflow_name for p in live} | (set(warm_workflows) if min_warm else set()))
    for workflow in workflows:
        mine = [p for p in live if p.workflow_name == workflow]
        target = max(demand.get(workflow, 0), min_warm)
        missing = target - len(mine)
        while missing > 0 and total < max_pods:
            plan.create.append(workflow)
            total += 1
            missing -= 1
        surplus = len(mine) - target
        idle = sorted(
            (p for p in mine if p.status == PodStatus.READY and p.id not in busy),
            key=lambda p: -idle_for.get(p.id, 0.0),
        )
        for pod in idle:
            if surplus <= 0:
                break
            if idle_for.get(pod.id, 0.0) >= idle_timeout_s:
                plan.retire.append(pod.id)
                surplus -= 1
    return plan
