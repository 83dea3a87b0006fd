"""The api's view of the retained requests and of the pods, kept in memory from KV `requests`, `pods`
and `fleet` (loaded by `follow.IndexFollower`: a snapshot first, then every change).

Reads (status, queue, history, stats) come from here, not from a store scan per call; the scheduler and
pod-manager stay the only writers. Per status, request ids are kept in creation order, so "the newest N
with status S" is a slice and every count is a `len`.

Memory is bounded by the retention: a finished request's key expires (its TTL, the retention) and the
delete removes it from every structure here; as a backstop, `expire` drops finished requests older than
the retention by this process's own clock. Structures emptied by removals are rebuilt once mostly
empty (a Python dict or list never gives back its slots), so memory returns to what the retained
requests need.

Queue positions, ETAs and usage (GPU-seconds, cost) are kept as records change, in `estimates`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Iterator

from vibewave.api.estimates import Estimates
from vibewave.contracts.events import (
    FLEET_STATUS_KEY,
    FleetStatus,
    PodRecord,
    PodStatus,
    RequestRecord,
)
from vibewave.contracts.models import RequestStatus
from vibewave.runtime.broker import decode

log = logging.getLogger("vibewave.api.index")

Predicate = Callable[[RequestRecord], bool]
Key = tuple[float, str]  # (a timestamp, request id)
ACTIVE_POD_STATUSES = (PodStatus.CREATING, PodStatus.STARTING, PodStatus.READY, PodStatus.SUSPECT)
COMPACT_SLACK = 64  # removals tolerated before a structure is rebuilt, on top of its live size


class Ordered:
    """Request ids in order of a timestamp: add, remove and count in amortized O(1), newest or oldest
    first by walking from either end.

    A removal only forgets the id; its entry stays in the list until the stale entries outnumber the
    live ones, when the list is rebuilt (so a removal never shifts the whole list, as `del list[i]`
    does: 100,000 expiries would be billions of moves). Additions are appended; one out of order
    marks the list for a sort at the next read (Timsort on an almost sorted list is linear)."""

    __slots__ = ("_entries", "_live", "_sorted")

    def __init__(self) -> None:
        self._live: dict[str, float] = {}
        self._entries: list[Key] = []
        self._sorted = True

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, request_id: str) -> bool:
        return request_id in self._live

    def add(self, request_id: str, at: float) -> None:
        if self._live.get(request_id) == at:
            return
        self._live[request_id] = at
        key = (at, request_id)
        if self._entries and key < self._entries[-1]:
            self._sorted = False
        self._entries.append(key)
        self._compact_if_sparse()

    def discard(self, request_id: str) -> None:
        if self._live.pop(request_id, None) is not None:
            self._compact_if_sparse()

    def newest(self, limit: int) -> list[Key]:
        return self._walk(reversed(self._ordered()), limit)

    def oldest(self, limit: int) -> list[Key]:
        return self._walk(iter(self._ordered()), limit)

    def _walk(self, entries: Iterator[Key], limit: int) -> list[Key]:
        found: list[Key] = []
        seen: set[str] = set()
        for at, request_id in entries:
            if len(found) >= limit:
                break
            if self._live.get(request_id) == at and request_id not in seen:
                seen.add(request_id)
                found.append((at, request_id))
        return found

    def _ordered(self) -> list[Key]:
        if not self._sorted:
            self._entries.sort()
            self._sorted = True
        return self._entries

    def _compact_if_sparse(self) -> None:
        if len(self._entries) > 2 * len(self._live) + COMPACT_SLACK:
            live, entries = self._live, self._ordered()
            kept: list[Key] = []
            for key in entries:
                if live.get(key[1]) == key[0] and (not kept or kept[-1] != key):
                    kept.append(key)
            self._entries = kept
            self._live = dict(live)  # a copy is sized for what is left; the old table kept every slot


class RequestIndex:
    def __init__(self) -> None:
        self.records: dict[str, RequestRecord] = {}
        self.progress: dict[str, float] = {}  # last reported percent of running requests
        self.by_status: dict[RequestStatus, Ordered] = {status: Ordered() for status in RequestStatus}
        # a tenant's own requests by status (only requests made with a client key have a tenant)
        self.by_tenant: dict[str, dict[RequestStatus, Ordered]] = {}
        self.open_by_key: Counter[str] = Counter()  # client key id → its unfinished requests
        self.file_tenant: dict[str, str] = {}  # output file name → the tenant whose request made it
        self.finished = Ordered()  # finished requests by their last update: what `expire` drops first
        self.pods: dict[str, PodRecord] = {}
        self.pod_workflow: dict[str, str] = {}  # pod id → the workflow it runs or ran last
        self.fleet: FleetStatus | None = None
        self.estimates = Estimates()  # queue positions, ETAs, GPU-seconds and cost
        self.loaded = asyncio.Event()  # set once the first snapshot is in: reads before it answer 503
        self._removed = 0  # removals from `records` since it was last rebuilt
        self._waiters: dict[str, list[tuple[Predicate, asyncio.Future[RequestRecord]]]] = {}

    # ---------------------------------------------------------------------------------------- reads

    def get(self, request_id: str) -> RequestRecord | None:
        return self.records.get(request_id)

    def newest(self, statuses: tuple[RequestStatus, ...], limit: int, tenant: str | None = None) -> list[RequestRecord]:
        """The `limit` most recently created requests having one of `statuses` (of `tenant` only, if given),
        newest first."""
        lists = self.by_status if tenant is None else self.by_tenant.get(tenant, {})
        found = [lists[s] for s in statuses if s in lists]
        if len(found) == 1:
            keys = found[0].newest(limit)
        else:
            keys = sorted((k for ordered in found for k in ordered.newest(limit)), reverse=True)[:limit]
        return [self.records[request_id] for _, request_id in keys]

    def count(self, status: RequestStatus, tenant: str | None = None) -> int:
        if tenant is None:
            return len(self.by_status[status])
        ordered = self.by_tenant.get(tenant, {}).get(status)
        return len(ordered) if ordered is not None else 0

    def total(self, tenant: str | None = None) -> int:
        if tenant is None:
            return len(self.records)
        return sum(len(ordered) for ordered in self.by_tenant.get(tenant, {}).values())

    def active_pods(self) -> list[PodRecord]:
        return [p for p in self.pods.values() if p.status in ACTIVE_POD_STATUSES]

    # --------------------------------------------------------------------------------------- writes

    def apply(self, key: str, value: bytes | None) -> None:
        """A value of KV `requests` (None: the key was deleted or expired). Idempotent: a replayed
        value changes nothing."""
        if not value:
            self.remove(key)
            return
        record = decode(value, RequestRecord)
        previous = self.records.get(key)
        if previous is not None and previous == record:
            return
        if previous is not None:
            self._unfile(key, previous, record)
        self.records[key] = record
        self._file(key, record)
        self.estimates.changed(previous, record)
        if record.pod_id is not None:
            self.pod_workflow[record.pod_id] = record.workflow_name
        self.by_status[record.status].add(key, record.created_at.timestamp())
        if record.status.terminal:
            self.progress.pop(key, None)
            self.finished.add(key, record.updated_at.timestamp())
        else:
            self.finished.discard(key)
        waiters = self._waiters.get(key)
        if waiters:
            for predicate, future in list(waiters):
                if not future.done() and predicate(record):
                    future.set_result(record)

    def remove(self, key: str) -> None:
        """Forget a request everywhere (its key expired or was deleted)."""
        record = self.records.pop(key, None)
        self.progress.pop(key, None)
        if record is None:
            return
        self._unfile(key, record, None)
        self.estimates.changed(record, None)
        self.finished.discard(key)
        self._removed += 1
        if self._removed > len(self.records) + COMPACT_SLACK:
            self.records = dict(self.records)  # sized for what is left (a dict never shrinks by itself)
            self.progress = dict(self.progress)
            self._removed = 0

    def _file(self, key: str, record: RequestRecord) -> None:
        """File a record under its tenant and key (its status list everywhere is done by `apply`)."""
        if record.tenant is not None:
            lists = self.by_tenant.setdefault(record.tenant, {})
            lists.setdefault(record.status, Ordered()).add(key, record.created_at.timestamp())
            if record.result is not None:
                for name in record.result.files:
                    self.file_tenant[name] = record.tenant
        if record.key_id is not None and not record.status.terminal:
            self.open_by_key[record.key_id] += 1

    def _unfile(self, key: str, previous: RequestRecord, record: RequestRecord | None) -> None:
        """Undo what `_file` (and the status list) did for `previous`, now replaced by `record` (or gone)."""
        if record is None or previous.status != record.status:
            self.by_status[previous.status].discard(key)
        moved = record is None or previous.status != record.status or previous.tenant != record.tenant
        if previous.tenant is not None and moved:
            lists = self.by_tenant.get(previous.tenant, {})
            ordered = lists.get(previous.status)
            if ordered is not None:
                ordered.discard(key)
                if not ordered:
                    del lists[previous.status]
                if not lists:
                    self.by_tenant.pop(previous.tenant, None)
        if previous.tenant is not None and record is None and previous.result is not None:
            for name in previous.result.files:
                self.file_tenant.pop(name, None)
        if previous.key_id is not None and not previous.status.terminal:
            self.open_by_key[previous.key_id] -= 1
            if self.open_by_key[previous.key_id] <= 0:
                del self.open_by_key[previous.key_id]

    def load(self, values: dict[str, bytes]) -> None:
        """A whole snapshot of KV `requests`: its values applied, and whatever it no longer has removed."""
        for key in [k for k in self.records if k not in values]:
            self.remove(key)
        for key, value in values.items():
            self.apply(key, value)

    def expire(self, now: float, retention_s: float) -> int:
        """Drop finished requests last updated more than `retention_s` before `now` (a timestamp): the
        backstop for a key whose expiry was missed (e.g. its delete marker came while disconnected).
        Cheap: only the expired ones are visited. Returns how many were dropped."""
        cutoff, dropped = now - retention_s, 0
        while True:
            batch = [key for at, key in self.finished.oldest(256) if at < cutoff]
            for key in batch:
                self.remove(key)
            dropped += len(batch)
            if len(batch) < 256:
                return dropped

    def apply_pod(self, key: str, value: bytes | None) -> None:
        pod = decode(value, PodRecord) if value else None
        if pod is None or pod.status == PodStatus.TERMINATED:
            self.pods.pop(key, None)
            self.pod_workflow.pop(key, None)
        else:
            self.pods[key] = pod
            self.estimates.pod_changed(pod)

    def load_pods(self, values: dict[str, bytes]) -> None:
        for key in [k for k in self.pods if k not in values]:
            self.apply_pod(key, None)
        for key, value in values.items():
            self.apply_pod(key, value)

    def apply_fleet(self, key: str, value: bytes | None) -> None:
        if key == FLEET_STATUS_KEY:
            self.fleet = decode(value, FleetStatus) if value else None

    def load_fleet(self, values: dict[str, bytes]) -> None:
        self.apply_fleet(FLEET_STATUS_KEY, values.get(FLEET_STATUS_KEY))

    def note_progress(self, request_id: str, percent: float) -> None:
        """Progress of a request known to run (a report for one not yet recorded, or already
        finished or expired, is not kept: nothing would ever remove it)."""
        record = self.records.get(request_id)
        if record is not None and not record.status.terminal:
            self.progress[request_id] = percent

    # ---------------------------------------------------------------------------------------- waits

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
