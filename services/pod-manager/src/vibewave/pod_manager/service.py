"""Pod-manager: the only writer of pod state. It keeps the fleet matched to the scheduler's demand.

A reconcile loop compares demand with the pods it has, resumes, creates, stops and terminates pods
through the provider, and marks a pod ready only once its ComfyUI answers `/system_stats` — and failed
(then terminated, so a replacement follows) when it never does within the bound or stops answering.
It regularly compares its records with the provider's own list: pods named with our prefix that it
does not know are adopted (after a restart nothing is created twice or orphaned), and pods changed
behind its back are recorded as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from uuid import uuid4

import aiohttp
import msgspec
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.kv import KeyValue
from opentelemetry.trace import TracerProvider

from vibewave.contracts.events import (
    DEMAND_SUBJECT,
    PODS_BUCKET,
    Demand,
    PodEvent,
    PodRecord,
    PodStatus,
    pod_subject,
    utcnow,
)
from vibewave.contracts.models import DEFAULT_WORKFLOW
from vibewave.contracts.runtime.bus import Bus, decode, encode
from vibewave.contracts.runtime.health import serve_liveness
from vibewave.pod_manager.admin import register_admin
from vibewave.pod_manager.fleet import LIVE, FleetLimits, plan_fleet
from vibewave.pod_manager.providers import Provider, ProviderError, ProviderPod, ProviderState, create_provider
from vibewave.pod_manager.settings import PodManagerSettings

log = logging.getLogger("vibewave.pod_manager")

FAILED_PROBES_BEFORE_FAILURE = 3
MAX_CREATE_BACKOFF_S = 60.0


class PodManagerService:
    def __init__(self, settings: PodManagerSettings, tracer_provider: TracerProvider | None = None) -> None:
        self.settings = settings
        self.tracer_provider = tracer_provider
        self.provider: Provider = create_provider(settings)
        self.pods: dict[str, PodRecord] = {}  # every pod not yet terminated
        self.demand = Demand(by_workflow={}, at=utcnow())
        self.lock = asyncio.Lock()  # reconcile and admin calls change pods one at a time
        self.limits = FleetLimits(
            max_pods=settings.max_pods,
            min_warm=settings.min_warm_pods,
            idle_timeout_s=settings.idle_timeout_s,
            terminate_timeout_s=settings.terminate_timeout_s,
            warm_workflows=(DEFAULT_WORKFLOW,),
        )
        self._idle_since: dict[str, float] = {}
        self._failed_probes: dict[str, int] = {}
        self._create_backoff = 0.0
        self._create_not_before = 0.0
        self._synced_at = 0.0
        self._bus: Bus | None = None
        self._kv: KeyValue | None = None
        self._session: aiohttp.ClientSession | None = None
        self._sub: Subscription | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def bus(self) -> Bus:
        assert self._bus is not None, "pod-manager not started"
        return self._bus

    async def start(self) -> None:
        common = self.settings.common
        self._bus = await Bus.connect(common.nats_url, name="pod-manager", tracer_provider=self.tracer_provider)
        await self.bus.provision(common.replicas)
        self._kv = await self.bus.kv(PODS_BUCKET)
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3))
        await self._load_records()
        async with self.lock:
            await self.sync()
        self._sub = await self.bus.nc.subscribe(DEMAND_SUBJECT, cb=self._on_demand)
        self._task = asyncio.create_task(self._reconcile_forever(), name="pod-manager:reconcile")
        service = await serve_liveness(self.bus.nc, "pod-manager", "the GPU pod fleet")
        await register_admin(service, self)
        log.info("pod-manager using the %s provider", self.provider.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.provider.ephemeral:  # local processes die with us: record them so
            for pod in list(self.pods.values()):
                await self._terminate(pod, "pod-manager stopped")
        await self.provider.close()
        if self._session is not None:
            await self._session.close()
        if self._bus is not None:
            await self._bus.close()

    async def _load_records(self) -> None:
        assert self._bus is not None
        for value in (await self._bus.kv_snapshot(PODS_BUCKET)).values():
            if value:
                pod = decode(value, PodRecord)
                if pod.status != PodStatus.TERMINATED and pod.provider == self.provider.name:
                    self.pods[pod.id] = pod

    async def _on_demand(self, msg: Msg) -> None:
        with contextlib.suppress(msgspec.DecodeError):
            self.demand = decode(msg.data, Demand)
            self._wake.set()

    def is_ours(self, name: str) -> bool:
        return name.startswith(f"{self.settings.name_prefix}-")

    def workflow_of(self, name: str) -> str:
        """`vibewave-comfyui_image_qwen-3fa9c1` → `comfyui_image_qwen`."""
        rest = name[len(self.settings.name_prefix) + 1 :]
        return rest.rsplit("-", 1)[0] if "-" in rest else DEFAULT_WORKFLOW

    # ----------------------------------------------------------------------------------------- sync

    async def sync(self) -> None:
        """Bring our records in line with the provider's own list (adopting our unknown pods)."""
        self._synced_at = time.monotonic()
        listed = {p.id: p for p in await self.provider.list() if self.is_ours(p.name)}
        for pod_id, found in listed.items():
            if pod_id not in self.pods and found.state != ProviderState.TERMINATED:
                await self._adopt(found)
        for pod in list(self.pods.values()):
            listing = listed.get(pod.id)
            if listing is None or listing.state == ProviderState.TERMINATED:
                await self._save(msgspec.structs.replace(pod, status=PodStatus.TERMINATED, error="gone at provider"))
            elif listing.state == ProviderState.STOPPED and pod.status in LIVE:
                await self._save(msgspec.structs.replace(pod, status=PodStatus.STOPPED, stopped_at=utcnow()))
            elif listing.state in (ProviderState.STARTING, ProviderState.RUNNING) and pod.status == PodStatus.STOPPED:
                await self._save(msgspec.structs.replace(pod, status=PodStatus.STARTING, started_at=utcnow()))

    async def _adopt(self, found: ProviderPod) -> None:
        stopped = found.state == ProviderState.STOPPED
        now = utcnow()
        pod = PodRecord(
            id=found.id,
            name=found.name,
            provider=self.provider.name,
            workflow_name=self.workflow_of(found.name),
            status=PodStatus.STOPPED if stopped else PodStatus.STARTING,
            comfyui_url=found.comfyui_url,
            ip=found.ip,
            gpu_type=found.gpu_type,
            cost_per_hr=found.cost_per_hr,
            created_at=now,
            updated_at=now,
            started_at=None if stopped else now,
            stopped_at=now if stopped else None,
        )
        await self._save(pod)
        log.info("adopted pod %s (%s, %s)", found.id, found.name, found.state, extra={"pod_id": found.id})

    # ------------------------------------------------------------------------------------ reconcile

    async def _reconcile_forever(self) -> None:
        while True:
            try:
                async with self.lock:
                    await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reconcile failed; will retry")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.probe_interval_s)
            self._wake.clear()

    async def reconcile(self) -> None:
        now = time.monotonic()
        if now - self._synced_at >= self.settings.sync_interval_s:
            await self.sync()
        busy = set(self.demand.busy_pods)
        for pod in self.pods.values():
            if pod.status != PodStatus.READY or pod.id in busy:
                self._idle_since.pop(pod.id, None)
            else:
                self._idle_since.setdefault(pod.id, now)
        wall = utcnow()
        stopped_for = {
            p.id: (wall - p.stopped_at).total_seconds() for p in self.pods.values() if p.stopped_at is not None
        }
        plan = plan_fleet(
            self.demand.by_workflow,
            list(self.pods.values()),
            busy,
            {pod_id: now - since for pod_id, since in self._idle_since.items()},
            stopped_for,
            self.limits,
        )
        for pod_id in plan.resume:
            await self._act(self._resume, self.pods[pod_id])
        if plan.create and time.monotonic() >= self._create_not_before:
            for workflow in plan.create:
                if not await self.create(workflow):
                    break
        for pod_id in plan.stop:
            await self._act(self._stop, self.pods[pod_id])
        for pod_id in plan.terminate:
            await self._act(self._terminate_idle, self.pods[pod_id])
        await self._probe_all()

    async def _act(self, action: object, pod: PodRecord) -> None:
        assert callable(action)
        try:
            await action(pod)
        except ProviderError as exc:
            log.warning("%s of pod %s failed: %s", getattr(action, "__name__", "action"), pod.id, exc.message)

    async def create(self, workflow_name: str, *, surface_errors: bool = False) -> PodRecord | None:
        """Create one pod; on failure back off (doubling up to a minute) so a refusing provider is not hammered."""
        name = f"{self.settings.name_prefix}-{workflow_name}-{uuid4().hex[:6]}"
        try:
            found = await self.provider.create(name, workflow_name)
        except ProviderError as exc:
            if surface_errors:
                raise
            self._create_backoff = min(max(self._create_backoff * 2, 1.0), MAX_CREATE_BACKOFF_S)
            self._create_not_before = time.monotonic() + self._create_backoff
            log.warning("creating a pod for %s failed (%s); next try in %.0fs", workflow_name, exc.message,
                        self._create_backoff)  # fmt: skip
            return None
        self._create_backoff = 0.0
        now = utcnow()
        pod = PodRecord(
            id=found.id,
            name=name,
            provider=self.provider.name,
            workflow_name=workflow_name,
            status=PodStatus.STARTING,
            comfyui_url=found.comfyui_url,
            ip=found.ip,
            gpu_type=found.gpu_type,
            cost_per_hr=found.cost_per_hr,
            created_at=now,
            updated_at=now,
            started_at=now,
        )
        await self._save(pod)
        log.info("pod %s starting for %s", pod.id, workflow_name, extra={"pod_id": pod.id, "gpu": found.gpu_type})
        return pod

    async def _resume(self, pod: PodRecord) -> PodRecord:
        found = await self.provider.start(pod.id)
        resumed = msgspec.structs.replace(
            pod, status=PodStatus.STARTING, comfyui_url=found.comfyui_url, ip=found.ip, started_at=utcnow(),
            stopped_at=None, error=None,
        )  # fmt: skip
        await self._save(resumed)
        log.info("pod %s resuming", pod.id, extra={"pod_id": pod.id})
        return resumed

    async def _stop(self, pod: PodRecord, reason: str = "idle") -> PodRecord:
        await self.provider.stop(pod.id)
        stopped = msgspec.structs.replace(pod, status=PodStatus.STOPPED, stopped_at=utcnow())
        await self._save(stopped)
        self._idle_since.pop(pod.id, None)
        log.info("pod %s stopped (%s)", pod.id, reason, extra={"pod_id": pod.id})
        return stopped

    async def _terminate_idle(self, pod: PodRecord) -> None:
        await self._terminate(pod, "idle")

    async def _terminate(self, pod: PodRecord, reason: str) -> None:
        try:
            await self.provider.terminate(pod.id)
        except ProviderError as exc:
            if await self.provider.get(pod.id) is not None:
                raise
            log.info("pod %s was already gone (%s)", pod.id, exc.message)
        self._idle_since.pop(pod.id, None)
        self._failed_probes.pop(pod.id, None)
        await self._save(msgspec.structs.replace(pod, status=PodStatus.TERMINATED, error=reason))
        log.info("pod %s terminated (%s)", pod.id, reason, extra={"pod_id": pod.id})

    # -------------------------------------------------------------------------------------- probing

    async def _probe_all(self) -> None:
        live = [p for p in self.pods.values() if p.status in (PodStatus.STARTING, PodStatus.READY)]
        results = await asyncio.gather(*(self._answers(p) for p in live))
        for pod, answers in zip(live, results, strict=True):
            await self._judge(pod, answers)

    async def _answers(self, pod: PodRecord) -> bool:
        assert self._session is not None
        if not pod.comfyui_url:
            return False
        try:
            async with self._session.get(f"{pod.comfyui_url}/system_stats") as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def _judge(self, pod: PodRecord, answers: bool) -> None:
        if pod.status == PodStatus.STARTING:
            if answers:
                await self._save(msgspec.structs.replace(pod, status=PodStatus.READY, error=None))
                log.info("pod %s ready", pod.id, extra={"pod_id": pod.id})
            elif (utcnow() - (pod.started_at or pod.created_at)).total_seconds() > self.settings.ready_timeout_s:
                await self._fail(pod, f"ComfyUI did not answer within {self.settings.ready_timeout_s:.0f}s")
            return
        if answers:
            self._failed_probes.pop(pod.id, None)
            return
        misses = self._failed_probes.get(pod.id, 0) + 1
        self._failed_probes[pod.id] = misses
        if misses >= FAILED_PROBES_BEFORE_FAILURE:
            await self._fail(pod, "ComfyUI stopped answering")

    async def _fail(self, pod: PodRecord, reason: str) -> None:
        """Failed pods are terminated at once; the next reconcile replaces them if still needed."""
        log.warning("pod %s failed: %s", pod.id, reason, extra={"pod_id": pod.id})
        failed = msgspec.structs.replace(pod, status=PodStatus.FAILED, error=reason)
        await self._save(failed)
        try:
            await self._terminate(failed, reason)
        except ProviderError as exc:
            log.warning("terminating failed pod %s failed: %s", pod.id, exc.message)

    async def _save(self, pod: PodRecord) -> None:
        assert self._kv is not None
        pod = msgspec.structs.replace(pod, updated_at=utcnow())
        if pod.status == PodStatus.TERMINATED:
            self.pods.pop(pod.id, None)
        else:
            self.pods[pod.id] = pod
        await self._kv.put(pod.id, encode(pod))
        await self.bus.publish(
            pod_subject(pod.id, pod.status), PodEvent(pod=pod), msg_id=f"{pod.id}.{pod.status}.{pod.updated_at}"
        )

    # ------------------------------------------------------------------------------- admin (locked)

    async def admin_start(self, pod_id: str) -> PodRecord | None:
        pod = self.pods.get(pod_id)
        found = await self.provider.start(pod_id)
        if pod is None:
            return None
        if pod.status in (PodStatus.STOPPED, PodStatus.FAILED):
            return await self._save_and_return(
                msgspec.structs.replace(
                    pod,
                    status=PodStatus.STARTING,
                    comfyui_url=found.comfyui_url,
                    ip=found.ip,
                    started_at=utcnow(),
                    stopped_at=None,
                )
            )
        return pod

    async def admin_stop(self, pod_id: str) -> PodRecord | None:
        pod = self.pods.get(pod_id)
        if pod is None:
            await self.provider.stop(pod_id)
            return None
        return await self._stop(pod, "stopped by request")

    async def admin_restart(self, pod_id: str) -> PodRecord | None:
        await self.provider.restart(pod_id)
        pod = self.pods.get(pod_id)
        if pod is None:
            return None
        found = await self.provider.get(pod_id)
        return await self._save_and_return(
            msgspec.structs.replace(
                pod,
                status=PodStatus.STARTING,
                started_at=utcnow(),
                stopped_at=None,
                comfyui_url=found.comfyui_url if found else pod.comfyui_url,
            )
        )

    async def admin_terminate(self, pod_id: str) -> None:
        pod = self.pods.get(pod_id)
        if pod is None:
            await self.provider.terminate(pod_id)
            return
        await self._terminate(pod, "terminated by request")

    async def _save_and_return(self, pod: PodRecord) -> PodRecord:
        await self._save(pod)
        return self.pods.get(pod.id, pod)
