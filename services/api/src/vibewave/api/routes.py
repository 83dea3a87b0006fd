"""HTTP handlers: take typed input, call the gateway, return a contract Struct."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Response, delete, get, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from litestar.openapi import ResponseSpec
from litestar.params import Body, PathParameter
from litestar.response import Stream
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED, HTTP_409_CONFLICT, HTTP_503_SERVICE_UNAVAILABLE

from vibewave.api.catalog import describe
from vibewave.api.gateway import AlreadyFinished, Gateway, Unavailable
from vibewave.contracts.events import RequestSubmitted
from vibewave.contracts.models import (
    DEFAULT_WORKFLOW,
    CancelConflict,
    ComfyUIRequest,
    GenerateAccepted,
    HealthReport,
    RequestStatus,
    WorkflowInput,
    WorkflowPresets,
    WorkflowQueueRequest,
)
from vibewave.contracts.workflows import InvalidInput, Workflow

NOT_FOUND = "Request not found"
CANCEL_WAIT_S = 10.0

RequestId = Annotated[str, PathParameter(description="The id a generate or queue call returned.")]


def gateway_of(state: State) -> Gateway:
    gateway: Gateway = state.gateway
    return gateway


async def _submit(
    gateway: Gateway, workflow: Workflow, given: dict[str, Any], preset: str | None, priority: Any
) -> RequestSubmitted:
    """Validate against the workflow's schema (400 naming the field), then hand over to the queue."""
    try:
        inputs = workflow.resolve_inputs(given, preset)
    except InvalidInput as exc:
        raise ValidationException(detail=str(exc)) from exc
    try:
        return await gateway.submit(workflow, inputs, priority, preset=preset)
    except Unavailable as exc:
        raise HTTPException(status_code=HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc)) from exc


async def _status(gateway: Gateway, request_id: str) -> ComfyUIRequest:
    found = await gateway.get_request(request_id)
    if found is None:
        raise NotFoundException(detail=NOT_FOUND)
    return found


class QwenController(Controller):
    path = "/api/qwen"
    tags = ["Qwen image generation"]

    @post("/generate-async", status_code=HTTP_202_ACCEPTED, operation_id="qwenGenerateAsync")
    async def generate_async(
        self, state: State, data: Annotated[WorkflowInput, Body(title="WorkflowInput")]
    ) -> GenerateAccepted:
        """Queue a Qwen image generation and return its request id at once."""
        gateway = gateway_of(state)
        submitted = await _submit(
            gateway, gateway.catalog[DEFAULT_WORKFLOW], data.workflow_inputs(), data.preset, data.priority
        )
        return GenerateAccepted(
            request_id=submitted.request_id,
            status=RequestStatus.PENDING,
            workflow_name=submitted.workflow_name,
            status_url=f"/api/qwen/status/{submitted.request_id}",
        )

    @get("/status/{request_id:str}", operation_id="qwenStatus")
    async def status(self, state: State, request_id: RequestId) -> ComfyUIRequest:
        """The request's current state; `result.files` are downloadable from `/api/files/{name}`."""
        return await _status(gateway_of(state), request_id)

    @get("/presets", operation_id="qwenPresets", sync_to_thread=False)
    def presets(self, state: State) -> WorkflowPresets:
        """Presets (fast, quality, ultra), the graph variant each runs on, and every input's limits."""
        return describe(gateway_of(state).catalog[DEFAULT_WORKFLOW])


class WorkflowsController(Controller):
    path = "/api/runpod/workflows"
    tags = ["Workflows"]

    @post("/queue", status_code=HTTP_202_ACCEPTED, operation_id="workflowsQueue")
    async def queue(
        self, state: State, data: Annotated[WorkflowQueueRequest, Body(title="WorkflowQueueRequest")]
    ) -> ComfyUIRequest:
        """Queue any workflow of the catalogue (shipped or from `WORKFLOWS_DIR`) with its own inputs."""
        gateway = gateway_of(state)
        workflow = gateway.catalog.get(data.workflow_name)
        if workflow is None:
            known = ", ".join(gateway.catalog.names())
            raise ValidationException(detail=f"workflow_name: unknown workflow {data.workflow_name!r} (known: {known})")
        submitted = await _submit(gateway, workflow, data.inputs, data.preset, data.priority)
        return ComfyUIRequest(
            id=submitted.request_id,
            workflow_name=submitted.workflow_name,
            inputs=submitted.inputs,
            status=RequestStatus.PENDING,
            pod_id=None,
            created_at=submitted.created_at,
            updated_at=submitted.created_at,
        )

    @get("/status/{request_id:str}", operation_id="workflowsStatus")
    async def status(self, state: State, request_id: RequestId) -> ComfyUIRequest:
        """A queued workflow's current state."""
        return await _status(gateway_of(state), request_id)

    @delete(
        "/{request_id:str}",
        status_code=HTTP_200_OK,
        operation_id="workflowsCancel",
        responses={409: ResponseSpec(CancelConflict, description="The request had already ended")},
    )
    async def cancel(self, state: State, request_id: RequestId) -> Response[ComfyUIRequest | CancelConflict]:
        """Cancel: a pending request at once, a running one by interrupting its prompt (409 if it had ended)."""
        try:
            request = await gateway_of(state).cancel(request_id, CANCEL_WAIT_S)
        except AlreadyFinished as exc:
            return Response(CancelConflict(detail=str(exc), request=exc.request), status_code=HTTP_409_CONFLICT)
        except Unavailable as exc:
            raise HTTPException(status_code=HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc)) from exc
        if request is None:
            raise NotFoundException(detail=NOT_FOUND)
        return Response(request, status_code=HTTP_200_OK if request.status.terminal else HTTP_202_ACCEPTED)


@get("/api/files/{filename:str}", operation_id="downloadFile", tags=["Files"])
async def download_file(
    state: State, filename: Annotated[str, PathParameter(description="A name from a result's `files`.")]
) -> Stream:
    """A generated file, streamed with its content type and length (names come from a result's `files`)."""
    stored = await gateway_of(state).open_file(filename)
    if stored is None:
        raise NotFoundException(detail="File not found")
    return Stream(
        stored.chunks,
        media_type=stored.content_type,
        headers={
            "Content-Length": str(stored.size),
            "Content-Disposition": f'inline; filename="{stored.name}"',
            "Cache-Control": "public, max-age=86400, immutable",
        },
    )


@get("/health", operation_id="health", tags=["Health"])
async def health(state: State) -> Response[HealthReport]:
    """The api, its NATS connection and each service; 503 with the same body when anything is down."""
    report = await gateway_of(state).health()
    return Response(report, status_code=HTTP_503_SERVICE_UNAVAILABLE if report.unhealthy else 200)
