"""A discrete-event simulation of one studio day on the fleet, driving pod-manager's real policies.

Simulated seconds only (no wall clock, no sleeps): a heap of events — arrivals, runs ending, pods becoming
ready — and pod-manager's probe ticks. What is modelled:

- scheduler: one FIFO queue; a waiting request goes to an idle READY pod at once; a pod runs one request at a
  time. Among idle pods the scheduler's own preference (`placement._pick_pod`): one that last ran the same
  workflow, then one not kept for another workflow's waiters, then the oldest. Demand reaches pod-manager at
  once (the real scheduler announces it within SCHEDULER_DEMAND_INTERVAL). Model loading when a pod switches
  between Qwen and Wan is not modelled: a run takes its drawn time on any pod.
- demand (`PodNeed`): what the scheduler sends — waiting, running, the oldest wait, and the expected work from
  the presets' catalogue midpoints (`waiting_work_s`; `running_left_s` = sum of max(0, midpoint - elapsed)), never
  the true drawn run times.
- pod-manager: a reconcile pass at every event and every POD_PROBE_INTERVAL (2 s, on a fixed grid) while any
  pod is starting, idle or stopped or anything waits. It builds the `FleetSituation`, feeds `FleetMemory` as
  `service.reconcile()` does (`observe` every pass, `booted` at ready, `resume_outcome` per resume), calls the
  policy and applies the plan in pod-manager's order: resumes first — a resume fails with probability
  RESUME_FAILURE (the host re-rented its GPU: RunPod's "not enough free GPUs"), and then the pod is terminated
  and a pod created in the same pass (pod-manager's HostBusy path) — then creates (never more than MAX_PODS
  live), stops, terminates. A pod is READY at the first probe tick after its boot ends.
- boots: a create boots in 30-120 s (the API document's range), a resume in 30-60 s: the models sit on a
  network volume that survives a stop and the image is cached on the host. Without a volume the container disk
  is wiped at stop and a resume is a full boot: pass `Model(resume_boot_s=CREATE_BOOT_S)`. Boots and resume
  outcomes are drawn from seeded streams indexed by the pod's (or resume's) sequence number, so every policy
  meets the same n-th boot whatever it decided before.
- billing (RunPod bills by the second): a pod bills its GPU type's Secure Cloud price from create (boot
  included) until stop or terminate, and from each resume; a stopped pod bills its volume disk, $0.20/GB/month
  for 20 GB. The day ends at 24 h or when the last request finishes, whichever is later: billing stops there.
- GPU types: the emulator's catalogue (`runpod_emu.catalogue`), among pod-manager's default RUNPOD_GPU_TYPES.
  Run times do not depend on the GPU type (the API document gives one table).
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bench.daysim.traces import DAY_S, Trace, presets
from vibewave.contracts.events import PodNeed, PodRecord, PodStatus
from vibewave.pod_manager.fleet import FleetLimits
from vibewave.pod_manager.policy import (
    GAP_HORIZON_S,
    WAIT_WORTH,
    EconomicPolicy,
    FleetMemory,
    FleetPolicy,
    FleetSituation,
    make_policy,
)
from vibewave.pod_manager.settings import DEFAULT_GPU_TYPES
from vibewave.runpod_emu.catalogue import default_gpu_types

MAX_PODS = 5  # the API document: "Maximum 5 concurrent pods"
POD_PROBE_INTERVAL = 2.0
RESUME_FAILURE = 0.2
CREATE_BOOT_S = (30.0, 120.0)
RESUME_BOOT_S = (30.0, 60.0)
VOLUME_GB = 20
STORAGE_PER_GB_MONTH = 0.20  # RunPod: a stopped pod's volume disk
HOURS_PER_MONTH = 730.0
MIN_GPU_MEMORY_GB = 24
SAMPLE_EVERY_S = 60.0
SEED = 7
T0 = datetime(2026, 1, 1, tzinfo=UTC)

_ARRIVE, _DONE, _READY = 0, 1, 2


@dataclass(frozen=True)
class Variant:
    """One policy on one GPU type, with pod-manager's limits for it."""

    name: str
    policy: str
    gpu_type: str
    price_per_hr: float
    limits: FleetLimits
    wait_worth: float = WAIT_WORTH  # the economic policy's FLEET_WAIT_WORTH


@dataclass(frozen=True)
class Model:
    """The simulation's assumptions, each a knob."""

    max_pods: int = MAX_PODS
    probe_interval_s: float = POD_PROBE_INTERVAL
    resume_failure: float = RESUME_FAILURE
    create_boot_s: tuple[float, float] = CREATE_BOOT_S
    resume_boot_s: tuple[float, float] = RESUME_BOOT_S
    stopped_price_per_hr: float = STORAGE_PER_GB_MONTH * VOLUME_GB / HOURS_PER_MONTH
    seed: int = SEED
    memo: bool = True  # memoise the economic policy's warm hold (same answers, see `_MemoEconomic`)


_HOLDS: dict[tuple[float, tuple[float, ...], float, float], float] = {}


class _MemoEconomic(EconomicPolicy):
    """The economic policy with its warm hold memoised: `hold_s` is a pure function of the cold start and the gaps
    seen at a level, quadratic in the gaps, and a day replays ~30,000 passes whose memory mostly did not change."""

    @staticmethod
    def hold_s(
        memory: FleetMemory, level: int, horizon_s: float = GAP_HORIZON_S, wait_worth: float = WAIT_WORTH
    ) -> float:
        key = (memory.cold_start_s(), tuple(memory.gaps(level)), horizon_s, wait_worth)
        found = _HOLDS.get(key)
        if found is None:
            if len(_HOLDS) > 100_000:
                _HOLDS.clear()
            found = _HOLDS[key] = EconomicPolicy.hold_s(memory, level, horizon_s, wait_worth)
        return found


def policy_for(name: str, memo: bool = True, wait_worth: float = WAIT_WORTH) -> FleetPolicy:
    if name == "economic" and memo:
        return _MemoEconomic(wait_worth=wait_worth)
    return make_policy(name, wait_worth=wait_worth)


def candidate_gpus() -> list[tuple[str, int, float]]:
    """(id, GPU memory, Secure Cloud $/h) of pod-manager's default RUNPOD_GPU_TYPES, in preference order."""
    catalogue = {g.id: g for g in default_gpu_types()}
    found = []
    for gpu_id in DEFAULT_GPU_TYPES.split(","):
        gpu = catalogue[gpu_id]
        if gpu.secure_price is not None:
            found.append((gpu.id, gpu.memory_in_gb, gpu.secure_price))
    return found


def variants(max_pods: int = MAX_PODS) -> list[Variant]:
    """(a) demand and (b) serverless on the first GPU of the preference order (as RunPodProvider picks today),
    (c) economic on the cheapest that fits, and economic on the preference GPU to separate the two savings."""
    gpus = candidate_gpus()
    first = gpus[0]
    cheapest = min((g for g in gpus if g[1] >= MIN_GPU_MEMORY_GB), key=lambda g: g[2])
    demand = FleetLimits(max_pods=max_pods, min_warm=0, idle_timeout_s=300.0, terminate_timeout_s=3600.0)
    serverless = FleetLimits(max_pods=max_pods, min_warm=0, idle_timeout_s=5.0, terminate_timeout_s=3600.0)
    return [
        Variant("demand", "demand", first[0], first[2], demand),
        Variant("serverless", "serverless", first[0], first[2], serverless),
        Variant("economic", "economic", cheapest[0], cheapest[2], demand),
        Variant("economic_pref_gpu", "economic", first[0], first[2], demand),
    ]


@dataclass
class PodBill:
    """One pod's life and what it cost."""

    id: str
    created_at: float
    running_s: float = 0.0  # billed at the GPU price: booting, idle or busy
    stopped_s: float = 0.0  # billed at the volume price
    busy_s: float = 0.0
    cost: float = 0.0
    resumes: int = 0
    status: PodStatus = PodStatus.STARTING  # at the end of the day


@dataclass(frozen=True)
class Sample:
    t: float
    queue: int
    starting: int
    busy: int
    idle: int
    stopped: int
    cost: float  # cumulative $


@dataclass
class RunResult:
    trace: str
    variant: Variant
    model: Model
    waits: list[float]  # per request of the trace (in its order): arrival → assigned to a READY pod
    finished_at: list[float]
    pods: list[PodBill]
    samples: list[Sample]
    end_s: float
    resumes: int = 0
    failed_resumes: int = 0
    max_live: int = 0
    image_busy_s: float = 0.0
    video_busy_s: float = 0.0
    images: int = 0
    video_s: float = 0.0
    passes: int = 0
    held: int = 0  # passes whose plan was held by the spend cap

    @property
    def cost(self) -> float:
        return sum(p.cost for p in self.pods)

    @property
    def running_s(self) -> float:
        return sum(p.running_s for p in self.pods)

    @property
    def busy_s(self) -> float:
        return sum(p.busy_s for p in self.pods)


@dataclass
class _Pod:
    seq: int
    bill: PodBill
    price: float
    status: PodStatus
    record: PodRecord
    started_at: float  # last create or resume
    resumed: bool = False
    since: float = 0.0  # start of the current billing segment
    idle_since: float = 0.0
    stopped_at: float = 0.0
    request: int | None = None
    run_started: float = 0.0
    last_workflow: str | None = None


class _Draws:
    """A seeded stream of draws, the n-th the same whoever asks for it and when."""

    def __init__(self, seed: str, low: float, high: float) -> None:
        self.rng = random.Random(seed)
        self.low, self.high = low, high
        self.values: list[float] = []

    def __getitem__(self, n: int) -> float:
        while len(self.values) <= n:
            self.values.append(self.rng.uniform(self.low, self.high))
        return self.values[n]


@dataclass
class _Day:
    trace: Trace
    variant: Variant
    model: Model
    memory: FleetMemory = field(default_factory=FleetMemory)
    now: float = 0.0

    def __post_init__(self) -> None:
        self.policy = policy_for(self.variant.policy, self.model.memo, self.variant.wait_worth)
        requests = self.trace.requests
        catalogue = presets()
        self.midpoint = [catalogue[(r.workflow, r.preset)].midpoint_s for r in requests]
        self.waits = [math.nan] * len(requests)
        self.finished = [math.nan] * len(requests)
        self.queue: deque[int] = deque()
        self.waiting_work = 0.0
        self.waiting_by_workflow: Counter[str] = Counter()
        self.pods: dict[str, _Pod] = {}  # not terminated
        self.bills: list[PodBill] = []
        self.events: list[tuple[float, int, int, int | str]] = []
        self.sequence = 0
        seed = self.model.seed
        self.create_boots = _Draws(f"{seed}:create", *self.model.create_boot_s)
        self.resume_boots = _Draws(f"{seed}:resume", *self.model.resume_boot_s)
        self.resume_luck = _Draws(f"{seed}:resume-outcome", 0.0, 1.0)
        self.samples: list[Sample] = []
        self.next_sample = 0.0
        self.result = RunResult(self.trace.name, self.variant, self.model, self.waits, self.finished, self.bills,
                                self.samples, DAY_S)  # fmt: skip
        for index, request in enumerate(requests):
            self._push(request.t, _ARRIVE, index)

    # --------------------------------------------------------------------------------------- the loop

    def run(self) -> RunResult:
        tick = self.model.probe_interval_s
        next_tick = math.inf
        outstanding = len(self.trace.requests)
        last_done = 0.0
        while True:
            t = min(self.events[0][0] if self.events else math.inf, next_tick)
            if t == math.inf or (t > DAY_S and outstanding == 0):
                break
            self._sample_until(t)
            self.now = t
            while self.events and self.events[0][0] <= t:
                _, _, kind, arg = heapq.heappop(self.events)
                if kind == _ARRIVE:
                    assert isinstance(arg, int)
                    self._arrive(arg)
                elif kind == _DONE:
                    assert isinstance(arg, str)
                    self._done(arg)
                    outstanding -= 1
                    last_done = t
                else:
                    assert isinstance(arg, str)
                    self._ready(arg)
            self._assign()
            self._reconcile()
            active = bool(self.queue) or any(p.status != PodStatus.READY or p.request is None
                                             for p in self.pods.values())  # fmt: skip
            next_tick = (math.floor(t / tick) + 1) * tick if active else math.inf
        end = max(DAY_S, last_done)
        self._sample_until(end + 1e-9)
        self.now = end
        for pod in self.pods.values():
            self._bill(pod)
            pod.bill.status = pod.status
        self.result.end_s = end
        return self.result

    def _push(self, t: float, kind: int, arg: int | str) -> None:
        self.sequence += 1
        heapq.heappush(self.events, (t, self.sequence, kind, arg))

    # --------------------------------------------------------------------------------------- scheduler

    def _arrive(self, index: int) -> None:
        self.queue.append(index)
        self.waiting_work += self.midpoint[index]
        self.waiting_by_workflow[self.trace.requests[index].workflow] += 1

    def _assign(self) -> None:
        free = [p for p in self.pods.values() if p.status == PodStatus.READY and p.request is None]
        while self.queue and free:
            index = self.queue.popleft()
            request = self.trace.requests[index]
            self.waiting_work -= self.midpoint[index]
            self.waiting_by_workflow[request.workflow] -= 1

            def preference(pod: _Pod, workflow: str = request.workflow) -> tuple[bool, bool, int]:
                last = pod.last_workflow
                return last != workflow, last is not None and self.waiting_by_workflow[last] > 0, pod.seq

            pod = min(free, key=preference)
            free.remove(pod)
            pod.request, pod.run_started, pod.last_workflow = index, self.now, request.workflow
            self.waits[index] = self.now - request.t
            self._push(self.now + request.run_s, _DONE, pod.bill.id)
        if not self.queue:
            self.waiting_work = 0.0  # no float drift across the day

    def _done(self, pod_id: str) -> None:
        pod = self.pods[pod_id]
        assert pod.request is not None
        request = self.trace.requests[pod.request]
        ran = self.now - pod.run_started
        pod.bill.busy_s += ran
        if request.video_s is None:
            self.result.image_busy_s += ran
            self.result.images += 1
        else:
            self.result.video_busy_s += ran
            self.result.video_s += request.video_s
        self.finished[pod.request] = self.now
        pod.request, pod.idle_since = None, self.now

    # --------------------------------------------------------------------------------------- pod-manager

    def _need(self) -> PodNeed:
        running = [p for p in self.pods.values() if p.request is not None]
        left = sum(max(0.0, self.midpoint[p.request] - (self.now - p.run_started))
                   for p in running if p.request is not None)  # fmt: skip
        oldest = self.now - self.trace.requests[self.queue[0]].t if self.queue else 0.0
        return PodNeed(waiting=len(self.queue), running=len(running), oldest_wait_s=oldest,
                       waiting_work_s=max(0.0, self.waiting_work), running_left_s=left)  # fmt: skip

    def _reconcile(self) -> None:
        need = self._need()
        limits = self.variant.limits
        self.memory.observe(self.now, need.waiting + need.running, limits.max_pods)
        pods = list(self.pods.values())
        situation = FleetSituation(
            needs=[need],
            pods=[p.record for p in pods],
            busy={p.bill.id for p in pods if p.request is not None},
            idle_for={p.bill.id: self.now - p.idle_since for p in pods
                      if p.status == PodStatus.READY and p.request is None},
            stopped_for={p.bill.id: self.now - p.stopped_at for p in pods if p.status == PodStatus.STOPPED},
            price=lambda _gpu_class: self.variant.price_per_hr,
            stopped_price=self.model.stopped_price_per_hr,
        )  # fmt: skip
        plan = self.policy.plan(situation, self.memory, limits)
        self.result.passes += 1
        self.result.held += plan.held is not None
        replacements: list[int] = []
        for pod_id in plan.resume:
            if self._resume(self.pods[pod_id]):
                continue
            replacements.append(0)
        for _ in [*plan.create, *replacements]:
            if self._live() >= self.model.max_pods:
                break
            self._create()
        for pod_id in plan.stop:
            self._stop(self.pods[pod_id])
        for pod_id in plan.terminate:
            self._terminate(self.pods[pod_id])
        self.result.max_live = max(self.result.max_live, self._live())

    def _live(self) -> int:
        return sum(1 for p in self.pods.values() if p.status in (PodStatus.STARTING, PodStatus.READY))

    def _create(self) -> None:
        seq = len(self.bills)
        pod_id = f"pod-{seq:04d}"
        bill = PodBill(pod_id, self.now)
        self.bills.append(bill)
        record = PodRecord(
            id=pod_id, name=f"vibewave-{pod_id}", provider="runpod", status=PodStatus.STARTING,
            gpu_type=self.variant.gpu_type, gpu_memory_gb=MIN_GPU_MEMORY_GB, cost_per_hr=self.variant.price_per_hr,
            created_at=T0, updated_at=T0,
        )  # fmt: skip
        pod = _Pod(seq, bill, self.variant.price_per_hr, PodStatus.STARTING, record, self.now, since=self.now)
        self.pods[pod_id] = pod
        self._booting(pod, self.create_boots[seq])

    def _resume(self, pod: _Pod) -> bool:
        """Resume a stopped pod; False when its host has no GPU for it any more (then it is terminated)."""
        number = self.result.resumes + self.result.failed_resumes
        resumed = self.resume_luck[number] >= self.model.resume_failure
        self.memory.resume_outcome(resumed=resumed)
        if not resumed:
            self.result.failed_resumes += 1
            self._terminate(pod)
            return False
        self.result.resumes += 1
        pod.bill.resumes += 1
        self._set(pod, PodStatus.STARTING)
        pod.started_at, pod.resumed = self.now, True
        self._booting(pod, self.resume_boots[number])
        return True

    def _booting(self, pod: _Pod, boot_s: float) -> None:
        tick = self.model.probe_interval_s
        self._push(math.ceil((self.now + boot_s) / tick) * tick, _READY, pod.bill.id)

    def _ready(self, pod_id: str) -> None:
        pod = self.pods.get(pod_id)
        if pod is None or pod.status != PodStatus.STARTING:
            return
        self._set(pod, PodStatus.READY)
        self.memory.booted(self.now - pod.started_at, resumed=pod.resumed)
        pod.resumed, pod.idle_since = False, self.now

    def _stop(self, pod: _Pod) -> None:
        assert pod.request is None, "a busy pod is never stopped"
        self._set(pod, PodStatus.STOPPED)
        pod.stopped_at = self.now

    def _terminate(self, pod: _Pod) -> None:
        assert pod.request is None, "a busy pod is never terminated"
        self._set(pod, PodStatus.TERMINATED)
        pod.bill.status = PodStatus.TERMINATED
        del self.pods[pod.bill.id]

    def _set(self, pod: _Pod, status: PodStatus) -> None:
        """Close the pod's billing segment at the old status's rate, then switch."""
        self._bill(pod)
        pod.status = status
        pod.record = PodRecord(
            id=pod.record.id, name=pod.record.name, provider="runpod", status=status, gpu_type=pod.record.gpu_type,
            gpu_memory_gb=pod.record.gpu_memory_gb, cost_per_hr=pod.price, created_at=T0, updated_at=T0,
        )  # fmt: skip

    def _bill(self, pod: _Pod) -> None:
        seconds = self.now - pod.since
        if pod.status == PodStatus.STOPPED:
            pod.bill.stopped_s += seconds
            pod.bill.cost += seconds * self.model.stopped_price_per_hr / 3600
        elif pod.status in (PodStatus.STARTING, PodStatus.READY):
            pod.bill.running_s += seconds
            pod.bill.cost += seconds * pod.price / 3600
        pod.since = self.now

    # --------------------------------------------------------------------------------------- timeline

    def _sample_until(self, t: float) -> None:
        """Samples for every grid instant before `t`: the state has not changed since the last event."""
        while self.next_sample < t:
            s = self.next_sample
            starting = busy = idle = stopped = 0
            cost = sum(b.cost for b in self.bills)
            for pod in self.pods.values():
                rate = self.model.stopped_price_per_hr if pod.status == PodStatus.STOPPED else pod.price
                cost += (s - pod.since) * rate / 3600
                if pod.status == PodStatus.STARTING:
                    starting += 1
                elif pod.status == PodStatus.STOPPED:
                    stopped += 1
                elif pod.request is not None:
                    busy += 1
                else:
                    idle += 1
            self.samples.append(Sample(s, len(self.queue), starting, busy, idle, stopped, cost))
            self.next_sample += SAMPLE_EVERY_S


def simulate(trace: Trace, variant: Variant, model: Model | None = None) -> RunResult:
    """One day of `trace` on `variant`'s policy and GPU: every request served, every pod-second billed."""
    return _Day(trace, variant, model or Model()).run()
