"""`runpod`: GPU pods on RunPod, through its GraphQL API (and REST v2 for what only it has).

Pods are created with the API document's defaults (GPU from a preference list, its image, 50 GB disk,
24 GB memory, its ports); on "no capacity" the next GPU type is tried, among those with the GPU memory
the workflow needs. The preference list and cloud type are checked against RunPod's catalogue at start:
a typo is a start-up error, not "no capacity" for ever. ComfyUI is reached through the pod's HTTP proxy
URL (a template, so tests can point it at the emulator). After an ambiguous failure the pod is re-read
before anything is repeated: RunPod sometimes reports an error for an action that happened. A restart
is RunPod's in-place restart (REST v2): the pod keeps its GPU, unlike a stop and a resume.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from vibewave.pod_manager.providers.base import (
    BadRequest,
    CapacityError,
    NoFittingGpu,
    PodNotFound,
    ProviderError,
    ProviderPod,
    ProviderState,
    RateLimited,
    Unauthorized,
    Unavailable,
)
from vibewave.pod_manager.runpod_api import RunPodClient
from vibewave.runtime.process import ConfigurationError

log = logging.getLogger("vibewave.pod_manager.runpod")

CLOUD_TYPES = [
    {"id": "SECURE", "description": "RunPod data centers: public IP, network volumes"},
    {"id": "COMMUNITY", "description": "peer hosts: cheaper, public IP optional"},
    {"id": "ALL", "description": "either (GraphQL create only)"},
]
CLOUD_TYPE_IDS = tuple(str(c["id"]) for c in CLOUD_TYPES)


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
    capacity: int | None = None
    restarts_in_place = True

    def __init__(
        self, client: RunPodClient, defaults: RunPodPodDefaults, base_url: str = "https://api.runpod.io"
    ) -> None:
        self.client = client
        self.defaults = defaults
        self.origin = f"runpod {base_url.rstrip('/')}"
        self._gpu_memory: dict[str, int] = {}  # GPU type id and display name → GB, from the catalogue

    async def validate(self) -> None:
        """The key is accepted, the cloud type exists, and every preferred GPU type id is in the catalogue."""
        if self.defaults.cloud_type not in CLOUD_TYPE_IDS:
            raise ConfigurationError(
                f"RUNPOD_CLOUD_TYPE={self.defaults.cloud_type!r} is not a RunPod cloud type; use one of "
                + ", ".join(CLOUD_TYPE_IDS)
            )
        try:
            catalogue = await self.client.gpu_types()
        except Unauthorized as exc:
            raise ConfigurationError(f"RUNPOD_API_KEY was refused by RunPod ({exc.message})") from None
        known = {str(g["id"]): g for g in catalogue}
        unknown = [gpu for gpu in self.defaults.gpu_types if gpu not in known]
        if unknown or not self.defaults.gpu_types:
            raise ConfigurationError(
                "RUNPOD_GPU_TYPES names GPU types RunPod does not have: "
                + (", ".join(repr(u) for u in unknown) or "(none given)")
                + "; valid ids: "
                + ", ".join(sorted(known))
            )
        for gpu in catalogue:
            if gpu.get("memoryInGb"):
                self._gpu_memory[str(gpu["id"])] = int(gpu["memoryInGb"])
                if gpu.get("displayName"):
                    self._gpu_memory[str(gpu["displayName"])] = int(gpu["memoryInGb"])

    def describe(self) -> str:
        d = self.defaults
        parts = [f"image {d.image}"]
        if d.template_id:
            parts.append(f"template {d.template_id}")
        if d.docker_args:
            parts.append(f"start command {d.docker_args[:80]!r}")
        return ", ".join(parts) + f"; ComfyUI on port {d.comfyui_port}"

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
        machine = pod.get("machine") or {}
        gpu = machine.get("gpuTypeId") or machine.get("gpuDisplayName")
        return ProviderPod(
            id=str(pod["id"]),
            name=str(pod.get("name") or ""),
            state=state,
            comfyui_url=self.defaults.proxy_url_template.format(pod_id=pod["id"], port=self.defaults.comfyui_port),
            ip=public[0]["ip"] if public else None,
            gpu_type=machine.get("gpuDisplayName"),
            gpu_memory_gb=self._gpu_memory.get(str(gpu)) if gpu else None,
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

    def fitting_gpu_types(self, min_gpu_memory_gb: int) -> list[str]:
        """The preferred GPU types with at least this much memory, in preference order (unknown memory
        counts as fitting: the catalogue did not say)."""
        return [
            gpu
            for gpu in self.defaults.gpu_types
            if not min_gpu_memory_gb or self._gpu_memory.get(gpu, min_gpu_memory_gb) >= min_gpu_memory_gb
        ]

    async def create(self, name: str, min_gpu_memory_gb: int = 0) -> ProviderPod:
        """Try each fitting GPU type of the preference list in turn until one has capacity."""
        candidates = self.fitting_gpu_types(min_gpu_memory_gb)
        if not candidates:
            sizes = ", ".join(f"{g} ({self._gpu_memory.get(g, '?')} GB)" for g in self.defaults.gpu_types)
            raise NoFittingGpu(f"no GPU type of RUNPOD_GPU_TYPES has {min_gpu_memory_gb} GB or more: {sizes}")
        refusals: list[str] = []
        for gpu_type in candidates:
            try:
                created = await self.client.create_pod(self._spec(name, gpu_type))
            except CapacityError:
                refusals.append(gpu_type)
                log.info("no %s available; trying the next GPU type", gpu_type)
                continue
            except RateLimited:
                raise  # refused before anything happened
            except Unavailable:
                existing = await self._find_by_name(name)  # the create may have happened anyway
                if existing is None:
                    raise
                log.warning("RunPod reported a failure but pod %s exists; adopting it", existing.id)
                return existing
            log.info("RunPod pod %s created on %s", created["id"], gpu_type, extra={"pod_id": created["id"]})
            pod = await self.client.pod(str(created["id"]))
            return self._view(pod or {**created, "name": name, "desiredStatus": "RUNNING"})
        raise CapacityError(f"no capacity for any fitting GPU type ({', '.join(refusals)})")

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
            except RateLimited:
                raise
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
        except RateLimited:
            raise
        except Unavailable:
            if (await self._require(pod_id)).state != ProviderState.STOPPED:
                raise
            log.warning("RunPod reported a failed stop of %s, but it stopped", pod_id)

    async def restart(self, pod_id: str) -> None:
        """In place (REST v2 `action: restart`): the container restarts on its machine with its GPU."""
        await self._require(pod_id)
        await self.client.pod_action(pod_id, "restart")

    async def terminate(self, pod_id: str) -> None:
        await self._require(pod_id)
        try:
            await self.client.terminate_pod(pod_id)
        except RateLimited:
            raise
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
