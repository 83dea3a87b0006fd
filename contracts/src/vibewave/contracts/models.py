"""REST models of the product's API document, as msgspec Structs.

These are the shapes clients see. Field names, defaults and examples follow the API document; anything we
add is optional so that a client written against the document keeps working.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

import msgspec

DEFAULT_WORKFLOW = "comfyui_image_qwen"


class RequestStatus(StrEnum):
    """Lifecycle of one generation request: pending → assigned → running → completed, failed or cancelled."""

    PENDING = "pending"
    ASSIGNED = "assigned"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({RequestStatus.COMPLETED, RequestStatus.FAILED, RequestStatus.CANCELLED})


class Priority(StrEnum):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


Prompt = Annotated[str, msgspec.Meta(min_length=1, max_length=4000, description="What to generate.")]
Side = Annotated[int, msgspec.Meta(ge=64, le=4096, description="Pixels; the workflow may narrow the range.")]
Seed = Annotated[int, msgspec.Meta(ge=0, description="0 to 2**64-1; drawn at random and recorded when omitted.")]
Steps = Annotated[int, msgspec.Meta(ge=1, le=150)]


PresetName = Annotated[str, msgspec.Meta(description="A preset of `/api/qwen/presets` (fast, quality, ultra).")]


class WebhookEvent(StrEnum):
    """What a webhook is told about: the request's end (completed, failed, cancelled) and its progress."""

    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PROGRESS = "progress"


TERMINAL_WEBHOOK_EVENTS = (WebhookEvent.COMPLETED, WebhookEvent.FAILED, WebhookEvent.CANCELLED)
WebhookUrl = Annotated[
    str,
    msgspec.Meta(
        min_length=8, max_length=2048,
        description="An https:// URL of a public address (http:// and private addresses only where the operator "
        "allows them: VIBEWAVE_ALLOW_PRIVATE_URLS=true).",
    ),
]  # fmt: skip


class WebhookSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Where to POST the request's events, signed by the Standard Webhooks scheme (`webhook-id`,
    `webhook-timestamp`, `webhook-signature`) with the key's webhook secret (or the deployment's)."""

    url: WebhookUrl
    events: Annotated[list[WebhookEvent], msgspec.Meta(min_length=1, max_length=4)] = msgspec.field(
        default_factory=lambda: list(TERMINAL_WEBHOOK_EVENTS)
    )


WebhookParam = Annotated[
    WebhookSpec | None, msgspec.Meta(description="Signed callbacks of this request's events (default: its end).")
]


class WorkflowInput(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Inputs of a text-to-image generation (API document, "WorkflowInput").

    Omitted values come from the preset (if named), then the workflow's defaults: 1024x1024, 4 steps,
    a random seed (recorded in the request's `inputs`).
    """

    prompt: Prompt
    negative_prompt: Annotated[str, msgspec.Meta(max_length=4000)] | None = None
    width: Side | None = None
    height: Side | None = None
    seed: Seed | None = None
    steps: Steps | None = None
    preset: PresetName | None = None
    priority: Priority = Priority.NORMAL
    webhook: WebhookParam = None

    def workflow_inputs(self) -> dict[str, Any]:
        """The inputs the caller gave, as the workflow sees them (no scheduling hints, no preset)."""
        inputs = msgspec.structs.asdict(self)
        for hint in ("priority", "preset", "count", "webhook"):
            inputs.pop(hint, None)
        return {name: value for name, value in inputs.items() if value is not None}


MAX_BATCH = 16


class BatchGenerateRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`POST /api/qwen/batch-generate`: one request per prompt, sharing the other settings."""

    prompts: Annotated[list[Prompt], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]
    negative_prompt: Annotated[str, msgspec.Meta(max_length=4000)] | None = None
    width: Side | None = None
    height: Side | None = None
    seed: Seed | None = None
    steps: Steps | None = None
    preset: PresetName | None = None
    priority: Priority = Priority.NORMAL
    webhook: WebhookParam = None

    def inputs_for(self, prompt: str, index: int) -> dict[str, Any]:
        """The inputs of the batch's `index`-th request; a given seed counts up across the batch."""
        inputs: dict[str, Any] = {
            "prompt": prompt, "negative_prompt": self.negative_prompt, "width": self.width, "height": self.height,
            "seed": None if self.seed is None else self.seed + index, "steps": self.steps,
        }  # fmt: skip
        return {name: value for name, value in inputs.items() if value is not None}


DEFAULT_COUNT = 4
OnePrompt = Annotated[Prompt, msgspec.Meta(description="The prompt of all `count` images, instead of `prompts`.")]
Count = Annotated[
    int, msgspec.Meta(ge=1, le=MAX_BATCH, description=f"How many images of `prompt` (default {DEFAULT_COUNT}).")
]


class MultipleImagesRequest(BatchGenerateRequest, forbid_unknown_fields=True, kw_only=True):
    """`POST /api/runpod/generate-multiple-images`: `prompts` (one image each, as batch-generate takes
    them) or `count` images of one `prompt`; a given seed counts up across the batch (seed, seed+1, ...).

    Once decoded it is the batch-generate request it stands for: `prompts` holds one prompt per image.
    """

    prompts: Annotated[
        list[Prompt],
        msgspec.Meta(
            min_length=1, max_length=MAX_BATCH, description="One image per prompt; or, instead, `prompt` and `count`."
        ),
    ] = msgspec.field(default_factory=list)
    prompt: OnePrompt | None = None
    count: Count | None = None

    def __post_init__(self) -> None:
        """One way of naming the prompts, not both nor neither (a 400); then `prompts` is the batch."""
        if self.prompt is not None and self.prompts:
            raise ValueError("give either `prompts` (one image each) or `prompt` (with `count`), not both")
        if self.prompt is not None:
            self.prompts = [self.prompt] * (self.count or DEFAULT_COUNT)
        elif not self.prompts:
            raise ValueError("`prompts` (one image each) or `prompt` (with `count`) is required")
        elif self.count is not None:
            raise ValueError("`count` goes with `prompt`: `prompts` makes one image per prompt")


class WorkflowQueueRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Any workflow of the catalogue, with its own inputs (see the workflow's input schema)."""

    workflow_name: str = DEFAULT_WORKFLOW
    inputs: dict[str, Any] = msgspec.field(default_factory=dict)
    preset: PresetName | None = None
    priority: Priority = Priority.NORMAL
    webhook: WebhookParam = None


class WorkflowResult(msgspec.Struct, kw_only=True, omit_defaults=False):
    """Outcome of one request (API document, "WorkflowResult"); `files` are names for `/api/files/{name}`,
    and with S3 output storage `urls` are presigned links to the same files, in the same order (the field
    is absent otherwise, so the document's shape is unchanged)."""

    success: bool
    files: list[str] = msgspec.field(default_factory=list)
    error: str | None = None
    request_id: str | None = None
    pod_id: str | None = None
    pod_ip: str | None = None
    urls: list[str] | msgspec.UnsetType = msgspec.UNSET  # only with S3 storage: absent otherwise


class RequestTimings(msgspec.Struct, kw_only=True):
    """Where a finished request's time went, in ms: waiting for a free pod (`queued_ms`), waiting for the
    pod it ran on to boot (`boot_wait_ms`), running on it — dispatch, ComfyUI, download (`run_ms`) — and
    storing its files (`upload_ms`); `total_ms` is created → finished, so the rest is bookkeeping."""

    queued_ms: int
    boot_wait_ms: int
    run_ms: int
    upload_ms: int
    total_ms: int


class ComfyUIRequest(msgspec.Struct, kw_only=True):
    """One request as clients read it (API document, "ComfyUIRequest")."""

    id: str
    workflow_name: str
    inputs: dict[str, Any]
    status: RequestStatus
    pod_id: str | None
    created_at: datetime
    updated_at: datetime
    result: WorkflowResult | None = None
    error: str | None = None
    attempts: int = 0
    progress: float | None = None
    queue_position: int | None = None  # waiting: 1 is the next to get a pod of its kind
    eta_seconds: float | None = None  # unfinished: expected seconds until it is finished
    waiting_reason: str | None = None  # waiting: why no pod is started for it beyond the queue (the spend cap)
    timings: RequestTimings | None = None  # finished: where its time went
    gpu_seconds: float | None = None  # finished: the pod time its runs took
    cost: float | None = None  # finished: gpu_seconds x its pod's hourly price / 3600, in USD


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # not yet accepted by the receiver: retried with a growing delay
    DELIVERED = "delivered"
    DEAD = "dead"  # the retry budget is spent: given up, kept for the operator (and the client) to see


class WebhookDelivery(msgspec.Struct, kw_only=True):
    """One event of one request sent to its webhook (`GET /api/webhooks/deliveries`); `id` is the
    `webhook-id` every try of it carries."""

    id: str
    request_id: str
    event: WebhookEvent
    url: str
    status: DeliveryStatus
    attempts: int
    first_try_at: datetime
    last_try_at: datetime
    response_status: int | None = None  # the receiver's last HTTP status (None: no answer)
    error: str | None = None  # why the last try failed
    tenant: str | None = None


class FileUploaded(msgspec.Struct, kw_only=True):
    """`POST /api/files`: the stored image, to name as a workflow's image input."""

    name: str
    size: int
    content_type: str
    width: int
    height: int


class GenerateAccepted(msgspec.Struct, kw_only=True):
    """Answer to an asynchronous generate call: where to poll."""

    request_id: str
    status: RequestStatus
    workflow_name: str
    status_url: str


class BatchAccepted(msgspec.Struct, kw_only=True):
    """Answer to a batch: its id (readable as a whole at `status_url`) and each request's id."""

    batch_id: str
    request_ids: list[str]
    status: RequestStatus
    status_url: str


class BatchStatus(msgspec.Struct, kw_only=True):
    """A batch read as a whole: overall status (completed only when all are), files, and each request."""

    batch_id: str
    status: RequestStatus
    total: int
    counts: dict[str, int]
    files: list[str]
    requests: list[ComfyUIRequest]


class SyncTimeout(msgspec.Struct, kw_only=True):
    """408 to a synchronous call that ran out of time; the request goes on and can be polled."""

    detail: str
    request_id: str
    status: RequestStatus
    status_url: str


class ActivePod(msgspec.Struct, kw_only=True):
    """A live pod. Pods serve every workflow: `workflow_name` is the one it runs or ran last ("any" before
    its first request)."""

    id: str
    name: str
    status: str
    ip: str | None
    workflow_name: str


class RequestSummary(msgspec.Struct, kw_only=True):
    id: str
    workflow_name: str
    status: RequestStatus


class PodView(msgspec.Struct, kw_only=True):
    """A pod as `/api/runpod/pods` shows it: Vibewave's view plus the provider's own record (`details`)."""

    id: str
    name: str
    provider: str
    status: str  # creating, starting, ready, stopped, failed, terminated — or the provider's, if not ours
    managed: bool  # created (or adopted) by Vibewave
    workflow_name: str | None = None
    provider_state: str | None = None
    gpu_type: str | None = None
    cost_per_hr: float | None = None
    ip: str | None = None
    comfyui_url: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    error: str | None = None
    models: list[str] | None = None  # model files (`folder/file`) its ComfyUI lists; None: not checked
    models_missing: list[str] = msgspec.field(default_factory=list)  # of the fleet's set, not listed yet
    boot: str | None = None  # what its bootstrap is doing while it starts (installing, downloading 37 %)
    details: dict[str, Any] = msgspec.field(default_factory=dict)


class PodCreateRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`POST /api/runpod/pods`: a pod for this workflow, created with the configured defaults."""

    workflow_name: str = DEFAULT_WORKFLOW


class PodAddress(msgspec.Struct, kw_only=True):
    """`GET /api/runpod/pods/{id}/ip`: where the pod answers."""

    pod_id: str
    ip: str | None
    comfyui_url: str | None
    ports: list[dict[str, Any]] = msgspec.field(default_factory=list)


class QueueStatus(msgspec.Struct, kw_only=True):
    """The queue at a glance (API document, "QueueStatus")."""

    active_pods: list[ActivePod]
    pending_requests: list[RequestSummary]
    completed_requests: list[RequestSummary]
    failed_requests: list[RequestSummary]


class QueueStats(msgspec.Struct, kw_only=True):
    """Counts of `/api/runpod/stats` (API document, "Queue Statistics").

    `pending_requests` counts every request not yet ended (waiting or running); `running_requests` and
    `cancelled_requests` are additions, so that the parts add up to `total_requests`.
    """

    active_pods: int
    pending_requests: int
    completed_requests: int
    failed_requests: int
    total_requests: int
    running_requests: int = 0
    cancelled_requests: int = 0
    gpu_seconds: float = 0.0  # of every finished request's runs
    cost: float = 0.0  # USD: gpu_seconds x each pod's hourly price
    workflows: dict[str, WorkflowStats] = msgspec.field(default_factory=dict)


class WorkflowStats(msgspec.Struct, kw_only=True):
    """Per workflow in `/api/runpod/stats`: how many, how long they ran, what they cost."""

    total: int = 0
    completed: int = 0
    failed: int = 0
    gpu_seconds: float = 0.0
    cost: float = 0.0
    mean_run_seconds: float | None = None  # of its completed requests


class ErrorBody(msgspec.Struct):
    """Every 4xx/5xx body (API document, "Error Handling")."""

    detail: str


class Scope(StrEnum):
    """What an API key may do. `generate`: create requests, read and cancel its tenant's requests and
    files. `read`: its tenant's requests, files, queue status, history and stats. `admin`: everything —
    pods, the account, the catalogue, keys, every tenant's requests."""

    GENERATE = "generate"
    READ = "read"
    ADMIN = "admin"


KeyName = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._@-]*$")]
TenantName = Annotated[
    str,
    msgspec.Meta(
        min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Whose requests the key makes and sees; keys of one tenant share them. Default: the key's name.",
    ),
]  # fmt: skip


WebhookSecret = Annotated[
    str,
    msgspec.Meta(
        min_length=30, max_length=200, pattern=r"^whsec_[A-Za-z0-9+/]+={0,2}$",
        description="Signs this key's webhooks (Standard Webhooks: `whsec_` + base64 of 24 to 64 random bytes). "
        "Default: the deployment's WEBHOOK_SECRET.",
    ),
]  # fmt: skip


class ApiKeyCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`POST /api/keys` (admin): a client key. Limits apply per key; `weight` is the tenant's share of the
    pods against other tenants of the same priority (2 gets twice the runs of 1 while both wait)."""

    name: KeyName
    tenant: TenantName | None = None
    scopes: Annotated[list[Scope], msgspec.Meta(min_length=1, max_length=3)] = msgspec.field(
        default_factory=lambda: [Scope.GENERATE, Scope.READ]
    )
    requests_per_minute: Annotated[int, msgspec.Meta(ge=1, le=100_000)] | None = 600
    max_open_requests: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = 1000
    weight: Annotated[float, msgspec.Meta(gt=0, le=1000)] = 1.0
    webhook_secret: WebhookSecret | None = None


class ApiKeyInfo(msgspec.Struct, kw_only=True):
    """A key as `GET /api/keys` lists it: never the key itself."""

    id: str
    name: str
    tenant: str
    scopes: list[Scope]
    requests_per_minute: int | None
    max_open_requests: int | None
    weight: float
    created_at: datetime
    webhook_secret_set: bool = False  # its webhooks are signed with its own secret (never shown again)


class ApiKeyCreated(ApiKeyInfo, kw_only=True):
    """The new key, shown this once: send it as `Authorization: Bearer <key>`."""

    key: str


class CancelConflict(msgspec.Struct, kw_only=True):
    """409 to a cancel of a finished request: why, and the request as it stands."""

    detail: str
    request: ComfyUIRequest


class PresetInfo(msgspec.Struct, kw_only=True):
    name: str
    description: str
    inputs: dict[str, Any]
    variant: str  # the graph variant these inputs run on
    graph: str  # what that variant is (model, LoRA, sampler settings)
    expected_seconds: tuple[float, float] | None = None
    timeout_s: float


class InputInfo(msgspec.Struct, kw_only=True, omit_defaults=True):
    type: str
    required: bool = False
    default: Any = None
    min: int | float | None = None
    max: int | float | None = None
    multiple_of: int | None = None
    offset: int | None = None
    max_length: int | None = None
    random_default: bool = False


class WorkflowPresets(msgspec.Struct, kw_only=True):
    """`GET /api/qwen/presets`: named settings, which graph each runs on, and every input's limits."""

    workflow_name: str
    description: str
    default_preset: str | None
    presets: list[PresetInfo]
    inputs: dict[str, InputInfo]
    notes: dict[str, Any]


class ComponentHealth(msgspec.Struct, kw_only=True):
    name: str
    healthy: bool
    detail: str | None = None
    latency_ms: float | None = None


class HealthReport(msgspec.Struct, kw_only=True):
    """`GET /health`: the same shape with 200 (all up) and 503 (something down). `fleet` says whether
    pods can be had: unhealthy while a circuit breaker is open (with its diagnosis) or while no live
    pod-manager verifies the pods."""

    status: str
    api: ComponentHealth
    nats: ComponentHealth
    services: list[ComponentHealth]
    unhealthy: list[str]
    fleet: ComponentHealth | None = None


class ProbeReport(msgspec.Struct, kw_only=True):
    """`GET /health/live` and `GET /health/ready` (the api's, and every service's ops port): `status` is
    `live`, `ready` or `not ready`; `detail` says why it is not ready (503). Unlike `/health`, they judge
    only the process answering: liveness whether it answers at all, readiness whether it can do its job."""

    status: str
    detail: str | None = None


REST_MODELS: tuple[type[msgspec.Struct], ...] = (
    WorkflowInput,
    WorkflowResult,
    ComfyUIRequest,
    WorkflowQueueRequest,
    BatchGenerateRequest,
    MultipleImagesRequest,
    BatchAccepted,
    BatchStatus,
    SyncTimeout,
    GenerateAccepted,
    WebhookSpec,
    WebhookDelivery,
    RequestTimings,
    FileUploaded,
    QueueStatus,
    QueueStats,
    ErrorBody,
    CancelConflict,
    WorkflowPresets,
    PodView,
    HealthReport,
    ProbeReport,
)
