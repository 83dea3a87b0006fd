"""The scheduler: the only writer of request state, and the one who places requests on pods.

It consumes the request events (submitted by the api; started, attempt_failed and completed by
executors), keeps each request's record in KV `requests`, dispatches placed requests to their pod's
work queue, and announces demand for pods. Handling is sequential, so each record has one writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

import msgspec
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.kv import KeyValue
from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.trace import TracerProvider

from vibewave.contracts.events import (
    DEMAND_SUBJECT,
    PODS_BUCKET,
    REQUESTS_BUCKET,
    SCHEDULER_CONSUMER,
    Assignment,
    AttemptFailed,
    CancelRequested,
    Demand,
    FailureKind,
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
from vibewave.contracts.runtime.bus import Bus, decode, encode, trace_headers
from vibewave.contracts.runtime.health import serve_liveness
from vibewave.contracts.runtime.logs import request_id_var
from vibewave.scheduler.placement import Placer
from vibewave.scheduler.settings import SchedulerSettings

log = logging.getLogger("vibewave.scheduler")

STEP_TIMEOUT_S = 20.0  # a step stuck on NATS (e.g. across a server restart) gives up and is tried again


class SchedulerService:
    def __init__(self, settings: SchedulerSettings, tracer_provider: TracerProvider | None = None) -> None:
        self.settings = settings
        self.tracer_provider = tracer_provider
        self.placer = Placer(aging_s=settings.aging_s)
        self._bus: Bus | None = None
        self._requests: KeyValue | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._demand_changed = asyncio.Event()
        self._lock = asyncio.Lock()  # events and pod changes both place requests: one at a time
        self._pods_changed = asyncio.Event()
        self._liveness: object | None = None

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
        open_requests = await self._load_open_requests()
        self.placer.restore(open_requests)
        await self._redispatch(r for r in open_requests if r.status == RequestStatus.ASSIGNED)
        self._tasks = [
            asyncio.create_task(self.bus.follow_kv(PODS_BUCKET, self._on_pod), name="scheduler:pods"),
            asyncio.create_task(self._place_on_pod_changes(), name="scheduler:placement"),
            asyncio.create_task(self._announce_demand(), name="scheduler:demand"),
            asyncio.create_task(self._watch_time(), name="scheduler:timeouts"),
        ]
        self.bus.consume(SCHEDULER_CONSUMER, self.handle, replicas=common.replicas)
        self._liveness = await serve_liveness(self.bus.nc, "scheduler", "request lifecycle and placement")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._bus is not None:
            await self._bus.close()

    async def _redispatch(self, assigned: Iterable[RequestRecord]) -> None:
        """Send assigned requests' dispatches again: an earlier scheduler may have stopped between recording
        an assignment and sending it. Harmless if it had been sent: the dedupe id drops a repeat within the
        window, and an executor that gets it twice finds the prompt (same id per attempt) already on the pod."""
        pods = await self.bus.kv(PODS_BUCKET)
        for record in assigned:
            try:
                entry = await pods.get(record.pod_id or "")
                pod = decode(entry.value or b"", PodRecord)
            except (nats.js.errors.KeyNotFoundError, msgspec.DecodeError):
                pod = None
            if pod is None or pod.status != PodStatus.READY:
                self.placer.release(record.id)
                requeued = msgspec.structs.replace(record, status=RequestStatus.PENDING, pod_id=None, pod_ip=None)
                await self._save(requeued)
                self.placer.enqueue(requeued, front=True)
                continue
            await self._dispatch(record, pod)

    async def _load_open_requests(self) -> list[RequestRecord]:
        records: list[RequestRecord] = []
        try:
            keys = await self.requests.keys()
        except nats.js.errors.NoKeysError:
            return records
        for key in keys:
            entry = await self.requests.get(key)
            if entry.value:
                record = decode(entry.value, RequestRecord)
                if not record.status.terminal:
                    records.append(record)
        log.info("restored %d open requests", len(records))
        return records

    # --------------------------------------------------------------------------------------- events

    async def handle(self, msg: Msg) -> None:
        request_id, event = split_request_subject(msg.subject)
        token = request_id_var.set(request_id)
        try:
            async with self._lock:
                if event == RequestEvent.SUBMITTED:
                    await self._on_submitted(decode(msg.data, RequestSubmitted))
                elif event == RequestEvent.STARTED:
                    await self._on_started(decode(msg.data, RequestStarted))
                elif event == RequestEvent.COMPLETED:
                    await self._on_completed(decode(msg.data, RequestCompleted))
                elif event == RequestEvent.ATTEMPT_FAILED:
                    await self._on_attempt_failed(decode(msg.data, AttemptFailed))
                elif event == RequestEvent.CANCEL_REQUESTED:
                    await self._on_cancel_requested(decode(msg.data, CancelRequested))
                await self._place()
        finally:
            request_id_var.reset(token)

    async def _on_submitted(self, event: RequestSubmitted) -> None:
        now = utcnow()
        record = RequestRecord(
            id=event.request_id,
            workflow_name=event.workflow_name,
            inputs=event.inputs,
            status=RequestStatus.PENDING,
            priority=event.priority,
            created_at=event.created_at,
            updated_at=now,
            batch_id=event.batch_id,
            execution_timeout_s=event.execution_timeout_s,
            traceparent=trace_headers().get("traceparent"),
        )
        try:
            await self.requests.create(record.id, encode(record))
        except nats.js.errors.KeyWrongLastSequenceError:
            log.info("duplicate submission ignored")
            return
        self.placer.enqueue(record)
        self._demand_changed.set()
        log.info("request queued", extra={"workflow": record.workflow_name, "priority": record.priority})

    async def _on_started(self, event: RequestStarted) -> None:
        record = await self._current(event.request_id, event.attempt)
        if record is None:
            return
        await self._save(msgspec.structs.replace(record, status=RequestStatus.RUNNING, prompt_id=event.prompt_id))

    async def _on_completed(self, event: RequestCompleted) -> None:
        record = await self._current(event.request_id, event.attempt)
        if record is None:
            return
        self.placer.release(record.id)
        await self._save(msgspec.structs.replace(record, status=RequestStatus.COMPLETED, result=event.result))
        self._demand_changed.set()
        log.info("request completed", extra={"files": event.result.files, "pod_id": record.pod_id})

    async def _on_cancel_requested(self, event: CancelRequested) -> None:
        """Pending: cancelled now. On a pod: flagged, and the executor running it stops it (it heard too)."""
        record = await self._read(event.request_id)
        if record is None or record.status.terminal:
            return
        if record.status == RequestStatus.PENDING:
            self.placer.forget(record.id)
            self._demand_changed.set()
            await self._cancelled(record)
        elif not record.cancel_requested:
            await self._save(msgspec.structs.replace(record, cancel_requested=True))
            log.info("cancel requested while %s on %s", record.status, record.pod_id)

    async def _cancelled(self, record: RequestRecord) -> None:
        await self._save(msgspec.structs.replace(record, status=RequestStatus.CANCELLED, error="cancelled by request"))
        await self.bus.publish(
            request_subject(record.id, RequestEvent.CANCELLED),
            RequestCancelled(request_id=record.id, at=utcnow()),
            msg_id=f"{record.id}.cancelled",
        )
        log.info("request cancelled")

    async def _on_attempt_failed(self, event: AttemptFailed) -> None:
        record = await self._current(event.request_id, event.attempt)
        if record is None:
            return
        self.placer.release(record.id)
        self._demand_changed.set()
        if event.kind == FailureKind.CANCELLED or record.cancel_requested:
            await self._cancelled(record)
            return
        retry = event.kind == FailureKind.POD_FAULT and record.attempts < self.settings.max_attempts
        if retry:
            log.warning("attempt %d failed on %s (%s); retrying", record.attempts, event.pod_id, event.error)
            requeued = msgspec.structs.replace(record, status=RequestStatus.PENDING, pod_id=None, pod_ip=None)
            await self._save(requeued)
            self.placer.enqueue(requeued, front=True)
            return
        await self._finish_failed(record, event.kind, event.error)

    async def _read(self, request_id: str) -> RequestRecord | None:
        try:
            entry = await self.requests.get(request_id)
        except nats.js.errors.KeyNotFoundError:
            log.warning("event for unknown request ignored")
            return None
        return decode(entry.value, RequestRecord) if entry.value else None

    async def _current(self, request_id: str, attempt: int) -> RequestRecord | None:
        """The record, if this event is about its current attempt (late events of old attempts are moot)."""
        record = await self._read(request_id)
        if record is None:
            return None
        if record.status.terminal or record.attempts != attempt:
            log.info("stale event ignored", extra={"status": record.status, "attempt": attempt})
            return None
        return record

    async def _save(self, record: RequestRecord) -> None:
        record = msgspec.structs.replace(record, updated_at=utcnow())
        await self.requests.put(record.id, encode(record))

    # ------------------------------------------------------------------------------------ placement

    async def _place(self) -> None:
        for placement in self.placer.place():
            entry = await self.requests.get(placement.request_id)
            record = decode(entry.value or b"", RequestRecord)
            pod = placement.pod
            record = msgspec.structs.replace(
                record,
                status=RequestStatus.ASSIGNED,
                pod_id=pod.id,
                pod_ip=pod.ip,
                attempts=record.attempts + 1,
            )
            await self._save(record)
            await self._dispatch(record, pod)
            self._demand_changed.set()

    async def _dispatch(self, record: RequestRecord, pod: PodRecord) -> None:
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
            await self.bus.publish(
                dispatch_subject(pod.id), assignment, msg_id=f"{record.id}.dispatch.{record.attempts}"
            )
            await self.bus.publish(
                request_subject(record.id, RequestEvent.ASSIGNED),
                RequestAssigned(request_id=record.id, pod_id=pod.id, attempt=record.attempts),
                msg_id=f"{record.id}.assigned.{record.attempts}",
            )
        finally:
            otel_context.detach(token)
        log.info("request assigned", extra={"request_id": record.id, "pod_id": pod.id})

    def _on_pod(self, key: str, value: bytes | None) -> None:
        if value:
            self.placer.update_pod(decode(value, PodRecord))
        else:
            self.placer.remove_pod(key)
        self._pods_changed.set()

    async def _place_on_pod_changes(self) -> None:
        """Pods coming and going (from the KV watch) may free slots: place what waits."""
        while True:
            await self._pods_changed.wait()
            self._pods_changed.clear()
            try:
                async with asyncio.timeout(STEP_TIMEOUT_S), self._lock:
                    await self._place()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("placement after a pod change failed (%s); will retry", exc)
                await asyncio.sleep(0.5)
                self._pods_changed.set()

    async def _watch_time(self) -> None:
        """Once a second: fail requests that waited past the queue TTL, and runs that outlived their
        execution timeout by more than the grace (their executor is gone: a live one interrupts and reports
        on its own); then place what can run, so placement converges whatever trigger a failure swallowed."""
        while True:
            await asyncio.sleep(1.0)
            try:
                async with asyncio.timeout(STEP_TIMEOUT_S), self._lock:
                    await self._expire_waiting()
                    await self._expire_running()
                    await self._place()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("timeout sweep failed (%s); will retry", exc)

    async def _expire_waiting(self) -> None:
        for request_id in self.placer.expired(self.settings.queue_ttl_s):
            record = await self._read(request_id)
            self.placer.forget(request_id)
            self._demand_changed.set()
            if record is not None and not record.status.terminal:
                await self._finish_failed(
                    record,
                    FailureKind.TIMEOUT,
                    f"timed out: waited longer than the queue TTL ({self.settings.queue_ttl_s:.0f}s)",
                )

    async def _expire_running(self) -> None:
        now = utcnow()
        for request_id in list(self.placer.on_pod()):
            record = await self._read(request_id)
            if record is None or record.status.terminal:
                continue
            limit = (record.execution_timeout_s or 900.0) + self.settings.run_grace_s
            if (now - record.updated_at).total_seconds() > limit:
                self.placer.release(request_id)
                self._demand_changed.set()
                await self._finish_failed(record, FailureKind.TIMEOUT, f"timed out: no outcome within {limit:.0f}s")

    async def _finish_failed(self, record: RequestRecord, kind: FailureKind, error: str) -> None:
        log.warning("request failed: %s", error, extra={"request_id": record.id, "kind": kind})
        await self._save(msgspec.structs.replace(record, status=RequestStatus.FAILED, error=error))
        await self.bus.publish(
            request_subject(record.id, RequestEvent.FAILED),
            RequestFailed(request_id=record.id, kind=kind, error=error, attempts=record.attempts),
            msg_id=f"{record.id}.failed",
        )

    async def _announce_demand(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._demand_changed.wait(), self.settings.demand_interval_s)
            self._demand_changed.clear()
            demand = Demand(by_workflow=self.placer.demand(), busy_pods=self.placer.busy_pods(), at=utcnow())
            with contextlib.suppress(Exception):
                await self.bus.publish_core(DEMAND_SUBJECT, demand)
