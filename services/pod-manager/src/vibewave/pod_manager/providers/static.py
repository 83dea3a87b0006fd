"""`static`: ComfyUI servers that already run somewhere (`STATIC_COMFYUI_URLS`).

Each URL is one pod slot. Creating a pod claims a free slot; stopping or terminating releases it. The
servers themselves are never started, stopped or restarted by Vibewave; each serves every workflow.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from vibewave.pod_manager.providers.base import (
    CapacityError,
    Conflict,
    NoFittingGpu,
    PodBoot,
    PodNotFound,
    ProviderPod,
    ProviderState,
    no_cloud_catalogue,
)
from vibewave.runtime.process import ConfigurationError


class StaticProvider:
    name = "static"
    ephemeral = True
    restarts_in_place = False

    def __init__(self, urls: list[str], gpu_memory_gb: int | None = None, cost_per_hr: float | None = None) -> None:
        if not urls:
            raise ConfigurationError(
                "POD_PROVIDER=static needs STATIC_COMFYUI_URLS (comma-separated ComfyUI base URLs)"
            )
        self.urls = [u.rstrip("/") for u in urls]
        self.gpu_memory_gb = gpu_memory_gb
        self.cost_per_hr = cost_per_hr  # LOCAL_GPU_COST_PER_HR; None: their runs cost nothing
        self.capacity: int | None = len(self.urls)
        self.origin = "static " + ",".join(self.urls)
        self._claims: dict[str, str] = {}  # pod id → name
        self._stopped: set[str] = set()

    async def validate(self) -> None:
        return None

    def describe(self) -> str:
        return f"static ComfyUI servers {', '.join(self.urls)}"

    def _slot(self, pod_id: str) -> str:
        return self.urls[int(pod_id.removeprefix("static-"))]

    def _view(self, pod_id: str) -> ProviderPod:
        url = self._slot(pod_id)
        state = ProviderState.STOPPED if pod_id in self._stopped else ProviderState.RUNNING
        return ProviderPod(
            id=pod_id,
            name=self._claims[pod_id],
            state=state,
            comfyui_url=url if state == ProviderState.RUNNING else None,
            ip=urlsplit(url).hostname,
            gpu_type="static",
            gpu_memory_gb=self.gpu_memory_gb,
            cost_per_hr=self.cost_per_hr,
            details={"url": url},
        )

    def new_pod_price(self, min_gpu_memory_gb: int) -> float | None:
        return self.cost_per_hr

    async def create(
        self, name: str, min_gpu_memory_gb: int = 0, boot: PodBoot | None = None, max_price: float | None = None
    ) -> ProviderPod:
        """`boot` is ignored: the servers are already running.
        So is `max_price`: every pod costs `cost_per_hr`, which the spend cap was checked against."""
        if min_gpu_memory_gb and self.gpu_memory_gb is not None and self.gpu_memory_gb < min_gpu_memory_gb:
            raise NoFittingGpu(
                f"static servers have {self.gpu_memory_gb} GB (STATIC_GPU_MEMORY_GB), {min_gpu_memory_gb} needed"
            )
        for index in range(len(self.urls)):
            pod_id = f"static-{index}"
            if pod_id not in self._claims:
                self._claims[pod_id] = name
                return self._view(pod_id)
        raise CapacityError(f"all {len(self.urls)} static ComfyUI servers are in use")

    async def get(self, pod_id: str) -> ProviderPod | None:
        return self._view(pod_id) if pod_id in self._claims else None

    async def list(self) -> list[ProviderPod]:
        return [self._view(pod_id) for pod_id in self._claims]

    def _known(self, pod_id: str) -> None:
        if pod_id not in self._claims:
            raise PodNotFound(f"pod {pod_id} not found")

    async def start(self, pod_id: str) -> ProviderPod:
        self._known(pod_id)
        self._stopped.discard(pod_id)
        return self._view(pod_id)

    async def stop(self, pod_id: str) -> None:
        self._known(pod_id)
        self._stopped.add(pod_id)

    async def restart(self, pod_id: str) -> None:
        self._known(pod_id)
        raise Conflict("static ComfyUI servers are not restarted by Vibewave: restart the server itself")

    async def terminate(self, pod_id: str) -> None:
        self._known(pod_id)
        del self._claims[pod_id]
        self._stopped.discard(pod_id)

    async def catalogue(self, kind: str) -> Any:
        note = "static provider: fixed ComfyUI servers; there is no RunPod account"
        return no_cloud_catalogue(kind, {"provider": self.name, "note": note, "servers": self.urls, "balance": None})

    async def close(self) -> None:
        return None
