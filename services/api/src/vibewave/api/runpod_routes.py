"""`/api/runpod/*` pod and catalogue endpoints: each forwards to pod-manager over NATS and maps its answer.

The api never talks to RunPod and never holds its key. 404 for unknown ids, 400 for bad input, 500 with
`"RunPod API error: <reason>"` when RunPod fails, 503 when pod-manager itself cannot be reached.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Response, get, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from litestar.params import Body, PathParameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_503_SERVICE_UNAVAILABLE

from vibewave.api.auth import requires
from vibewave.api.gateway import Gateway, Unavailable
from vibewave.api.routes import gateway_of
from vibewave.contracts.events import PodAdminReply, PodAdminRequest, PodOperation
from vibewave.contracts.models import PodAddress, PodCreateRequest, PodView, Scope

PodId = Annotated[str, PathParameter(description="A pod id from `GET /api/runpod/pods`.")]
VolumeId = Annotated[str, PathParameter(description="A network volume id.")]


async def call(gateway: Gateway, operation: PodOperation, request: PodAdminRequest | None = None) -> Any:
    try:
        reply: PodAdminReply = await gateway.pod_admin(operation, request)
    except Unavailable as exc:
        raise HTTPException(status_code=HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc)) from exc
    if reply.status == 404:
        raise NotFoundException(detail=reply.error or "Not found")
    if reply.status == 400:
        raise ValidationException(detail=reply.error or "Bad request")
    if reply.status >= 400:
        raise HTTPException(status_code=reply.status, detail=reply.error or "Pod provider error")
    return reply.data


async def catalogue(state: State, kind: str) -> Any:
    data = await call(gateway_of(state), PodOperation.CATALOGUE, PodAdminRequest(catalogue=kind))
    return data


async def pod(state: State, operation: PodOperation, pod_id: str) -> PodView:
    data = await call(gateway_of(state), operation, PodAdminRequest(pod_id=pod_id))
    return msgspec.convert(data, PodView)


class RunPodController(Controller):
    """Pods, the account and the catalogue: admin keys only (health is open to all)."""

    path = "/api/runpod"
    tags = ["RunPod pods and account"]
    guards = [requires(Scope.ADMIN)]

    @get("/health", operation_id="runpodHealth")
    async def health(self, state: State) -> Response[dict[str, Any]]:
        """pod-manager and its provider's API: 200 when both answer, 503 (same shape) otherwise."""
        try:
            data: dict[str, Any] = await call(gateway_of(state), PodOperation.HEALTH)
        except HTTPException as exc:
            if exc.status_code != HTTP_503_SERVICE_UNAVAILABLE:
                raise
            data = {"provider": None, "healthy": False, "detail": exc.detail, "pods": {}}
        return Response(data, status_code=200 if data.get("healthy") else HTTP_503_SERVICE_UNAVAILABLE)

    @get("/account", operation_id="runpodAccount")
    async def account(self, state: State) -> dict[str, Any]:
        """The RunPod account (balance, spend); under the local or static provider, says there is none."""
        data: dict[str, Any] = await catalogue(state, "account")
        return data

    @get("/pods", operation_id="runpodPods")
    async def pods(self, state: State) -> list[PodView]:
        """Every pod the provider lists; `managed` marks Vibewave's own."""
        data = await call(gateway_of(state), PodOperation.LIST)
        return msgspec.convert(data, list[PodView])

    @get("/pods/{pod_id:str}", operation_id="runpodPod")
    async def pod(self, state: State, pod_id: PodId) -> PodView:
        """One pod, with the provider's own record in `details`."""
        return await pod(state, PodOperation.GET, pod_id)

    @post("/pods", status_code=HTTP_201_CREATED, operation_id="runpodCreatePod")
    async def create(self, state: State, data: Annotated[PodCreateRequest, Body(title="PodCreateRequest")]) -> PodView:
        """Create a pod with the configured defaults (GPU preference, image, disk, ports) and a GPU big enough for
        the workflow named; it serves every workflow it fits. Counts toward MAX_PODS: 409 beyond it."""
        gateway = gateway_of(state)
        workflow = gateway.catalog.get(data.workflow_name)
        if workflow is None:
            raise ValidationException(detail=f"workflow_name: unknown workflow {data.workflow_name!r}")
        needs = workflow.definition.min_gpu_memory_gb
        request = PodAdminRequest(workflow_name=data.workflow_name, min_gpu_memory_gb=needs)
        created = await call(gateway, PodOperation.CREATE, request)
        return msgspec.convert(created, PodView)

    @post("/pods/{pod_id:str}/start", status_code=200, operation_id="runpodStartPod")
    async def start(self, state: State, pod_id: PodId) -> PodView:
        """Start (resume) a stopped pod."""
        return await pod(state, PodOperation.START, pod_id)

    @post("/pods/{pod_id:str}/stop", status_code=200, operation_id="runpodStopPod")
    async def stop(self, state: State, pod_id: PodId) -> PodView:
        """Stop a pod: its GPU is released and billing for compute stops; its volume is kept."""
        return await pod(state, PodOperation.STOP, pod_id)

    @post("/pods/{pod_id:str}/restart", status_code=200, operation_id="runpodRestartPod")
    async def restart(self, state: State, pod_id: PodId) -> PodView:
        """Restart a pod's container in place (it keeps its GPU); 409 where the provider cannot."""
        return await pod(state, PodOperation.RESTART, pod_id)

    @post("/pods/{pod_id:str}/terminate", status_code=200, operation_id="runpodTerminatePod")
    async def terminate(self, state: State, pod_id: PodId) -> PodView:
        """Terminate a pod for good."""
        return await pod(state, PodOperation.TERMINATE, pod_id)

    @get("/pods/{pod_id:str}/ip", operation_id="runpodPodIp")
    async def ip(self, state: State, pod_id: PodId) -> PodAddress:
        """Where the pod answers: its public IP (if any), its ComfyUI URL and its port mappings."""
        view = await pod(state, PodOperation.GET, pod_id)
        ports = ((view.details.get("runtime") or {}).get("ports")) or []
        return PodAddress(pod_id=view.id, ip=view.ip, comfyui_url=view.comfyui_url, ports=ports)

    @get("/gpu-types", operation_id="runpodGpuTypes")
    async def gpu_types(self, state: State) -> dict[str, Any]:
        """GPU types with memory, prices and stock."""
        data: dict[str, Any] = await catalogue(state, "gpu_types")
        return data

    @get("/cloud-types", operation_id="runpodCloudTypes")
    async def cloud_types(self, state: State) -> dict[str, Any]:
        """Cloud types pods can be created in."""
        data: dict[str, Any] = await catalogue(state, "cloud_types")
        return data

    @get("/network-volumes", operation_id="runpodNetworkVolumes")
    async def network_volumes(self, state: State) -> dict[str, Any]:
        """The account's network volumes."""
        data: dict[str, Any] = await catalogue(state, "network_volumes")
        return data

    @get("/network-volumes/{volume_id:str}", operation_id="runpodNetworkVolume")
    async def network_volume(self, state: State, volume_id: VolumeId) -> dict[str, Any]:
        """One network volume."""
        data = await catalogue(state, "network_volumes")
        for volume in data.get("network_volumes") or []:
            if volume.get("id") == volume_id:
                return {"provider": data.get("provider"), **volume}
        raise NotFoundException(detail="Network volume not found")

    @get("/templates", operation_id="runpodTemplates")
    async def templates(self, state: State) -> dict[str, Any]:
        """The account's pod templates."""
        data: dict[str, Any] = await catalogue(state, "templates")
        return data
