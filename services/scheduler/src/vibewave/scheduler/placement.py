"""Which request runs on which pod: the queue and the pods' slots, without I/O.

Requests wait in one FIFO per (workflow, priority class). A ready pod of a workflow with a free slot
takes the head with the best effective rank — its class, raised one class for every `aging_s` it has
waited, so a low-priority request never starves — and among equal ranks the oldest. Only the three
heads are compared, so placing stays cheap however deep the queue. A pod holds one request at a time
and a request is on at most one pod: nothing is double-booked.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from vibewave.contracts.events import PodRecord, PodStatus, RequestRecord
from vibewave.contracts.models import Priority, RequestStatus

PRIORITY_ORDER = (Priority.HIGH, Priority.NORMAL, Priority.LOW)
RANK = {priority: rank for rank, priority in enumerate(PRIORITY_ORDER)}


@dataclass(frozen=True)
class Placement:
    request_id: str
    pod: PodRecord


class Placer:
    def __init__(self, aging_s: float = 30.0, clock: Callable[[], float] = time.time) -> None:
        self.aging_s = aging_s
        self.clock = clock
        self._queues: dict[tuple[str, Priority], deque[str]] = {}
        self._queued: dict[str, RequestRecord] = {}
        self._waiting: dict[str, int] = {}  # per workflow
        self._pods: dict[str, PodRecord] = {}
        self._pod_of: dict[str, str] = {}  # request id → pod id, while assigned or running
        self._request_on: dict[str, str] = {}  # pod id → request id

    # ------------------------------------------------------------------------------------------ inputs

    def enqueue(self, record: RequestRecord, *, front: bool = False) -> None:
        if record.id in self._queued or record.id in self._pod_of:
            return
        self._queued[record.id] = record
        self._waiting[record.workflow_name] = self._waiting.get(record.workflow_name, 0) + 1
        queue = self._queues.setdefault((record.workflow_name, record.priority), deque())
        queue.appendleft(record.id) if front else queue.append(record.id)

    def occupy(self, request_id: str, pod_id: str) -> None:
        """Record a request already on a pod (state rebuilt after a restart)."""
        self._pod_of[request_id] = pod_id
        self._request_on[pod_id] = request_id

    def release(self, request_id: str) -> str | None:
        """The request left its pod (finished, failed, cancelled); returns the freed pod id."""
        pod_id = self._pod_of.pop(request_id, None)
        if pod_id is not None and self._request_on.get(pod_id) == request_id:
            del self._request_on[pod_id]
        return pod_id

    def forget(self, request_id: str) -> None:
        """Drop a queued request (cancelled, or failed before placement)."""
        record = self._queued.pop(request_id, None)
        if record is not None:
            self._queues[(record.workflow_name, record.priority)].remove(request_id)
            self._waiting[record.workflow_name] -= 1

    def update_pod(self, pod: PodRecord) -> None:
        if pod.status in (PodStatus.TERMINATED, PodStatus.FAILED, PodStatus.STOPPED):
            self._pods.pop(pod.id, None)
        else:
            self._pods[pod.id] = pod

    def remove_pod(self, pod_id: str) -> None:
        self._pods.pop(pod_id, None)

    # ----------------------------------------------------------------------------------------- outputs

    def place(self) -> list[Placement]:
        """Match free ready pods with the best waiting requests of their workflow."""
        placements: list[Placement] = []
        for pod in list(self._pods.values()):
            if pod.status != PodStatus.READY or pod.id in self._request_on:
                continue
            request_id = self._take(pod.workflow_name)
            if request_id is None:
                continue
            self.occupy(request_id, pod.id)
            placements.append(Placement(request_id, pod))
        return placements

    def effective_rank(self, record: RequestRecord, now: float) -> float:
        waited = max(0.0, now - record.created_at.timestamp())
        steps = int(waited // self.aging_s) if self.aging_s > 0 else 0
        return RANK[record.priority] - steps

    def _take(self, workflow_name: str) -> str | None:
        now = self.clock()
        best: tuple[float, float, str] | None = None
        for priority in PRIORITY_ORDER:
            queue = self._queues.get((workflow_name, priority))
            if queue:
                head = self._queued[queue[0]]
                candidate = (self.effective_rank(head, now), head.created_at.timestamp(), head.id)
                if best is None or candidate[:2] < best[:2]:
                    best = candidate
        if best is None:
            return None
        record = self._queued.pop(best[2])
        self._queues[(workflow_name, record.priority)].popleft()
        self._waiting[workflow_name] -= 1
        return record.id

    def expired(self, ttl_s: float) -> list[str]:
        """Queued requests older than `ttl_s` (heads only: each queue is oldest first)."""
        cutoff = self.clock() - ttl_s
        found: list[str] = []
        for queue in self._queues.values():
            for request_id in queue:
                if self._queued[request_id].created_at.timestamp() >= cutoff:
                    break
                found.append(request_id)
        return found

    def demand(self) -> dict[str, int]:
        """Pods wanted per workflow: requests waiting plus requests on pods."""
        wanted = {workflow: count for workflow, count in self._waiting.items() if count}
        for pod_id in self._request_on:
            pod = self._pods.get(pod_id)
            if pod is not None:
                wanted[pod.workflow_name] = wanted.get(pod.workflow_name, 0) + 1
        return wanted

    def busy_pods(self) -> list[str]:
        return sorted(self._request_on)

    def on_pod(self) -> dict[str, str]:
        return dict(self._pod_of)

    @property
    def queued_count(self) -> int:
        return len(self._queued)

    def restore(self, records: Iterable[RequestRecord]) -> None:
        """Rebuild the requests from stored state, oldest first (at start, or after a failed store): what
        was queued or on a pod before is forgotten; the pods, which come from their own watch, are kept."""
        self._queues.clear()
        self._queued.clear()
        self._waiting.clear()
        self._pod_of.clear()
        self._request_on.clear()
        for record in sorted(records, key=lambda r: r.created_at):
            if record.status == RequestStatus.PENDING:
                self.enqueue(record)
            elif record.status in (RequestStatus.ASSIGNED, RequestStatus.RUNNING) and record.pod_id:
                self.occupy(record.id, record.pod_id)
