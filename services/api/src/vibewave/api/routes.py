"""HTTP handlers for requests and workflows: take typed input, call the gateway, return a contract Struct."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

import msgspec
import nats.errors
from litestar import Controller, Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from litestar.openapi import ResponseSpec
from litestar.params import Body, PathParameter, QueryParameter
from litestar.response import Stream
from litestar.status_codes import (
    HTTP_200_OK,
    HTTP_202_ACCEPTED,
    HTTP_408_REQUEST_TIMEOUT,
    HTTP_409_CONFLICT,
    HTTP_422_UNPROCESSABLE_ENTITY,
    HTTP_503_SERVICE_UNAVAILABLE,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from vibewave.api import webhooks
from vibewave.api.auth import Principal, principal_of, requires
from vibewave.api.body import ACCEPTS
from vibewave.api.catalog import describe
from vibewave.api.gateway import (
    AlreadyFinished,
    Gateway,
    IdempotencyConflict,
    IndexLoading,
    Submission,
    Unavailable,
    new_batch_id,
)
from vibewave.api.limits import LimitExceeded, OverBatchLimit
from vibewave.api.uploads import MAX_UPLOAD_BODY, UPLOAD_MEDIA_TYPES
from vibewave.contracts.events import RequestRecord
from vibewave.contracts.models import (
    DEFAULT_WORKFLOW,
    BatchAccepted,
    BatchGenerateRequest,
    BatchStatus,
    CancelConflict,
    ComfyUIRequest,
    FileUploaded,
    GenerateAccepted,
    HealthReport,
    MultipleImagesRequest,
    Priority,
    ProbeReport,
    QueueStats,
    QueueStatus,
    RequestStatus,
    Scope,
    SyncTimeout,
    WebhookSpec,
    WorkflowInput,
    WorkflowPresets,
    WorkflowQueueRequest,
    WorkflowResult,
)
from vibewave.contracts.workflows import InvalidInput, Workflow
from vibewave.runtime.metrics import registry
from vibewave.runtime.ops import nats_connected

NOT_FOUND = "Request not found"
CANCEL_WAIT_S = 10.0
SYNC_TIMEOUT_CAP_S = 1800.0
SYNC_TIMEOUT_DEFAULT_S = 300.0
MAX_IDEMPOTENCY_KEY = 255

RequestId = Annotated[str, PathParameter(description="The id a generate, batch or queue call returned.")]
SyncTimeoutParam = Annotated[
    float | None,
    QueryParameter(
        gt=0,
        le=SYNC_TIMEOUT_CAP_S,
        description="Seconds to wait before answering 408 (the request keeps running). Default: the preset's.",
    ),
]
CREATES = [requires(Scope.GENERATE)]  # guards of the routes that make requests (and cancel them)
READS = [requires(Scope.GENERATE, Scope.READ)]  # a request's status, its files
OVERVIEWS = [requires(Scope.READ)]  # queue status, history, stats
IDEMPOTENCY_DOC = {
    422: ResponseSpec(None, description="The Idempotency-Key was already used with a different body"),
}


def gateway_of(state: State) -> Gateway:
    gateway: Gateway = state.gateway
    return gateway


def idempotency_key(request: Request[Any, Any, Any]) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and not 0 < len(key) <= MAX_IDEMPOTENCY_KEY:
        raise ValidationException(detail=f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters")
    return key


def fingerprint(path: str, body: msgspec.Struct) -> str:
    return hashlib.sha256(path.encode() + b"\n" + msgspec.json.encode(body)).hexdigest()


def resolve(workflow: Workflow, given: dict[str, Any], preset: str | None) -> dict[str, Any]:
    """Validate against the workflow's schema: a 400 naming the field."""
    try:
        return workflow.resolve_inputs(given, preset)
    except InvalidInput as exc:
        raise ValidationException(detail=str(exc)) from exc


async def checked_images(
    gateway: Gateway, request: Request[Any, Any, Any], workflow: Workflow, inputs: dict[str, Any]
) -> None:
    """Image inputs name the caller's uploads or URLs that may be fetched: else a 400."""
    try:
        await gateway.uploads.check_inputs(workflow, inputs, principal_of(request), gateway.index.file_tenant)
    except InvalidInput as exc:
        raise ValidationException(detail=str(exc)) from exc
    except nats.errors.Error as exc:
        raise HTTPException(status_code=HTTP_503_SERVICE_UNAVAILABLE, detail=f"uploads unreadable ({exc})") from exc


async def checked_webhook(
    gateway: Gateway, request: Request[Any, Any, Any], webhook: WebhookSpec | None
) -> WebhookSpec | None:
    """The create's webhook, once its URL and a secret to sign with are known good: else a 400."""
    if webhook is not None:
        try:
            await webhooks.accept(webhook, principal_of(request), gateway.settings.webhooks)
        except webhooks.WebhookRefused as exc:
            raise ValidationException(detail=str(exc)) from exc
    return webhook


async def publish(gateway: Gateway, submission: Submission, request: Request[Any, Any, Any]) -> Submission:
    try:
        return await gateway.submit(submission, idempotency_key(request), principal_of(request))
    except LimitExceeded as exc:
        raise HTTPException(status_code=429, detail=str(exc), headers={"Retry-After": exc.retry_after}) from exc
    except OverBatchLimit as exc:
        raise ValidationException(detail=str(exc)) from exc
    except IdempotencyConflict as exc:
        raise HTTPException(status_code=HTTP_422_UNPROCESSABLE_ENTITY, detail=str(exc)) from exc
    except Unavailable as exc:
        raise HTTPException(status_code=HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc)) from exc


async def submit_one(
    gateway: Gateway,
    request: Request[Any, Any, Any],
    body: msgspec.Struct,
    workflow: Workflow,
    given: dict[str, Any],
    preset: str | None,
    priority: Priority,
    *,
    webhook: WebhookSpec | None = None,
) -> Submission:
    inputs, hook = resolve(workflow, given, preset), await checked_webhook(gateway, request, webhook)
    await checked_images(gateway, request, workflow, inputs)
    named = workflow.preset_for(inputs, preset)  # the preset its inputs match: what its run time is measured by
    event = gateway.prepare(workflow, inputs, priority, preset=named, principal=principal_of(request), webhook=hook)
    submission = Submission(fingerprint=fingerprint(request.url.path, body), batch_id=None, events=[event])
    return await publish(gateway, submission, request)


async def submit_batch(
    gateway: Gateway,
    request: Request[Any, Any, Any],
    body: msgspec.Struct,
    workflow: Workflow,
    inputs: list[dict[str, Any]],
    preset: str | None,
    priority: Priority,
    *,
    webhook: WebhookSpec | None = None,
) -> BatchAccepted:
    batch_id, principal = new_batch_id(), principal_of(request)
    resolved = [resolve(workflow, given, preset) for given in inputs]
    for given in resolved:
        await checked_images(gateway, request, workflow, given)
    hook = await checked_webhook(gateway, request, webhook)
    events = [
        gateway.prepare(
            workflow,
            given,
            priority,
            preset=workflow.preset_for(given, preset),
            batch_id=batch_id,
            principal=principal,
            webhook=hook,
        )
        for given in resolved
    ]
    submission = Submission(fingerprint=fingerprint(request.url.path, body), batch_id=batch_id, events=events)
    submission = await publish(gateway, submission, request)
    batch = submission.batch_id or batch_id
    return BatchAccepted(
        batch_id=batch,
        request_ids=[e.request_id for e in submission.events],
        status=RequestStatus.PENDING,
        status_url=f"/api/qwen/status/{batch}",
    )


async def generate_sync(
    gateway: Gateway,
    request: Request[Any, Any, Any],
    data: WorkflowInput,
    timeout: float | None,
    status_path: str,
) -> Response[WorkflowResult | SyncTimeout]:
    """Submit, then wait for the request's end — registered before publishing — or answer 408."""
    workflow = gateway.catalog[DEFAULT_WORKFLOW]
    inputs = resolve(workflow, data.workflow_inputs(), data.preset)
    await checked_images(gateway, request, workflow, inputs)
    preset = workflow.preset_for(inputs, data.preset)
    principal = principal_of(request)
    hook = await checked_webhook(gateway, request, data.webhook)
    event = gateway.prepare(workflow, inputs, data.priority, preset=preset, principal=principal, webhook=hook)
    ended = gateway.index.expect(event.request_id, lambda r: r.status.terminal)
    submission = Submission(fingerprint=fingerprint(request.url.path, data), batch_id=None, events=[event])
    try:
        submission = await publish(gateway, submission, request)
    except HTTPException:
        gateway.index.forget(event.request_id, ended)
        raise
    request_id = submission.events[0].request_id
    wait_s = timeout or workflow.sync_timeout_for(preset, SYNC_TIMEOUT_DEFAULT_S)
    if request_id == event.request_id:
        record = await gateway.index.wait_expected(request_id, ended, wait_s)
    else:  # an idempotent repeat: wait on the first call's request
        gateway.index.forget(event.request_id, ended)
        record = await gateway.index.wait(request_id, lambda r: r.status.terminal, wait_s)
    if record is None:
        try:
            current = await gateway.get_request(request_id, principal)
        except IndexLoading:  # its end was not seen: it was accepted, and is at least pending
            current = None
        return Response(
            SyncTimeout(
                detail=f"Generation not finished within {wait_s:.0f}s; it keeps running: poll the status URL",
                request_id=request_id,
                status=current.status if current else RequestStatus.PENDING,
                status_url=f"{status_path}/{request_id}",
            ),
            status_code=HTTP_408_REQUEST_TIMEOUT,
        )
    return Response(result_of(record, principal), status_code=HTTP_200_OK)


def result_of(record: RequestRecord, principal: Principal) -> WorkflowResult:
    """The sync answer; the pod's address only for admins."""
    if record.status == RequestStatus.COMPLETED and record.result is not None:
        result = record.result
    else:
        result = WorkflowResult(
            success=False, files=[], error=record.error or str(record.status), request_id=record.id,
            pod_id=record.pod_id, pod_ip=record.pod_ip,
        )  # fmt: skip
    return result if principal.admin else msgspec.structs.replace(result, pod_ip=None)


async def accepted(gateway: Gateway, request: Request[Any, Any, Any], data: WorkflowInput) -> GenerateAccepted:
    workflow = gateway.catalog[DEFAULT_WORKFLOW]
    submission = await submit_one(
        gateway, request, data, workflow, data.workflow_inputs(), data.preset, data.priority, webhook=data.webhook
    )
    event = submission.events[0]
    return GenerateAccepted(
        request_id=event.request_id,
        status=RequestStatus.PENDING,
        workflow_name=event.workflow_name,
        status_url=f"/api/qwen/status/{event.request_id}",
    )


async def request_status(gateway: Gateway, request_id: str, principal: Principal) -> ComfyUIRequest:
    found = await gateway.get_request(request_id, principal)
    if found is None:
        raise NotFoundException(detail=NOT_FOUND)
    return found


class QwenController(Controller):
    path = "/api/qwen"
    tags = ["Qwen image generation"]

    @post("/generate", status_code=HTTP_200_OK, operation_id="qwenGenerate", guards=CREATES,
          responses={408: ResponseSpec(SyncTimeout, description="Not finished in time; poll the status URL"),
                     **IDEMPOTENCY_DOC})  # fmt: skip
    async def generate(
        self, state: State, request: Request[Any, Any, Any],
        data: Annotated[WorkflowInput, Body(title="WorkflowInput")], timeout: SyncTimeoutParam = None,
    ) -> Response[WorkflowResult | SyncTimeout]:  # fmt: skip
        """Generate a Qwen image and wait for it (408 with the request id if it takes longer than `timeout`)."""
        return await generate_sync(gateway_of(state), request, data, timeout, "/api/qwen/status")

    @post("/generate-async", status_code=HTTP_202_ACCEPTED, operation_id="qwenGenerateAsync", guards=CREATES,
          responses=IDEMPOTENCY_DOC)  # fmt: skip
    async def generate_async(
        self, state: State, request: Request[Any, Any, Any],
        data: Annotated[WorkflowInput, Body(title="WorkflowInput")],
    ) -> GenerateAccepted:  # fmt: skip
        """Queue a Qwen image generation and return its request id at once."""
        return await accepted(gateway_of(state), request, data)

    @post("/batch-generate", status_code=HTTP_202_ACCEPTED, operation_id="qwenBatchGenerate", guards=CREATES,
          responses=IDEMPOTENCY_DOC)  # fmt: skip
    async def batch_generate(
        self, state: State, request: Request[Any, Any, Any],
        data: Annotated[BatchGenerateRequest, Body(title="BatchGenerateRequest")],
    ) -> BatchAccepted:  # fmt: skip
        """Queue one generation per prompt; the batch is readable as a whole at its status URL."""
        gateway = gateway_of(state)
        inputs = [data.inputs_for(prompt, i) for i, prompt in enumerate(data.prompts)]
        workflow = gateway.catalog[DEFAULT_WORKFLOW]
        return await submit_batch(
            gateway, request, data, workflow, inputs, data.preset, data.priority, webhook=data.webhook
        )

    @get("/status/{request_id:str}", operation_id="qwenStatus", guards=READS)
    async def status(
        self, state: State, request: Request[Any, Any, Any], request_id: RequestId
    ) -> ComfyUIRequest | BatchStatus:
        """A request's state (`result.files` download from `/api/files/{name}`), or a whole batch's."""
        gateway, principal = gateway_of(state), principal_of(request)
        if request_id.startswith("batch-"):
            batch = await gateway.batch_status(request_id, principal)
            if batch is None:
                raise NotFoundException(detail="Batch not found")
            return batch
        return await request_status(gateway, request_id, principal)

    @get("/presets", operation_id="qwenPresets", sync_to_thread=False)
    def presets(self, state: State) -> WorkflowPresets:
        """Presets (fast, quality, ultra), the graph variant each runs on, and every input's limits."""
        return describe(gateway_of(state).catalog[DEFAULT_WORKFLOW])

    @get("/examples", operation_id="qwenExamples", sync_to_thread=False)
    def examples(self, state: State) -> dict[str, Any]:
        """Example prompts with sizes and presets, and tips for writing prompts."""
        definition = gateway_of(state).catalog[DEFAULT_WORKFLOW].definition
        return {"workflow_name": definition.name, "examples": definition.examples, "tips": definition.tips}

    @get("/health", operation_id="qwenHealth")
    async def health(self, state: State) -> Response[dict[str, Any]]:
        """Whether Qwen generation can run now: the services are alive, the workflow is loaded, and which of
        its model files each pod's ComfyUI lists (a pod that lacks some is given no request that needs them)."""
        gateway = gateway_of(state)
        report = await gateway.health()  # the api itself is unhealthy while its index loads
        workflow = gateway.catalog.get(DEFAULT_WORKFLOW)
        needed = [m.key for m in workflow.models] if workflow else []
        core = [m.key for m in workflow.models if not m.optional] if workflow else []
        pods = gateway.index.active_pods()
        serving = [p for p in pods if p.serves(0, core)]
        loaded = gateway.index.loaded.is_set()
        body = {
            "status": "healthy" if not report.unhealthy and workflow else "unhealthy",
            "workflow_name": DEFAULT_WORKFLOW,
            "workflow_loaded": workflow is not None,
            "presets": sorted(workflow.definition.presets) if workflow else [],
            "pods": {
                "active": len(serving),
                "ready": sum(1 for p in serving if p.status == "ready"),
                "booting": sum(1 for p in pods if p.status == "starting"),
            },
            "models": {
                "files": needed,
                "optional": [m.key for m in workflow.models if m.optional] if workflow else [],
                "pods": [
                    {
                        "pod_id": p.id,
                        "status": p.status,
                        "checked": p.models is not None,  # False: a local or static server, not checked
                        "present": [k for k in needed if p.models is None or k in p.models],
                        "missing": [k for k in core if p.models is not None and k not in p.models],
                        "boot": p.boot,
                    }
                    for p in pods
                ],
            },
            "queue": {"pending": gateway.stats().pending_requests if loaded else None},
            "unhealthy": report.unhealthy,
        }
        healthy = body["status"] == "healthy"
        return Response(body, status_code=HTTP_200_OK if healthy else HTTP_503_SERVICE_UNAVAILABLE)


class WorkflowsController(Controller):
    path = "/api/runpod/workflows"
    tags = ["Workflows"]

    @post("/queue", status_code=HTTP_202_ACCEPTED, operation_id="workflowsQueue", guards=CREATES,
          responses=IDEMPOTENCY_DOC)  # fmt: skip
    async def queue(
        self, state: State, request: Request[Any, Any, Any],
        data: Annotated[WorkflowQueueRequest, Body(title="WorkflowQueueRequest")],
    ) -> ComfyUIRequest:  # fmt: skip
        """Queue any workflow of the catalogue (shipped or from `WORKFLOWS_DIR`) with its own inputs."""
        gateway = gateway_of(state)
        workflow = gateway.catalog.get(data.workflow_name)
        if workflow is None:
            known = ", ".join(gateway.catalog.names())
            raise ValidationException(detail=f"workflow_name: unknown workflow {data.workflow_name!r} (known: {known})")
        submission = await submit_one(
            gateway, request, data, workflow, data.inputs, data.preset, data.priority, webhook=data.webhook
        )
        event = submission.events[0]
        try:
            current = await gateway.get_request(event.request_id, principal_of(request))
        except IndexLoading:  # accepted all the same: answer with what was submitted
            current = None
        return current or ComfyUIRequest(
            id=event.request_id, workflow_name=event.workflow_name, inputs=event.inputs,
            status=RequestStatus.PENDING, pod_id=None, created_at=event.created_at, updated_at=event.created_at,
        )  # fmt: skip

    @get("/status/{request_id:str}", operation_id="workflowsStatus", guards=READS)
    async def status(self, state: State, request: Request[Any, Any, Any], request_id: RequestId) -> ComfyUIRequest:
        """A queued workflow's current state."""
        return await request_status(gateway_of(state), request_id, principal_of(request))

    @get("/queue/status", operation_id="workflowsQueueStatus", sync_to_thread=False, guards=OVERVIEWS)
    def queue_status(
        self, state: State, request: Request[Any, Any, Any],
        limit: Annotated[int, QueryParameter(ge=1, le=1000, description="Newest N per list")] = 100,
    ) -> QueueStatus:  # fmt: skip
        """Active pods, and the newest unfinished, completed and failed (or cancelled) requests (of the key's
        tenant; pods' addresses for admin keys only)."""
        return gateway_of(state).queue_status(limit, principal_of(request))

    @get("/history", operation_id="workflowsHistory", sync_to_thread=False, guards=OVERVIEWS)
    def history(
        self,
        state: State,
        request: Request[Any, Any, Any],
        limit: Annotated[int, QueryParameter(ge=1, le=1000, description="At most this many, newest first")] = 50,
        status: Annotated[RequestStatus | None, QueryParameter(description="Only requests in this state")] = None,
    ) -> list[ComfyUIRequest]:
        """Requests (of the key's tenant), newest first, optionally of one status."""
        return gateway_of(state).history(limit, status, principal_of(request))

    @delete(
        "/{request_id:str}",
        status_code=HTTP_200_OK,
        operation_id="workflowsCancel",
        guards=CREATES,
        responses={409: ResponseSpec(CancelConflict, description="The request had already ended")},
    )
    async def cancel(
        self, state: State, request: Request[Any, Any, Any], request_id: RequestId
    ) -> Response[ComfyUIRequest | CancelConflict]:
        """Cancel: a pending request at once, a running one by interrupting its prompt (409 if it had ended)."""
        try:
            found = await gateway_of(state).cancel(request_id, CANCEL_WAIT_S, principal_of(request))
        except AlreadyFinished as exc:
            return Response(CancelConflict(detail=str(exc), request=exc.request), status_code=HTTP_409_CONFLICT)
        except Unavailable as exc:
            raise HTTPException(status_code=HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc)) from exc
        if found is None:
            raise NotFoundException(detail=NOT_FOUND)
        return Response(found, status_code=HTTP_200_OK if found.status.terminal else HTTP_202_ACCEPTED)


IMAGES = ["Image generation"]


@post("/api/runpod/generate-image", status_code=HTTP_200_OK, operation_id="runpodGenerateImage", tags=IMAGES,
      guards=CREATES,
      responses={408: ResponseSpec(SyncTimeout, description="Not finished in time; poll the status URL"),
                 **IDEMPOTENCY_DOC})  # fmt: skip
async def generate_image(
    state: State, request: Request[Any, Any, Any],
    data: Annotated[WorkflowInput, Body(title="WorkflowInput")], timeout: SyncTimeoutParam = None,
) -> Response[WorkflowResult | SyncTimeout]:  # fmt: skip
    """Generate an image and wait for it (408 with the request id if it takes longer than `timeout`)."""
    return await generate_sync(gateway_of(state), request, data, timeout, "/api/runpod/workflows/status")


@post(
    "/api/runpod/generate-image-async",
    status_code=HTTP_202_ACCEPTED,
    operation_id="runpodGenerateImageAsync",
    tags=IMAGES,
    guards=CREATES,
    responses=IDEMPOTENCY_DOC,
)
async def generate_image_async(
    state: State, request: Request[Any, Any, Any],
    data: Annotated[WorkflowInput, Body(title="WorkflowInput")],
) -> GenerateAccepted:  # fmt: skip
    """Queue an image generation and return its request id at once."""
    return await accepted(gateway_of(state), request, data)


@post(
    "/api/runpod/generate-multiple-images",
    status_code=HTTP_202_ACCEPTED,
    operation_id="runpodGenerateMultipleImages",
    tags=IMAGES,
    guards=CREATES,
    responses=IDEMPOTENCY_DOC,
)
async def generate_multiple_images(
    state: State, request: Request[Any, Any, Any],
    data: Annotated[MultipleImagesRequest, Body(title="MultipleImagesRequest")],
) -> BatchAccepted:  # fmt: skip
    """Queue one image per prompt of `prompts`, or `count` of one `prompt`, as one batch (seeds count up)."""
    gateway = gateway_of(state)
    inputs = [data.inputs_for(prompt, i) for i, prompt in enumerate(data.prompts)]
    workflow = gateway.catalog[DEFAULT_WORKFLOW]
    return await submit_batch(
        gateway, request, data, workflow, inputs, data.preset, data.priority, webhook=data.webhook
    )


@get("/api/runpod/stats", operation_id="runpodStats", sync_to_thread=False, tags=["Workflows"], guards=OVERVIEWS)
def stats(state: State, request: Request[Any, Any, Any]) -> QueueStats:
    """Counts of pods and of requests (the key's tenant's) by state."""
    return gateway_of(state).stats(principal_of(request))


@get("/api/files/{filename:str}", operation_id="downloadFile", tags=["Files"], guards=READS)
async def download_file(
    state: State, request: Request[Any, Any, Any],
    filename: Annotated[str, PathParameter(description="A name from a result's `files`.")],
) -> Stream:  # fmt: skip
    """A generated file (names come from a result's `files`) or an upload, streamed with its type and length."""
    stored = await gateway_of(state).open_file(filename, principal_of(request))
    if stored is None:
        raise NotFoundException(detail="File not found")
    return Stream(
        stored.chunks,
        media_type=stored.content_type,
        headers={
            "Content-Length": str(stored.size),
            "Content-Disposition": f'inline; filename="{stored.name}"',
            "Cache-Control": "private, max-age=86400, immutable",
        },
    )


@post("/api/files", status_code=HTTP_200_OK, operation_id="uploadFile", tags=["Files"], guards=CREATES,
      request_max_body_size=MAX_UPLOAD_BODY, opt={ACCEPTS: UPLOAD_MEDIA_TYPES})  # fmt: skip
async def upload_file(state: State, request: Request[Any, Any, Any]) -> FileUploaded:
    """Upload an input image (PNG, JPEG or WebP, at most 20 MiB): the raw body, or multipart field `file`."""
    try:
        return await gateway_of(state).uploads.receive(request, principal_of(request))
    except (nats.errors.Error, OSError) as exc:
        raise HTTPException(status_code=HTTP_503_SERVICE_UNAVAILABLE, detail=f"storage unavailable ({exc})") from exc


@get("/health", operation_id="health", tags=["Health"])
async def health(state: State) -> Response[HealthReport]:
    """The api, its NATS connection and each service; 503 with the same body when anything is down."""
    report = await gateway_of(state).health()
    return Response(report, status_code=HTTP_503_SERVICE_UNAVAILABLE if report.unhealthy else 200)


@get("/health/live", operation_id="healthLive", tags=["Health"])
async def health_live() -> ProbeReport:
    """Liveness: 200 while the api answers, whatever the other services do (`/health` judges them all)."""
    return ProbeReport(status="live")


@get("/health/ready", operation_id="healthReady", tags=["Health"])
async def health_ready(state: State) -> Response[ProbeReport]:
    """Readiness: 200 when the api can serve — its NATS connection is up and its request index loaded;
    else 503 with the same body, whose `detail` (an error's) says why."""
    gateway = gateway_of(state)
    reason = None
    if not nats_connected(gateway.broker):
        reason = "NATS is not connected"
    elif not gateway.index.loaded.is_set():
        reason = "loading the request index"
    if reason is None:
        return Response(ProbeReport(status="ready"))
    return Response(ProbeReport(status="not ready", detail=reason), status_code=HTTP_503_SERVICE_UNAVAILABLE)


@get("/metrics", operation_id="metrics", include_in_schema=False, media_type=CONTENT_TYPE_LATEST)
async def metrics() -> Response[bytes]:
    """The Prometheus exposition of the api's metrics (open, like health: scrapers carry no key)."""
    return Response(generate_latest(registry()), media_type=CONTENT_TYPE_LATEST)
