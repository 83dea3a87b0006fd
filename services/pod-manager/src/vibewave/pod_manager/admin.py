"""Admin operations behind `/api/runpod/*`, answered over NATS request/reply (`vw.rpc.pods.<op>`).

One FastStream subscriber takes `vw.rpc.pods.*` (queue group `pod-manager`, several calls at once, as
each operation had its own endpoint before); what the handler returns is the reply. Each operation
decodes the request, calls the provider or the manager, and replies with the HTTP status
the api should answer with. Provider failures become 500 `"RunPod API error: <reason>"` (for RunPod)
with the provider's own message — never anything that holds the key.

The key reaches every pod of the account, and not all of them are Vibewave's: start, stop, restart and
terminate of a pod Vibewave does not manage (`PodView.managed`) answer 403 unless `POD_MANAGE_FOREIGN`
is on; listing and reading them stay allowed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
from faststream.nats import NatsBroker

from vibewave.contracts.events import (
    POD_RPC_PREFIX,
    PodAdminReply,
    PodAdminRequest,
    PodOperation,
    PodRecord,
)
from vibewave.contracts.models import PodView
from vibewave.pod_manager.providers import ProviderError, ProviderPod
from vibewave.runtime.broker import current_message, decode

if TYPE_CHECKING:
    from vibewave.pod_manager.service import PodManagerService

log = logging.getLogger("vibewave.pod_manager.admin")

CATALOGUES = ("account", "gpu_types", "cloud_types", "network_volumes", "templates")
ADMIN_QUEUE = "pod-manager"


def is_managed(manager: PodManagerService, record: PodRecord | None, name: str) -> bool:
    """Vibewave's own pod: one it keeps a record of, or one named with its prefix (adopted at the next sync)."""
    return record is not None or manager.is_ours(name)


def pod_view(manager: PodManagerService, found: ProviderPod | None, record: PodRecord | None) -> PodView:
    base = found or record
    assert base is not None
    return PodView(
        id=base.id,
        name=base.name,
        provider=manager.provider.name,
        status=str(record.status) if record else str(found.state if found else "unknown"),
        managed=is_managed(manager, record, base.name),
        workflow_name=record.workflow_name if record else None,
        provider_state=str(found.state) if found else None,
        gpu_type=(found.gpu_type if found else None) or (record.gpu_type if record else None),
        cost_per_hr=found.cost_per_hr if found else (record.cost_per_hr if record else None),
        ip=(found.ip if found else None) or (record.ip if record else None),
        comfyui_url=(record.comfyui_url if record else None) or (found.comfyui_url if found else None),
        created_at=record.created_at if record else None,
        updated_at=record.updated_at if record else None,
        error=record.error if record else None,
        models=record.models if record else None,
        models_missing=record.models_missing if record else [],
        boot=record.boot if record else None,
        details=found.details if found else {},
    )


class Admin:
    def __init__(self, manager: PodManagerService) -> None:
        self.manager = manager

    async def view(self, pod_id: str) -> PodAdminReply:
        found = await self.manager.provider.get(pod_id)
        if found is None:
            return PodAdminReply(status=404, error="Pod not found")
        return PodAdminReply(status=200, data=pod_view(self.manager, found, self.manager.pods.get(pod_id)))

    async def list(self, _: PodAdminRequest) -> PodAdminReply:
        pods = [pod_view(self.manager, p, self.manager.pods.get(p.id)) for p in await self.manager.provider.list()]
        return PodAdminReply(status=200, data=pods)

    async def get(self, request: PodAdminRequest) -> PodAdminReply:
        return await self.view(request.pod_id or "")

    async def create(self, request: PodAdminRequest) -> PodAdminReply:
        async with self.manager.lock:
            pod = await self.manager.admin_create(request.min_gpu_memory_gb)
        return await self.view(pod.id)

    def _refused(self, found: ProviderPod, operation: PodOperation) -> PodAdminReply | None:
        """403 for a pod that is not Vibewave's, unless POD_MANAGE_FOREIGN: someone else's work on the account."""
        ours = is_managed(self.manager, self.manager.pods.get(found.id), found.name)
        if ours or self.manager.settings.manage_foreign:
            return None
        return PodAdminReply(
            status=403,
            error=f"pod {found.id} is not managed by Vibewave; set POD_MANAGE_FOREIGN=true to {operation} pods "
            "it did not create",
        )

    async def _on_pod(
        self, request: PodAdminRequest, operation: PodOperation, action: Callable[[str], Awaitable[object]]
    ) -> PodAdminReply:
        pod_id = request.pod_id or ""
        found = await self.manager.provider.get(pod_id)
        if found is None:
            return PodAdminReply(status=404, error="Pod not found")
        if refused := self._refused(found, operation):
            return refused
        async with self.manager.lock:
            await action(pod_id)
        return await self.view(pod_id)

    async def start(self, request: PodAdminRequest) -> PodAdminReply:
        return await self._on_pod(request, PodOperation.START, self.manager.admin_start)

    async def stop(self, request: PodAdminRequest) -> PodAdminReply:
        return await self._on_pod(request, PodOperation.STOP, self.manager.admin_stop)

    async def restart(self, request: PodAdminRequest) -> PodAdminReply:
        return await self._on_pod(request, PodOperation.RESTART, self.manager.admin_restart)

    async def terminate(self, request: PodAdminRequest) -> PodAdminReply:
        pod_id = request.pod_id or ""
        found = await self.manager.provider.get(pod_id)
        if found is None:
            return PodAdminReply(status=404, error="Pod not found")
        if refused := self._refused(found, PodOperation.TERMINATE):
            return refused
        async with self.manager.lock:
            await self.manager.admin_terminate(pod_id)
        view = pod_view(self.manager, found, None)
        return PodAdminReply(status=200, data=msgspec.structs.replace(view, status="terminated", details={}))

    async def catalogue(self, request: PodAdminRequest) -> PodAdminReply:
        kind = request.catalogue or ""
        if kind not in CATALOGUES:
            return PodAdminReply(status=400, error=f"unknown catalogue {kind!r}")
        data = await self.manager.provider.catalogue(kind)
        return PodAdminReply(status=200, data={"provider": self.manager.provider.name, kind: data})

    async def health(self, _: PodAdminRequest) -> PodAdminReply:
        """Healthy when the provider's API answers and new pods can be had (no circuit breaker open)."""
        counts: dict[str, int] = {}
        for pod in self.manager.pods.values():
            counts[pod.status] = counts.get(pod.status, 0) + 1
        fleet_ok, fleet_detail = self.manager.fleet_health()
        body: dict[str, Any] = {
            "provider": self.manager.provider.name,
            "pods": counts,
            "max_pods": self.manager.limits.max_pods,
            "fleet": {"healthy": fleet_ok, "detail": fleet_detail},
            "breakers": msgspec.to_builtins(self.manager.breakers.open_breakers()),
        }
        try:
            await self.manager.provider.catalogue("account")
        except ProviderError as exc:
            return PodAdminReply(status=200, data={**body, "healthy": False, "detail": self.failure_detail(exc)})
        if not fleet_ok:
            return PodAdminReply(status=200, data={**body, "healthy": False, "detail": fleet_detail})
        return PodAdminReply(status=200, data={**body, "healthy": True, "detail": "provider API answers"})

    def failure_detail(self, exc: ProviderError) -> str:
        if self.manager.provider.name == "runpod":
            return f"RunPod API error: {exc.message}"
        return f"{self.manager.provider.name} provider error: {exc.message}"

    async def handle(self) -> PodAdminReply:
        """The reply to one call. The body is decoded here, not by FastStream: a bad request is answered
        (400), where a failed decode would leave the api waiting out its timeout."""
        msg = current_message()
        name = msg.raw_message.subject.removeprefix(f"{POD_RPC_PREFIX}.")
        try:
            operation = PodOperation(name)
        except ValueError:
            return PodAdminReply(status=404, error=f"unknown pod operation {name!r}")
        try:
            call = PodAdminRequest() if not msg.body else decode(msg.body, PodAdminRequest)
        except msgspec.DecodeError as exc:
            return PodAdminReply(status=400, error=f"bad admin request: {exc}")
        handler: Callable[[PodAdminRequest], Awaitable[PodAdminReply]] = getattr(self, operation.value)
        try:
            return await handler(call)
        except ProviderError as exc:
            status = exc.status if exc.status in (400, 404, 409) else 500
            return PodAdminReply(status=status, error=exc.message if status != 500 else self.failure_detail(exc))
        except Exception:
            log.exception("admin %s failed", operation)
            return PodAdminReply(status=500, error="pod-manager failed; see its log")


def register_admin(broker: NatsBroker, manager: PodManagerService) -> None:
    """Declare the admin subscriber (before the broker starts). It replies to each call's inbox."""
    broker.subscriber(
        f"{POD_RPC_PREFIX}.*",
        queue=ADMIN_QUEUE,
        max_workers=len(PodOperation),
        title=f"{POD_RPC_PREFIX}.<op>",
        description="Admin calls of the api (PodAdminRequest); the reply is a PodAdminReply.",
    )(Admin(manager).handle)
