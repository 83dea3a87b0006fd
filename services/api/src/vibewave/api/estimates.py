"""Where a waiting request stands, when a request should be done, and what finished requests cost.

Kept incrementally by the request index as records and pods change, so that a status read or
`/api/runpod/stats` is a lookup, not a scan of every retained request.

- Position: waiting requests compete for the pods of their GPU class (`min_gpu_memory_gb`), higher
  priority first, then older. Each class keeps its waiting requests in one list sorted by that order
  (bisect-maintained), so a position is a binary search. It is the queue as the placer would see it with
  one tenant: with several, the fair share (and the aging of low priorities) can place a request of a
  tenant with less on pods before older ones of a busier tenant.
- Expected run time: the mean of the last `RECENT_RUNS` measured runs (`run_ms + upload_ms`) of the same
  workflow and preset; before any, the catalogue's `expected_seconds` midpoint (the caller's fallback).
- ETA (seconds until finished): a running request's expected time minus its elapsed time; a waiting
  one's own run plus its share of the work ahead of it (the remaining time of the class's runs, and one
  expected run per request ahead) spread over the pods that serve the class — plus a pod's boot (the
  measured `ready_at - started_at` of pods, else `DEFAULT_BOOT_S`) when none is ready yet.
- Usage: GPU-seconds and cost of finished requests, in all and per workflow, for every tenant and in
  all (tenant None).
"""

from __future__ import annotations

import bisect
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from vibewave.contracts.events import PodRecord, PodStatus, RequestRecord
from vibewave.contracts.models import Priority, RequestStatus, WorkflowStats

RANK = {Priority.HIGH: 0, Priority.NORMAL: 1, Priority.LOW: 2}
RECENT_RUNS = 20  # runs per (workflow, preset) whose mean is the expected run time
RECENT_BOOTS = 20
DEFAULT_BOOT_S = 60.0  # a pod's boot before any was measured
DEFAULT_RUN_S = 30.0  # a run of a workflow that names no expected time and was never measured
ON_POD = (RequestStatus.ASSIGNED, RequestStatus.RUNNING)
BOOTING = (PodStatus.CREATING, PodStatus.STARTING)

WaitKey = tuple[int, float, str]  # (priority rank, created_at, request id): the order of a class's queue
Expected = Callable[[RequestRecord], float | None]


class RecentMean:
    """The mean of the last `size` values added."""

    __slots__ = ("_sum", "_values")

    def __init__(self, size: int) -> None:
        self._values: deque[float] = deque(maxlen=size)
        self._sum = 0.0

    def add(self, value: float) -> None:
        if len(self._values) == self._values.maxlen:
            self._sum -= self._values[0]
        self._values.append(value)
        self._sum += value

    @property
    def value(self) -> float | None:
        return self._sum / len(self._values) if self._values else None


@dataclass
class WorkflowTally:
    total: int = 0
    completed: int = 0
    failed: int = 0
    gpu_seconds: float = 0.0
    cost: float = 0.0
    run_seconds: float = 0.0  # of completed requests with timings
    runs: int = 0

    def stats(self) -> WorkflowStats:
        return WorkflowStats(
            total=self.total,
            completed=self.completed,
            failed=self.failed,
            gpu_seconds=round(max(0.0, self.gpu_seconds), 3),
            cost=round(max(0.0, self.cost), 8),
            mean_run_seconds=round(self.run_seconds / self.runs, 3) if self.runs > 0 else None,
        )


@dataclass
class Usage:
    gpu_seconds: float = 0.0
    cost: float = 0.0
    workflows: dict[str, WorkflowTally] = field(default_factory=dict)

    def count(self, record: RequestRecord, sign: int) -> None:
        """Add (`sign` 1) or take back (-1) what `record` contributes."""
        tally = self.workflows.setdefault(record.workflow_name, WorkflowTally())
        tally.total += sign
        if record.status == RequestStatus.COMPLETED:
            tally.completed += sign
            if record.timings is not None:
                tally.run_seconds += sign * (record.timings.run_ms + record.timings.upload_ms) / 1000
                tally.runs += sign
        elif record.status == RequestStatus.FAILED:
            tally.failed += sign
        if record.status.terminal:
            tally.gpu_seconds += sign * record.gpu_seconds
            tally.cost += sign * record.cost
            self.gpu_seconds += sign * record.gpu_seconds
            self.cost += sign * record.cost
        if tally.total <= 0:
            del self.workflows[record.workflow_name]


def _wait_key(record: RequestRecord) -> WaitKey:
    return (RANK.get(record.priority, 1), record.created_at.timestamp(), record.id)


class Estimates:
    def __init__(self) -> None:
        self._waiting: dict[int, list[WaitKey]] = {}  # GPU class → its waiting requests, in queue order
        self._on_pods: dict[int, set[str]] = {}  # GPU class → its requests on pods
        self._runs: dict[tuple[str, str | None], RecentMean] = {}  # (workflow, preset) → recent run seconds
        self._boots: OrderedDict[tuple[str, float], float] = OrderedDict()  # (pod, started) → boot seconds
        self.usage: dict[str | None, Usage] = {None: Usage()}  # by tenant; None: everyone's

    # --------------------------------------------------------------------------------------- changes

    def changed(self, previous: RequestRecord | None, record: RequestRecord | None) -> None:
        """A request's record replaced `previous` (None: it is new); `record` None: it is gone."""
        if previous is not None:
            self._unfile(previous)
        if record is None:
            return
        self._file(record)
        timings = record.timings
        if (
            record.status == RequestStatus.COMPLETED
            and timings is not None
            and (previous is None or previous.status != RequestStatus.COMPLETED)
        ):
            key = (record.workflow_name, record.preset)
            self._runs.setdefault(key, RecentMean(RECENT_RUNS)).add((timings.run_ms + timings.upload_ms) / 1000)

    def _file(self, record: RequestRecord) -> None:
        needs = record.min_gpu_memory_gb
        if record.status == RequestStatus.PENDING:
            bisect.insort(self._waiting.setdefault(needs, []), _wait_key(record))
        elif record.status in ON_POD:
            self._on_pods.setdefault(needs, set()).add(record.id)
        for tenant in {None, record.tenant}:
            self.usage.setdefault(tenant, Usage()).count(record, 1)

    def _unfile(self, record: RequestRecord) -> None:
        needs = record.min_gpu_memory_gb
        if record.status == RequestStatus.PENDING:
            queue = self._waiting.get(needs, [])
            key = _wait_key(record)
            at = bisect.bisect_left(queue, key)
            if at < len(queue) and queue[at] == key:
                del queue[at]
            if not queue:
                self._waiting.pop(needs, None)
        elif record.status in ON_POD:
            running = self._on_pods.get(needs, set())
            running.discard(record.id)
            if not running:
                self._on_pods.pop(needs, None)
        for tenant in {None, record.tenant}:
            usage = self.usage.get(tenant)
            if usage is not None:
                usage.count(record, -1)
                if tenant is not None and not usage.workflows:
                    del self.usage[tenant]

    def pod_changed(self, pod: PodRecord) -> None:
        """A pod that became ready tells how long a boot takes."""
        if pod.ready_at is None or pod.started_at is None or pod.ready_at < pod.started_at:
            return
        key = (pod.id, pod.started_at.timestamp())
        if key not in self._boots:
            self._boots[key] = (pod.ready_at - pod.started_at).total_seconds()
            while len(self._boots) > RECENT_BOOTS:
                self._boots.popitem(last=False)

    # ----------------------------------------------------------------------------------------- reads

    def position(self, record: RequestRecord) -> int | None:
        """1 for the next of its class to get a pod; None unless it waits."""
        if record.status != RequestStatus.PENDING:
            return None
        return bisect.bisect_left(self._waiting.get(record.min_gpu_memory_gb, []), _wait_key(record)) + 1

    def expected_s(self, record: RequestRecord, fallback: Expected) -> float:
        """Its run's expected seconds: measured for its workflow and preset, else the fallback's, else a default."""
        measured = self._runs.get((record.workflow_name, record.preset))
        if measured is not None and measured.value is not None:
            return measured.value
        named = fallback(record)
        return named if named is not None else DEFAULT_RUN_S

    def boot_s(self) -> float:
        return sum(self._boots.values()) / len(self._boots) if self._boots else DEFAULT_BOOT_S

    def eta(
        self,
        record: RequestRecord,
        now: float,
        pods: Iterable[PodRecord],
        records: Mapping[str, RequestRecord],
        fallback: Expected,
    ) -> float | None:
        """Seconds until it should be finished (see the module docstring); None once it is."""
        if record.status in ON_POD:
            return self._remaining(record, now, fallback)
        position = self.position(record)
        if position is None:
            return None
        needs = record.min_gpu_memory_gb
        expected = self.expected_s(record, fallback)
        serving = [p for p in pods if p.serves(needs)]
        ready = sum(1 for p in serving if p.status == PodStatus.READY)
        boot = 0.0
        if not ready:
            booting = [p for p in serving if p.status in BOOTING]
            estimate = self.boot_s()
            boot = min(
                (max(0.0, estimate - (now - (p.started_at or p.created_at).timestamp())) for p in booting),
                default=estimate,
            )
            ready = max(1, len(booting))
        running = [records[i] for i in self._on_pods.get(needs, ()) if i in records]
        if len(running) + position - 1 < ready:
            return round(boot + expected, 1)  # a pod is (or will be) free for it at once
        ahead = sum(self._remaining(r, now, fallback) for r in running) + (position - 1) * expected
        return round(boot + ahead / ready + expected, 1)

    def _remaining(self, record: RequestRecord, now: float, fallback: Expected) -> float:
        since = record.started_at or record.assigned_at or record.updated_at
        return round(max(0.0, self.expected_s(record, fallback) - (now - since.timestamp())), 1)
