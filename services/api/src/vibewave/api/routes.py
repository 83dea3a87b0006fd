"""HTTP handlers: take typed input, call the gateway, return a contract Struct."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Response, get, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from litestar.params import Body, PathParameter
from litestar.status_codes import HTTP_202_ACCEPTED, HTTP_503_SERVICE_UNAVAILABLE

from vibewave.api.gateway import Gateway, Unavailable
from vibewave.contracts.models import (
    DEFAULT_WORKFLOW,
    ComfyUIRequest,
    GenerateAccepted,
    HealthReport,
    RequestStatus,
    WorkflowInput,
)
from vibewave.contracts.workflows import InvalidInput

NOT_FOUND = "Request not found"


def gateway_of(state: State) -> Gateway:
    gateway: Gateway = state.gateway
    return gateway


class QwenController(Controller):
    path = "/api/qwen"
    tags = ["Qwen image generation"]

    @post(
        "/generate-async",
        status_code=HTTP_202_ACCEPTED,
        operation_id="qwenGenerateAsync",
    )
    async def generate_async(
        self, state: State, data: Annotated[WorkflowInput, Body(title="WorkflowInput")]
    ) -> GenerateAccepted:
        """Queue a Qwen image generation and return its request id at once."""
        gateway = gateway_of(state)
        workflow = gateway.catalog[DEFAULT_WORKFLOW]
        try:
            inputs = workflow.resolve_inputs(data.workflow_inputs())
        except InvalidInput as exc:
            raise ValidationException(detail=str(exc)) from exc
        try:
            submitted = await gateway.submit(workflow, inputs, data.priority)
        except Unavailable as exc:
            raise HTTPException(status_code=HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc)) from exc
        return GenerateAccepted(
            request_id=submitted.request_id,
            status=RequestStatus.PENDING,
            workflow_name=submitted.workflow_name,
            status_url=f"/api/qwen/status/{submitted.request_id}",
        )

    @get("/status/{request_id:str}", operation_id="qwenStatus")
    async def status(
        self, state: State, request_id: Annotated[str, PathParameter(description="The id `generate-async` returned.")]
    ) -> ComfyUIRequest:
        """The request's current state; `result.files` are downloadable from `/api/files/{name}`."""
        found = await gateway_of(state).get_request(request_id)
        if found is None:
            raise NotFoundException(detail=NOT_FOUND)
        return found


@get("/api/files/{filename:str}", operation_id="downloadFile", tags=["Files"])
async def download_file(
    state: State, filename: Annotated[str, PathParameter(description="A name from a result's `files`.")]
) -> Response[bytes]:
    """A generated file, with its content type (names come from a result's `files`)."""
    stored = await gateway_of(state).open_file(filename)
    if stored is None:
        raise NotFoundException(detail="File not found")
    return Response(
        stored.data,
        media_type=stored.content_type,
        headers={"Content-Disposition": f'inline; filename="{stored.name}"', "Cache-Control": "public, max-age=86400"},
    )


@get("/health", operation_id="health", tags=["Health"])
async def health(state: State) -> Response[HealthReport]:
    """The api, its NATS connection and each service; 503 with the same body when anything is down."""
    report = await gateway_of(state).health()
    return Response(report, status_code=HTTP_503_SERVICE_UNAVAILABLE if report.unhealthy else 200)
