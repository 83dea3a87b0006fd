"""`runpod`: GPU pods on RunPod, through its GraphQL API.

Pods are created with the API document's defaults (GPU from a preference list, its image, 50 GB disk,
24 GB memory, its ports); on "no capacity" the next GPU type is tried. ComfyUI is reached through the
pod's HTTP proxy URL (a template, so tests can point it at the emulator). After an ambiguous failure the
pod is re-read before anything is repeated: RunPod sometimes reports an error for an action that happened.
GraphQL has no restart: a restart is a stop and a resume.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from vibewave.pod_manager.providers.base import (
    BadRequest,
    CapacityError,
    PodNotFound,
    ProviderError,
    ProviderPod,
    ProviderState,
    Unavailable,
)
from vibewave.pod_manager.runpod_api import RunPodClient

log = logging.getLogger("vibewave.pod_manager.runpod")

CLOUD_TYPES = [
    {"id": "SECURE", "description": "RunPod data centers: public IP, network volumes"},
    {"id": "COMMUNITY", "description": "peer hosts: cheaper, public IP optional"},
    {"id": "ALL", "description": "either (GraphQL create only)"},
]


@dataclass(frozen=True)
class RunPodPodDefaults:
    gpu_types: tuple[str, ...]
    image: str
    container_disk_gb: int
    min_memory_gb: int
    ports: str
    cloud_type: str
    docker_args: str
    template_id: str | None
    proxy_url_template: str
    comfyui_port: int


class RunPodProvider:
    name = "runpod"
    ephemeral = False

    def __init__(self, client: RunPodClient, defaults: RunPodPodDefaults) -> None:
        self.client = client
        self.defaults = defaults

    def _view(self, pod: dict[str, Any]) -> ProviderPod:
        desired = str(pod.get("desiredStatus") or "")
        runtime = pod.get("runtime")
        if desired in ("TERMINATED", "DEAD"):
            state = ProviderState.TERMINATED
        elif desired in ("EXITED", "PAUSED"):
            state = ProviderState.STOPPED
        else:
            state = ProviderState.RUNNING if runtime else ProviderState.STARTING
        public = [p for p in (runtime or {}).get("ports") or [] if p.get("isIpPublic")]
        return ProviderPod(
            id=str(pod["id"]),
            name=str(pod.get("name") or ""),
            state=state,
            comfyui_url=self.defaults.proxy_url_template.format(pod_id=pod["id"], port=self.defaults.comfyui_port),
            ip=public[0]["ip"] if public else None,
            gpu_type=(pod.get("machine") or {}).get("gpuDisplayName"),
            cost_per_hr=pod.get("costPerHr"),
            details=pod,
        )

    def _spec(self, name: str, gpu_type: str) -> dict[str, Any]:
        d = self.defaults
        spec: dict[str, Any] = {
            "name": name,
            "gpuTypeId": gpu_type,
            "gpuCount": 1,
            "cloudType": d.cloud_type,
            "imageName": d.image,
            "containerDiskInGb": d.container_disk_gb,
            "minMemoryInGb": d.min_memory_gb,
            "ports": d.ports,
            "volumeInGb": 0,
            "startSsh": True,
        }
        if d.docker_args:
            spec["dockerArgs"] = d.docker_args
        if d.template_id:
            spec["templateId"] = d.template_id
        return spec

    async def create(self, name: str, workflow_name: str) -> ProviderPod:
        """Try each GPU type of the preference list in turn until one has capacity."""
        refusals: list[str] = []
        for gpu_type in self.defaults.gpu_types:
            try:
                created = await self.client.create_pod(self._spec(name, gpu_type))
            except CapacityError:
                refusals.append(gpu_type)
                log.info("no %s available; trying the next GPU type", gpu_type)
                continue
            except Unavailable:
                existing = await self._find_by_name(name)  # the create may have happened anyway
                if existing is None:
                    raise
                log.warning("RunPod reported a failure but pod %s exists; adopting it", existing.id)
                return existing
            log.info("RunPod pod %s created on %s", created["id"], gpu_type, extra={"pod_id": created["id"]})
            pod = await self.client.pod(str(created["id"]))
            return self._view(pod or {**created, "name": name, "desiredStatus": "RUNNING"})
        raise CapacityError(f"no capacity for any preferred GPU type ({', '.join(refusals)})")

    async def _find_by_name(self, name: str) -> ProviderPod | None:
        for pod in await self.client.pods():
            if pod.get("name") == name:
                return self._view(pod)
        return None

    async def get(self, pod_id: str) -> ProviderPod | None:
        pod = await self.client.pod(pod_id)
        return self._view(pod) if pod else None

    async def list(self) -> list[ProviderPod]:
        return [self._view(p) for p in await self.client.pods()]

    async def _require(self, pod_id: str) -> ProviderPod:
        found = await self.get(pod_id)
        if found is None or found.state == ProviderState.TERMINATED:
            raise PodNotFound(f"pod {pod_id} not found")
        return found

    async def start(self, pod_id: str) -> ProviderPod:
        pod = await self._require(pod_id)
        if pod.state == ProviderState.STOPPED:
            try:
                await self.client.resume_pod(pod_id, 1)
            except Unavailable:
                if (await self._require(pod_id)).state == ProviderState.STOPPED:
                    raise
                log.warning("RunPod reported a failed resume of %s, but it is starting", pod_id)
        return await self._require(pod_id)

    async def stop(self, pod_id: str) -> None:
        pod = await self._require(pod_id)
        if pod.state == ProviderState.STOPPED:
            return
        try:
            await self.client.stop_pod(pod_id)
        except Unavailable:
            if (await self._require(pod_id)).state != ProviderState.STOPPED:
                raise
            log.warning("RunPod reported a failed stop of %s, but it stopped", pod_id)

    async def restart(self, pod_id: str) -> None:
        await self.stop(pod_id)
        await self.start(pod_id)

    async def terminate(self, pod_id: str) -> None:
        await self._require(pod_id)
        try:
            await self.client.terminate_pod(pod_id)
        except (Unavailable, ProviderError) as exc:
            if await self.get(pod_id) is not None:
                raise
            log.warning("RunPod reported a failed terminate of %s (%s), but it is gone", pod_id, exc.message)

    async def catalogue(self, kind: str) -> Any:
        if kind == "account":
            return await self.client.account()
        if kind == "gpu_types":
            return await self.client.gpu_types()
        if kind == "cloud_types":
            return CLOUD_TYPES
        if kind == "network_volumes":
            return await self.client.network_volumes()
        if kind == "templates":
            return await self.client.templates()
        raise BadRequest(f"unknown catalogue {kind!r}")

    async def close(self) -> None:
        await self.client.close()
