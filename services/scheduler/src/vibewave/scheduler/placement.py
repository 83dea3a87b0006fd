"""Which request runs on which pod: the queue and the pods' slots, without I/O.

Requests wait in one FIFO per priority class; a ready pod of the request's workflow with a free slot
takes the oldest request of the highest class. A pod holds one request at a time, and a request is on
at most one pod: nothing is double-booked.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from vibewave.contracts.events import PodRecord, PodStatus, RequestRecord
from vibewave.contracts.models import Priority, RequestStatus

PRIORITY_ORDER = (Priority.HIGH, Priority.NORMAL, Priority.LOW)


@dataclass(frozen=True)
class Placement:
    request_id: str
    pod: PodRecord


class Placer:
    def __init__(self) -> None:
        self._queues: dict[Priority, deque[str]] = {p: deque() for p in PRIORITY_ORDER}
        self._queued: dict[str, RequestRecord] = {}
        self._pods: dict[str, PodRecord] = {}
        self._pod_of: dict[str, str] = {}  # request id → pod id, while assigned or running
        self._request_on: dict[str, str] = {}  # pod id → request id

    # ------------------------------------------------------------------------------------------ inputs

    def enqueue(self, record: RequestRecord, *, front: bool = False) -> None:
        if record.id in self._queued or record.id in self._pod_of:
            return
        self._queued[record.id] = record
        queue = self._queues[record.priority]
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
        """Drop a queued request (cancelled or failed before placement)."""
        record = self._queued.pop(request_id, None)
        if record is not None:
            self._queues[record.priority].remove(request_id)

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
        free = [p for p in self._pods.values() if p.status == PodStatus.READY and p.id not in self._request_on]
        for pod in free:
            request_id = self._take(pod.workflow_name)
            if request_id is None:
                continue
            self.occupy(request_id, pod.id)
            placements.append(Placement(request_id, pod))
        return placements

    def _take(self, workflow_name: str) -> str | None:
        for priority in PRIORITY_ORDER:
            queue = self._queues[priority]
            for request_id in queue:
                if self._queued[request_id].workflow_name == workflow_name:
                    queue.remove(request_id)
                    del self._queued[request_id]
                    return request_id
        return None

    def demand(self) -> dict[str, int]:
        """Pods wanted per workflow: requests waiting plus requests on pods."""
        wanted: dict[str, int] = {}
        for record in self._queued.values():
            wanted[record.workflow_name] = wanted.get(record.workflow_name, 0) + 1
        for pod_id in self._request_on:
            pod = self._pods.get(pod_id)
            if pod is not None:
                wanted[pod.workflow_name] = wanted.get(pod.workflow_name, 0) + 1
        return wanted

    def busy_pods(self) -> list[str]:
        return sorted(self._request_on)

    @property
    def queued_count(self) -> int:
        return len(self._queued)

    def restore(self, records: Iterable[RequestRecord]) -> None:
        """Rebuild from stored state, oldest first, after a restart."""
        for record in sorted(records, key=lambda r: r.created_at):
            if record.status == RequestStatus.PENDING:
                self.enqueue(record)
            elif record.status in (RequestStatus.ASSIGNED, RequestStatus.RUNNING) and record.pod_id:
                self.occupy(record.id, record.pod_id)
