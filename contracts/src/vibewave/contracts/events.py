"""The whole event contract of Vibewave in one place: subjects, streams, buckets, consumers, messages.

Read top to bottom: who publishes what, on which subject, into which stream, and what it carries.

| subject                                | message           | publisher    | consumers                 |
|----------------------------------------|-------------------|--------------|---------------------------|
| vw.req.<id>.submitted                  | RequestSubmitted  | api          | scheduler                 |
| vw.req.<id>.assigned                   | RequestAssigned   | scheduler    | (observers)               |
| vw.req.<id>.started                    | RequestStarted    | executor     | scheduler                 |
| vw.req.<id>.progress                   | RequestProgress   | executor     | api (sync waits), clients |
| vw.req.<id>.attempt_failed             | AttemptFailed     | executor     | scheduler                 |
| vw.req.<id>.attempt_succeeded          | AttemptSucceeded  | executor     | scheduler                 |
| vw.req.<id>.completed   (public)       | RequestCompleted  | scheduler    | api, anyone               |
| vw.req.<id>.failed      (public)       | RequestFailed     | scheduler    | api, anyone               |
| vw.req.<id>.cancel_requested           | CancelRequested   | api          | scheduler, executors      |
| vw.req.<id>.cancelled   (public)       | RequestCancelled  | scheduler    | api, anyone               |
| vw.dispatch.<pod_id>    (work queue)   | Assignment        | scheduler    | executor                  |
| vw.pod.<pod_id>.<event>                | PodEvent          | pod-manager  | (observers)               |
| vw.fleet.demand         (core NATS)    | Demand            | scheduler    | pod-manager               |
| vw.req.*.attempt_failed (pod faults)   | AttemptFailed     | executor     | pod-manager (suspects)    |
| vw.rpc.pods.<op>        (req/reply)    | PodAdminRequest   | api          | pod-manager → PodAdminReply |
| vw.dlq.<consumer>       (dead letters) | DeadLetter        | any consumer | operators                 |

The executor reports each attempt's outcome to the scheduler; only the scheduler announces the public
terminal events (`completed`, `failed`, `cancelled`), once the record behind them is stored.

State lives in KV: `requests` (RequestRecord; single writer: scheduler), `pods` (PodRecord; single
writer: pod-manager) and `fleet` (FleetStatus: the fleet's heartbeat and open circuit breakers; writer:
pod-manager). Generated files live in the `outputs` object store. Every published message carries
`Nats-Msg-Id` (dedupe) and W3C `traceparent` headers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import msgspec

from vibewave.contracts.models import Priority, RequestStatus, RequestTimings, WebhookSpec, WorkflowResult

# ---------------------------------------------------------------------------------------------- subjects

REQ_PREFIX = "vw.req"
DISPATCH_PREFIX = "vw.dispatch"
POD_PREFIX = "vw.pod"
DEMAND_SUBJECT = "vw.fleet.demand"
POD_RPC_PREFIX = "vw.rpc.pods"
DEAD_LETTER_PREFIX = "vw.dlq"


class PodOperation(StrEnum):
    """Admin operations pod-manager answers over request/reply (`vw.rpc.pods.<op>`)."""

    LIST = "list"
    GET = "get"
    CREATE = "create"
    START = "start"
    STOP = "stop"
    RESTART = "restart"
    TERMINATE = "terminate"
    CATALOGUE = "catalogue"
    HEALTH = "health"


def pod_rpc_subject(operation: PodOperation | str) -> str:
    return f"{POD_RPC_PREFIX}.{operation}"


class RequestEvent(StrEnum):
    SUBMITTED = "submitted"
    ASSIGNED = "assigned"
    STARTED = "started"
    PROGRESS = "progress"
    ATTEMPT_FAILED = "attempt_failed"
    ATTEMPT_SUCCEEDED = "attempt_succeeded"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCEL_REQUESTED = "cancel_requested"
    CANCELLED = "cancelled"


def request_subject(request_id: str, event: RequestEvent | str) -> str:
    return f"{REQ_PREFIX}.{request_id}.{event}"


def request_all_subject(request_id: str) -> str:
    """Everything that happens to one request (what a sync call waits on)."""
    return f"{REQ_PREFIX}.{request_id}.>"


def dispatch_subject(pod_id: str) -> str:
    return f"{DISPATCH_PREFIX}.{pod_id}"


def dead_letter_subject(consumer: str) -> str:
    return f"{DEAD_LETTER_PREFIX}.{consumer}"


def pod_subject(pod_id: str, event: str) -> str:
    return f"{POD_PREFIX}.{pod_id}.{event}"


def subject_template(subject: str) -> str:
    """`subject` with its request or pod id as a placeholder (`vw.req.{request_id}.submitted`,
    `vw.dispatch.{pod_id}`, a reply inbox as `_INBOX`): what a message's span is named after, so the names
    stay a small set an operator can group by, whatever the ids."""
    parts = subject.split(".")
    if parts[0] == "_INBOX":
        return "_INBOX"
    prefix = ".".join(parts[:2])
    if prefix == REQ_PREFIX and len(parts) >= 4:
        parts[2] = "{request_id}"
    elif (prefix == DISPATCH_PREFIX and len(parts) == 3) or (prefix == POD_PREFIX and len(parts) >= 4):
        parts[2] = "{pod_id}"
    return ".".join(parts)


def split_request_subject(subject: str) -> tuple[str, str]:
    """`vw.req.<id>.<event>` → (id, event)."""
    _, _, request_id, event = subject.split(".", 3)
    return request_id, event


# ---------------------------------------------------------------------------------------------- messages


def utcnow() -> datetime:
    return datetime.now(UTC)


class RequestSubmitted(msgspec.Struct, kw_only=True):
    """A client's request, accepted by the api and not yet seen by the scheduler. `min_gpu_memory_gb` is
    what its workflow needs of a pod (0: any pod)."""

    request_id: str
    workflow_name: str
    inputs: dict[str, Any]
    priority: Priority = Priority.NORMAL
    created_at: datetime
    batch_id: str | None = None
    execution_timeout_s: float | None = None
    min_gpu_memory_gb: int = 0
    models: list[str] = msgspec.field(default_factory=list)  # `folder/file` the chosen graph loads
    tenant: str | None = None  # whose request: the api key's tenant (None: no keys configured)
    key_id: str | None = None  # the api key that created it (never the key itself)
    share_weight: float = 1.0  # the tenant's weight in the scheduler's fair share of pods
    preset: str | None = None  # the preset its inputs came from (what its expected run time is measured by)
    webhook: WebhookSpec | None = None  # where its events are POSTed (checked at the edge)


class RequestAssigned(msgspec.Struct, kw_only=True):
    request_id: str
    pod_id: str
    attempt: int


class RequestStarted(msgspec.Struct, kw_only=True):
    """The executor handed the request to ComfyUI (`prompt_id` is ComfyUI's id for it)."""

    request_id: str
    pod_id: str
    attempt: int
    prompt_id: str


class RequestProgress(msgspec.Struct, kw_only=True):
    """Where a run is: the current node's steps (`value` of `max`) and the whole graph's `percent`."""

    request_id: str
    node: str | None
    value: int
    max: int
    percent: float


class FailureKind(StrEnum):
    WORKFLOW = "workflow"  # ComfyUI rejected or failed the graph: retrying elsewhere will not help
    POD_FAULT = "pod_fault"  # the pod or its ComfyUI misbehaved: another pod may succeed
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"  # stopped on the client's request
    NO_CAPACITY = "no_capacity"  # no pod can be provided for it (the fleet's circuit breaker is open)


class AttemptFailed(msgspec.Struct, kw_only=True):
    """One attempt on one pod failed; the scheduler decides whether to retry."""

    request_id: str
    pod_id: str
    attempt: int
    kind: FailureKind
    error: str


class AttemptSucceeded(msgspec.Struct, kw_only=True):
    """An attempt ran and its files are stored: the executor's report, which the scheduler announces as
    `completed` once the record says so."""

    request_id: str
    pod_id: str
    attempt: int
    result: WorkflowResult
    run_ms: int | None = None  # the executor's view: assignment received → outputs downloaded from ComfyUI
    upload_ms: int | None = None  # storing the outputs (object store or S3)


class RequestCompleted(msgspec.Struct, kw_only=True):
    """Terminal (public): the request's files are ready."""

    request_id: str
    attempt: int
    result: WorkflowResult


class DeadLetter(msgspec.Struct, kw_only=True):
    """A message its consumer gave up on after `max_deliver` deliveries (stream DEADLETTER)."""

    subject: str
    stream: str
    consumer: str
    stream_sequence: int
    deliveries: int
    error: str
    data: bytes
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    at: datetime


class AttemptNote(msgspec.Struct, kw_only=True):
    """What happened to one failed attempt: on which pod, and why (kept on the request's record)."""

    attempt: int
    pod_id: str
    kind: FailureKind
    error: str


class RequestFailed(msgspec.Struct, kw_only=True):
    request_id: str
    kind: FailureKind
    error: str
    attempts: int
    attempt_log: list[AttemptNote] = msgspec.field(default_factory=list)


class CancelRequested(msgspec.Struct, kw_only=True):
    """A client asked to stop the request; the scheduler or the running executor acts on it."""

    request_id: str
    at: datetime


class RequestCancelled(msgspec.Struct, kw_only=True):
    request_id: str
    at: datetime


class Assignment(msgspec.Struct, kw_only=True):
    """Run this request on this pod (one ComfyUI prompt), within `execution_timeout_s` if set."""

    request_id: str
    attempt: int
    workflow_name: str
    inputs: dict[str, Any]
    pod_id: str
    pod_ip: str | None
    comfyui_url: str
    execution_timeout_s: float | None = None
    pod_name: str = ""  # the executor derives the pod's ComfyUI token from it (runtime.pod_token)


class PodStatus(StrEnum):
    CREATING = "creating"
    STARTING = "starting"
    READY = "ready"
    SUSPECT = "suspect"  # a run on it faulted, or a probe missed: no work until a probe passes again
    STOPPED = "stopped"
    FAILED = "failed"
    TERMINATING = "terminating"  # asked to go; retried until the provider confirms it is gone
    TERMINATED = "terminated"


class PodRecord(msgspec.Struct, kw_only=True):
    """A pod as pod-manager knows it (KV `pods`).

    A pod serves any workflow whose GPU needs it meets (`gpu_memory_gb`; None: unknown, serves all) and
    whose model files it has (`models`, as ComfyUI lists them; None: not checked — a local or static
    server — serves all). `origin` names the provider account it lives in; `manager` the pod-manager
    incarnation that last verified it — the scheduler places work only on pods verified by the live one
    (see FleetStatus)."""

    id: str
    name: str
    provider: str
    status: PodStatus
    workflow_name: str | None = None  # records of older versions: the workflow the pod was made for
    origin: str | None = None
    manager: str | None = None
    comfyui_url: str | None = None
    ip: str | None = None
    gpu_type: str | None = None
    gpu_memory_gb: int | None = None
    cost_per_hr: float | None = None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None  # last create or resume: the readiness bound counts from here
    stopped_at: datetime | None = None
    checked_at: datetime | None = None  # the last probe that passed
    fault_seq: int = 0  # REQUESTS stream sequence of the last pod-fault report pod-manager has handled for it
    error: str | None = None
    models: list[str] | None = None  # `folder/file` of the fleet's model set that ComfyUI lists on the pod
    models_missing: list[str] = msgspec.field(default_factory=list)  # of the fleet's set, not (yet) listed
    boot: str | None = None  # what the pod's bootstrap says it is doing (installing, downloading 43 %, …)
    ready_at: datetime | None = None  # when it last became ready (after its create or resume)

    def serves(self, min_gpu_memory_gb: int, models: list[str] | None = None) -> bool:
        if models and self.models is not None and not set(models) <= set(self.models):
            return False
        return not min_gpu_memory_gb or self.gpu_memory_gb is None or self.gpu_memory_gb >= min_gpu_memory_gb


class PodEvent(msgspec.Struct, kw_only=True):
    pod: PodRecord


class PodNeed(msgspec.Struct, kw_only=True, frozen=True):
    """Requests of one GPU class (what their workflows need of a pod's GPU memory; 0: any pod):
    how many wait for a pod, and how many are on one."""

    min_gpu_memory_gb: int = 0
    waiting: int = 0
    running: int = 0
    # W3C traceparents of the oldest waiting requests (at most 8): pod-manager's spans for a pod created for
    # them link to their traces. Optional: a sender without it means no links.
    traceparents: tuple[str, ...] = ()
    # For scaling on the queue's expected wait (all optional: 0 means unknown). How long the oldest waiting
    # request has waited; the expected run seconds of the waiting requests (their presets' catalogue
    # midpoints); and the expected seconds left of the running ones.
    oldest_wait_s: float = 0.0
    waiting_work_s: float = 0.0
    running_left_s: float = 0.0


class Demand(msgspec.Struct, kw_only=True):
    """What the scheduler's queue needs of the fleet, by GPU class; `busy_pods` hold a request now."""

    needs: list[PodNeed] = msgspec.field(default_factory=list)
    busy_pods: list[str] = msgspec.field(default_factory=list)
    at: datetime


class Breaker(msgspec.Struct, kw_only=True):
    """An open circuit breaker: pods of this GPU class are not created any more, because creating them
    kept failing the same way (or cannot succeed). Requests that need the class fail with `diagnosis`."""

    min_gpu_memory_gb: int
    cause: str  # never_ready | refused | no_gpu_type
    diagnosis: str  # what was tried and seen, for the operator to act on
    attempts: int
    opened_at: datetime
    retry_at: datetime | None = None  # one more try is allowed after this (None: not until settings change)


class FleetStatus(msgspec.Struct, kw_only=True):
    """Pod-manager's heartbeat (KV `fleet`, key `status`): who manages the fleet now, and what is wrong
    with it. A pod is placeable only while the manager that verified it beats (`heartbeat_at` no older
    than three intervals): pods of a dead pod-manager, or of an earlier run, are probed by nobody."""

    manager: str
    provider: str
    origin: str
    heartbeat_at: datetime
    heartbeat_interval_s: float
    max_pods: int
    live_pods: int = 0
    breakers: list[Breaker] = msgspec.field(default_factory=list)
    note: str | None = None  # why pods are short right now (backoff after a refusal, rate limit, …)
    settings: str = ""  # fingerprint of the pod settings the breakers were opened under
    stopping: bool = False
    models: list[str] | None = None  # `folder/file` every new pod fetches (None: pods have every model)
    policy: str | None = None  # the fleet policy (FLEET_POLICY): demand, serverless or economic
    spend_per_hr: float | None = None  # what the live pods cost per hour now, in USD (None: prices unknown)
    max_hourly_spend: float | None = None  # MAX_HOURLY_SPEND (None: no cap)
    held: str | None = None  # why waiting requests get no new pod now (the spend cap), for their status

    def fresh(self, now: datetime) -> bool:
        return not self.stopping and (now - self.heartbeat_at).total_seconds() <= max(
            3 * self.heartbeat_interval_s, 5.0
        )

    def blocking(self, now: datetime) -> list[Breaker]:
        """The breakers that fail requests now: open, and not yet due for their one more try."""
        return [b for b in self.breakers if b.retry_at is None or now < b.retry_at]


FLEET_STATUS_KEY = "status"


class LeaseRecord(msgspec.Struct, kw_only=True):
    """The leader lease of a role (KV `leases`, key = the role). Its holder renews it before its TTL
    lapses; `epoch` is the KV revision at which it was taken, higher at every takeover."""

    role: str
    holder: str  # the process: host, pid and an incarnation id
    epoch: int = 0  # 0 in the write that takes it (the revision is known only once stored)
    taken_at: datetime
    renewed_at: datetime
    ttl_s: float


class PodAdminRequest(msgspec.Struct, kw_only=True):
    """An admin call: the pod it is about (if any) and the operation's parameters."""

    pod_id: str | None = None
    workflow_name: str | None = None
    min_gpu_memory_gb: int = 0  # create: what the workflow named needs of the pod's GPU
    catalogue: str | None = None


class PodAdminReply(msgspec.Struct, kw_only=True):
    """`status` is the HTTP status the api answers with; `data` the body on success."""

    status: int
    data: Any = None
    error: str | None = None


class BatchMembers(msgspec.Struct, kw_only=True):
    """Which requests a batch is, recorded by the api when it accepts the batch (KV `batches`)."""

    request_ids: list[str]
    tenant: str | None = None  # whose batch: only that tenant (and admins) can read it


class ApiKeyRecord(msgspec.Struct, kw_only=True):
    """A client's API key as stored (KV `api_keys`, by key id; writer: api). Only the SHA-256 of the key's
    secret is kept: the key itself is shown once, when it is created. Deleting the entry revokes it."""

    id: str
    name: str
    tenant: str
    scopes: list[str]
    secret_sha256: str
    created_at: datetime
    requests_per_minute: int | None = None  # None: no rate limit
    max_open_requests: int | None = None  # None: no limit on unfinished requests at once
    share_weight: float = 1.0  # the tenant's weight in the scheduler's fair share
    webhook_secret: str | None = None  # signs its tenant's webhooks (`whsec_…`; None: the deployment's)


class RequestRecord(msgspec.Struct, kw_only=True):
    """A request's whole state (KV `requests`; single writer: the scheduler)."""

    id: str
    workflow_name: str
    inputs: dict[str, Any]
    status: RequestStatus
    priority: Priority = Priority.NORMAL
    created_at: datetime
    updated_at: datetime
    pod_id: str | None = None
    pod_ip: str | None = None
    attempts: int = 0
    prompt_id: str | None = None
    result: WorkflowResult | None = None
    error: str | None = None
    batch_id: str | None = None
    execution_timeout_s: float | None = None
    cancel_requested: bool = False
    traceparent: str | None = None
    min_gpu_memory_gb: int = 0
    attempt_log: list[AttemptNote] = msgspec.field(default_factory=list)
    not_before: datetime | None = None  # a retry waits (backoff) until then
    models: list[str] = msgspec.field(default_factory=list)  # `folder/file` its graph loads: pods listing them run it
    tenant: str | None = None  # whose request (None: created without api keys)
    key_id: str | None = None  # the api key that created it
    share_weight: float = 1.0  # the tenant's weight in the fair share of pods within a priority class
    preset: str | None = None
    webhook: WebhookSpec | None = None
    assigned_at: datetime | None = None  # the current attempt was placed on its pod
    started_at: datetime | None = None  # the current attempt's prompt was queued in ComfyUI
    finished_at: datetime | None = None  # it reached its terminal state
    boot_wait_ms: int = 0  # of its wait, the part its pod spent booting (the pod started after it came)
    timings: RequestTimings | None = None  # set when finished (completed; or failed/cancelled after a run)
    gpu_seconds: float = 0.0  # pod time of all its attempts (placed → outcome)
    cost: float = 0.0  # USD: each attempt's pod time x that pod's hourly price


# ------------------------------------------------------------------------------ streams, buckets, consumers


DEFAULT_RETENTION_S = 7 * 24 * 3600  # VIBEWAVE_RETENTION: how long finished work is kept


@dataclass(frozen=True)
class StreamSpec:
    """A stream; `retained` ones keep messages for the deployment's retention (VIBEWAVE_RETENTION)."""

    name: str
    subjects: tuple[str, ...]
    work_queue: bool = False
    retained: bool = True
    max_age_s: float | None = None  # a fixed age instead of the retention
    duplicate_window_s: float = 120


@dataclass(frozen=True)
class ConsumerSpec:
    """A durable pull consumer. A message is delivered at most `max_deliver` times (each failure is
    retried after `retry_delays_s`, the last one repeating); then it goes to the dead letters. A handler
    that takes longer than a third of `ack_wait_s` tells the server it is still at work, so a crashed
    process's messages come back after `ack_wait_s`, however long a healthy one takes."""

    stream: str
    durable: str
    filter_subjects: tuple[str, ...]
    ack_wait_s: float = 5  # short, since a handler at work keeps its message alive: a lost ack costs 5 s
    max_ack_pending: int = 10_000
    max_deliver: int = 10
    retry_delays_s: tuple[float, ...] = (0.25, 0.5, 1, 2, 5)
    deliver_new: bool = False  # created on an existing stream: start at new messages, not the whole history


@dataclass(frozen=True)
class BucketSpec:
    """A KV bucket. `retained`: its keys expire after the retention (bucket-wide, from their last write).
    `finished_ttl`: only keys written with the retention as their own TTL expire (the scheduler does so
    for finished requests; open ones stay until they finish). Neither: kept until deleted."""

    name: str
    history: int = 1
    description: str = ""
    retained: bool = False
    finished_ttl: bool = False
    key_ttl: bool = False  # each key written with its own TTL and gone without a marker when it lapses (leases)


@dataclass(frozen=True)
class ObjectStoreSpec:
    """An object store; `retained`: each object expires after the retention."""

    name: str
    description: str = ""
    retained: bool = True


REQUESTS_STREAM = StreamSpec("REQUESTS", (f"{REQ_PREFIX}.>",))
DISPATCH_STREAM = StreamSpec("DISPATCH", (f"{DISPATCH_PREFIX}.>",), work_queue=True)
PODS_STREAM = StreamSpec("PODS", (f"{POD_PREFIX}.>",), retained=False, max_age_s=24 * 3600)
DEAD_LETTER_STREAM = StreamSpec("DEADLETTER", (f"{DEAD_LETTER_PREFIX}.>",))
STREAMS = (REQUESTS_STREAM, DISPATCH_STREAM, PODS_STREAM, DEAD_LETTER_STREAM)

REQUESTS_BUCKET = BucketSpec(
    "requests", description="RequestRecord by request id; writer: scheduler", finished_ttl=True
)
PODS_BUCKET = BucketSpec("pods", description="PodRecord by pod id; writer: pod-manager")
OUTPUT_NAMES_BUCKET = BucketSpec(
    "output_names", description="claims on output file names; writer: executor", retained=True
)
IDEMPOTENCY_BUCKET = BucketSpec(
    "idempotency", description="Idempotency-Key → the request it created; writer: api", retained=True
)
BATCHES_BUCKET = BucketSpec(
    "batches", description="batch id → its request ids (BatchMembers); writer: api", retained=True
)
FLEET_BUCKET = BucketSpec("fleet", description="FleetStatus (heartbeat, circuit breakers); writer: pod-manager")
LEASES_BUCKET = BucketSpec(
    "leases", description="LeaseRecord by role (scheduler, pod-manager): who decides now; writer: its holder",
    key_ttl=True,
)  # fmt: skip
API_KEYS_BUCKET = BucketSpec("api_keys", description="ApiKeyRecord by key id (hashed secrets); writer: api")
RATE_BUCKET = BucketSpec(
    "rate_limits", description="per api key: the rate limiter's theoretical arrival time; writer: api", key_ttl=True
)
WEBHOOK_DELIVERIES_BUCKET = BucketSpec(
    "webhook_deliveries", description="WebhookDelivery by webhook id; writer: api (webhook sender)", retained=True
)
UPLOADS_BUCKET = BucketSpec("uploads", description="uploaded input image name → its tenant; writer: api", retained=True)
BUCKETS = (
    REQUESTS_BUCKET, PODS_BUCKET, OUTPUT_NAMES_BUCKET, IDEMPOTENCY_BUCKET, BATCHES_BUCKET, FLEET_BUCKET, LEASES_BUCKET,
    API_KEYS_BUCKET, RATE_BUCKET, WEBHOOK_DELIVERIES_BUCKET, UPLOADS_BUCKET,
)  # fmt: skip

OUTPUTS_STORE = ObjectStoreSpec("outputs", description="generated files, served at /api/files/{name}")
OBJECT_STORES = (OUTPUTS_STORE,)

SCHEDULER_CONSUMER = ConsumerSpec(
    stream=REQUESTS_STREAM.name,
    durable="scheduler",
    filter_subjects=tuple(
        f"{REQ_PREFIX}.*.{e}"
        for e in (
            RequestEvent.SUBMITTED,
            RequestEvent.STARTED,
            RequestEvent.ATTEMPT_FAILED,
            RequestEvent.ATTEMPT_SUCCEEDED,
            RequestEvent.CANCEL_REQUESTED,
        )
    ),
)
POD_FAULTS_CONSUMER = ConsumerSpec(
    stream=REQUESTS_STREAM.name,
    durable="pod-manager-faults",
    filter_subjects=(f"{REQ_PREFIX}.*.{RequestEvent.ATTEMPT_FAILED}",),
    deliver_new=True,
)
# A short ack wait, kept alive while the run lasts: a crashed executor's assignment is redelivered
# within ~3 s instead of after a long run's worth of ack wait.
EXECUTOR_CONSUMER = ConsumerSpec(
    stream=DISPATCH_STREAM.name,
    durable="executor",
    filter_subjects=(f"{DISPATCH_PREFIX}.>",),
    ack_wait_s=3,
    max_deliver=20,
)
# Webhook deliveries: each event a request's webhook asked for, POSTed until the receiver takes it. A
# failed try is retried after a doubling delay (1 s … 5 min, about 20 min in all: WEBHOOK_RETRY_DELAYS and
# WEBHOOK_MAX_TRIES change it), then dead-lettered; a redelivery after a restart is the same delivery.
WEBHOOKS_CONSUMER = ConsumerSpec(
    stream=REQUESTS_STREAM.name,
    durable="webhooks",
    filter_subjects=tuple(
        f"{REQ_PREFIX}.*.{e}"
        for e in (RequestEvent.PROGRESS, RequestEvent.COMPLETED, RequestEvent.FAILED, RequestEvent.CANCELLED)
    ),
    ack_wait_s=30,
    max_deliver=12,
    retry_delays_s=(1, 2, 4, 8, 16, 32, 64, 128, 300),
    deliver_new=True,
)
CONSUMERS = (SCHEDULER_CONSUMER, POD_FAULTS_CONSUMER, EXECUTOR_CONSUMER, WEBHOOKS_CONSUMER)


# ------------------------------------------------------------------------------------------ channel table


@dataclass(frozen=True)
class Channel:
    """One row of the table above, used to export the AsyncAPI document."""

    address: str
    message: type[msgspec.Struct]
    publisher: str
    description: str
    parameters: tuple[str, ...] = field(default=())
    public: bool = False  # for other services to subscribe to; the others are Vibewave's own


BY_REQUEST = ("request_id",)

CHANNELS: tuple[Channel, ...] = (
    Channel("vw.req.{request_id}.submitted", RequestSubmitted, "api", "A request was accepted.", BY_REQUEST),
    Channel("vw.req.{request_id}.assigned", RequestAssigned, "scheduler", "Placed on a pod.", BY_REQUEST, public=True),
    Channel("vw.req.{request_id}.started", RequestStarted, "executor", "Queued in ComfyUI.", BY_REQUEST, public=True),
    Channel("vw.req.{request_id}.progress", RequestProgress, "executor", "Sampler progress.", BY_REQUEST, public=True),
    Channel(
        "vw.req.{request_id}.attempt_failed",
        AttemptFailed,
        "executor",
        "One attempt failed.",
        BY_REQUEST,
    ),
    Channel(
        "vw.req.{request_id}.completed",
        RequestCompleted,
        "scheduler",
        "Terminal: files ready.",
        BY_REQUEST,
        public=True,
    ),
    Channel(
        "vw.req.{request_id}.attempt_succeeded",
        AttemptSucceeded,
        "executor",
        "One attempt ran; its files are stored.",
        BY_REQUEST,
    ),
    Channel("vw.req.{request_id}.failed", RequestFailed, "scheduler", "Terminal: gave up.", BY_REQUEST, public=True),
    Channel("vw.req.{request_id}.cancel_requested", CancelRequested, "api", "A client asked to stop.", BY_REQUEST),
    Channel(
        "vw.req.{request_id}.cancelled",
        RequestCancelled,
        "scheduler",
        "Terminal: stopped.",
        BY_REQUEST,
        public=True,
    ),
    Channel("vw.dispatch.{pod_id}", Assignment, "scheduler", "Work for one pod (work queue).", ("pod_id",)),
    Channel(
        "vw.pod.{pod_id}.{event}", PodEvent, "pod-manager", "A pod changed state.", ("pod_id", "event"), public=True
    ),
    Channel(DEMAND_SUBJECT, Demand, "scheduler", "Pods needed per GPU class (core NATS, periodic)."),
    Channel("vw.rpc.pods.{op}", PodAdminRequest, "api", "Admin call; pod-manager replies PodAdminReply.", ("op",)),
    Channel("(reply inbox)", PodAdminReply, "pod-manager", "Answer to an admin call."),
    Channel("vw.dlq.{consumer}", DeadLetter, "any consumer", "A message given up on.", ("consumer",)),
)
