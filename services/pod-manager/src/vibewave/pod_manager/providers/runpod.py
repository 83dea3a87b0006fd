"""`runpod`: GPU pods on RunPod, through its REST v2 API (`RUNPOD_API=rest`, the default) or its GraphQL API
(`RUNPOD_API=graphql`, until RunPod retires it early 2027).

Pods are created with the API document's defaults (GPU from a preference list, its image, 50 GB disk,
24 GB memory, its ports) plus what the caller boots them with (`PodBoot`: env and start command), on hosts
whose CUDA version runs the pod's wheels (`RUNPOD_ALLOWED_CUDA_VERSIONS`), optionally with a network volume
at /workspace. On "no capacity" the next GPU type is tried, among those with the GPU memory the workflow
needs; REST v2 has no cloud type ALL, so there ALL tries Secure then Community Cloud per GPU type (where the
catalogue offers it; Secure only with a network volume, which lives in a Secure data center). The preference
list, cloud type and volume are checked against RunPod at start: a typo is a start-up error, not "no capacity"
for ever. ComfyUI is reached through the pod's HTTP proxy URL (a template, so tests can point it at the
emulator). After an ambiguous failure the pod is re-read before anything is repeated: RunPod sometimes
reports an error for an action that happened. A restart is RunPod's in-place restart (REST v2 in both modes):
the pod keeps its GPU, unlike a stop and a resume. Pods' env values (secrets) never reach `details`.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import Any

from vibewave.pod_manager.providers.base import (
    BadRequest,
    CapacityError,
    NoFittingGpu,
    PodBoot,
    PodNotFound,
    ProviderError,
    ProviderPod,
    ProviderState,
    RateLimited,
    Unauthorized,
    Unavailable,
)
from vibewave.pod_manager.runpod_api import Forbidden, PodCreateSpec, RunPodClient
from vibewave.runtime.process import ConfigurationError

log = logging.getLogger("vibewave.pod_manager.runpod")

CLOUD_TYPES = [
    {"id": "SECURE", "description": "RunPod data centers: public IP, network volumes"},
    {"id": "COMMUNITY", "description": "peer hosts: cheaper, public IP optional"},
    {"id": "ALL", "description": "either (REST v2 has no ALL: Secure is tried first, then Community)"},
]
CLOUD_TYPE_IDS = tuple(str(c["id"]) for c in CLOUD_TYPES)
HIDDEN = "<hidden>"


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
    allowed_cuda_versions: tuple[str, ...] = ()
    network_volume_id: str | None = None
    gpu_choice: str = "preference"  # or cheapest: RUNPOD_GPU_CHOICE


def hide_env(pod: dict[str, Any]) -> dict[str, Any]:
    """The pod with its env values replaced by "<hidden>", keys kept: REST's map, GraphQL's `"K=V"` strings
    and `{key, value}` items alike. Env carries the pod's secrets; `details` goes to admin endpoints."""
    env = pod.get("env")
    if isinstance(env, dict):
        hidden: Any = dict.fromkeys(env, HIDDEN)
    elif isinstance(env, list):
        hidden = [
            {**item, "value": HIDDEN} if isinstance(item, dict) else f"{str(item).partition('=')[0]}={HIDDEN}"
            for item in env
        ]
    else:
        return pod
    return {**pod, "env": hidden}


def _public(ip: Any) -> bool:
    try:
        return bool(ip) and ipaddress.ip_address(str(ip)).is_global
    except ValueError:
        return False


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
        self._gpu_names: dict[str, str] = {}  # GPU type id → display name ("RTX 4090")
        self._gpu_clouds: dict[str, set[str]] = {}  # GPU type id → the clouds that offer it
        self._gpu_prices: dict[str, dict[str, float]] = {}  # GPU type id → cloud → list $/GPU/hour
        self._volume_data_center: str | None = None

    async def validate(self) -> None:
        """The key is accepted, the cloud type exists, every preferred GPU type id is in the catalogue, and the
        network volume exists (its data center is where pods go)."""
        d = self.defaults
        if d.cloud_type not in CLOUD_TYPE_IDS:
            raise ConfigurationError(
                f"RUNPOD_CLOUD_TYPE={d.cloud_type!r} is not a RunPod cloud type; use one of "
                + ", ".join(CLOUD_TYPE_IDS)
            )
        if d.network_volume_id and d.cloud_type == "COMMUNITY":
            raise ConfigurationError(
                "RUNPOD_NETWORK_VOLUME_ID needs Secure Cloud (network volumes live in RunPod's data centers); "
                "set RUNPOD_CLOUD_TYPE to SECURE or ALL"
            )
        try:
            catalogue = await self.client.gpu_types()
        except Unauthorized as exc:
            raise ConfigurationError(f"RUNPOD_API_KEY was refused by RunPod ({exc.message})") from None
        known = {str(g["id"]): g for g in catalogue}
        unknown = [gpu for gpu in d.gpu_types if gpu not in known]
        if unknown or not d.gpu_types:
            raise ConfigurationError(
                "RUNPOD_GPU_TYPES names GPU types RunPod does not have: "
                + (", ".join(repr(u) for u in unknown) or "(none given)")
                + "; valid ids: "
                + ", ".join(sorted(known))
            )
        for gpu in catalogue:
            self._learn(gpu)
        if d.network_volume_id:
            await self._find_volume(d.network_volume_id)

    def _learn(self, gpu: dict[str, Any]) -> None:
        """A catalogue entry in either API's shape: REST `name`/`memory`/`secure`/`community`, GraphQL
        `displayName`/`memoryInGb`/`secureCloud`/`communityCloud`."""
        gpu_id = str(gpu["id"])
        name = gpu.get("name") or gpu.get("displayName")
        memory = gpu.get("memory") or gpu.get("memoryInGb")
        if name:
            self._gpu_names[gpu_id] = str(name)
        if memory:
            self._gpu_memory[gpu_id] = int(memory)
            if name:
                self._gpu_memory[str(name)] = int(memory)
        offered = {
            "SECURE": gpu.get("secure", gpu.get("secureCloud")),
            "COMMUNITY": gpu.get("community", gpu.get("communityCloud")),
        }
        if any(flag is not None for flag in offered.values()):
            self._gpu_clouds[gpu_id] = {cloud for cloud, flag in offered.items() if flag}
        listed = gpu.get("price")
        price: dict[str, Any] = listed if isinstance(listed, dict) else {}
        prices = {
            "SECURE": price.get("secure", gpu.get("securePrice")),
            "COMMUNITY": price.get("community", gpu.get("communityPrice")),
        }
        self._gpu_prices[gpu_id] = {cloud: float(p) for cloud, p in prices.items() if p}

    async def _find_volume(self, volume_id: str) -> None:
        try:
            volume = await self.client.network_volume(volume_id)
        except Unauthorized as exc:
            raise ConfigurationError(f"RUNPOD_API_KEY may not read network volumes ({exc.message})") from None
        if volume is None:
            ids = ", ".join(sorted(str(v.get("id")) for v in await self.client.network_volumes())) or "(none)"
            raise ConfigurationError(
                f"RUNPOD_NETWORK_VOLUME_ID={volume_id!r} is not a network volume of the account; its volumes: {ids}"
            )
        self._volume_data_center = volume.get("dataCenter") or volume.get("dataCenterId")

    def describe(self) -> str:
        d = self.defaults
        parts = [f"image {d.image}"]
        if d.template_id:
            parts.append(f"template {d.template_id}")
        if d.docker_args:
            parts.append(f"start command {d.docker_args[:80]!r}")
        if d.allowed_cuda_versions:
            parts.append(f"CUDA {'/'.join(d.allowed_cuda_versions)} hosts")
        if d.network_volume_id:
            parts.append(f"network volume {d.network_volume_id} at /workspace")
        return ", ".join(parts) + f"; ComfyUI on port {d.comfyui_port}"

    def _view(self, pod: dict[str, Any]) -> ProviderPod:
        """A REST v2 `Pod` (it has `status`) or a GraphQL pod (`desiredStatus`) → ProviderPod."""
        if "status" in pod:
            return self._rest_view(pod)
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
        return self._pod(
            pod, state, public[0]["ip"] if public else None, machine.get("gpuDisplayName"), gpu, pod.get("costPerHr")
        )

    def _rest_view(self, pod: dict[str, Any]) -> ProviderPod:
        """Ready is RUNNING with a runtime: live, a new pod reads RUNNING with `runtime: null` for a while. A pod
        in ERROR is down but can be started again, like a stopped one. The public IP is a TCP port's (HTTP
        ports carry RunPod-internal addresses), else the direct SSH host. The hourly price is `costPerHr` (RunPod
        sends it as a string), else `cost`."""
        status = str(pod.get("status") or "")
        runtime = pod.get("runtime")
        if status == "TERMINATED":
            state = ProviderState.TERMINATED
        elif status in ("EXITED", "ERROR"):
            state = ProviderState.STOPPED
        elif status == "RUNNING" and runtime:
            state = ProviderState.RUNNING
        else:
            state = ProviderState.STARTING
        ports = (runtime or {}).get("ports") or []
        public = [p["ip"] for p in ports if p.get("type") == "tcp" and _public(p.get("ip"))]
        direct = (pod.get("ssh") or {}).get("direct") or {}
        ip = public[0] if public else direct.get("host")
        gpu = (pod.get("gpu") or {}).get("id")
        name = self._gpu_names.get(str(gpu), gpu) if gpu else None
        return self._pod(pod, state, ip, name, gpu, pod.get("costPerHr", pod.get("cost")))

    def _pod(
        self, pod: dict[str, Any], state: ProviderState, ip: Any, gpu_name: Any, gpu: Any, cost: Any
    ) -> ProviderPod:
        return ProviderPod(
            id=str(pod["id"]),
            name=str(pod.get("name") or ""),
            state=state,
            comfyui_url=self.defaults.proxy_url_template.format(pod_id=pod["id"], port=self.defaults.comfyui_port),
            ip=str(ip) if ip else None,
            gpu_type=str(gpu_name) if gpu_name else None,
            gpu_memory_gb=self._gpu_memory.get(str(gpu)) if gpu else None,
            cost_per_hr=float(cost) if cost is not None else None,
            details=hide_env(pod),
        )

    def _spec(self, name: str, gpu_type: str, cloud: str, boot: PodBoot | None) -> PodCreateSpec:
        """The pod to ask for: `boot` adds its env and replaces the default start command (RUNPOD_DOCKER_ARGS)."""
        d = self.defaults
        return PodCreateSpec(
            name=name,
            image=d.image,
            gpu_type_id=gpu_type,
            cloud=cloud,
            container_disk_gb=d.container_disk_gb,
            ports=tuple(p.strip() for p in d.ports.split(",") if p.strip()),
            env=dict(boot.env) if boot else {},
            start_command=boot.start_command if boot and boot.start_command else d.docker_args,
            allowed_cuda_versions=d.allowed_cuda_versions,
            min_memory_gb=d.min_memory_gb,
            network_volume_id=d.network_volume_id,
            data_center_id=self._volume_data_center,
            template_id=d.template_id,
        )

    def _clouds(self, gpu_type: str) -> list[str]:
        """The clouds to ask in, in order. GraphQL takes ALL as it is; REST v2 has no ALL (omitting `cloud` means
        SECURE), so there ALL is Secure then Community where the catalogue offers the GPU type. A network volume
        lives in a Secure data center: with one, ALL is Secure (GraphQL too, which fails ALL with a volume)."""
        cloud = self.defaults.cloud_type
        if cloud != "ALL":
            return [cloud]
        if self.defaults.network_volume_id:
            return ["SECURE"]
        if not self.client.rest:
            return [cloud]
        offered = self._gpu_clouds.get(gpu_type)
        return [c for c in ("SECURE", "COMMUNITY") if offered is None or c in offered] or ["SECURE"]

    def fitting_gpu_types(self, min_gpu_memory_gb: int) -> list[str]:
        """The preferred GPU types with at least this much memory, in preference order (unknown memory
        counts as fitting: the catalogue did not say)."""
        return [
            gpu
            for gpu in self.defaults.gpu_types
            if not min_gpu_memory_gb or self._gpu_memory.get(gpu, min_gpu_memory_gb) >= min_gpu_memory_gb
        ]

    def candidates(self, min_gpu_memory_gb: int) -> list[tuple[str, str]]:
        """Each (GPU type, cloud) a create tries, in order: the fitting types in preference order, each in the
        clouds to ask — or, with `RUNPOD_GPU_CHOICE=cheapest`, every such pair by its catalogue price (an
        unknown price last; ties keep the preference order)."""
        pairs = [(gpu, cloud) for gpu in self.fitting_gpu_types(min_gpu_memory_gb) for cloud in self._clouds(gpu)]
        if self.defaults.gpu_choice == "cheapest":
            pairs.sort(key=lambda pair: self.price(*pair, lowest=True) or float("inf"))
        return pairs

    def price(self, gpu_type: str, cloud: str, *, lowest: bool = False) -> float | None:
        """The catalogue's hourly price of one GPU of the type in the cloud. ALL (GraphQL's own) may land in
        either cloud: its highest price, or with `lowest` its lowest."""
        known = self._gpu_prices.get(gpu_type, {})
        if cloud != "ALL":
            return known.get(cloud)
        return (min if lowest else max)(known.values(), default=None)

    def new_pod_price(self, min_gpu_memory_gb: int) -> float | None:
        """What a new pod of the class would cost per hour: its first candidate's catalogue price."""
        pairs = self.candidates(min_gpu_memory_gb)
        return self.price(*pairs[0]) if pairs else None

    async def create(
        self, name: str, min_gpu_memory_gb: int = 0, boot: PodBoot | None = None, max_price: float | None = None
    ) -> ProviderPod:
        """Try each candidate GPU type and cloud (`candidates`) in turn until one has capacity;
        `boot` is the pod's own env and start command. A refusal for the account's access to a pool (403) moves
        on too; an ambiguous failure adopts the pod if it exists by its (unique) name, else is raised. With
        `max_price` (what the spend cap leaves), a type and cloud dearer than that, or of unknown price, is
        not tried."""
        candidates = self.candidates(min_gpu_memory_gb)
        if not candidates:
            sizes = ", ".join(f"{g} ({self._gpu_memory.get(g, '?')} GB)" for g in self.defaults.gpu_types)
            raise NoFittingGpu(f"no GPU type of RUNPOD_GPU_TYPES has {min_gpu_memory_gb} GB or more: {sizes}")
        refusals: list[str] = []
        forbidden: Forbidden | None = None
        for gpu_type, cloud in candidates:
            label = gpu_type if cloud == self.defaults.cloud_type else f"{gpu_type} in {cloud}"
            price = self.price(gpu_type, cloud)
            if max_price is not None and (price is None or price > max_price + 1e-9):
                refusals.append(f"{label} (over the spend cap)")
                continue
            try:
                created = await self.client.create_pod(self._spec(name, gpu_type, cloud, boot))
            except CapacityError:
                refusals.append(label)
                log.info("no %s available; trying the next candidate", label)
                continue
            except Forbidden as exc:
                forbidden = exc
                log.info("RunPod refused %s for this account (%s); trying the next candidate", label, exc.message)
                continue
            except RateLimited:
                raise  # refused before anything happened
            except Unavailable:
                existing = await self._find_by_name(name)  # the create may have happened anyway
                if existing is None:
                    raise
                log.warning("RunPod reported a failure but pod %s exists; adopting it", existing.id)
                return existing
            log.info("RunPod pod %s created on %s", created["id"], label, extra={"pod_id": created["id"]})
            if "status" in created:  # REST v2 answers the whole Pod
                return self._view(created)
            pod = await self.client.pod(str(created["id"]))
            return self._view(pod or {**created, "name": name, "desiredStatus": "RUNNING"})
        if forbidden is not None and not refusals:
            raise forbidden
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
                await self.client.start_pod(pod_id)
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
        await self.client.restart_pod(pod_id)

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
