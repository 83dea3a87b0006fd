"""The scheduler: the only writer of request state, and the one who places requests on pods.

A FastStream app on NATS. It consumes the request events (submitted by the api; started, attempt_failed
and attempt_succeeded by executors; cancel_requested by the api), decides each with `lifecycle`, keeps
each request's record in KV `requests`, dispatches placed requests to their pod's work queue, publishes
the public terminal events and announces demand for pods.

Store, then announce, then ack. Events arrive in batches (a FastStream batch pull: what one fetch
returns, up to 64). The batch's events are applied to the records in memory, then one commit stores
every changed record (writes sent together), then sends the dispatches and announcements that waited
for them, and only then are the batch's events acked (manual acks). So nothing is announced or acked
before the state behind it is stored, and a dispatch never exists for a request the store still calls
pending. If the commit fails, the batch's events are redelivered after a delay (the consumer's delivery
rules, dead letters included), and memory is reloaded from the store before anything else is applied.
Timers and pod changes commit the same way, with no event behind them.

One replica decides. Any number may run: the one holding the scheduler lease (`runtime.lease`) consumes
and commits; the others stand by, connected, and take over when the lease lapses. Every write is fenced:
a record is written only if it is still at the revision this replica last read or wrote, and a new
holder first rewrites every open record (`_fence`), so the writes of a paused old leader that wakes are
refused — and it learns that it lost the lease and exits (to come back as a standby).

It follows pod-manager's heartbeat (KV `fleet`): work goes only to pods the live pod-manager verified,
and while a GPU class's circuit breaker is open its waiting requests fail with the breaker's diagnosis.
A pod fault makes the pod suspect here at once (see `placement`) and the retry waits out a backoff.

The demand it announces says, per GPU class, how much work waits and runs: each request counts its
preset's expected run time from the workflow catalogue (shipped, plus `WORKFLOWS_DIR`; divided by
VIBEWAVE_TIME_SCALE), so pod-manager's policies can scale on the queue's expected wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass

import msgspec
import nats.js.errors
from faststream import AckPolicy
from faststream.nats import KvWatch, PullSub
from nats.aio.msg import Msg
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, TracerProvider

from vibewave.contracts.events import (
    DEMAND_SUBJECT,
    DISPATCH_PREFIX,
    DISPATCH_STREAM,
    FLEET_BUCKET,
    FLEET_STATUS_KEY,
    LEASES_BUCKET,
    PODS_BUCKET,
    REQ_PREFIX,
    REQUESTS_BUCKET,
    REQUESTS_STREAM,
    SCHEDULER_CONSUMER,
    Assignment,
    AttemptFailed,
    AttemptSucceeded,
    Breaker,
    CancelRequested,
    Demand,
    FailureKind,
    FleetStatus,
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
    subject_template,
    utcnow,
)
from vibewave.contracts.models import RequestStatus
from vibewave.contracts.workflows import WorkflowCatalog, expected_run_s
from vibewave.runtime import broker as runtime
from vibewave.runtime.health import serve_liveness
from vibewave.runtime.lease import Lease
from vibewave.runtime.logs import request_id_var
from vibewave.runtime.metrics import Instruments, instruments
from vibewave.runtime.telemetry import MAX_LINKS, records_spans, trace_headers
from vibewave.scheduler import lifecycle
from vibewave.scheduler.lifecycle import Announcement, Decision, RetryPolicy
from vibewave.scheduler.placement import Placer
from vibewave.scheduler.settings import SchedulerSettings

log = logging.getLogger("vibewave.scheduler")

COMMIT_TIMEOUT_S = 20.0  # a commit stuck on NATS (e.g. across a server restart) gives up; its events come back
FETCH_BATCH = 64  # events fetched at once; they share one commit
LAPSE_WAIT_S = 30.0  # events in hand wait this long for a lapsed lease to be taken again, not failing meanwhile
# A change is announced at once, but at most one announcement per gap: a burst of requests (each one a
# change) becomes a few announcements instead of one per request, each waking pod-manager.
DEMAND_MIN_GAP_S = 0.02

EVENT_TYPES: dict[str, type[msgspec.Struct]] = {
    RequestEvent.SUBMITTED: RequestSubmitted,
    RequestEvent.STARTED: RequestStarted,
    RequestEvent.ATTEMPT_FAILED: AttemptFailed,
    RequestEvent.ATTEMPT_SUCCEEDED: AttemptSucceeded,
    RequestEvent.CANCEL_REQUESTED: CancelRequested,
}


@dataclass(frozen=True)
class Pending:
    """An announcement waiting for its record to be stored, and the trace it belongs to."""

    request_id: str
    announcement: Announcement
    traceparent: str | None


class SchedulerService:
    def __init__(self, settings: SchedulerSettings, tracer_provider: TracerProvider | None = None) -> None:
        self.settings = settings
        common = settings.common
        self.retry = RetryPolicy(max_attempts=settings.max_attempts, backoff_s=settings.retry_backoff_s)
        self.catalog = WorkflowCatalog(settings.workflows_dir)
        self.placer = Placer(aging_s=settings.aging_s, expected_s=self._expected_s)
        self._tracer = trace.get_tracer("vibewave.scheduler", tracer_provider=tracer_provider)
        self._recording = records_spans(tracer_provider)
        self.broker = runtime.new_broker("scheduler", common, tracer_provider, on_reconnect=self._on_reconnect)
        self._requests: KeyValue | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._demand_changed = asyncio.Event()
        self._pods_changed = asyncio.Event()
        self._lock = asyncio.Lock()  # one step (apply, then commit) at a time
        # Every open request's record as last changed. The scheduler is KV `requests`' only writer, so
        # (between commits) this is what the bucket holds: events are applied without a read round trip.
        self._open: dict[str, RequestRecord] = {}
        self._revisions: dict[str, int] = {}  # each open record's revision in KV: the fence of its next write
        self.lease: Lease | None = None
        self._fenced_epoch = 0  # the lease epoch whose takeover rewrote every open record
        self.ended = asyncio.Event()  # set when the lease was lost: the process exits, to return as a standby
        self._in_sync = False  # memory matches the store; false until loaded, and after a failed commit
        # What the next commit stores, and what waits for it
        self._changed: dict[str, RequestRecord] = {}
        self._new: set[str] = set()  # changed records written for the first time (`create`: never twice)
        self._dispatches: list[tuple[RequestRecord, PodRecord]] = []
        self._announcements: list[Pending] = []
        self._orphans: list[Pending] = []  # a failed commit's: sent after the reload if their record was stored
        self._fleet: FleetStatus | None = None  # pod-manager's heartbeat and circuit breakers (KV `fleet`)
        # Metrics: each change of a record (before, after), measured once its write is stored — so a count
        # is the leader's, once per change, and a failed commit's changes (redone from the redelivered
        # events) are not counted twice; and when each request of the next commit was placed.
        self._meters = instruments()
        self._meters.queue_source = self.placer.queue_depth
        self._observed: list[tuple[RequestRecord | None, RequestRecord]] = []
        self._placed_at: dict[str, float] = {}
        self._declare()

    def _declare(self) -> None:
        """The FastStream subscribers and publishers: what the scheduler hears and says, on which subjects."""
        broker, common = self.broker, self.settings.common
        self.consumer = runtime.consumer_spec(SCHEDULER_CONSUMER.durable, SCHEDULER_CONSUMER)
        events = broker.subscriber(
            f"{REQ_PREFIX}.*.*",
            stream=runtime.stream(REQUESTS_STREAM),
            durable=self.consumer.durable,
            config=runtime.consumer_config(self.consumer, common.replicas),
            pull_sub=PullSub(batch_size=FETCH_BATCH, timeout=5.0, batch=True),
            ack_policy=AckPolicy.MANUAL,
            title="scheduler: request events",
            description="submitted, started, attempt_failed, attempt_succeeded, cancel_requested",
        )
        events(self.on_events)
        runtime.prompt_batches(events)
        broker.subscriber("*", kv_watch=KvWatch(PODS_BUCKET.name, declare=False), title="scheduler: pods")(self.on_pod)
        broker.subscriber(
            FLEET_STATUS_KEY, kv_watch=KvWatch(FLEET_BUCKET.name, declare=False), title="scheduler: fleet"
        )(self.on_fleet)
        published = {
            RequestEvent.ASSIGNED: RequestAssigned,
            RequestEvent.COMPLETED: RequestCompleted,
            RequestEvent.FAILED: RequestFailed,
            RequestEvent.CANCELLED: RequestCancelled,
        }
        self._publishers = {
            event: broker.publisher(
                f"{REQ_PREFIX}.*.{event}",
                stream=runtime.stream(REQUESTS_STREAM),
                schema=schema,
                title=f"request {event}",
            )
            for event, schema in published.items()
        }
        self._dispatch = broker.publisher(
            f"{DISPATCH_PREFIX}.*", stream=runtime.stream(DISPATCH_STREAM), schema=Assignment, title="dispatch"
        )
        self._demand = broker.publisher(DEMAND_SUBJECT, schema=Demand, title="demand")

    @property
    def requests(self) -> KeyValue:
        assert self._requests is not None, "scheduler not started"
        return self._requests

    async def start(self) -> None:
        await runtime.connect(self.broker)
        await runtime.provision(self.broker, self.settings.common)
        await runtime.ensure_consumer(runtime.jetstream(self.broker), self.consumer, self.settings.common.replicas)
        js = runtime.jetstream(self.broker)
        self._requests = await js.key_value(REQUESTS_BUCKET.name)
        await serve_liveness(self.broker.connection, "scheduler", "request lifecycle and placement")
        self.lease = Lease(js, await js.key_value(LEASES_BUCKET.name), "scheduler")
        await self.lease.acquire()  # a standby waits here, connected: a takeover is a load away
        await self._step()  # fences and loads the open requests, sends any dispatch a predecessor left unsent
        await runtime.serve(self.broker)
        self._tasks = [
            asyncio.create_task(self._keep_lease(), name="scheduler:lease"),
            asyncio.create_task(self._place_on_pod_changes(), name="scheduler:placement"),
            asyncio.create_task(self._announce_demand(), name="scheduler:demand"),
            asyncio.create_task(self._watch_time(), name="scheduler:timeouts"),
        ]
        log.info("leading (scheduler lease epoch %d)", self.lease.epoch)

    async def stop(self) -> None:
        await runtime.cancel_tasks(self._tasks)
        await runtime.stop_broker(self.broker)
        if self.lease is not None:
            await self.lease.release()  # a standby takes over at once instead of after the TTL

    async def _keep_lease(self) -> None:
        assert self.lease is not None
        try:
            await self.lease.keep(on_retaken=lambda _: self._distrust())
            log.error("lost the scheduler lease: stopping, to come back as a standby")
        except Exception:
            log.exception("keeping the scheduler lease failed: stopping, to come back as a standby")
        self.ended.set()

    def _distrust(self) -> None:
        """The lease lapsed and was taken again: another leader may have written meanwhile."""
        self._in_sync = False

    async def _on_reconnect(self) -> None:
        """A NATS restart silences KV watches: open them again (they replay current values)."""
        await runtime.reopen_kv_watches(self.broker)

    # -------------------------------------------------------------------------------------- events

    async def on_events(self) -> None:
        """Apply a fetched batch of request events, commit once, then ack them (see the module docstring)."""
        batch = runtime.current_batch()
        keepalive = runtime.keep_alive(batch, self.consumer)
        try:
            events: list[tuple[Msg, msgspec.Struct]] = []
            for raw in batch.raw_message:
                _, event = split_request_subject(raw.subject)
                if event not in EVENT_TYPES:
                    await raw.ack()
                    continue
                try:
                    events.append((raw, msgspec.json.decode(raw.data, type=EVENT_TYPES[event])))
                except msgspec.DecodeError as exc:  # retried, then dead-lettered: the others go on
                    await runtime.settle_failure(raw, self.consumer, exc)
            if not events:
                return
            try:
                await self._leader().until_held(LAPSE_WAIT_S)  # the batch is kept alive meanwhile
                await self._step(lambda: self._decide_all(events))
            except Exception as exc:
                for raw, _ in events:
                    await runtime.settle_failure(raw, self.consumer, exc)
                return
            for raw, _ in events:
                with contextlib.suppress(Exception):  # a lost ack: the event comes back and changes nothing
                    await raw.ack()
        finally:
            keepalive.cancel()

    def _decide_all(self, events: list[tuple[Msg, msgspec.Struct]]) -> None:
        """Each event decided in its own request's trace (a batch has no one trace of its own)."""
        for raw, event in events:
            token = request_id_var.set(getattr(event, "request_id", None))
            try:
                with self._in_trace_of(raw):
                    self._decide(event, raw.metadata.sequence.stream)
            finally:
                request_id_var.reset(token)

    @contextlib.contextmanager
    def _in_trace_of(self, raw: Msg) -> Iterator[None]:
        """The message's trace context made current — with a span of its handling when spans are kept."""
        parent = propagate.extract(raw.headers or {})
        if self._recording:
            attributes = {"messaging.system": "nats", "messaging.destination.name": raw.subject}
            with self._tracer.start_as_current_span(
                f"{subject_template(raw.subject)} process",
                context=parent,
                kind=SpanKind.CONSUMER,
                attributes=attributes,
            ):
                yield
            return
        token = otel_context.attach(parent)
        try:
            yield
        finally:
            otel_context.detach(token)

    def _decide(self, event: msgspec.Struct, seq: int) -> None:
        now = utcnow()
        if isinstance(event, RequestSubmitted):
            self._on_submitted(event)
        elif isinstance(event, RequestStarted):
            running = self._apply(lifecycle.started(self._open.get(event.request_id), event, now))
            if running is not None and running.started_at is not None:
                self.placer.started(running.id, running.started_at.timestamp())
        elif isinstance(event, AttemptSucceeded):
            price = self.placer.price(event.pod_id)
            self._on_outcome(event.request_id, lifecycle.succeeded(self._open.get(event.request_id), event, now, price))
        elif isinstance(event, AttemptFailed):
            if event.kind == FailureKind.POD_FAULT and self._is_current(event.request_id, event.attempt):
                self.placer.suspect(event.pod_id, seq)
            self._on_outcome(
                event.request_id,
                lifecycle.attempt_failed(
                    self._open.get(event.request_id), event, self.retry, now, self.placer.price(event.pod_id)
                ),
            )
        elif isinstance(event, CancelRequested):
            record = self._open.get(event.request_id)
            decision = lifecycle.cancel_requested(record, now)
            if record is not None and record.status == RequestStatus.PENDING and decision.changed:
                self.placer.forget(record.id)
                self._demand_changed.set()
            self._apply(decision)

    def _on_submitted(self, event: RequestSubmitted) -> None:
        existing = self._open.get(event.request_id) or self._changed.get(event.request_id)
        decision = lifecycle.submitted(existing, event, trace_headers().get("traceparent"))
        record = self._apply(decision, new=True)
        if record is None:
            log.info("duplicate submission ignored")
            return
        breaker = self._open_breaker(record.min_gpu_memory_gb)
        if breaker is not None:
            self._apply(lifecycle.no_capacity(record, breaker.diagnosis, utcnow()))
            return
        unfetched = self._never_fetched(record)
        if unfetched is not None:
            self._apply(lifecycle.no_capacity(record, unfetched, utcnow()))
            return
        self.placer.enqueue(record)
        self._demand_changed.set()
        log.info("request queued", extra={"workflow": record.workflow_name, "priority": record.priority})

    def _on_outcome(self, request_id: str, decision: Decision) -> None:
        """An attempt ended: its pod is free; the request is finished or queued again for a retry."""
        if not decision.changed:
            log.info("stale event ignored")
            return
        self.placer.release(request_id)
        self._demand_changed.set()
        record = self._apply(decision)
        if record is not None and record.status == RequestStatus.PENDING:
            log.warning("attempt %d failed; retrying in %.1fs on another pod", record.attempts,
                        (decision.retry_after.total_seconds() if decision.retry_after else 0))  # fmt: skip
            self.placer.enqueue(record, front=True)
        elif record is not None and record.status == RequestStatus.COMPLETED:
            log.info("request completed", extra={"pod_id": record.pod_id})

    def _is_current(self, request_id: str, attempt: int) -> bool:
        record = self._open.get(request_id)
        return record is not None and record.attempts == attempt

    def _apply(self, decision: Decision, *, new: bool = False) -> RequestRecord | None:
        """Keep a decision's record in memory for the next commit, and its announcement for after it."""
        record = decision.record
        if record is None:
            return None
        self._observed.append((self._open.get(record.id), record))
        if record.status.terminal:
            self._open.pop(record.id, None)
            if decision.note:
                log.warning("request %s: %s", record.status, decision.note, extra={"request_id": record.id})
        else:
            self._open[record.id] = record
        self._changed[record.id] = record
        if new:
            self._new.add(record.id)
        if decision.announcement is not None:
            self._announcements.append(Pending(record.id, decision.announcement, record.traceparent))
        return record

    # ------------------------------------------------------------------------------------- commits

    async def _step(self, change: Callable[[], None] | None = None) -> None:
        """One step: reload memory if it is not trusted, apply `change`, place what can run, store, send.
        A failed step leaves memory untrusted (the next step reloads it) and raises."""
        async with self._lock:
            try:
                async with asyncio.timeout(COMMIT_TIMEOUT_S):
                    self._leader().check()
                    if not self._in_sync:
                        await self._load()
                    if change is not None:
                        change()
                    await self._commit()
            except BaseException:
                self._in_sync = False
                self._orphans += self._announcements
                self._changed, self._new, self._dispatches, self._announcements = {}, set(), [], []
                self._observed, self._placed_at = [], {}
                raise

    def _leader(self) -> Lease:
        assert self.lease is not None, "scheduler not started"
        return self.lease

    async def _load(self) -> None:
        """Rebuild memory from the store: the open requests, queued or on their pods — fenced first if
        this replica has just taken the lease.

        A failed commit's writes may still have landed (the client sends what it buffered once it has
        reconnected), so its announcements go out if their record is stored as finished; else the state
        they announced is derived again from the redelivered events."""
        js = runtime.jetstream(self.broker)
        open_requests: list[RequestRecord] = []
        finished: set[str] = set()
        revisions: dict[str, int] = {}
        for key, (value, revision) in (await runtime.kv_entries(js, self.requests, REQUESTS_BUCKET.name)).items():
            try:
                record = runtime.decode(value, RequestRecord)
            except msgspec.DecodeError:
                log.error("unreadable record %s left alone", key)
                continue
            if record.status.terminal:
                finished.add(record.id)
            else:
                open_requests.append(record)
                revisions[record.id] = revision
        epoch = self._leader().epoch
        if self._fenced_epoch != epoch:
            revisions = await self._fence(open_requests, revisions)
            self._fenced_epoch = epoch
        self._revisions = revisions
        self._announcements += [pending for pending in self._orphans if pending.request_id in finished]
        self._orphans = []
        self._open = {record.id: record for record in open_requests}
        self.placer.restore(open_requests)
        await self._redispatch(r for r in open_requests if r.status == RequestStatus.ASSIGNED)
        self._in_sync = True
        log.info("loaded %d open requests", len(open_requests))

    async def _fence(self, records: list[RequestRecord], revisions: dict[str, int]) -> dict[str, int]:
        """A takeover rewrites every open record (revision-checked), so each write a paused old leader
        still has in hand is refused, whichever record it touches. Returns the new revisions; a refusal
        means another replica wrote meanwhile (it still thinks it leads): this load fails and is redone."""
        written = await runtime.kv_write_many(
            runtime.jetstream(self.broker),
            self.requests,
            REQUESTS_BUCKET.name,
            {record.id: runtime.encode(record) for record in records},
            last=revisions,
        )
        _raise_first(result for result in written.values() if isinstance(result, BaseException))
        log.info("fenced %d open requests at lease epoch %d", len(records), self._leader().epoch)
        return {key: result for key, result in written.items() if isinstance(result, int)}

    async def _redispatch(self, assigned: Iterable[RequestRecord]) -> None:
        """Send assigned requests' dispatches again: an earlier commit may have stored an assignment and
        stopped before sending it. Harmless if it had been sent: the dedupe id drops a repeat within the
        window, and an executor that gets it twice finds the prompt (same id per attempt) already on the pod."""
        pods = await runtime.jetstream(self.broker).key_value(PODS_BUCKET.name)
        now = utcnow()
        for record in assigned:
            try:
                entry = await pods.get(record.pod_id or "")
                pod = runtime.decode(entry.value or b"", PodRecord)
            except (nats.js.errors.KeyNotFoundError, msgspec.DecodeError):
                pod = None
            if pod is None or pod.status not in (PodStatus.READY, PodStatus.SUSPECT):
                self.placer.release(record.id)
                requeued = self._apply(lifecycle.pod_lost(record, now, self.placer.price(record.pod_id)))
                if requeued is not None:
                    self.placer.enqueue(requeued, front=True)
                continue
            self._dispatches.append((record, pod))

    async def _commit(self) -> None:
        """Place what can run, store every changed record (writes in flight together), then send what
        waited for them. Repeats while that changes anything (a refused duplicate frees its pod)."""
        while True:
            self._place()
            if not (self._changed or self._dispatches or self._announcements):
                return
            changed, new, self._changed, self._new = self._changed, self._new, {}, set()
            observed, self._observed = self._observed, []
            duplicates = await self._store(changed, new)
            for before, after in observed:
                if after.id not in duplicates:
                    measure(self._meters, before, after)
            if duplicates:
                self._dispatches = [(r, pod) for r, pod in self._dispatches if r.id not in duplicates]
                self._announcements = [p for p in self._announcements if p.request_id not in duplicates]
            sends: list[Awaitable[object]] = [self._send_assignment(record, pod) for record, pod in self._dispatches]
            sends += [self._announce(pending) for pending in self._announcements]
            _raise_first(await asyncio.gather(*sends, return_exceptions=True))
            if self._dispatches:
                self._demand_changed.set()
            self._dispatches, self._announcements = [], []

    async def _store(self, changed: dict[str, RequestRecord], new: set[str]) -> set[str]:
        """Write the records — a finished one with the retention as its TTL, so it expires from KV (and
        from every index that follows it) once the retention has passed; returns the ids refused as
        duplicates (a redelivered submission of a request that is already stored and finished)."""
        retention = self.settings.common.retention_s
        unknown = [key for key in changed if key not in new and key not in self._revisions]
        if unknown:
            raise StaleMemory(f"no revision known for {len(unknown)} records (e.g. {unknown[0]}): reloading")
        results = await runtime.kv_write_many(
            runtime.jetstream(self.broker),
            self.requests,
            REQUESTS_BUCKET.name,
            {key: runtime.encode(record) for key, record in changed.items()},
            new=new,
            last={key: self._revisions[key] for key in changed if key not in new},
            ttls={key: retention for key, record in changed.items() if record.status.terminal},
        )
        for key, result in results.items():
            if isinstance(result, int) and not changed[key].status.terminal:
                self._revisions[key] = result
            elif isinstance(result, int):
                self._revisions.pop(key, None)
        refused = {key for key, result in results.items() if isinstance(result, KeyWrongLastSequenceError)}
        if refused - new:  # a record changed under us: another replica wrote it
            raise StaleMemory(f"{len(refused - new)} writes refused by their revision check: another scheduler wrote")
        duplicates = refused & new
        _raise_first(result for result in results.values() if isinstance(result, BaseException) and
                     not isinstance(result, KeyWrongLastSequenceError))  # fmt: skip
        for key in duplicates:
            log.info("duplicate submission ignored", extra={"request_id": key})
            self._open.pop(key, None)
            self.placer.forget(key)
            self.placer.release(key)
            entry = await self.requests.get(key)
            stored = runtime.decode(entry.value or b"", RequestRecord)
            if not stored.status.terminal:  # memory missed an open request: reload before the next change
                self._in_sync = False
        return duplicates

    async def _announce(self, pending: Pending) -> None:
        """Publish an announcement in its request's own trace, whichever step stored it."""
        parent = propagate.extract({"traceparent": pending.traceparent} if pending.traceparent else {})
        token = otel_context.attach(parent)
        try:
            event = pending.announcement.subject_event
            await runtime.publish(
                self._publishers[event],
                pending.announcement.message,
                subject=request_subject(pending.request_id, event),
                msg_id=pending.announcement.msg_id,
            )
        finally:
            otel_context.detach(token)

    # ------------------------------------------------------------------------------------ placement

    def _place(self) -> None:
        now = utcnow()
        for placement in self.placer.place(self._live_manager()):
            waiting = self._open.get(placement.request_id)
            if waiting is None:
                self.placer.release(placement.request_id)
                continue
            pod = placement.pod
            assigned = self._apply(lifecycle.placed(waiting, pod.id, pod.ip, now, pod))
            if assigned is None:
                self.placer.release(placement.request_id)
                continue
            self._dispatches.append((assigned, pod))
            self._placed_at[assigned.id] = time.perf_counter()
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
                pod_name=pod.name,
            )
            assigned = RequestAssigned(request_id=record.id, pod_id=pod.id, attempt=record.attempts)
            _raise_first(
                await asyncio.gather(
                    runtime.publish(
                        self._dispatch,
                        assignment,
                        subject=dispatch_subject(pod.id),
                        msg_id=f"{record.id}.dispatch.{record.attempts}",
                    ),
                    runtime.publish(
                        self._publishers[RequestEvent.ASSIGNED],
                        assigned,
                        subject=request_subject(record.id, RequestEvent.ASSIGNED),
                        msg_id=f"{record.id}.assigned.{record.attempts}",
                    ),
                    return_exceptions=True,
                )
            )
            placed = self._placed_at.pop(record.id, None)  # None: a dispatch sent again after a reload
            if placed is not None:
                self._meters.dispatch_latency.record(time.perf_counter() - placed)
        finally:
            otel_context.detach(token)

    async def on_pod(self) -> None:
        """KV `pods`: a pod appeared, changed or went away."""
        entry = runtime.current_kv_entry()
        if runtime.kv_deleted(entry.operation) or not entry.value:
            self.placer.remove_pod(entry.key)
        else:
            try:
                self.placer.update_pod(runtime.decode(entry.value, PodRecord))
            except msgspec.DecodeError:
                log.error("unreadable pod record %s left alone", entry.key)
                return
        self._pods_changed.set()

    async def on_fleet(self) -> None:
        """KV `fleet`: pod-manager's heartbeat and circuit breakers."""
        entry = runtime.current_kv_entry()
        try:
            fleet = (
                None
                if runtime.kv_deleted(entry.operation) or not entry.value
                else runtime.decode(entry.value, FleetStatus)
            )
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

    def _never_fetched(self, record: RequestRecord) -> str | None:
        """Why no pod will ever have this request's model files (None: one may): the live pod-manager's
        new pods do not fetch them and no pod lists them."""
        fleet = self._fleet
        if not record.models or fleet is None or fleet.models is None or not fleet.fresh(utcnow()):
            return None
        missing = sorted(set(record.models) - set(fleet.models))
        if not missing or self.placer.listing(record.models):
            return None
        return (
            f"its graph loads {', '.join(missing)}, which the fleet's pods do not fetch (add its workflow to "
            "POD_WORKFLOWS, or set POD_OPTIONAL_MODELS=true for optional files, on pod-manager)"
        )

    def _open_breaker(self, min_gpu_memory_gb: int) -> Breaker | None:
        return next((b for b in self._blocking_breakers() if b.min_gpu_memory_gb == min_gpu_memory_gb), None)

    async def _place_on_pod_changes(self) -> None:
        """Pods coming and going (from the KV watch) may free slots: place what waits."""
        while True:
            await self._pods_changed.wait()
            self._pods_changed.clear()
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("placement after a pod change failed (%s); will retry", exc)
                await asyncio.sleep(0.5)
                self._pods_changed.set()

    # ----------------------------------------------------------------------------------------- time

    async def _watch_time(self) -> None:
        """Once a second: fail requests that waited past the queue TTL, runs that outlived their
        execution timeout by more than the grace, and waiting requests no pod can be started for; the
        commit then places what can run, so placement converges whatever a failure swallowed."""
        while True:
            await asyncio.sleep(1.0)
            try:
                await self._step(self._expire)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("timeout sweep failed (%s); will retry", exc)

    def _expire(self) -> None:
        now = utcnow()
        note = self._fleet.note if self._fleet is not None else None
        for request_id in self.placer.expired(self.settings.queue_ttl_s):
            self._end_waiting(request_id, lambda r: lifecycle.queue_timeout(r, self.settings.queue_ttl_s, note, now))
        for breaker in self._blocking_breakers():
            fail = functools.partial(lifecycle.no_capacity, diagnosis=breaker.diagnosis, now=now)
            for request_id in self.placer.waiting_in_class(breaker.min_gpu_memory_gb):
                self._end_waiting(request_id, fail)
        for waiting in self.placer.waiting():
            unfetched = self._never_fetched(waiting)
            if unfetched is not None:
                self._end_waiting(waiting.id, functools.partial(lifecycle.no_capacity, diagnosis=unfetched, now=now))
        for request_id in list(self.placer.on_pod()):
            record = self._open.get(request_id)
            limit = lifecycle.run_overdue(record, 900.0, self.settings.run_grace_s, now) if record else None
            if record is not None and limit is not None:
                self.placer.release(request_id)
                self._demand_changed.set()
                self._apply(lifecycle.run_timeout(record, limit, now, self.placer.price(record.pod_id)))

    def _end_waiting(self, request_id: str, decide: Callable[[RequestRecord], Decision]) -> None:
        self.placer.forget(request_id)
        self._demand_changed.set()
        record = self._open.get(request_id)
        if record is not None:
            self._apply(decide(record))

    def _expected_s(self, record: RequestRecord) -> float:
        """The request's expected run seconds: its preset's catalogue midpoint, time-compressed like every
        duration of a benchmark (0: unknown, and pod-manager assumes its default)."""
        seconds = expected_run_s(self.catalog, record.workflow_name, record.preset)
        return seconds / self.settings.common.time_scale if seconds else 0.0

    async def _announce_demand(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._demand_changed.wait(), self.settings.demand_interval_s)
            self._demand_changed.clear()
            with contextlib.suppress(Exception):
                await self._demand.publish(self.demand())
            await asyncio.sleep(DEMAND_MIN_GAP_S)

    def demand(self) -> Demand:
        """What the queue needs of the fleet now (the pods the oldest waiting requests' traces link to)."""
        return Demand(needs=self.placer.needs(traces=MAX_LINKS), busy_pods=self.placer.busy_pods(), at=utcnow())


def measure(meters: Instruments, before: RequestRecord | None, after: RequestRecord) -> None:
    """One stored change of a request, in the metrics: its submission; the pod time (and cost) its
    attempt was billed; its wait until its first assignment (creation → placed, booting pods included);
    its end (final status), and — if it ended on a pod — its run (`timings.run_ms`: the executor's run
    of a completed request, else placed → end)."""
    workflow = {"workflow": after.workflow_name}
    if before is None:
        meters.submitted.add(1, workflow)
        return
    billed = after.gpu_seconds - before.gpu_seconds
    if billed > 0:
        meters.gpu_usage.add(billed, workflow)
        meters.gpu_cost.add(max(0.0, after.cost - before.cost), workflow)
    first = before.status == RequestStatus.PENDING and after.status == RequestStatus.ASSIGNED and after.attempts == 1
    if first and after.assigned_at is not None:
        meters.queue_wait.record(max(0.0, (after.assigned_at - after.created_at).total_seconds()), workflow)
    if after.status.terminal and not before.status.terminal:
        meters.requests.add(1, {**workflow, "status": after.status.value})
        on_pod = before.status in (RequestStatus.ASSIGNED, RequestStatus.RUNNING)
        if on_pod and after.timings is not None:
            meters.run_duration.record(after.timings.run_ms / 1000, workflow)


class StaleMemory(Exception):
    """Memory no longer matches the store: the step fails and the next one reloads."""


def _raise_first(results: Iterable[object]) -> None:
    """Raise the first exception among gathered results (the others were attempted all the same)."""
    for result in results:
        if isinstance(result, BaseException):
            raise result
