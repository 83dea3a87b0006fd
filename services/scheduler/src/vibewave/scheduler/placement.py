"""Which request runs on which pod: the queue and the pods' slots, without I/O.

Requests wait in one FIFO per (workflow, tenant, priority class). A pod serves any workflow whose GPU
needs it meets. When pods are free, the next request is chosen in two steps. Within each priority
class, tenants share the pods by their weights (start-time fair queuing): each tenant has a virtual
time, the tenant with the smallest goes first, and each request placed moves its tenant on by
1 / `share_weight`. A tenant's virtual time never lags the class's, the virtual start of the last
request placed in it: a tenant that had nothing waiting (or nothing a free pod could run) goes next
rather than after everything queued, but cannot bank credit — so one tenant's burst delays another's
request by at most one run. Among equal virtual times (and within a tenant) the workflow with the
fewest of the tenant's requests on pods goes first (a burst of one workflow delays another by at most
one run), then the oldest. Then among the classes' candidates the best effective rank wins — its
class, raised one class for every `aging_s` it has waited, so a low-priority request never starves —
and among equal ranks the higher class, then the oldest. Only queue heads are compared, so placing
stays cheap however deep the queue. The request then takes the free pod that last ran its workflow
(its models are loaded), else a pod whose last workflow has nobody waiting, else the smallest that fits.

A request goes only to a pod whose ComfyUI lists the model files its graph loads (`PodRecord.models`).
A pod holds one request at a time and a request is on at most one pod: nothing is double-booked. Work
goes only to pods that are ready, verified by the live pod-manager (`manager`), and not suspected: a
pod on which a run faulted stays out until pod-manager has seen the fault and a probe passed since
(`PodRecord.fault_seq`). A retry waits out its backoff (`not_before`) before it can be placed, then
goes first among its tenant's requests of its workflow.

The demand it reports per GPU class (`needs`) says how much work is behind the counts, for scaling on the
queue's expected wait: each request's expected run seconds (`expected_s`, from the workflow catalogue) are
summed per class as requests come and go, so a report costs the classes, queues and pods, not the queue's
depth; the oldest waiting request is found among the queue heads (each queue is oldest first).
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from vibewave.contracts.events import PodNeed, PodRecord, PodStatus, RequestRecord
from vibewave.contracts.models import Priority, RequestStatus

PRIORITY_ORDER = (Priority.HIGH, Priority.NORMAL, Priority.LOW)
RANK = {priority: rank for rank, priority in enumerate(PRIORITY_ORDER)}
GONE = (PodStatus.TERMINATED, PodStatus.TERMINATING, PodStatus.FAILED, PodStatus.STOPPED)

QueueKey = tuple[str, str | None, Priority]  # (workflow, tenant, priority class)


@dataclass(frozen=True)
class Placement:
    request_id: str
    pod: PodRecord


@dataclass
class _Run:
    """A request on a pod: what it counts for in the fair share and in the demand."""

    workflow: str
    tenant: str | None
    gpu_class: int
    expected_s: float  # its expected run seconds (0: unknown)
    started: float | None = None  # when its prompt was queued on the pod (epoch seconds; None: not yet)


def _unknown(_: RequestRecord) -> float:
    return 0.0


class Placer:
    def __init__(
        self,
        aging_s: float = 30.0,
        clock: Callable[[], float] = time.time,
        expected_s: Callable[[RequestRecord], float] = _unknown,
    ) -> None:
        self.aging_s = aging_s
        self.clock = clock
        self.expected_s = expected_s  # a request's expected run seconds (0: unknown)
        self._queues: dict[QueueKey, deque[str]] = {}  # only non-empty ones, so placing scans only heads
        self._queued: dict[str, RequestRecord] = {}
        self._delayed: dict[str, RequestRecord] = {}  # retries waiting out their backoff
        self._due: list[tuple[float, str]] = []  # (not_before, id) heap over _delayed; stale entries skipped
        self._pods: dict[str, PodRecord] = {}
        self._pod_of: dict[str, str] = {}  # request id → pod id, while assigned or running
        self._request_on: dict[str, str] = {}  # pod id → request id
        self._on_pod: dict[str, _Run] = {}
        self._running: Counter[tuple[str | None, str]] = Counter()  # per (tenant, workflow): requests on pods
        self._virtual: dict[Priority, float] = {}  # per class: virtual start of the last request placed
        self._finish: dict[tuple[Priority, str | None], float] = {}  # per (class, tenant): its virtual time
        self._waiting: Counter[str] = Counter()  # per workflow: queued or delayed
        self._work: dict[str, tuple[int, float]] = {}  # per waiting request: (its GPU class, its expected seconds)
        self._class_waiting: Counter[int] = Counter()  # per GPU class: requests queued or delayed
        self._class_work: dict[int, float] = {}  # per GPU class: the expected seconds of those requests
        self._class_of: dict[str, int] = {}  # workflow → its GPU class (min_gpu_memory_gb)
        self._last_workflow: dict[str, str] = {}  # pod id → the workflow it ran last
        self._suspects: dict[str, int] = {}  # pod id → stream sequence of the fault report that made it suspect
        self._prices: dict[str, float | None] = {}  # pod id → its hourly price, kept after it is gone (billing)

    # ------------------------------------------------------------------------------------------ inputs

    def enqueue(self, record: RequestRecord, *, front: bool = False) -> None:
        """Queue a waiting request; a retry whose backoff has not passed waits aside until it has."""
        if record.id in self._queued or record.id in self._delayed or record.id in self._pod_of:
            return
        self._add_waiting(record)
        self._class_of[record.workflow_name] = record.min_gpu_memory_gb
        if record.not_before is not None and record.not_before.timestamp() > self.clock():
            self._delayed[record.id] = record
            heapq.heappush(self._due, (record.not_before.timestamp(), record.id))
            return
        self._queue(record, front=front)

    def _queue(self, record: RequestRecord, *, front: bool) -> None:
        self._queued[record.id] = record
        queue = self._queues.setdefault((record.workflow_name, record.tenant, record.priority), deque())
        queue.appendleft(record.id) if front else queue.append(record.id)

    def _add_waiting(self, record: RequestRecord) -> None:
        self._waiting[record.workflow_name] += 1
        gpu_class, seconds = record.min_gpu_memory_gb, max(0.0, self.expected_s(record))
        self._work[record.id] = (gpu_class, seconds)
        self._class_waiting[gpu_class] += 1
        self._class_work[gpu_class] = self._class_work.get(gpu_class, 0.0) + seconds

    def _drop_waiting(self, record: RequestRecord) -> None:
        """The request waits no more (placed, or forgotten): it leaves the counts and sums it was added to."""
        self._waiting[record.workflow_name] -= 1
        gpu_class, seconds = self._work.pop(record.id, (record.min_gpu_memory_gb, 0.0))
        self._class_waiting[gpu_class] -= 1
        if self._class_waiting[gpu_class] <= 0:  # an empty class sums to exactly 0, whatever rounding left
            del self._class_waiting[gpu_class]
            self._class_work.pop(gpu_class, None)
        else:
            self._class_work[gpu_class] = max(0.0, self._class_work[gpu_class] - seconds)

    def _promote_due(self) -> None:
        now = self.clock()
        while self._due and self._due[0][0] <= now:
            _, request_id = heapq.heappop(self._due)
            record = self._delayed.pop(request_id, None)
            if record is not None:
                self._queue(record, front=True)

    def occupy(self, record: RequestRecord, pod_id: str) -> None:
        """Record a request on a pod (placed now, or state rebuilt after a restart)."""
        self._pod_of[record.id] = pod_id
        self._request_on[pod_id] = record.id
        started = record.started_at if record.status == RequestStatus.RUNNING else None  # an earlier attempt's: no
        self._on_pod[record.id] = _Run(
            record.workflow_name, record.tenant, record.min_gpu_memory_gb, max(0.0, self.expected_s(record)),
            started.timestamp() if started is not None else None,
        )  # fmt: skip
        self._running[(record.tenant, record.workflow_name)] += 1
        self._last_workflow[pod_id] = record.workflow_name

    def release(self, request_id: str) -> str | None:
        """The request left its pod (finished, failed, cancelled); returns the freed pod id."""
        pod_id = self._pod_of.pop(request_id, None)
        if pod_id is not None and self._request_on.get(pod_id) == request_id:
            del self._request_on[pod_id]
        placed = self._on_pod.pop(request_id, None)
        if placed is not None:
            self._running[(placed.tenant, placed.workflow)] -= 1
        return pod_id

    def started(self, request_id: str, at: float) -> None:
        """The request's prompt was queued on its pod at `at` (epoch seconds): its expected time runs down."""
        run = self._on_pod.get(request_id)
        if run is not None:
            run.started = at

    def forget(self, request_id: str) -> None:
        """Drop a waiting request (cancelled, or failed before placement)."""
        record = self._queued.pop(request_id, None)
        if record is not None:
            key = (record.workflow_name, record.tenant, record.priority)
            self._queues[key].remove(request_id)
            if not self._queues[key]:
                del self._queues[key]
        else:
            record = self._delayed.pop(request_id, None)
        if record is not None:
            self._drop_waiting(record)

    def update_pod(self, pod: PodRecord) -> None:
        mark = self._suspects.get(pod.id)
        if mark is not None and (pod.status in GONE or (pod.status == PodStatus.READY and pod.fault_seq >= mark)):
            del self._suspects[pod.id]  # pod-manager has dealt with the fault: the pod's status says it all
        if pod.cost_per_hr or pod.id not in self._prices:
            self._prices[pod.id] = pod.cost_per_hr  # a stopped pod's reads 0: its last running price is kept
        if pod.status in GONE:
            self.remove_pod(pod.id)
        else:
            self._pods[pod.id] = pod

    def price(self, pod_id: str | None) -> float | None:
        """The pod's hourly price as last seen (None: unknown, or a pod that costs nothing)."""
        return self._prices.get(pod_id or "")

    def remove_pod(self, pod_id: str) -> None:
        self._pods.pop(pod_id, None)
        self._suspects.pop(pod_id, None)
        self._last_workflow.pop(pod_id, None)

    def suspect(self, pod_id: str, fault_seq: int) -> None:
        """A run on the pod faulted (reported at `fault_seq` of the stream): give it no work until
        pod-manager has handled that report and found the pod ready again."""
        if pod_id in self._pods:
            self._suspects[pod_id] = max(fault_seq, self._suspects.get(pod_id, 0))

    # ----------------------------------------------------------------------------------------- outputs

    def free_pods(self, manager: str | None) -> list[PodRecord]:
        """Pods that can take a request now: ready, verified by the live pod-manager, not suspected, idle."""
        if manager is None:
            return []
        return [
            pod
            for pod in self._pods.values()
            if pod.status == PodStatus.READY
            and pod.manager == manager
            and pod.id not in self._request_on
            and pod.id not in self._suspects
        ]

    def place(self, manager: str | None) -> list[Placement]:
        """Match free pods with the best waiting requests they can serve (see the module docstring)."""
        free = self.free_pods(manager)
        if not free:
            return []
        self._promote_due()
        placements: list[Placement] = []
        while free and self._queued:
            request_id = self._take(free)
            if request_id is None:
                break
            record = self._queued.pop(request_id)
            self._drop_waiting(record)
            pod = self._pick_pod(record, free)
            free.remove(pod)
            self.occupy(record, pod.id)
            placements.append(Placement(request_id, pod))
        return placements

    def effective_rank(self, record: RequestRecord, now: float) -> float:
        waited = max(0.0, now - record.created_at.timestamp())
        steps = int(waited // self.aging_s) if self.aging_s > 0 else 0
        return RANK[record.priority] - steps

    def _take(self, free: list[PodRecord]) -> str | None:
        """The request to place next, popped from its queue; its tenant's virtual time moves on."""
        now = self.clock()
        fairest: dict[Priority, tuple[float, int, float, str, QueueKey]] = {}
        for key, queue in self._queues.items():
            workflow, tenant, priority = key
            head = self._queued[queue[0]]
            needs = self._class_of.get(workflow, 0)
            if (needs or head.models) and not any(pod.serves(needs, head.models) for pod in free):
                continue
            running = self._running[(tenant, workflow)]
            candidate = (self._start(priority, tenant), running, head.created_at.timestamp(), head.id, key)
            if priority not in fairest or candidate[:3] < fairest[priority][:3]:
                fairest[priority] = candidate
        best: tuple[float, int, float, str, QueueKey] | None = None
        for priority, (_, _, created, request_id, key) in fairest.items():
            ranked = (self.effective_rank(self._queued[request_id], now), RANK[priority], created, request_id, key)
            if best is None or ranked[:3] < best[:3]:
                best = ranked
        if best is None:
            return None
        *_, request_id, key = best
        _, tenant, priority = key
        queue = self._queues[key]
        queue.popleft()
        if not queue:
            del self._queues[key]
        start = self._start(priority, tenant)
        self._virtual[priority] = start
        self._finish[(priority, tenant)] = start + 1 / _weight(self._queued[request_id])
        return request_id

    def _start(self, priority: Priority, tenant: str | None) -> float:
        """The tenant's virtual time in the class, never behind the class's: no credit from waiting idle."""
        return max(self._finish.get((priority, tenant), 0.0), self._virtual.get(priority, 0.0))

    def _pick_pod(self, record: RequestRecord, free: list[PodRecord]) -> PodRecord:
        def preference(pod: PodRecord) -> tuple[bool, bool, int]:
            last = self._last_workflow.get(pod.id)
            return (
                last != record.workflow_name,  # its models are loaded there
                last is not None and self._waiting[last] > 0,  # keep it for those who wait for its models
                pod.gpu_memory_gb or 0,  # the smallest that fits: big pods stay free for big requests
            )

        return min((pod for pod in free if pod.serves(record.min_gpu_memory_gb, record.models)), key=preference)

    def expired(self, ttl_s: float) -> list[str]:
        """Waiting requests older than `ttl_s` (heads only: each queue is oldest first)."""
        cutoff = self.clock() - ttl_s
        found: list[str] = []
        for queue in self._queues.values():
            for request_id in queue:
                if self._queued[request_id].created_at.timestamp() >= cutoff:
                    break
                found.append(request_id)
        found += [r.id for r in self._delayed.values() if r.created_at.timestamp() < cutoff]
        return found

    def waiting_in_class(self, min_gpu_memory_gb: int) -> list[str]:
        """Every waiting request whose workflow needs this GPU class."""
        found = [
            request_id
            for (workflow, _, _), queue in self._queues.items()
            if self._class_of.get(workflow, 0) == min_gpu_memory_gb
            for request_id in queue
        ]
        return found + [r.id for r in self._delayed.values() if r.min_gpu_memory_gb == min_gpu_memory_gb]

    def needs(self, traces: int = 8) -> list[PodNeed]:
        """Per GPU class with requests waiting or on pods, by class: the counts; the oldest waiting request's
        wait; the expected seconds of the waiting requests and those left of the running ones; and the
        traceparents of (at most `traces` of) the oldest waiting ones, looked for among the first `traces` of
        each queue. Costs the classes, queues and pods (and retries in backoff), not the depth of the queues."""
        now = self.clock()
        oldest: dict[int, float] = {}
        traced: dict[int, list[tuple[float, str]]] = {}
        for queue in self._queues.values():
            self._note_waiting(self._queued[queue[0]], oldest)
            for request_id in itertools.islice(queue, traces):
                self._note_traced(self._queued[request_id], traced)
        for record in self._delayed.values():
            self._note_waiting(record, oldest)
            self._note_traced(record, traced)
        running: Counter[int] = Counter()
        left: dict[int, float] = {}
        for run in self._on_pod.values():
            running[run.gpu_class] += 1
            elapsed = max(0.0, now - run.started) if run.started is not None else 0.0
            left[run.gpu_class] = left.get(run.gpu_class, 0.0) + max(0.0, run.expected_s - elapsed)
        return [
            PodNeed(
                min_gpu_memory_gb=gpu_class,
                waiting=self._class_waiting[gpu_class],
                running=running[gpu_class],
                traceparents=tuple(t for _, t in heapq.nsmallest(traces, traced.get(gpu_class, []))),
                oldest_wait_s=max(0.0, now - oldest[gpu_class]) if gpu_class in oldest else 0.0,
                waiting_work_s=self._class_work.get(gpu_class, 0.0),
                running_left_s=left.get(gpu_class, 0.0),
            )
            for gpu_class in sorted(set(self._class_waiting) | set(running))
        ]

    @staticmethod
    def _note_waiting(record: RequestRecord, oldest: dict[int, float]) -> None:
        created = record.created_at.timestamp()
        if created < oldest.get(record.min_gpu_memory_gb, math.inf):
            oldest[record.min_gpu_memory_gb] = created

    @staticmethod
    def _note_traced(record: RequestRecord, traced: dict[int, list[tuple[float, str]]]) -> None:
        if record.traceparent:
            traced.setdefault(record.min_gpu_memory_gb, []).append((record.created_at.timestamp(), record.traceparent))

    def busy_pods(self) -> list[str]:
        return sorted(self._request_on)

    def listing(self, models: list[str]) -> bool:
        """Whether any known pod (of any status but gone) lists these model files."""
        return any(pod.models is None or set(models) <= set(pod.models) for pod in self._pods.values())

    def waiting(self) -> list[RequestRecord]:
        return [*self._queued.values(), *self._delayed.values()]

    def on_pod(self) -> dict[str, str]:
        return dict(self._pod_of)

    def queue_depth(self) -> dict[str, int]:
        """Waiting requests (queued, or waiting out a retry's backoff) per priority class, every class named."""
        depth = {priority.value: 0 for priority in PRIORITY_ORDER}
        for record in (*self._queued.values(), *self._delayed.values()):
            depth[record.priority.value] += 1
        return depth

    @property
    def queued_count(self) -> int:
        return len(self._queued) + len(self._delayed)

    def restore(self, records: Iterable[RequestRecord]) -> None:
        """Rebuild the requests from stored state, oldest first (at start, or after a failed store): what
        was queued or on a pod before is forgotten; the pods, which come from their own watch, are kept, and
        so are the tenants' virtual times (a failed store does not reset the fair share)."""
        self._queues.clear()
        self._queued.clear()
        self._delayed.clear()
        self._due.clear()
        self._pod_of.clear()
        self._request_on.clear()
        self._on_pod.clear()
        self._running.clear()
        self._waiting.clear()
        self._work.clear()
        self._class_waiting.clear()
        self._class_work.clear()
        for record in sorted(records, key=lambda r: r.created_at):
            if record.status == RequestStatus.PENDING:
                self.enqueue(record)
            elif record.status in (RequestStatus.ASSIGNED, RequestStatus.RUNNING) and record.pod_id:
                self.occupy(record, record.pod_id)


def _weight(record: RequestRecord) -> float:
    """The tenant's share weight; one that is not a positive finite number counts as the default 1."""
    weight = record.share_weight
    return weight if weight > 0 and math.isfinite(weight) else 1.0
