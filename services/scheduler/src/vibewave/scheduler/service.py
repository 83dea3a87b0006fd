"""The scheduler: the only writer of request state, and the one who places requests on pods.

It consumes the request events (submitted by the api; started, attempt_failed and completed by
executors), keeps each request's record in KV `requests`, dispatches placed requests to their pod's
work queue, and announces demand for pods. Handling is sequential, so each record has one writer.

Work happens in steps — a fetched batch of events, a pod change, the once-a-second sweep — each under
one lock. A step changes records in memory and places what can run; at its end the changed records are
stored (writes sent together, not one round trip after another), and only once they are stored are the
assignments dispatched, failures announced and the batch's events acked. So nothing is announced or
acked before the state behind it is stored, and a dispatch never exists for a request the store still
calls pending. If storing fails, memory may differ from the store: the next step reloads it first.

It follows pod-manager's heartbeat (KV `fleet`): work goes only to pods the live pod-manager verified,
and while a GPU class's circuit breaker is open its waiting requests fail with the breaker's diagnosis.
A pod fault makes the pod suspect here at once (see `placement`) and the retry waits out a backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Iterable
from dataclasses import dataclass
from datetime import timedelta

import msgspec
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.trace import TracerProvider

from vibewave.contracts.events import (
    DEMAND_SUBJECT,
    FLEET_BUCKET,
    FLEET_STATUS_KEY,
    PODS_BUCKET,
    REQUESTS_BUCKET,
    SCHEDULER_CONSUMER,
    Assignment,
    AttemptFailed,
    AttemptNote,
    AttemptSucceeded,
    Breaker,
    CancelRequested,
    Demand,
    FailureKind,
    FleetStatus,
    PodNeed,
    PodRecord,
    PodStatus,
    RequestAssigned,
    RequestCancelled,
    RequestCompleted,
    RequestEvent,
    RequestFailed,
    RequestRecord,
    RequestStarted,
    RequestSubmitted,
    dispatch_subject,
    request_subject,
    split_request_subject,
    utcnow,
)
from vibewave.contracts.models import RequestStatus
from vibewave.runtime.bus import Bus, decode, encode, trace_headers
from vibewave.runtime.health import serve_liveness
from vibewave.runtime.logs import request_id_var
from vibewave.scheduler.placement import Placer
from vibewave.scheduler.settings import SchedulerSettings

log = logging.getLogger("vibewave.scheduler")

STEP_TIMEOUT_S = 20.0  # a step stuck on NATS (e.g. across a server restart) gives up and is tried again
# A change is announced at once, but at most one announcement per gap: a burst of requests (each one a
# change) becomes a few announcements instead of one per request, each waking pod-manager.
DEMAND_MIN_GAP_S = 0.02
MAX_RETRY_BACKOFF_S = 10.0


@dataclass(frozen=True)
class Notice:
    """An event to publish once the record it announces is stored."""

    request_id: str
    subject: str
    message: msgspec.Struct
    msg_id: str


class SchedulerService:
    def __init__(self, settings: SchedulerSettings, tracer_provider: TracerProvider | None = None) -> None:
        self.settings = settings
        self.tracer_provider = tracer_provider
        self.placer = Placer(aging_s=settings.aging_s)
        self._bus: Bus | None = None
        self._requests: KeyValue | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._demand_changed = asyncio.Event()
        self._lock = asyncio.Lock()  # one step at a time
        self._pods_changed = asyncio.Event()
        self._liveness: object | None = None
        # Every open request's record as last changed. The scheduler is KV `requests`' only writer, so
        # (between steps) this is what the bucket holds: events are applied without a read round trip.
        self._open: dict[str, RequestRecord] = {}
        self._in_sync = False  # memory matches the store; false until loaded, and after a failed store
        # What the current step changed, to store at its end, and what waits for that
        self._changed: dict[str, RequestRecord] = {}
        self._new: set[str] = set()  # changed records written for the first time (`create`: never twice)
        self._dispatches: list[tuple[RequestRecord, PodRecord]] = []
        self._notices: list[Notice] = []
        self._orphans: list[Notice] = []  # a failed step's notices: sent after the reload if their record was stored
        self._fleet: FleetStatus | None = None  # pod-manager's heartbeat and circuit breakers (KV `fleet`)

    @property
    def bus(self) -> Bus:
        assert self._bus is not None, "scheduler not started"
        return self._bus

    @property
    def requests(self) -> KeyValue:
        assert self._requests is not None, "scheduler not started"
        return self._requests

    async def start(self) -> None:
        common = self.settings.common
        self._bus = await Bus.connect(common.nats_url, name="scheduler", tracer_provider=self.tracer_provider)
        await self.bus.provision(common.replicas)
        self._requests = await self.bus.kv(REQUESTS_BUCKET)
        async with self._step():  # loads the open requests and sends any dispatch a predecessor left unsent
            pass
        self._tasks = [
            asyncio.create_task(self.bus.follow_kv(PODS_BUCKET, self._on_pod), name="scheduler:pods"),
            asyncio.create_task(self.bus.follow_kv(FLEET_BUCKET, self._on_fleet), name="scheduler:fleet"),
            asyncio.create_task(self._place_on_pod_changes(), name="scheduler:placement"),
            asyncio.create_task(self._announce_demand(), name="scheduler:demand"),
            asyncio.create_task(self._watch_time(), name="scheduler:timeouts"),
        ]
        self.bus.consume(SCHEDULER_CONSUMER, self.handle, replicas=common.replicas, step=self._step)
        self._liveness = await serve_liveness(self.bus.nc, "scheduler", "request lifecycle and placement")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._bus is not None:
            await self._bus.close()

    # ---------------------------------------------------------------------------------------- steps

    @contextlib.asynccontextmanager
    async def _step(self) -> AsyncIterator[None]:
        """One step: (re)load if needed, run the body, then place and store (see the module docstring)."""
        async with asyncio.timeout(STEP_TIMEOUT_S), self._lock:
            try:
                if not self._in_sync:
                    await self._load()
                yield
                await self._commit()
            except BaseException:
                self._in_sync = False
                self._orphans += self._notices
                self._changed, self._new, self._dispatches, self._notices = {}, set(), [], []
                raise

    async def _load(self) -> None:
        """Rebuild memory from the store: the open requests, queued or on their pods.

        A failed step's writes may still have landed (the client sends what it buffered once it has
        reconnected), so its notices go out if their record is stored as finished; else the state they
        announced is derived again from the redelivered events."""
        open_requests: list[RequestRecord] = []
        finished: set[str] = set()
        for key, value in (await self.bus.kv_snapshot(REQUESTS_BUCKET)).items():
            try:
                record = decode(value, RequestRecord)
            except msgspec.DecodeError:
                log.error("unreadable record %s left alone", key)
                continue
            if record.status.terminal:
                finished.add(record.id)
            else:
                open_requests.append(record)
        self._notices += [notice for notice in self._orphans if notice.request_id in finished]
        self._orphans = []
        self._open = {record.id: record for record in open_requests}
        self.placer.restore(open_requests)
        await self._redispatch(r for r in open_requests if r.status == RequestStatus.ASSIGNED)
        self._in_sync = True
        log.info("loaded %d open requests", len(open_requests))

    async def _redispatch(self, assigned: Iterable[RequestRecord]) -> None:
        """Send assigned requests' dispatches again: an earlier step may have stored an assignment and
        stopped before sending it. Harmless if it had been sent: the dedupe id drops a repeat within the
        window, and an executor that gets it twice finds the prompt (same id per attempt) already on the pod."""
        pods = await self.bus.kv(PODS_BUCKET)
        for record in assigned:
            try:
                entry = await pods.get(record.pod_id or "")
                pod = decode(entry.value or b"", PodRecord)
            except (nats.js.errors.KeyNotFoundError, msgspec.DecodeError):
                pod = None
            if pod is None or pod.status not in (PodStatus.READY, PodStatus.SUSPECT):
                self.placer.release(record.id)
                requeued = self._record(
                    msgspec.structs.replace(record, status=RequestStatus.PENDING, pod_id=None, pod_ip=None)
                )
                self.placer.enqueue(requeued, front=True)
                continue
            self._dispatches.append((record, pod))

    async def _commit(self) -> None:
        """Place what can run, store every changed record (writes in flight together), then send what
        waited for them. Repeats while that changes anything (a refused duplicate frees its pod)."""
        while True:
            self._place()
            if not (self._changed or self._dispatches or self._notices):
                return
            changed, new, self._changed, self._new = self._changed, self._new, {}, set()
            duplicates = await self._store(changed, new)
            if duplicates:
                self._dispatches = [(record, pod) for record, pod in self._dispatches if record.id not in duplicates]
                self._notices = [notice for notice in self._notices if notice.request_id not in duplicates]
            sends: list[Awaitable[object]] = [self._send_assignment(record, pod) for record, pod in self._dispatches]
            sends += [self.bus.publish(n.subject, n.message, msg_id=n.msg_id) for n in self._notices]
            _raise_first(await asyncio.gather(*sends, return_exceptions=True))
            if self._dispatches:
                self._demand_changed.set()
            self._dispatches, self._notices = [], []

    async def _store(self, changed: dict[str, RequestRecord], new: set[str]) -> set[str]:
        """Write the records; returns the ids refused as duplicates (a redelivered submission of a request
        that is already stored, and finished: an open one would be in memory)."""
        failures = await self.bus.kv_write_many(
            REQUESTS_BUCKET, {key: encode(record) for key, record in changed.items()}, new=new
        )
        duplicates = {key for key, failure in failures.items() if isinstance(failure, KeyWrongLastSequenceError)}
        _raise_first(failure for failure in failures.values() if not isinstance(failure, KeyWrongLastSequenceError))
        for key in duplicates:
            log.info("duplicate submission ignored", extra={"request_id": key})
            self._open.pop(key, None)
            self.placer.forget(key)
            self.placer.release(key)
            entry = await self.requests.get(key)
            stored = decode(entry.value or b"", RequestRecord)
            if not stored.status.terminal:  # memory missed an open request: reload before the next step
                self._in_sync = False
        return duplicates

    def _record(self, record: RequestRecord, *, new: bool = False) -> RequestRecord:
        """Change a request's record in memory; the step stores it at its end."""
        record = msgspec.structs.replace(record, updated_at=utcnow())
        if record.status.terminal:
            self._open.pop(record.id, None)
        else:
            self._open[record.id] = record
        self._changed[record.id] = record
        if new:
            self._new.add(record.id)
        return record

    # --------------------------------------------------------------------------------------- events

    async def handle(self, msg: Msg) -> None:
        """Apply one event in memory; it runs inside its batch's step, which stores the outcome."""
        request_id, event = split_request_subject(msg.subject)
        token = request_id_var.set(request_id)
        try:
            if event == RequestEvent.SUBMITTED:
                self._on_submitted(decode(msg.data, RequestSubmitted))
            elif event == RequestEvent.STARTED:
                self._on_started(decode(msg.data, RequestStarted))
            elif event == RequestEvent.ATTEMPT_SUCCEEDED:
                self._on_succeeded(decode(msg.data, AttemptSucceeded))
            elif event == RequestEvent.ATTEMPT_FAILED:
                self._on_attempt_failed(decode(msg.data, AttemptFailed), _stream_seq(msg))
            elif event == RequestEvent.CANCEL_REQUESTED:
                self._on_cancel_requested(decode(msg.data, CancelRequested))
        finally:
            request_id_var.reset(token)

    def _on_submitted(self, event: RequestSubmitted) -> None:
        if event.request_id in self._open or event.request_id in self._changed:
            log.info("duplicate submission ignored")
            return
        record = self._record(
            RequestRecord(
                id=event.request_id,
                workflow_name=event.workflow_name,
                inputs=event.inputs,
                status=RequestStatus.PENDING,
                priority=event.priority,
                created_at=event.created_at,
                updated_at=event.created_at,
                batch_id=event.batch_id,
                execution_timeout_s=event.execution_timeout_s,
                traceparent=trace_headers().get("traceparent"),
                min_gpu_memory_gb=event.min_gpu_memory_gb,
            ),
            new=True,
        )
        breaker = self._open_breaker(record.min_gpu_memory_gb)
        if breaker is not None:
            self._finish_failed(record, FailureKind.NO_CAPACITY, f"no pod can be started for it: {breaker.diagnosis}")
            return
        self.placer.enqueue(record)
        self._demand_changed.set()
        log.info("request queued", extra={"workflow": record.workflow_name, "priority": record.priority})

    def _on_started(self, event: RequestStarted) -> None:
        record = self._current(event.request_id, event.attempt)
        if record is not None:
            self._record(msgspec.structs.replace(record, status=RequestStatus.RUNNING, prompt_id=event.prompt_id))

    def _on_succeeded(self, event: AttemptSucceeded) -> None:
        record = self._current(event.request_id, event.attempt)
        if record is None:
            return
        self.placer.release(record.id)
        self._record(msgspec.structs.replace(record, status=RequestStatus.COMPLETED, result=event.result))
        completed = RequestCompleted(request_id=record.id, attempt=event.attempt, result=event.result)
        self._notices.append(
            Notice(record.id, request_subject(record.id, RequestEvent.COMPLETED), completed, f"{record.id}.completed")
        )
        self._demand_changed.set()
        log.info("request completed", extra={"files": event.result.files, "pod_id": record.pod_id})

    def _on_cancel_requested(self, event: CancelRequested) -> None:
        """Pending: cancelled now. On a pod: flagged, and the executor running it stops it (it heard too)."""
        record = self._open.get(event.request_id)
        if record is None:
            return
        if record.status == RequestStatus.PENDING:
            self.placer.forget(record.id)
            self._demand_changed.set()
            self._cancelled(record)
        elif not record.cancel_requested:
            self._record(msgspec.structs.replace(record, cancel_requested=True))
            log.info("cancel requested while %s on %s", record.status, record.pod_id)

    def _cancelled(self, record: RequestRecord) -> None:
        self._record(msgspec.structs.replace(record, status=RequestStatus.CANCELLED, error="cancelled by request"))
        self._notices.append(
            Notice(
                record.id,
                request_subject(record.id, RequestEvent.CANCELLED),
                RequestCancelled(request_id=record.id, at=utcnow()),
                f"{record.id}.cancelled",
            )
        )
        log.info("request cancelled")

    def _on_attempt_failed(self, event: AttemptFailed, seq: int) -> None:
        """A pod fault is retried elsewhere: the pod is suspect (no work until pod-manager has probed it
        since), and the retry waits out a backoff; other failures, or the last attempt, end the request."""
        record = self._current(event.request_id, event.attempt)
        if record is None:
            return
        self.placer.release(record.id)
        self._demand_changed.set()
        note = AttemptNote(attempt=event.attempt, pod_id=event.pod_id, kind=event.kind, error=event.error)
        record = msgspec.structs.replace(record, attempt_log=[*record.attempt_log, note])
        if event.kind == FailureKind.CANCELLED or record.cancel_requested:
            self._cancelled(record)
            return
        if event.kind == FailureKind.POD_FAULT:
            self.placer.suspect(event.pod_id, seq)
        if event.kind == FailureKind.POD_FAULT and record.attempts < self.settings.max_attempts:
            delay = min(self.settings.retry_backoff_s * 2 ** (record.attempts - 1), MAX_RETRY_BACKOFF_S)
            log.warning("attempt %d failed on %s (%s); retrying in %.1fs on another pod", record.attempts,
                        event.pod_id, event.error, delay)  # fmt: skip
            requeued = self._record(
                msgspec.structs.replace(
                    record,
                    status=RequestStatus.PENDING,
                    pod_id=None,
                    pod_ip=None,
                    not_before=utcnow() + timedelta(seconds=delay),
                )
            )
            self.placer.enqueue(requeued, front=True)
            return
        self._finish_failed(record, event.kind, _attempts_error(record, event.error))

    def _current(self, request_id: str, attempt: int) -> RequestRecord | None:
        """The open record, if this event is about its current attempt (late events of old attempts, and
        events of finished requests, are moot)."""
        record = self._open.get(request_id)
        if record is None or record.attempts != attempt:
            log.info("stale event ignored", extra={"attempt": attempt})
            return None
        return record

    def _finish_failed(self, record: RequestRecord, kind: FailureKind, error: str) -> None:
        log.warning("request failed: %s", error, extra={"request_id": record.id, "kind": kind})
        self._record(msgspec.structs.replace(record, status=RequestStatus.FAILED, error=error, not_before=None))
        failed = RequestFailed(
            request_id=record.id, kind=kind, error=error, attempts=record.attempts, attempt_log=record.attempt_log
        )
        self._notices.append(Notice(record.id, request_subject(record.id, RequestEvent.FAILED), failed,
                                    f"{record.id}.failed"))  # fmt: skip

    # ------------------------------------------------------------------------------------ placement

    def _place(self) -> None:
        for placement in self.placer.place(self._live_manager()):
            waiting = self._open.get(placement.request_id)
            if waiting is None:
                self.placer.release(placement.request_id)
                continue
            pod = placement.pod
            assigned = self._record(
                msgspec.structs.replace(
                    waiting,
                    status=RequestStatus.ASSIGNED,
                    pod_id=pod.id,
                    pod_ip=pod.ip,
                    attempts=waiting.attempts + 1,
                    not_before=None,
                )
            )
            self._dispatches.append((assigned, pod))
            log.info("request assigned", extra={"request_id": assigned.id, "pod_id": pod.id})

    async def _send_assignment(self, record: RequestRecord, pod: PodRecord) -> None:
        """Send the assignment in the request's own trace, whichever event triggered the placement."""
        parent = propagate.extract({"traceparent": record.traceparent} if record.traceparent else {})
        token = otel_context.attach(parent)
        try:
            assignment = Assignment(
                request_id=record.id,
                attempt=record.attempts,
                workflow_name=record.workflow_name,
                inputs=record.inputs,
                pod_id=pod.id,
                pod_ip=pod.ip,
                comfyui_url=pod.comfyui_url or "",
                execution_timeout_s=record.execution_timeout_s,
            )
            assigned = RequestAssigned(request_id=record.id, pod_id=pod.id, attempt=record.attempts)
            _raise_first(
                await asyncio.gather(
                    self.bus.publish(
                        dispatch_subject(pod.id), assignment, msg_id=f"{record.id}.dispatch.{record.attempts}"
                    ),
                    self.bus.publish(
                        request_subject(record.id, RequestEvent.ASSIGNED),
                        assigned,
                        msg_id=f"{record.id}.assigned.{record.attempts}",
                    ),
                    return_exceptions=True,
                )
            )
        finally:
            otel_context.detach(token)

    def _on_pod(self, key: str, value: bytes | None) -> None:
        if value:
            self.placer.update_pod(decode(value, PodRecord))
        else:
            self.placer.remove_pod(key)
        self._pods_changed.set()

    def _on_fleet(self, key: str, value: bytes | None) -> None:
        if key != FLEET_STATUS_KEY:
            return
        try:
            fleet = decode(value, FleetStatus) if value else None
        except msgspec.DecodeError:
            log.error("unreadable fleet status left alone")
            return
        manager, breakers = self._live_manager(), self._fleet.breakers if self._fleet is not None else []
        self._fleet = fleet
        if self._live_manager() != manager or (fleet.breakers if fleet is not None else []) != breakers:
            self._pods_changed.set()  # pods may take work now (a new manager verified them), or requests must fail

    def _live_manager(self) -> str | None:
        """The pod-manager incarnation whose pods may take work: the one that beats now (none if it stopped)."""
        fleet = self._fleet
        return fleet.manager if fleet is not None and fleet.fresh(utcnow()) else None

    def _blocking_breakers(self) -> list[Breaker]:
        """Open circuit breakers of a live pod-manager (a dead one's may be stale)."""
        fleet, now = self._fleet, utcnow()
        return fleet.blocking(now) if fleet is not None and fleet.fresh(now) else []

    def _open_breaker(self, min_gpu_memory_gb: int) -> Breaker | None:
        return next((b for b in self._blocking_breakers() if b.min_gpu_memory_gb == min_gpu_memory_gb), None)

    async def _place_on_pod_changes(self) -> None:
        """Pods coming and going (from the KV watch) may free slots: place what waits."""
        while True:
            await self._pods_changed.wait()
            self._pods_changed.clear()
            try:
                async with self._step():
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("placement after a pod change failed (%s); will retry", exc)
                await asyncio.sleep(0.5)
                self._pods_changed.set()

    # ----------------------------------------------------------------------------------------- time

    async def _watch_time(self) -> None:
        """Once a second: fail requests that waited past the queue TTL, and runs that outlived their
        execution timeout by more than the grace (their executor is gone: a live one interrupts and reports
        on its own); the step then places what can run, so placement converges whatever a failure swallowed."""
        while True:
            await asyncio.sleep(1.0)
            try:
                async with self._step():
                    self._expire_waiting()
                    self._expire_running()
                    self._fail_unservable()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("timeout sweep failed (%s); will retry", exc)

    def _expire_waiting(self) -> None:
        note = self._fleet.note if self._fleet is not None else None
        for request_id in self.placer.expired(self.settings.queue_ttl_s):
            self.placer.forget(request_id)
            self._demand_changed.set()
            record = self._open.get(request_id)
            if record is not None:
                error = f"timed out: waited longer than the queue TTL ({self.settings.queue_ttl_s:.0f}s)"
                self._finish_failed(record, FailureKind.TIMEOUT, error + (f"; the fleet: {note}" if note else ""))

    def _fail_unservable(self) -> None:
        """Waiting requests of a GPU class whose circuit breaker is open fail now, with its diagnosis,
        instead of waiting out the queue TTL for pods that will not come."""
        for breaker in self._blocking_breakers():
            for request_id in self.placer.waiting_in_class(breaker.min_gpu_memory_gb):
                self.placer.forget(request_id)
                self._demand_changed.set()
                record = self._open.get(request_id)
                if record is not None:
                    error = f"no pod can be started for it: {breaker.diagnosis}"
                    self._finish_failed(record, FailureKind.NO_CAPACITY, error)

    def _expire_running(self) -> None:
        now = utcnow()
        for request_id in list(self.placer.on_pod()):
            record = self._open.get(request_id)
            if record is None:
                continue
            limit = (record.execution_timeout_s or 900.0) + self.settings.run_grace_s
            if (now - record.updated_at).total_seconds() > limit:
                self.placer.release(request_id)
                self._demand_changed.set()
                self._finish_failed(record, FailureKind.TIMEOUT, f"timed out: no outcome within {limit:.0f}s")

    async def _announce_demand(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._demand_changed.wait(), self.settings.demand_interval_s)
            self._demand_changed.clear()
            needs = [
                PodNeed(min_gpu_memory_gb=needs, waiting=waiting, running=running)
                for needs, (waiting, running) in sorted(self.placer.demand().items())
            ]
            demand = Demand(needs=needs, busy_pods=self.placer.busy_pods(), at=utcnow())
            with contextlib.suppress(Exception):
                await self.bus.publish_core(DEMAND_SUBJECT, demand)
            await asyncio.sleep(DEMAND_MIN_GAP_S)


def _stream_seq(msg: Msg) -> int:
    """The message's sequence in its stream (0 if unknown, e.g. a core NATS message in a test)."""
    try:
        return int(msg.metadata.sequence.stream)
    except Exception:
        return 0


def _attempts_error(record: RequestRecord, last_error: str) -> str:
    """The final error: the last attempt's, or — when several attempts failed — each one's pod and reason."""
    if len(record.attempt_log) <= 1:
        return last_error
    parts = "; ".join(f"#{n.attempt} on pod {n.pod_id}: {n.error}" for n in record.attempt_log)
    return f"failed after {len(record.attempt_log)} attempts: {parts}"


def _raise_first(results: Iterable[object]) -> None:
    """Raise the first exception among gathered results (the others were attempted all the same)."""
    for result in results:
        if isinstance(result, BaseException):
            raise result
