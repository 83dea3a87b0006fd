"""Fleet policies: when to add pods, and what to do with idle ones. Pure: no I/O, no clock of its own.

`FLEET_POLICY` picks one; pod-manager and the studio-day benchmark (`bench/daysim`) run the same code.

- `demand` (the default, and the fleet's behaviour before policies): a pod per request waiting or running,
  up to MAX_PODS; an idle pod beyond that stops after POD_IDLE_TIMEOUT, a stopped one terminates after
  POD_TERMINATE_TIMEOUT (see `fleet.plan_fleet`).
- `serverless`: RunPod Serverless' own scaling, as a baseline: a pod per waiting request once the oldest
  has waited longer than the queue delay (4 s), idle pods terminated after POD_IDLE_TIMEOUT, never stopped.
- `economic`: ours. A pod is added only while the queue's expected work outlasts a boot: the new pod must
  still find a job once it is up, else the pods there will have drained the queue first. An idle pod is
  kept warm for as long as the gaps the fleet has seen between needs say pays (a data-driven rent-or-buy:
  the hold minimising idle time plus cold starts over the observed gaps; with no history, one boot's
  worth). Then it is stopped if a resume is expected to save more than it risks (resume boot against
  create boot, weighed by the share of resumes that failed), else terminated. New pods take the cheapest
  GPU type that meets the need (the provider's choice, `RUNPOD_GPU_CHOICE`). One weight sets the trade between
  cost and wait: `FLEET_WAIT_WORTH`, what a second a request waits is worth in seconds of a pod's price.

Every policy: never more live pods than MAX_PODS, and no create or resume that would take the hourly
price of the live pods past MAX_HOURLY_SPEND (then `FleetPlan.held` says why requests wait).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from typing import Protocol

import msgspec

from vibewave.contracts.events import PodNeed, PodRecord, PodStatus
from vibewave.pod_manager.fleet import LIVE, FleetLimits, FleetPlan, plan_fleet

POLICIES = ("demand", "serverless", "economic")
SERVERLESS_QUEUE_DELAY_S = 4.0  # RunPod Serverless' queue-delay scaler: add workers once a request waited this
DEFAULT_BOOT_S = 75.0  # before any boot was seen: the middle of the API document's 30-120 s
DEFAULT_RUN_S = 60.0  # a request whose preset names no expected time
WAIT_WORTH = 6.0  # FLEET_WAIT_WORTH's default: a second waited is worth this many seconds of a pod's price
GAP_HISTORY = 64  # quiet gaps remembered per level
GAP_HORIZON_S = 4 * 3600.0  # a warm hold never exceeds this
BOOT_WEIGHT = 0.3  # how much each new boot moves the running estimate
NEVER = float("inf")


@dataclass
class _Level:
    """Whether at least k pods were needed, and the quiet gaps between two such needs."""

    needed: bool = False
    quiet_since: float | None = None
    gaps: deque[float] = field(default_factory=lambda: deque(maxlen=GAP_HISTORY))


@dataclass
class FleetMemory:
    """What the fleet has seen, for the economic policy: how long boots take, how often a resume fails, and
    the quiet gaps between needs — per level k, the time from fewer than k pods being needed until k again
    (the k-th pod's next need). pod-manager feeds it from its reconcile passes, the benchmark from its run."""

    create_boot_s: float = DEFAULT_BOOT_S  # divide by VIBEWAVE_TIME_SCALE in a time-compressed run
    resume_boot_s: float = DEFAULT_BOOT_S
    resumes: int = 0
    resume_failures: int = 0
    levels: dict[int, _Level] = field(default_factory=dict)
    _seen_create: bool = False
    _seen_resume: bool = False

    def booted(self, seconds: float, *, resumed: bool) -> None:
        """A pod became ready `seconds` after its create (or resume) call."""
        if resumed:
            self.resume_boot_s = seconds if not self._seen_resume else _moved(self.resume_boot_s, seconds)
            self._seen_resume = True
        else:
            self.create_boot_s = seconds if not self._seen_create else _moved(self.create_boot_s, seconds)
            self._seen_create = True

    def resume_outcome(self, *, resumed: bool) -> None:
        self.resumes += 1
        if not resumed:
            self.resume_failures += 1

    @property
    def resume_risk(self) -> float:
        """The share of resumes that failed, with a prior of 1 in 5 (RunPod hosts re-rent idle GPUs)."""
        return (self.resume_failures + 1) / (self.resumes + 5)

    def observe(self, now: float, needed: int, levels: int) -> None:
        """`needed` pods are wanted now (requests waiting plus running); levels 1..`levels` are tracked."""
        for k in range(1, levels + 1):
            level = self.levels.setdefault(k, _Level())
            if needed >= k:
                if level.quiet_since is not None:
                    level.gaps.append(now - level.quiet_since)
                    level.quiet_since = None
                level.needed = True
            elif level.needed and level.quiet_since is None:
                level.quiet_since = now

    def gaps(self, k: int) -> list[float]:
        level = self.levels.get(k)
        return list(level.gaps) if level is not None else []

    def cold_start_s(self) -> float:
        """The wait a need meets when its pod is not warm: a resume (or, if it fails, a create) when
        stopping pays, else a create."""
        return min(self.create_boot_s, self.resumed_s())

    def resumed_s(self) -> float:
        risk = self.resume_risk
        return (1 - risk) * self.resume_boot_s + risk * self.create_boot_s


@dataclass(frozen=True)
class FleetSituation:
    """The fleet as pod-manager sees it in one reconcile pass."""

    needs: list[PodNeed]
    pods: list[PodRecord]
    busy: set[str]
    idle_for: dict[str, float]  # ready pods not busy: seconds since they last had work
    stopped_for: dict[str, float]
    blocked: Collection[int] = ()  # GPU classes whose circuit breaker is open
    unresumable: Collection[str] = ()
    price: Callable[[int], float | None] = lambda _: None  # $/hour of a new pod of a GPU class
    stopped_price: float = 0.0  # $/hour a stopped pod bills (its volume disk)


class FleetPolicy(Protocol):
    name: str

    def plan(self, situation: FleetSituation, memory: FleetMemory, limits: FleetLimits) -> FleetPlan: ...


def make_policy(name: str, time_scale: float = 1.0, wait_worth: float = WAIT_WORTH) -> FleetPolicy:
    """`time_scale` (VIBEWAVE_TIME_SCALE) divides the policies' fixed durations in time-compressed benchmarks;
    `wait_worth` (FLEET_WAIT_WORTH) is the economic policy's price of a second waited, in pod-seconds."""
    if name == "serverless":
        return ServerlessPolicy(SERVERLESS_QUEUE_DELAY_S / time_scale)
    if name == "economic":
        return EconomicPolicy(time_scale, wait_worth)
    if name == "demand":
        return DemandPolicy()
    raise ValueError(f"unknown fleet policy {name!r}: use one of {', '.join(POLICIES)}")


class DemandPolicy:
    name = "demand"

    def plan(self, situation: FleetSituation, memory: FleetMemory, limits: FleetLimits) -> FleetPlan:
        return within_spend(_plan(situation, situation.needs, limits), situation, limits)


class ServerlessPolicy:
    """Scale on queue delay, terminate after the idle timeout: RunPod Serverless' defaults, on pods."""

    name = "serverless"

    def __init__(self, queue_delay_s: float = SERVERLESS_QUEUE_DELAY_S) -> None:
        self.queue_delay_s = queue_delay_s

    def plan(self, situation: FleetSituation, memory: FleetMemory, limits: FleetLimits) -> FleetPlan:
        needs = [
            n if n.oldest_wait_s > self.queue_delay_s else msgspec.structs.replace(n, waiting=0)
            for n in situation.needs
        ]
        plan = _plan(situation, needs, replace(limits, idle_timeout_s=NEVER, terminate_timeout_s=NEVER))
        for pod in _surplus(situation, needs, limits):
            if situation.idle_for.get(pod.id, 0.0) >= limits.idle_timeout_s:
                plan.terminate.append(pod.id)
        resumed = set(plan.resume)
        plan.terminate += [p.id for p in situation.pods if p.status == PodStatus.STOPPED and p.id not in resumed]
        return within_spend(plan, situation, limits)


class EconomicPolicy:
    name = "economic"

    def __init__(self, time_scale: float = 1.0, wait_worth: float = WAIT_WORTH) -> None:
        self.default_run_s = DEFAULT_RUN_S / time_scale
        self.horizon_s = GAP_HORIZON_S / time_scale
        self.wait_worth = wait_worth

    def plan(self, situation: FleetSituation, memory: FleetMemory, limits: FleetLimits) -> FleetPlan:
        live = [p for p in situation.pods if p.status in LIVE]
        stopped = [p for p in situation.pods if p.status == PodStatus.STOPPED and p.id not in situation.unresumable]
        worth = self.wait_worth
        needs = [
            self.wanted(n, live, memory, self.default_run_s, any(p.serves(n.min_gpu_memory_gb) for p in stopped), worth)
            for n in situation.needs
        ]
        plan = _plan(situation, needs, replace(limits, idle_timeout_s=NEVER, terminate_timeout_s=NEVER))
        needed = sum(n.waiting + n.running for n in situation.needs)
        for level, pod in enumerate(_surplus(situation, needs, limits), start=needed + 1):
            price = pod.cost_per_hr or situation.price(0) or 0.0
            if situation.idle_for.get(pod.id, 0.0) < self.hold_s(memory, level, self.horizon_s, worth):
                continue
            stop = self.stopping_pays(memory, level, price, situation.stopped_price, worth)
            (plan.stop if stop else plan.terminate).append(pod.id)
        resumed = set(plan.resume)
        for pod in situation.pods:
            if pod.status != PodStatus.STOPPED or pod.id in resumed:
                continue
            price = pod.cost_per_hr or situation.price(0) or 0.0
            too_long = situation.stopped_for.get(pod.id, 0.0) >= limits.terminate_timeout_s
            if too_long or not self.stopping_pays(memory, 1, price, situation.stopped_price, worth):
                plan.terminate.append(pod.id)
        return within_spend(plan, situation, limits)

    @staticmethod
    def wanted(
        need: PodNeed, live: list[PodRecord], memory: FleetMemory, default_run_s: float, resumable: bool = False,
        wait_worth: float = WAIT_WORTH,
    ) -> PodNeed:  # fmt: skip
        """The need with `waiting` cut to the pods worth adding: one more pod is added while, by the time it
        is up (a resume when a stopped pod can serve, else a create), the pods there will not have drained the
        queue — it still finds a job, or at least the share of work that pays for its boot at `wait_worth`."""
        if not need.waiting:
            return need
        per_job = need.waiting_work_s / need.waiting if need.waiting_work_s > 0 else default_run_s
        work = (need.waiting_work_s or need.waiting * per_job) + need.running_left_s
        serving = sum(1 for p in live if p.serves(need.min_gpu_memory_gb))
        boot = memory.cold_start_s() if resumable else memory.create_boot_s
        pods = max(serving, need.running)
        limit = need.waiting + need.running
        while pods < limit and (pods == 0 or work - pods * boot >= min(per_job, boot / (1 + wait_worth))):
            pods += 1
        return msgspec.structs.replace(need, waiting=max(0, pods - need.running))

    @staticmethod
    def hold_s(
        memory: FleetMemory, level: int, horizon_s: float = GAP_HORIZON_S, wait_worth: float = WAIT_WORTH
    ) -> float:
        """How long the level-th pod stays warm when idle: the hold that minimises, over the quiet gaps seen
        at that level, the idle seconds paid plus the cold start (boot billed and waited) of a need that came
        after the hold. With no gap seen yet: one cold start's worth (the rent-or-buy break-even)."""
        cold = memory.cold_start_s() * (1 + wait_worth)
        gaps = sorted(g for g in memory.gaps(level) if g > 0)
        if not gaps:
            return cold
        best_hold, best_cost = 0.0, len(gaps) * cold  # hold 0: every need meets a cold start
        covered = 0.0  # the gaps no longer than the hold: each paid in full, idle
        for n, gap in enumerate(gaps, start=1):
            if gap > horizon_s:
                break
            covered += gap
            cost = covered + (len(gaps) - n) * (gap + cold)  # the longer ones: the hold idle, then a cold start
            if cost < best_cost:
                best_hold, best_cost = gap, cost
        return best_hold

    @staticmethod
    def stopping_pays(
        memory: FleetMemory, level: int, price: float, stopped_price: float, wait_worth: float = WAIT_WORTH
    ) -> bool:
        """Stop rather than terminate when a resume is expected to save more than keeping the pod stopped
        costs until its next need: the boot seconds a successful resume saves over a create (billed and
        waited), less the storage billed over the median gap seen at this level."""
        saved_s = (1 - memory.resume_risk) * (memory.create_boot_s - memory.resume_boot_s) * (1 + wait_worth)
        if saved_s <= 0:
            return False
        gaps = sorted(memory.gaps(level))
        until_next_s = gaps[len(gaps) // 2] if gaps else 0.0
        return saved_s * price > until_next_s * stopped_price


def within_spend(plan: FleetPlan, situation: FleetSituation, limits: FleetLimits) -> FleetPlan:
    """Drop the resumes and creates that would take the live pods' hourly price past the cap."""
    cap = limits.max_hourly_spend
    if cap is None:
        return plan
    spend = hourly_spend(situation.pods, situation.price)
    pods = {p.id: p for p in situation.pods}
    resume: list[str] = []
    for pod_id in plan.resume:
        price = pods[pod_id].cost_per_hr or situation.price(0) or 0.0
        if spend + price <= cap + 1e-9:
            resume.append(pod_id)
            spend += price
    create: list[int] = []
    for gpu_class in plan.create:
        price = situation.price(gpu_class) or 0.0
        if spend + price <= cap + 1e-9:
            create.append(gpu_class)
            spend += price
    withheld = len(plan.resume) - len(resume) + len(plan.create) - len(create)
    if withheld:
        plan.held = (
            f"the fleet is at its spend cap: MAX_HOURLY_SPEND is ${cap:.2f}/h and the live pods cost "
            f"${hourly_spend(situation.pods, situation.price):.2f}/h; {withheld} more pod"
            f"{'s wait' if withheld > 1 else ' waits'} until spend drops (a pod finishing its work, or a higher cap)"
        )
    plan.resume, plan.create = resume, create
    return plan


def hourly_spend(pods: list[PodRecord], price: Callable[[int], float | None]) -> float:
    """What the live pods cost per hour (a pod whose price is unknown counts at a new pod's price)."""
    return sum(p.cost_per_hr if p.cost_per_hr is not None else price(0) or 0.0 for p in pods if p.status in LIVE)


def _plan(situation: FleetSituation, needs: list[PodNeed], limits: FleetLimits) -> FleetPlan:
    return plan_fleet(
        needs, situation.pods, situation.busy, situation.idle_for, situation.stopped_for, limits,
        blocked=situation.blocked, unresumable=situation.unresumable,
    )  # fmt: skip


def _surplus(situation: FleetSituation, needs: list[PodNeed], limits: FleetLimits) -> list[PodRecord]:
    """Idle ready pods beyond what the needs (and the warm minimum) require, the most recently busy first:
    the ones whose removal leaves every GPU class covered."""
    plan = plan_fleet(
        needs, situation.pods, situation.busy, {p: NEVER for p in situation.idle_for}, {},
        replace(limits, idle_timeout_s=0.0, terminate_timeout_s=NEVER), blocked=situation.blocked,
    )  # fmt: skip
    surplus = set(plan.stop)
    idle = [p for p in situation.pods if p.id in surplus]
    return sorted(idle, key=lambda p: situation.idle_for.get(p.id, 0.0))


def _moved(estimate: float, seen: float) -> float:
    return (1 - BOOT_WEIGHT) * estimate + BOOT_WEIGHT * seen
