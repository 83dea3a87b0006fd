"""A provider that spends money only while this pod-manager leads: every call that creates, resumes,
stops, restarts or terminates a pod first checks the lease (`check` raises when it is not held), so a
pod-manager that was paused and lost its lease cannot act on the fleet its successor now runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vibewave.pod_manager.providers.base import PodBoot, Provider, ProviderPod


class LeaderOnly:
    def __init__(self, inner: Provider, check: Callable[[], None]) -> None:
        self.inner, self.check = inner, check
        self.name, self.ephemeral, self.origin = inner.name, inner.ephemeral, inner.origin
        self.capacity, self.restarts_in_place = inner.capacity, inner.restarts_in_place

    async def validate(self) -> None:
        await self.inner.validate()

    def describe(self) -> str:
        return self.inner.describe()

    async def create(
        self, name: str, min_gpu_memory_gb: int = 0, boot: PodBoot | None = None, max_price: float | None = None
    ) -> ProviderPod:
        self.check()
        return await self.inner.create(name, min_gpu_memory_gb, boot, max_price)

    def new_pod_price(self, min_gpu_memory_gb: int) -> float | None:
        return self.inner.new_pod_price(min_gpu_memory_gb)

    async def get(self, pod_id: str) -> ProviderPod | None:
        return await self.inner.get(pod_id)

    async def list(self) -> list[ProviderPod]:
        return await self.inner.list()

    async def start(self, pod_id: str) -> ProviderPod:
        self.check()
        return await self.inner.start(pod_id)

    async def stop(self, pod_id: str) -> None:
        self.check()
        await self.inner.stop(pod_id)

    async def restart(self, pod_id: str) -> None:
        self.check()
        await self.inner.restart(pod_id)

    async def terminate(self, pod_id: str) -> None:
        self.check()
        await self.inner.terminate(pod_id)

    async def catalogue(self, kind: str) -> Any:
        return await self.inner.catalogue(kind)

    async def close(self) -> None:
        await self.inner.close()
