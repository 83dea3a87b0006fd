"""The api's view of every request and pod, kept current from watches of KV `requests` and `pods`
(reopened after every NATS reconnect).

Reads (status, queue, history, stats) come from here, not from a store scan per call; the
scheduler and pod-manager stay the only writers. Per status, request ids are kept sorted by creation
time, so "the newest N with status S" is a slice and every count is a `len`.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections.abc import Callable, Iterator

from vibewave.contracts.events import (
    FLEET_BUCKET,
    FLEET_STATUS_KEY,
    PODS_BUCKET,
    REQUESTS_BUCKET,
    FleetStatus,
    PodRecord,
    PodStatus,
    RequestRecord,
)
from vibewave.contracts.models import RequestStatus
from vibewave.runtime.bus import Bus, decode

log = logging.getLogger("vibewave.api.index")

Predicate = Callable[[RequestRecord], bool]
Key = tuple[float, str]  # (created_at timestamp, request id)
ACTIVE_POD_STATUSES = (PodStatus.CREATING, PodStatus.STARTING, PodStatus.READY, PodStatus.SUSPECT)


class RequestIndex:
    def __init__(self) -> None:
        self.records: dict[str, RequestRecord] = {}
        self.progress: dict[str, float] = {}  # last reported percent of running requests
        self.by_status: dict[RequestStatus, list[Key]] = {status: [] for status in RequestStatus}
        self.pods: dict[str, PodRecord] = {}
        self.pod_workflow: dict[str, str] = {}  # pod id → the workflow it runs or ran last
        self.fleet: FleetStatus | None = None
        self.ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._waiters: dict[str, list[tuple[Predicate, asyncio.Future[RequestRecord]]]] = {}

    # ---------------------------------------------------------------------------------------- reads

    def get(self, request_id: str) -> RequestRecord | None:
        return self.records.get(request_id)

    def newest(self, statuses: tuple[RequestStatus, ...], limit: int) -> list[RequestRecord]:
        """The `limit` most recently created requests having one of `statuses`, newest first."""
        if len(statuses) == 1:
            keys: Iterator[Key] = reversed(self.by_status[statuses[0]][-limit:])
        else:
            merged = sorted((k for s in statuses for k in self.by_status[s][-limit:]), reverse=True)
            keys = iter(merged[:limit])
        return [self.records[request_id] for _, request_id in keys]

    def count(self, status: RequestStatus) -> int:
        return len(self.by_status[status])

    def active_pods(self) -> list[PodRecord]:
        return [p for p in self.pods.values() if p.status in ACTIVE_POD_STATUSES]

    # --------------------------------------------------------------------------------------- writes

    def apply(self, key: str, value: bytes | None) -> None:
        previous = self.records.get(key)
        if previous is not None:
            self._unlist(previous)
        if not value:
            self.records.pop(key, None)
            return
        record = decode(value, RequestRecord)
        self.records[key] = record
        if record.pod_id is not None:
            self.pod_workflow[record.pod_id] = record.workflow_name
        bisect.insort(self.by_status[record.status], (record.created_at.timestamp(), record.id))
        if record.status.terminal:
            self.progress.pop(key, None)
        waiters = self._waiters.get(key)
        if waiters:
            for predicate, future in list(waiters):
                if not future.done() and predicate(record):
                    future.set_result(record)

    def _unlist(self, record: RequestRecord) -> None:
        keys = self.by_status[record.status]
        position = bisect.bisect_left(keys, (record.created_at.timestamp(), record.id))
        if position < len(keys) and keys[position][1] == record.id:
            del keys[position]

    def apply_pod(self, key: str, value: bytes | None) -> None:
        pod = decode(value, PodRecord) if value else None
        if pod is None or pod.status == PodStatus.TERMINATED:
            self.pods.pop(key, None)
            self.pod_workflow.pop(key, None)
        else:
            self.pods[key] = pod

    def apply_fleet(self, key: str, value: bytes | None) -> None:
        if key == FLEET_STATUS_KEY:
            self.fleet = decode(value, FleetStatus) if value else None

    def note_progress(self, request_id: str, percent: float) -> None:
        record = self.records.get(request_id)
        if record is None or not record.status.terminal:
            self.progress[request_id] = percent

    async def wait(self, request_id: str, predicate: Predicate, timeout: float) -> RequestRecord | None:
        """The record once `predicate` holds for it, or None after `timeout` seconds."""
        current = self.records.get(request_id)
        if current is not None and predicate(current):
            return current
        return await self.wait_expected(request_id, self.expect(request_id, predicate), timeout)

    def expect(self, request_id: str, predicate: Predicate) -> asyncio.Future[RequestRecord]:
        """Register interest before the request exists (subscribe before publishing)."""
        future: asyncio.Future[RequestRecord] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(request_id, []).append((predicate, future))
        return future

    def forget(self, request_id: str, future: asyncio.Future[RequestRecord]) -> None:
        waiters = [w for w in self._waiters.get(request_id, []) if w[1] is not future]
        if waiters:
            self._waiters[request_id] = waiters
        else:
            self._waiters.pop(request_id, None)

    async def wait_expected(
        self, request_id: str, future: asyncio.Future[RequestRecord], timeout: float
    ) -> RequestRecord | None:
        """The result of an `expect`, or None after `timeout` seconds; the interest is dropped either way."""
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return None
        finally:
            self.forget(request_id, future)

    # -------------------------------------------------------------------------------------- follow

    def start(self, bus: Bus) -> None:
        self._tasks = [
            asyncio.create_task(bus.follow_kv(REQUESTS_BUCKET, self.apply, self.ready), name="api:request-index"),
            asyncio.create_task(bus.follow_kv(PODS_BUCKET, self.apply_pod), name="api:pod-index"),
            asyncio.create_task(bus.follow_kv(FLEET_BUCKET, self.apply_fleet), name="api:fleet"),
        ]

    async def stop(self, timeout: float = 10.0) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout)
