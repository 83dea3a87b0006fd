"""Pod-manager: the only writer of pod state. It keeps the fleet matched to the scheduler's demand.

A reconcile loop compares demand with the pods it has, creates and retires pods through the provider,
and marks a pod ready only once its ComfyUI answers `/system_stats` — and failed (then terminated) when
it never does within the bound or stops answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from uuid import uuid4

import aiohttp
import msgspec
import nats.js.errors
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
from vibewave.pod_manager.fleet import LIVE, plan_fleet
from vibewave.pod_manager.providers import Provider, create_provider
from vibewave.pod_manager.settings import PodManagerSettings

log = logging.getLogger("vibewave.pod_manager")

NAME_PREFIX = "vibewave"
FAILED_PROBES_BEFORE_FAILURE = 3


class PodManagerService:
    def __init__(self, settings: PodManagerSettings, tracer_provider: TracerProvider | None = None) -> None:
        self.settings = settings
        self.tracer_provider = tracer_provider
        self.provider: Provider = create_provider(
            settings.provider, settings.common.home, settings.local_command, settings.simulator_step_time_s
        )
        self.pods: dict[str, PodRecord] = {}
        self.demand = Demand(by_workflow={}, at=utcnow())
        self._idle_since: dict[str, float] = {}
        self._failed_probes: dict[str, int] = {}
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
        await self._retire_orphans()
        self._sub = await self.bus.nc.subscribe(DEMAND_SUBJECT, cb=self._on_demand)
        self._task = asyncio.create_task(self._reconcile_forever(), name="pod-manager:reconcile")
        await serve_liveness(self.bus.nc, "pod-manager", "the GPU pod fleet")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for pod in [p for p in self.pods.values() if p.status in LIVE]:
            await self._retire(pod, "pod-manager stopped")
        await self.provider.close()
        if self._session is not None:
            await self._session.close()
        if self._bus is not None:
            await self._bus.close()

    async def _retire_orphans(self) -> None:
        """Local pods recorded by an earlier run died with it: record them terminated."""
        assert self._kv is not None
        try:
            keys = await self._kv.keys()
        except nats.js.errors.NoKeysError:
            return
        for key in keys:
            entry = await self._kv.get(key)
            if not entry.value:
                continue
            pod = decode(entry.value, PodRecord)
            if pod.provider == self.provider.name and pod.status != PodStatus.TERMINATED:
                await self._save(msgspec.structs.replace(pod, status=PodStatus.TERMINATED, error="orphaned"))

    async def _on_demand(self, msg: Msg) -> None:
        with contextlib.suppress(msgspec.DecodeError):
            self.demand = decode(msg.data, Demand)
            self._wake.set()

    # ------------------------------------------------------------------------------------- reconcile

    async def _reconcile_forever(self) -> None:
        while True:
            try:
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
        busy = set(self.demand.busy_pods)
        for pod_id in list(self._idle_since):
            if pod_id in busy:
                self._idle_since[pod_id] = now
        plan = plan_fleet(
            self.demand.by_workflow,
            list(self.pods.values()),
            busy,
            {pod_id: now - since for pod_id, since in self._idle_since.items()},
            max_pods=self.settings.max_pods,
            min_warm=self.settings.min_warm_pods,
            idle_timeout_s=self.settings.idle_timeout_s,
            warm_workflows=(DEFAULT_WORKFLOW,),
        )
        for workflow in plan.create:
            await self._create(workflow)
        for pod_id in plan.retire:
            await self._retire(self.pods[pod_id], "idle")
        await self._probe_all()

    async def _create(self, workflow_name: str) -> None:
        pod_id = f"pod-{uuid4().hex[:10]}"
        now = utcnow()
        pod = PodRecord(
            id=pod_id,
            name=f"{NAME_PREFIX}-{workflow_name}-{pod_id[4:]}",
            provider=self.provider.name,
            workflow_name=workflow_name,
            status=PodStatus.CREATING,
            created_at=now,
            updated_at=now,
        )
        await self._save(pod)
        try:
            provided = await self.provider.create(pod_id, workflow_name)
        except Exception as exc:
            log.exception("creating a pod for %s failed", workflow_name)
            await self._save(msgspec.structs.replace(pod, status=PodStatus.FAILED, error=str(exc)))
            return
        await self._save(
            msgspec.structs.replace(pod, status=PodStatus.STARTING, comfyui_url=provided.comfyui_url, ip=provided.ip)
        )
        log.info("pod %s starting for %s", pod_id, workflow_name, extra={"pod_id": pod_id})

    async def _retire(self, pod: PodRecord, reason: str) -> None:
        await self.provider.terminate(pod.id)
        self._idle_since.pop(pod.id, None)
        self._failed_probes.pop(pod.id, None)
        await self._save(msgspec.structs.replace(pod, status=PodStatus.TERMINATED, error=reason))
        log.info("pod %s terminated (%s)", pod.id, reason, extra={"pod_id": pod.id})

    async def _probe_all(self) -> None:
        live = [p for p in self.pods.values() if p.status in (PodStatus.STARTING, PodStatus.READY)]
        results = await asyncio.gather(*(self._answers(p) for p in live))
        for pod, answers in zip(live, results, strict=True):
            await self._judge(pod, answers)

    async def _answers(self, pod: PodRecord) -> bool:
        assert self._session is not None
        if not pod.comfyui_url or not self.provider.alive(pod.id):
            return False
        try:
            async with self._session.get(f"{pod.comfyui_url}/system_stats") as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def _judge(self, pod: PodRecord, answers: bool) -> None:
        if pod.status == PodStatus.STARTING:
            if answers:
                self._idle_since[pod.id] = time.monotonic()
                await self._save(msgspec.structs.replace(pod, status=PodStatus.READY))
                log.info("pod %s ready", pod.id, extra={"pod_id": pod.id})
            elif (utcnow() - pod.created_at).total_seconds() > self.settings.ready_timeout_s:
                await self._fail(pod, f"ComfyUI did not answer within {self.settings.ready_timeout_s:.0f}s")
            elif not self.provider.alive(pod.id):
                await self._fail(pod, "pod process exited while starting")
            return
        if answers:
            self._failed_probes.pop(pod.id, None)
            return
        misses = self._failed_probes.get(pod.id, 0) + 1
        self._failed_probes[pod.id] = misses
        if misses >= FAILED_PROBES_BEFORE_FAILURE or not self.provider.alive(pod.id):
            await self._fail(pod, "ComfyUI stopped answering")

    async def _fail(self, pod: PodRecord, reason: str) -> None:
        log.warning("pod %s failed: %s", pod.id, reason, extra={"pod_id": pod.id})
        failed = msgspec.structs.replace(pod, status=PodStatus.FAILED, error=reason)
        await self._save(failed)
        await self._retire(failed, reason)

    async def _save(self, pod: PodRecord) -> None:
        assert self._kv is not None
        pod = msgspec.structs.replace(pod, updated_at=utcnow())
        self.pods[pod.id] = pod
        if pod.status == PodStatus.TERMINATED:
            self.pods.pop(pod.id, None)
        await self._kv.put(pod.id, encode(pod))
        await self.bus.publish(
            pod_subject(pod.id, pod.status), PodEvent(pod=pod), msg_id=f"{pod.id}.{pod.status}.{pod.updated_at}"
        )
