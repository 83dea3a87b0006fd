"""How many pods to have: demand in, actions out. No I/O.

Pods serve any workflow, so demand is fleet-wide, split only by GPU class: what a workflow needs of a
pod's GPU memory (0: any pod). For every class, the pods that can serve it (live pods with enough
memory, counting pods already on the way) must cover the requests that need it or more — waiting plus
running, at least the warm minimum for class 0 — never more running pods than the maximum. Missing pods
come from resuming stopped ones first (their disk and image are already there), then from creating new
ones of the class. Classes whose circuit breaker is open get no pods. An idle pod beyond what every
class needs is stopped after the idle timeout (smallest GPU first); a stopped pod that stays unneeded
longer than the terminate timeout is terminated. A busy pod is never touched.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from vibewave.contracts.events import PodNeed, PodRecord, PodStatus

LIVE = (PodStatus.CREATING, PodStatus.STARTING, PodStatus.READY, PodStatus.SUSPECT)


@dataclass
class FleetPlan:
    create: list[int] = field(default_factory=list)  # the GPU class of each pod to create
    resume: list[str] = field(default_factory=list)  # pod ids
    stop: list[str] = field(default_factory=list)
    terminate: list[str] = field(default_factory=list)
    held: str | None = None  # why pods the needs ask for are not started (the spend cap)


@dataclass(frozen=True)
class FleetLimits:
    max_pods: int
    min_warm: int
    idle_timeout_s: float
    terminate_timeout_s: float
    max_hourly_spend: float | None = None  # USD per hour the live pods may cost together (None: no cap)


def plan_fleet(
    needs: list[PodNeed],
    pods: list[PodRecord],
    busy: set[str],
    idle_for: dict[str, float],
    stopped_for: dict[str, float],
    limits: FleetLimits,
    *,
    blocked: Collection[int] = (),
    unresumable: Collection[str] = (),
) -> FleetPlan:
    plan = FleetPlan()
    live = [p for p in pods if p.status in LIVE]
    wanted = {n.min_gpu_memory_gb: 0 for n in needs if n.min_gpu_memory_gb not in blocked}
    for need in needs:
        if need.min_gpu_memory_gb in wanted:
            wanted[need.min_gpu_memory_gb] += need.waiting + need.running
    classes = sorted(set(wanted) | {0}, reverse=True)

    def required(threshold: int) -> int:
        total = sum(count for needs_gb, count in wanted.items() if needs_gb >= threshold)
        return max(total, limits.min_warm) if threshold == 0 else total

    stopped = sorted(
        (p for p in pods if p.status == PodStatus.STOPPED and p.id not in unresumable),
        key=lambda p: stopped_for.get(p.id, 0.0),
    )
    coming: list[int | None] = [p.gpu_memory_gb for p in live]  # GPU memory of every pod live or on its way
    for threshold in classes:
        missing = required(threshold) - sum(1 for gb in coming if _fits(gb, threshold))
        while missing > 0 and len(coming) < limits.max_pods:
            resumable = next((p for p in stopped if p.serves(threshold)), None)
            if resumable is not None:
                stopped.remove(resumable)
                plan.resume.append(resumable.id)
                coming.append(resumable.gpu_memory_gb)
            elif threshold in blocked:
                break
            else:
                plan.create.append(threshold)
                coming.append(threshold)
            missing -= 1

    idle = sorted(
        (p for p in live if p.status == PodStatus.READY and p.id not in busy),
        key=lambda p: (p.gpu_memory_gb or 0, -idle_for.get(p.id, 0.0)),
    )
    staying = [p.gpu_memory_gb for p in live]
    for pod in idle:
        if idle_for.get(pod.id, 0.0) < limits.idle_timeout_s:
            continue
        without = list(staying)
        without.remove(pod.gpu_memory_gb)
        if all(sum(1 for gb in without if _fits(gb, t)) >= required(t) for t in classes):
            plan.stop.append(pod.id)
            staying = without

    resumed = set(plan.resume)
    for pod in pods:
        unneeded = pod.status == PodStatus.STOPPED and pod.id not in resumed
        if unneeded and stopped_for.get(pod.id, 0.0) >= limits.terminate_timeout_s:
            plan.terminate.append(pod.id)
    return plan


def _fits(gpu_memory_gb: int | None, threshold: int) -> bool:
    return not threshold or gpu_memory_gb is None or gpu_memory_gb >= threshold
