"""What the HTTP handlers call: submit requests, read them, fetch files, check health — all over NATS.

The api never writes request state: it publishes `submitted` and reads what the scheduler recorded.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Callable
from uuid import uuid4

import msgspec
import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue
from opentelemetry.trace import TracerProvider

from vibewave.api.auth import OPEN, KeyStore, Principal
from vibewave.api.follow import IndexFollower
from vibewave.api.index import RequestIndex
from vibewave.api.limits import Limits
from vibewave.api.settings import ApiSettings
from vibewave.api.uploads import Uploads
from vibewave.api.webhooks import WebhookSender
from vibewave.contracts.events import (
    BATCHES_BUCKET,
    IDEMPOTENCY_BUCKET,
    REQ_PREFIX,
    REQUESTS_STREAM,
    BatchMembers,
    CancelRequested,
    PodAdminReply,
    PodAdminRequest,
    PodOperation,
    RequestEvent,
    RequestProgress,
    RequestRecord,
    RequestSubmitted,
    pod_rpc_subject,
    request_subject,
    utcnow,
)
from vibewave.contracts.models import (
    ActivePod,
    BatchStatus,
    ComfyUIRequest,
    ComponentHealth,
    HealthReport,
    Priority,
    QueueStats,
    QueueStatus,
    RequestStatus,
    RequestSummary,
    WebhookSpec,
)
from vibewave.contracts.workflows import Workflow, WorkflowCatalog, expected_run_s
from vibewave.runtime import broker as runtime
from vibewave.runtime.broker import decode
from vibewave.runtime.health import SERVICE_NAMES, ping
from vibewave.runtime.storage import FileStore, StoredObject, open_file_store

log = logging.getLogger("vibewave.api")

REQUEST_ID = re.compile(r"^req-[0-9a-f]{16}$")
BATCH_ID = re.compile(r"^batch-[0-9a-f]{16}$")
UNFINISHED = (RequestStatus.PENDING, RequestStatus.ASSIGNED, RequestStatus.RUNNING)
FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")


class Unavailable(Exception):
    """NATS could not take the request; nothing was accepted."""


class IndexLoading(Exception):
    """A read that needs the index came before its first load: answered 503, never a partial view."""

    def __init__(self) -> None:
        super().__init__("the request index is loading; retry in a moment")


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with a different request body."""


class Submission(msgspec.Struct, kw_only=True):
    """What one create call submits: its requests (one per prompt for a batch) under one key."""

    fingerprint: str
    batch_id: str | None
    events: list[RequestSubmitted]


def new_request_id() -> str:
    return f"req-{uuid4().hex[:16]}"


def new_batch_id() -> str:
    return f"batch-{uuid4().hex[:16]}"


class AlreadyFinished(Exception):
    """A cancel came for a request that has already ended."""

    def __init__(self, request: ComfyUIRequest) -> None:
        super().__init__(f"Request already {request.status}; there is nothing to cancel")
        self.request = request


class Gateway:
    """The api's side of NATS: one FastStream broker (started and stopped by the app's lifespan), its two
    publishers, the progress subscriber and the index of requests and pods.

    Some calls use the broker's raw connection where FastStream has no equivalent: reading a stream's
    last message on a subject (`get_last_msg`), the service-API pings of `/health`, and KV create/get
    for the idempotency keys. Files are read through `files`, the configured `FileStore`."""

    def __init__(
        self,
        settings: ApiSettings,
        tracer_provider: TracerProvider | None = None,
        *,
        before_load: Callable[[], object] | None = None,
    ) -> None:
        self.settings = settings
        self.tracer_provider = tracer_provider
        self.catalog = WorkflowCatalog(settings.workflows_dir)
        self.index = RequestIndex()
        self.started_at = time.monotonic()
        common = settings.common
        self.broker = runtime.new_broker("api", common, tracer_provider, on_reconnect=self._reconnected)
        self.follower = IndexFollower(self.broker, self.index, common.retention_s, before_load=before_load)
        self.keys = KeyStore(self.broker, settings.admin_key)
        self.limits = Limits(self.broker, self.index)
        self.webhooks = WebhookSender(
            self.broker, settings.webhooks, index=self.index, keys=self.keys, replicas=common.replicas,
            view=lambda r: to_public(r, self.index.progress.get(r.id), reveal_pod=False),
        )  # fmt: skip
        requests = runtime.stream(REQUESTS_STREAM)
        self._submitted = self.broker.publisher(
            f"{REQ_PREFIX}.*.{RequestEvent.SUBMITTED}",
            stream=requests,
            schema=RequestSubmitted,
            title="vw.req.<id>.submitted",
            description="A request accepted by the api, for the scheduler to queue and place.",
        )
        self._cancel_requested = self.broker.publisher(
            f"{REQ_PREFIX}.*.{RequestEvent.CANCEL_REQUESTED}",
            stream=requests,
            schema=CancelRequested,
            title="vw.req.<id>.cancel_requested",
            description="A caller asked for a request to stop; the scheduler cancels or interrupts it.",
        )
        self.broker.subscriber(
            f"{REQ_PREFIX}.*.{RequestEvent.PROGRESS}",
            no_reply=True,  # see runtime.broker.JETSTREAM_SUBJECT_LISTENER
            title="vw.req.<id>.progress",
            description="Progress of running requests, shown in their status (core NATS: only the latest matters).",
        )(self._on_progress)
        self._connected = False
        self.files: FileStore = open_file_store(settings.storage, lambda: runtime.jetstream(self.broker))
        self.uploads = Uploads(self.broker, self.files)  # input images: POST /api/files

    async def _reconnected(self) -> None:
        await self.follower.reconnected()

    async def start(self) -> None:
        """Connect, provision, start the broker; the index loads in the background (reads answer 503
        until it has)."""
        common = self.settings.common
        await runtime.connect(self.broker)
        await runtime.provision(self.broker, common)
        await self.webhooks.prepare()
        await runtime.serve(self.broker)
        self._connected = True
        self.follower.start()

    async def _on_progress(self, progress: RequestProgress) -> None:
        self.index.note_progress(progress.request_id, progress.percent)

    async def stop(self) -> None:
        """Bounded as a whole (~7 s): the supervisor kills an api still stopping after 10 s."""
        await self.follower.stop(timeout=2.0)
        if self._connected:
            self._connected = False
            await runtime.stop_broker(self.broker, timeout=4.0)
        await self.webhooks.stop()
        await self.files.close()

    def loaded_index(self) -> RequestIndex:
        """The index, for a read; IndexLoading until its first load is complete."""
        if not self.index.loaded.is_set():
            raise IndexLoading()
        return self.index

    async def _kv(self, name: str) -> KeyValue:
        if not self._connected:
            raise Unavailable("not connected to NATS")
        return await self.broker.key_value(name, declare=False)

    # ------------------------------------------------------------------------------------------ requests

    def prepare(
        self,
        workflow: Workflow,
        inputs: dict[str, object],
        priority: Priority,
        *,
        preset: str | None = None,
        batch_id: str | None = None,
        principal: Principal = OPEN,
        webhook: WebhookSpec | None = None,
    ) -> RequestSubmitted:
        """A new request (inputs already resolved, its webhook checked) of the caller's tenant, not yet published."""
        return RequestSubmitted(
            request_id=new_request_id(),
            workflow_name=workflow.name,
            inputs=dict(inputs),
            priority=priority,
            created_at=utcnow(),
            batch_id=batch_id,
            execution_timeout_s=workflow.timeout_for(preset),
            min_gpu_memory_gb=workflow.definition.min_gpu_memory_gb,
            models=[m.key for m in workflow.models_for(dict(inputs))],
            tenant=principal.tenant,
            key_id=principal.client_key,
            share_weight=principal.share_weight,
            preset=preset,
            webhook=webhook,
        )

    async def submit(
        self, submission: Submission, idempotency_key: str | None = None, principal: Principal = OPEN
    ) -> Submission:
        """Publish the submission's requests; returns once JetStream has stored them.

        With an Idempotency-Key the first call claims the key (atomically, in KV `idempotency`; keys are
        the tenant's own) and later calls with the same key get the first submission back — republished,
        which the dedupe ids make harmless, in case the first call failed between claiming and publishing.
        The same key with a different body raises IdempotencyConflict. A new submission is first admitted
        by the key's limits (LimitExceeded); a repeat spends nothing.
        """
        earlier = await self._claimed(idempotency_key, submission, principal) if idempotency_key else None
        if earlier is not None:
            submission = earlier
        else:
            await self.limits.admit(principal, len(submission.events))
            if idempotency_key is not None:
                submission = await self._claim(idempotency_key, submission, principal)
        if submission.batch_id is not None:
            members = BatchMembers(request_ids=[e.request_id for e in submission.events], tenant=principal.tenant)
            try:
                await (await self._kv(BATCHES_BUCKET.name)).put(submission.batch_id, msgspec.json.encode(members))
            except (nats.errors.Error, OSError) as exc:
                raise Unavailable(f"the request queue is unavailable ({exc}); nothing was accepted, retry") from exc
        for event in submission.events:
            try:
                await runtime.publish(
                    self._submitted,
                    event,
                    subject=request_subject(event.request_id, RequestEvent.SUBMITTED),
                    msg_id=f"{event.request_id}.submitted",
                )
            except (nats.errors.Error, OSError) as exc:
                raise Unavailable(
                    f"the request queue is unavailable ({exc}); retry (with the same Idempotency-Key)"
                ) from exc
            log.info("request accepted", extra={"request_id": event.request_id, "workflow": event.workflow_name})
        self.limits.accepted(principal, [e.request_id for e in submission.events])
        return submission

    @staticmethod
    def _claim_name(key: str, principal: Principal) -> str:
        scoped = key if principal.tenant is None else f"{principal.tenant}\x00{key}"
        return hashlib.sha256(scoped.encode()).hexdigest()

    async def _claimed(self, key: str, submission: Submission, principal: Principal) -> Submission | None:
        """The submission an earlier call made with this key, if any (IdempotencyConflict if its body differed)."""
        bucket = await self._kv(IDEMPOTENCY_BUCKET.name)
        try:
            entry = await bucket.get(self._claim_name(key, principal))
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None
        except (nats.errors.Error, OSError) as exc:
            raise Unavailable(f"the request queue is unavailable ({exc}); nothing was accepted, retry") from exc
        return self._repeat_of(decode(entry.value or b"", Submission), submission)

    def _repeat_of(self, earlier: Submission, submission: Submission) -> Submission:
        if earlier.fingerprint != submission.fingerprint:
            raise IdempotencyConflict("this Idempotency-Key was already used with a different request")
        log.info("idempotent repeat", extra={"request_id": earlier.events[0].request_id if earlier.events else None})
        return earlier

    async def _claim(self, key: str, submission: Submission, principal: Principal) -> Submission:
        bucket = await self._kv(IDEMPOTENCY_BUCKET.name)
        name = self._claim_name(key, principal)
        try:
            await bucket.create(name, msgspec.json.encode(submission))
            return submission
        except nats.js.errors.KeyWrongLastSequenceError:
            entry = await bucket.get(name)
        return self._repeat_of(decode(entry.value or b"", Submission), submission)

    # ------------------------------------------------------------------------------------------ reads

    def queue_status(self, limit: int, principal: Principal = OPEN) -> QueueStatus:
        """The fleet's active pods (their addresses for admins only) and the caller's tenant's requests."""
        index = self.loaded_index()
        tenant = None if principal.admin else principal.tenant

        def summaries(statuses: tuple[RequestStatus, ...]) -> list[RequestSummary]:
            return [
                RequestSummary(id=r.id, workflow_name=r.workflow_name, status=r.status)
                for r in index.newest(statuses, limit, tenant)
            ]

        last, reveal = index.pod_workflow, principal.admin
        pods = [
            ActivePod(
                id=p.id, name=p.name, status=p.status, ip=p.ip if reveal else None,
                workflow_name=last.get(p.id, "any"),
            )
            for p in index.active_pods()
        ]  # fmt: skip
        return QueueStatus(
            active_pods=pods,
            pending_requests=summaries(UNFINISHED),
            completed_requests=summaries((RequestStatus.COMPLETED,)),
            failed_requests=summaries((RequestStatus.FAILED, RequestStatus.CANCELLED)),
        )

    def history(self, limit: int, status: RequestStatus | None, principal: Principal = OPEN) -> list[ComfyUIRequest]:
        statuses = (status,) if status else tuple(RequestStatus)
        index = self.loaded_index()
        tenant = None if principal.admin else principal.tenant
        return [self.signed(self.public(r, reveal_pod=principal.admin)) for r in index.newest(statuses, limit, tenant)]

    def stats(self, principal: Principal = OPEN) -> QueueStats:
        """Counts of the caller's tenant's requests (every tenant's for admins), and the fleet's active pods;
        GPU-seconds and cost of the finished ones, in all and per workflow (kept by the index as they change)."""
        index = self.loaded_index()
        tenant = None if principal.admin else principal.tenant
        usage = index.estimates.usage.get(tenant)

        def count(status: RequestStatus) -> int:
            return index.count(status, tenant)

        return QueueStats(
            active_pods=len(index.active_pods()),
            pending_requests=sum(count(s) for s in UNFINISHED),
            completed_requests=count(RequestStatus.COMPLETED),
            failed_requests=count(RequestStatus.FAILED),
            total_requests=index.total(tenant),
            running_requests=count(RequestStatus.RUNNING),
            cancelled_requests=count(RequestStatus.CANCELLED),
            gpu_seconds=round(max(0.0, usage.gpu_seconds), 3) if usage else 0.0,
            cost=round(max(0.0, usage.cost), 8) if usage else 0.0,
            workflows={name: t.stats() for name, t in sorted(usage.workflows.items())} if usage else {},
        )

    async def batch_status(self, batch_id: str, principal: Principal = OPEN) -> BatchStatus | None:
        """The batch as a whole, from the membership recorded at acceptance (so a batch is readable at once,
        before the scheduler has recorded its requests)."""
        if not BATCH_ID.match(batch_id):
            return None
        self.loaded_index()
        try:
            entry = await (await self._kv(BATCHES_BUCKET.name)).get(batch_id)
        except nats.js.errors.KeyNotFoundError:
            return None
        batch = decode(entry.value or b"", BatchMembers)
        if not principal.sees(batch.tenant):
            return None
        members = batch.request_ids
        found = [await self.get_request(request_id, principal) for request_id in members]
        requests = sorted((r for r in found if r is not None), key=lambda r: r.created_at)
        counts: dict[str, int] = {}
        for request in requests:
            counts[request.status] = counts.get(request.status, 0) + 1
        return BatchStatus(
            batch_id=batch_id,
            status=batch_overall([r.status for r in requests]),
            total=len(members),
            counts=counts,
            files=[f for r in requests if r.result for f in r.result.files],
            requests=requests,
        )

    async def get_request(self, request_id: str, principal: Principal = OPEN) -> ComfyUIRequest | None:
        """The request as the caller may see it: None when unknown or another tenant's."""
        if not REQUEST_ID.match(request_id):
            return None
        index = self.loaded_index()
        record = index.get(request_id)
        if record is not None:
            if not principal.sees(record.tenant):
                return None
            return self.signed(self.public(record, reveal_pod=principal.admin))
        submitted = await self._submitted_event(request_id)
        if submitted is None or not principal.sees(submitted.tenant):
            return None
        return ComfyUIRequest(
            id=submitted.request_id,
            workflow_name=submitted.workflow_name,
            inputs=submitted.inputs,
            status=RequestStatus.PENDING,
            pod_id=None,
            created_at=submitted.created_at,
            updated_at=submitted.created_at,
            waiting_reason=self.waiting_reason(),
        )

    async def _submitted_event(self, request_id: str) -> RequestSubmitted | None:
        """Accepted but not yet recorded by the scheduler: the stream still knows it (a raw JetStream
        read: FastStream has no direct get of a stream's last message on a subject)."""
        if not self._connected:
            raise Unavailable("not connected to NATS")
        try:
            raw = await runtime.jetstream(self.broker).get_last_msg(
                REQUESTS_STREAM.name, request_subject(request_id, RequestEvent.SUBMITTED)
            )
        except nats.js.errors.NotFoundError:
            return None
        return decode(raw.data or b"", RequestSubmitted)

    async def cancel(self, request_id: str, wait_s: float, principal: Principal = OPEN) -> ComfyUIRequest | None:
        """Ask for the request to stop and wait up to `wait_s` for it to end; None if it is unknown (or
        another tenant's).

        Raises AlreadyFinished for a request that had ended before the cancel.
        """
        current = await self.get_request(request_id, principal)
        if current is None:
            return None
        if current.status.terminal:
            raise AlreadyFinished(current)
        event = CancelRequested(request_id=request_id, at=utcnow())
        try:
            await runtime.publish(
                self._cancel_requested,
                event,
                subject=request_subject(request_id, RequestEvent.CANCEL_REQUESTED),
                msg_id=f"{request_id}.cancel",
            )
        except (nats.errors.Error, OSError) as exc:
            raise Unavailable(f"the request queue is unavailable ({exc}); the cancel was not sent, retry") from exc
        log.info("cancel requested", extra={"request_id": request_id})
        ended = await self.index.wait(request_id, lambda r: r.status.terminal, wait_s)
        if ended is not None:
            return self.signed(self.public(ended, reveal_pod=principal.admin))
        return await self.get_request(request_id, principal)

    # ------------------------------------------------------------------------------------------- pods

    async def pod_admin(
        self, operation: PodOperation, request: PodAdminRequest | None = None, timeout: float = 15.0
    ) -> PodAdminReply:
        """An admin call answered by pod-manager (which alone holds the provider and its key)."""
        if not self._connected:
            raise Unavailable("not connected to NATS")
        try:
            msg = await self.broker.request(request or PodAdminRequest(), pod_rpc_subject(operation), timeout=timeout)
        except nats.errors.NoRespondersError as exc:
            raise Unavailable("pod-manager is not running") from exc
        except nats.errors.TimeoutError as exc:
            raise Unavailable(f"pod-manager did not answer within {timeout:.0f}s") from exc
        body: bytes = msg.body
        return decode(body, PodAdminReply)

    # ------------------------------------------------------------------------------------------- files

    async def open_file(self, name: str, principal: Principal = OPEN) -> StoredObject | None:
        """A stored output or upload, or None when unknown or not the caller's tenant's (admins see every file)."""
        if not FILE_NAME.match(name) or ".." in name:
            return None
        mine = principal.admin or self.index.file_tenant.get(name) == principal.tenant
        if not mine and not (self._connected and await self.uploads.visible(name, principal)):
            return None
        if not self._connected:
            raise Unavailable("not connected to NATS")
        return await self.files.open(name)

    def public(self, record: RequestRecord, *, reveal_pod: bool) -> ComfyUIRequest:
        """`to_public` with its progress, and — while unfinished — its queue position and ETA (and, while it
        waits for a pod, why none is started for it)."""
        index = self.index
        if record.status.terminal:
            return to_public(record, reveal_pod=reveal_pod)
        estimates = index.estimates
        eta = estimates.eta(record, time.time(), index.active_pods(), index.records, self.catalogued_seconds)
        waiting = record.status == RequestStatus.PENDING
        return to_public(
            record, index.progress.get(record.id), reveal_pod=reveal_pod,
            queue_position=estimates.position(record), eta_seconds=eta,
            waiting_reason=self.waiting_reason() if waiting else None,
        )  # fmt: skip

    def waiting_reason(self) -> str | None:
        """Why waiting requests get no new pod now (the spend cap), as the live pod-manager last said."""
        fleet = self.index.fleet
        return fleet.held if fleet is not None and fleet.fresh(utcnow()) else None

    def catalogued_seconds(self, record: RequestRecord) -> float | None:
        """The midpoint of its preset's `expected_seconds` in the catalogue (None: the workflow names none)."""
        return expected_run_s(self.catalog, record.workflow_name, record.preset)

    def signed(self, request: ComfyUIRequest) -> ComfyUIRequest:
        """The request with fresh presigned `urls` (S3 storage): the ones its result was stored with may
        have expired by the time it is read."""
        result = request.result
        if result is None or not result.urls:
            return request
        urls = [url for name in result.files if (url := self.files.presign(name))]
        return msgspec.structs.replace(request, result=msgspec.structs.replace(result, urls=urls))

    # ------------------------------------------------------------------------------------------ health

    async def health(self) -> HealthReport:
        up = f"up {time.monotonic() - self.started_at:.0f}s"
        if self.index.loaded.is_set():
            api = ComponentHealth(name="api", healthy=True, detail=up, latency_ms=0.0)
        else:  # not ready: its reads would answer 503
            api = ComponentHealth(name="api", healthy=False, detail=f"{up}; loading the request index", latency_ms=0.0)
        nats_health = await self._nats_health()
        if not nats_health.healthy:
            services = [
                ComponentHealth(name=s, healthy=False, detail="unknown: NATS unreachable") for s in SERVICE_NAMES
            ]
        else:
            services = list(await asyncio.gather(*(self._service_health(s) for s in SERVICE_NAMES)))
        fleet = self._fleet_health()
        unhealthy = [c.name for c in (api, nats_health, *services, fleet) if not c.healthy]
        return HealthReport(
            status="unhealthy" if unhealthy else "healthy",
            api=api,
            nats=nats_health,
            services=services,
            unhealthy=unhealthy,
            fleet=fleet,
        )

    def _fleet_health(self) -> ComponentHealth:
        """Whether pods can be had: a live pod-manager beats, and no circuit breaker is open."""
        fleet, now = self.index.fleet, utcnow()
        if fleet is None:
            return ComponentHealth(name="fleet", healthy=False, detail="no pod-manager has reported yet")
        if not fleet.fresh(now):
            state = "stopped" if fleet.stopping else f"silent since {fleet.heartbeat_at.isoformat()}"
            return ComponentHealth(name="fleet", healthy=False, detail=f"pod-manager {state}: no pods are verified")
        blocking = fleet.blocking(now)
        if blocking:
            detail = "; ".join(f"circuit breaker open: {b.diagnosis}" for b in blocking)
            return ComponentHealth(name="fleet", healthy=False, detail=detail)
        detail = f"{fleet.live_pods} of at most {fleet.max_pods} pods live ({fleet.provider})"
        said = [note for note in (fleet.note, fleet.held) if note]
        return ComponentHealth(name="fleet", healthy=True, detail="; ".join([detail, *dict.fromkeys(said)]))

    async def _nats_health(self) -> ComponentHealth:
        nc = self.broker.connection if self._connected else None
        if nc is None or not nc.is_connected:
            return ComponentHealth(name="nats", healthy=False, detail="not connected")
        started = time.perf_counter()
        try:
            await nc.flush(timeout=max(1, round(self.settings.health_timeout_s)))
        except (nats.errors.Error, TimeoutError) as exc:
            return ComponentHealth(name="nats", healthy=False, detail=f"no answer: {exc}")
        latency = (time.perf_counter() - started) * 1000
        return ComponentHealth(
            name="nats", healthy=True, detail=nc.connected_url.netloc if nc.connected_url else None,
            latency_ms=round(latency, 2),
        )  # fmt: skip

    async def _service_health(self, service: str) -> ComponentHealth:
        try:
            latency = await ping(self.broker.connection, service, timeout=self.settings.health_timeout_s)
        except LookupError as exc:
            return ComponentHealth(name=service, healthy=False, detail=str(exc))
        except nats.errors.Error as exc:
            return ComponentHealth(name=service, healthy=False, detail=f"check failed: {exc}")
        return ComponentHealth(name=service, healthy=True, detail="alive", latency_ms=round(latency, 2))


def batch_overall(of: list[RequestStatus]) -> RequestStatus:
    """Running while any runs or waits; else completed if all did, failed if any failed, else cancelled."""
    statuses = set(of)
    for unfinished in (RequestStatus.RUNNING, RequestStatus.ASSIGNED, RequestStatus.PENDING):
        if unfinished in statuses:
            return RequestStatus.RUNNING if statuses & {RequestStatus.RUNNING, RequestStatus.ASSIGNED} else unfinished
    if statuses == {RequestStatus.COMPLETED}:
        return RequestStatus.COMPLETED
    return RequestStatus.FAILED if RequestStatus.FAILED in statuses else RequestStatus.CANCELLED


def to_public(
    record: RequestRecord,
    progress: float | None = None,
    *,
    reveal_pod: bool = True,
    queue_position: int | None = None,
    eta_seconds: float | None = None,
    waiting_reason: str | None = None,
) -> ComfyUIRequest:
    """A request as clients read it; a pod's address only for admins (`reveal_pod`). A finished one shows
    where its time went and what it cost."""
    result = record.result
    if result is not None and not reveal_pod and result.pod_ip is not None:
        result = msgspec.structs.replace(result, pod_ip=None)
    return ComfyUIRequest(
        id=record.id,
        workflow_name=record.workflow_name,
        inputs=record.inputs,
        status=record.status,
        pod_id=record.pod_id,
        created_at=record.created_at,
        updated_at=record.updated_at,
        result=result,
        error=record.error,
        attempts=record.attempts,
        progress=100.0 if record.status == RequestStatus.COMPLETED else progress,
        queue_position=queue_position,
        eta_seconds=eta_seconds,
        waiting_reason=waiting_reason,
        timings=record.timings,
        gpu_seconds=round(record.gpu_seconds, 3) if record.status.terminal else None,
        cost=round(record.cost, 8) if record.status.terminal else None,
    )
