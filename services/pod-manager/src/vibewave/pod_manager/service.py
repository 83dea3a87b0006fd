"""Pod-manager: the only writer of pod state. It keeps the fleet matched to the scheduler's demand.

A reconcile loop compares demand with the pods it has, resumes, creates, stops and terminates pods
through the provider, and marks a pod ready only once its ComfyUI answers `/system_stats` — and, for
RunPod pods, lists every file of the fleet's model set (`boot`, `probe`). A RunPod pod boots our
bootstrap with its own ComfyUI token. Every loop that spends money is bounded:

- a stopped pod that cannot resume (its host's GPU was rented out) is terminated — or, with
  `POD_UNRESUMABLE=keep`, left stopped and never tried again — and a new pod is created in the same pass;
- pods that never become ready are failed and terminated; after `POD_READY_ATTEMPTS` of them in a row
  for one GPU class (or a refusal retrying cannot fix) its circuit breaker opens: no more pods of the
  class, and the scheduler fails the requests that need it with the diagnosis (see `breakers`);
- a terminate that fails is retried with backoff until the provider confirms the pod is gone; a pod
  of ours the provider still lists is never forgotten;
- a rate-limited provider (HTTP 429) is not called again before the `Retry-After` it gave.

A run that faulted on a pod (reported by the executor) or a missed probe makes the pod suspect: no work
until a probe passes. Pods are verified by this incarnation of pod-manager (`manager`) and it beats in
KV `fleet`; the scheduler places work only on pods verified by a live pod-manager, so pods of a dead
one, or of an earlier run, get nothing. At start the settings are checked against the provider (a
typo is a start-up error), records of another provider or account are retired, and pods of ours the
provider lists are adopted. On shutdown the pods are terminated, stopped or kept (`POD_SHUTDOWN`) —
unless another pod-manager replica stands by to take them over.

One replica manages the fleet: the holder of the pod-manager lease (`runtime.lease`); the others stand
by, connected, answering nothing but liveness. Its writes are fenced: each pod record (and the fleet
status) is written only if still at the revision this replica last read or wrote, a new holder rewrites
every record it takes over, and every provider call that spends or saves money checks the lease first
(`providers.fenced`). A leader that lost its lease stops without touching the pods, and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from uuid import uuid4

import aiohttp
import msgspec
from faststream import AckPolicy
from faststream.nats import NatsBroker, PullSub
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, Status, StatusCode, TracerProvider

from vibewave.contracts.events import (
    DEMAND_SUBJECT,
    FLEET_BUCKET,
    FLEET_STATUS_KEY,
    LEASES_BUCKET,
    POD_FAULTS_CONSUMER,
    POD_PREFIX,
    PODS_BUCKET,
    PODS_STREAM,
    REQUESTS_STREAM,
    AttemptFailed,
    Demand,
    FailureKind,
    FleetStatus,
    PodEvent,
    PodRecord,
    PodStatus,
    pod_subject,
    utcnow,
)
from vibewave.contracts.workflows import load_catalog
from vibewave.pod_manager.admin import register_admin
from vibewave.pod_manager.boot import BootPlan, check_disk, fleet_models
from vibewave.pod_manager.breakers import Breakers
from vibewave.pod_manager.fleet import LIVE, FleetLimits
from vibewave.pod_manager.policy import DEFAULT_BOOT_S, FleetMemory, FleetSituation, hourly_spend, make_policy
from vibewave.pod_manager.probe import Probe, probe_pod
from vibewave.pod_manager.providers import (
    Conflict,
    HostBusy,
    NoFittingGpu,
    PodNotFound,
    Provider,
    ProviderError,
    ProviderPod,
    ProviderState,
    RateLimited,
    create_provider,
)
from vibewave.pod_manager.providers.fenced import LeaderOnly
from vibewave.pod_manager.settings import PodManagerSettings
from vibewave.runtime import broker as runtime
from vibewave.runtime.broker import bounded, decode, encode
from vibewave.runtime.health import count_instances, serve_liveness
from vibewave.runtime.lease import Lease, LeaseLost
from vibewave.runtime.metrics import instruments
from vibewave.runtime.telemetry import links_to

log = logging.getLogger("vibewave.pod_manager")

MAX_CREATE_BACKOFF_S = 60.0
MAX_TERMINATE_BACKOFF_S = 60.0
RESUME_FAILURES_BEFORE_REPLACING = 3
FAULTS_BATCH = 8  # fault reports fetched at once (handled in order; each is quick, bar waiting for the lock)
LAPSE_WAIT_S = 30.0  # a fault report in hand waits this long for a lapsed lease to be taken again
SHUTDOWN_BUDGET_S = 9.0  # within run_service's 12 s stop bound (the devstack gives pod-manager 15 s)


class Resumed(Enum):
    YES = "yes"
    LATER = "later"  # a transient failure: try again next pass
    REPLACE = "replace"  # it will not resume (terminated or kept aside): create a pod instead, now


@dataclass
class _Termination:
    next_at: float = 0.0
    delay_s: float = 0.0


class PodManagerService:
    def __init__(self, settings: PodManagerSettings, tracer_provider: TracerProvider | None = None) -> None:
        self.settings = settings
        self.tracer_provider = tracer_provider
        self.tracer = trace.get_tracer("vibewave.pod_manager", tracer_provider=tracer_provider)
        self._boots: dict[str, Span] = {}  # pod id → its `pod boot` span, open until it is ready or gone
        self.lease: Lease | None = None
        self.ended = asyncio.Event()  # set when the lease was lost: the process exits, to return as a standby
        self.provider: Provider = LeaderOnly(create_provider(settings), self._check_lease)
        self.cloud = settings.provider == "runpod"  # pods boot our bootstrap and must list the fleet's models
        self.models = fleet_models(
            load_catalog(settings.workflows_dir), settings.pod_workflows,
            optional=settings.optional_models, overrides=settings.models_file,
        )  # fmt: skip
        self.boot = BootPlan(self.models, settings.pod_token_key, bootstrap=self.cloud and settings.runpod.bootstrap)
        self.wanted: list[str] | None = self.models.keys if self.cloud else None
        self._revisions: dict[str, int] = {}  # each pod record's revision in KV: the fence of its next write
        self._fleet_revision = 0
        self.incarnation = uuid4().hex[:12]  # this pod-manager process, as the pods it verified name it
        self.pods: dict[str, PodRecord] = {}  # every pod not yet terminated
        self._meters = instruments()
        self._meters.pods_source = self.pod_counts
        self.demand = Demand(at=utcnow())
        self.lock = asyncio.Lock()  # reconcile, fault reports and admin calls change pods one at a time
        capacity = self.provider.capacity
        self.limits = FleetLimits(
            max_pods=min(settings.max_pods, capacity) if capacity is not None else settings.max_pods,
            min_warm=settings.min_warm_pods,
            idle_timeout_s=settings.idle_timeout_s,
            terminate_timeout_s=settings.terminate_timeout_s,
            max_hourly_spend=settings.max_hourly_spend,
        )
        scale = settings.common.time_scale
        self.policy = make_policy(settings.fleet_policy, scale, settings.fleet_wait_worth)
        self.memory = FleetMemory(create_boot_s=DEFAULT_BOOT_S / scale, resume_boot_s=DEFAULT_BOOT_S / scale)
        self.held: str | None = None  # why waiting requests get no new pod now (the spend cap)
        self._resumed: set[str] = set()  # pods starting after a resume (not a create): their boot is a resume's
        self.breakers = Breakers(settings.ready_attempts, settings.breaker_cooldown_s)
        self.heartbeat_interval_s = max(0.2, min(settings.probe_interval_s, 2.0))
        pod_settings = (
            self.provider.origin,
            self.provider.describe(),
            settings.ready_timeout_s,
            settings.runpod.gpu_types,
            self.boot.describe(),
        )
        self.fingerprint = hashlib.sha256(repr(pod_settings).encode()).hexdigest()[:16]  # the breakers' settings
        self.note: str | None = None  # why pods are short right now, for health and timed-out requests
        self._idle_since: dict[str, float] = {}
        self._silent_since: dict[str, float] = {}  # a pod that was ready: since when it has not answered
        self._probed_at: dict[str, float] = {}
        self._probe_now: set[str] = set()  # probe these at the next pass, whatever the interval
        self._resume_failures: dict[str, int] = {}
        self._unresumable: set[str] = set()
        self._terminations: dict[str, _Termination] = {}
        self._create_backoff = 0.0
        self._create_not_before = 0.0
        self._paused_until = 0.0  # rate-limited: no provider calls before this
        self._synced_at = 0.0
        self._started = False  # pods are shut down only by a pod-manager that started: not after a failed start
        self._stopping = False
        self._connected = False
        self._kv: KeyValue | None = None
        self._fleet_kv: KeyValue | None = None
        self._session: aiohttp.ClientSession | None = None
        self._wake = asyncio.Event()
        self._retaken = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.broker: NatsBroker = runtime.new_broker("pod-manager", settings.common, tracer_provider)
        self._pod_events = self.broker.publisher(
            f"{POD_PREFIX}.*.*",
            stream=runtime.stream(PODS_STREAM),
            schema=PodEvent,
            title="vw.pod.<pod_id>.<status>",
            description="Every change of a pod's record (stream PODS); the record itself is in KV `pods`.",
        )
        self._declare_subscribers()

    def _declare_subscribers(self) -> None:
        """What pod-manager listens to: the scheduler's demand (core NATS, the latest one wins), the
        executors' fault reports (a durable consumer: none is lost while pod-manager is down) and the
        admin calls of the api (request/reply)."""
        broker, spec = self.broker, POD_FAULTS_CONSUMER
        broker.subscriber(
            DEMAND_SUBJECT,
            no_reply=True,  # a signal, never a request
            title=DEMAND_SUBJECT,
            description="Pods needed per GPU class, sent periodically by the scheduler.",
        )(self._on_demand)
        faults = broker.subscriber(
            spec.filter_subjects[0],
            stream=runtime.stream(REQUESTS_STREAM),
            durable=spec.durable,
            config=runtime.consumer_config(spec, self.settings.common.replicas),
            pull_sub=PullSub(batch_size=FAULTS_BATCH, timeout=1),
            ack_policy=AckPolicy.NACK_ON_ERROR,
            title=spec.durable,
            description="Runs that failed; pod faults make their pod suspect until a probe passes.",
        )
        faults(self._on_fault_report)
        runtime.steady_pulls(faults)
        register_admin(broker, self)

    async def start(self) -> None:
        await self.provider.validate()
        if self.cloud:
            check_disk(self.models, self.settings.runpod.container_disk_gb, self.settings.runpod.network_volume_id)
            log.info("new pods boot %s", self.boot.describe())
        common = self.settings.common
        await runtime.connect(self.broker)
        self._connected = True
        await runtime.provision(self.broker, common)
        js = runtime.jetstream(self.broker)
        await runtime.ensure_consumer(js, POD_FAULTS_CONSUMER, common.replicas)
        self._kv = await js.key_value(PODS_BUCKET.name)
        self._fleet_kv = await js.key_value(FLEET_BUCKET.name)
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3))
        await serve_liveness(self.broker.connection, "pod-manager", "the GPU pod fleet")
        self.lease = Lease(js, await js.key_value(LEASES_BUCKET.name), "pod-manager")
        await self.lease.acquire()  # a standby waits here, connected: a takeover is a load and a sync away
        async with self.lock:
            await self._load()
            await self.sync()
        await self._beat()
        await runtime.serve(self.broker)  # the subscribers: demand, fault reports, admin calls
        self._tasks = [
            asyncio.create_task(self._keep_lease(), name="pod-manager:lease"),
            asyncio.create_task(self._reconcile_forever(), name="pod-manager:reconcile"),
            asyncio.create_task(self._beat_forever(), name="pod-manager:heartbeat"),
        ]
        self._started = True
        log.info("pod-manager leading (lease epoch %d), using the %s provider (%s)", self.lease.epoch,
                 self.provider.name, self.provider.origin)  # fmt: skip

    def _check_lease(self) -> None:
        if self.lease is None:
            raise LeaseLost("pod-manager has not taken its lease yet")
        self.lease.check()

    async def _keep_lease(self) -> None:
        assert self.lease is not None
        try:
            await self.lease.keep(on_retaken=lambda _: self._retaken.set())
            log.error("lost the pod-manager lease: stopping without touching the pods, to come back as a standby")
        except Exception:
            log.exception("keeping the pod-manager lease failed: stopping without touching the pods")
        self.ended.set()

    async def _reload_after_retake(self) -> None:
        """The lease lapsed (NATS away longer than its TTL) and was taken again: another leader may have
        changed the fleet meanwhile, so the records are read and fenced again before the next pass."""
        async with self.lock:
            self.pods.clear()
            await self._load()
            await self.sync()

    async def stop(self) -> None:
        self._stopping = True
        await runtime.cancel_tasks(self._tasks)
        if self._started and not (self.lease is not None and self.lease.held()):
            log.warning("stopping without the lease: the pods are left to the pod-manager that holds it")
        elif self._started and await self._standbys():
            log.info("another pod-manager stands by: the pods are left running for it to take over")
        elif self._started:
            await bounded(self._beat())  # the scheduler stops placing on pods about to go
            try:
                async with asyncio.timeout(SHUTDOWN_BUDGET_S):
                    await self._shut_down_pods()
            except TimeoutError:
                left = ", ".join(p.id for p in self.pods.values()) or "none"
                log.error("shutdown took too long; pods not confirmed gone: %s (the next start retries)", left)
        for pod_id in list(self._boots):
            self._boot_ended(pod_id, "pod-manager stopped")
        await self.provider.close()
        if self._session is not None:
            await self._session.close()
        if self._connected:
            await runtime.stop_broker(self.broker)
        if self.lease is not None:
            await self.lease.release()  # the standby takes over at once instead of after the TTL

    async def _standbys(self) -> int:
        """Other pod-manager replicas alive now (each answers the NATS service ping)."""
        try:
            return max(0, await count_instances(self.broker.connection, "pod-manager") - 1)
        except Exception:
            return 0

    def pod_counts(self) -> dict[tuple[str, str], int]:
        """The fleet for the `vibewave.pods` gauge: pods not yet terminated per (state, provider). A standby
        holds none, so replicas' series add up to the leader's fleet."""
        counts: dict[tuple[str, str], int] = {}
        for pod in self.pods.values():
            key = (pod.status.value, pod.provider)
            counts[key] = counts.get(key, 0) + 1
        return counts

    def shutdown_policy(self) -> str:
        """Local processes always end (they die with us anyway); static servers are only released."""
        if self.provider.name == "runpod":
            return self.settings.shutdown
        return "terminate"

    async def _shut_down_pods(self) -> None:
        policy = self.shutdown_policy()
        pods = list(self.pods.values())
        if not pods:
            log.info("shutdown: no pods to %s", policy)
            return
        if policy == "keep":
            running = [p.id for p in pods if p.status in LIVE]
            log.warning(
                "shutdown: left %d pods as they are (POD_SHUTDOWN=keep): %s; running ones bill until "
                "stopped, and the next start adopts them",
                len(pods),
                ", ".join(running) or "none running",
            )
            return  # fmt: skip
        targets = [p for p in pods if p.status in LIVE] if policy == "stop" else pods
        results = await asyncio.gather(*(self._retire_at_shutdown(p, policy) for p in targets), return_exceptions=True)
        done = [p.id for p, r in zip(targets, results, strict=True) if r is True]
        for pod, result in zip(targets, results, strict=True):
            if result is not True:
                reason = result if isinstance(result, BaseException) else "the provider did not confirm it"
                log.error("shutdown: could not %s pod %s (%s): it may still bill — %s it at %s; the next start "
                          "retries", policy, pod.id, reason, policy, self.provider.name)  # fmt: skip
        verb = "terminated" if policy == "terminate" else "stopped"
        log.info("shutdown: %s %d of %d pods: %s", verb, len(done), len(targets), ", ".join(done) or "none")

    async def _retire_at_shutdown(self, pod: PodRecord, policy: str) -> bool:
        if policy == "stop":
            await self._stop(pod, "pod-manager stopped")
            return True
        return await self._terminate(pod, "pod-manager stopped")

    # ---------------------------------------------------------------------------------------- state

    async def _load(self) -> None:
        """Our records from KV; those of another provider or account are retired (never dispatched to)."""
        assert self._kv is not None
        entries = await runtime.kv_entries(runtime.jetstream(self.broker), self._kv, PODS_BUCKET.name)
        self._revisions = {key: revision for key, (_, revision) in entries.items()}
        for value, _ in entries.values():
            if not value:
                continue
            pod = decode(value, PodRecord)
            if pod.status == PodStatus.TERMINATED:
                continue
            if pod.origin != self.provider.origin:
                where = pod.origin or f"{pod.provider} (an older version)"
                await self._save(
                    msgspec.structs.replace(
                        pod, status=PodStatus.TERMINATED, error=f"retired: a pod of {where}, not of this provider"
                    )
                )
                log.warning(
                    "pod %s belongs to %s, not to %s: its record is retired (if it still runs there, stop it there)",
                    pod.id,
                    where,
                    self.provider.origin,
                    extra={"pod_id": pod.id},
                )
                continue  # fmt: skip
            self.pods[pod.id] = pod
        for pod in list(self.pods.values()):  # fenced: every write of a paused predecessor is refused now
            await self._save(pod, quiet=True)
        assert self._fleet_kv is not None
        with contextlib.suppress(Exception):
            entry = await self._fleet_kv.get(FLEET_STATUS_KEY)
            self._fleet_revision = entry.revision or 0
            stored = decode(entry.value or b"", FleetStatus)
            if stored.settings == self.fingerprint and stored.breakers:
                self.breakers.restore(stored.breakers)
                log.warning("circuit breakers still open from before (same settings): %s",
                            "; ".join(b.diagnosis for b in stored.breakers))  # fmt: skip

    async def _on_demand(self, demand: Demand) -> None:
        self.demand = demand
        self._wake.set()

    def is_ours(self, name: str) -> bool:
        return name.startswith(f"{self.settings.name_prefix}-")

    def pod_name(self, gpu_class: int) -> str:
        """`vibewave-3fa9c1`, or `vibewave-48g-3fa9c1` for a pod made for workflows needing 48 GB."""
        size = f"{gpu_class}g-" if gpu_class else ""
        return f"{self.settings.name_prefix}-{size}{uuid4().hex[:6]}"

    def class_of(self, pod: PodRecord) -> int:
        part = pod.name[len(self.settings.name_prefix) + 1 :].split("-", 1)[0]
        return int(part[:-1]) if part.endswith("g") and part[:-1].isdigit() else 0

    def live_count(self) -> int:
        return sum(1 for p in self.pods.values() if p.status in LIVE)

    # ----------------------------------------------------------------------------------------- sync

    async def sync(self) -> None:
        """Bring our records in line with the provider's own list (adopting our unknown pods)."""
        self._synced_at = time.monotonic()
        listed = {p.id: p for p in await self.provider.list() if self.is_ours(p.name)}
        for pod_id, found in listed.items():
            if pod_id not in self.pods and found.state != ProviderState.TERMINATED:
                await self._adopt(found)
        for pod in list(self.pods.values()):
            await self._follow(pod, listed.get(pod.id))

    async def _follow(self, pod: PodRecord, found: ProviderPod | None) -> PodRecord | None:
        """Make the record say what the provider says: never ready while the provider has it stopped."""
        if found is None or found.state == ProviderState.TERMINATED:
            self._terminations.pop(pod.id, None)
            await self._save(
                msgspec.structs.replace(pod, status=PodStatus.TERMINATED, error=pod.error or "gone at provider")
            )
            return None  # fmt: skip
        if pod.status in (PodStatus.TERMINATING, PodStatus.FAILED):
            return pod
        if found.state == ProviderState.STOPPED and pod.status in LIVE:
            return await self._save(msgspec.structs.replace(pod, status=PodStatus.STOPPED, stopped_at=utcnow()))
        if found.state in (ProviderState.STARTING, ProviderState.RUNNING) and pod.status == PodStatus.STOPPED:
            return await self._save(
                msgspec.structs.replace(
                    pod, status=PodStatus.STARTING, started_at=utcnow(), stopped_at=None,
                    comfyui_url=found.comfyui_url, ip=found.ip,
                )
            )  # fmt: skip
        return pod

    async def _adopt(self, found: ProviderPod) -> None:
        stopped = found.state == ProviderState.STOPPED
        now = utcnow()
        pod = PodRecord(
            id=found.id,
            name=found.name,
            provider=self.provider.name,
            origin=self.provider.origin,
            status=PodStatus.STOPPED if stopped else PodStatus.STARTING,
            comfyui_url=found.comfyui_url,
            ip=found.ip,
            gpu_type=found.gpu_type,
            gpu_memory_gb=found.gpu_memory_gb,
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
                if self._retaken.is_set():
                    self._retaken.clear()
                    await self._reload_after_retake()
                async with self.lock:
                    await self.reconcile()
            except asyncio.CancelledError:
                raise
            except RateLimited as exc:
                self._pause(exc)
            except Exception:
                log.exception("reconcile failed; will retry")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.probe_interval_s)
            self._wake.clear()

    def _pause(self, exc: RateLimited) -> None:
        self._paused_until = time.monotonic() + exc.retry_after_s
        self.note = f"{self.provider.name} rate limit: no calls for {exc.retry_after_s:.0f}s ({exc.message})"
        log.warning("%s; pausing provider calls", self.note)

    async def reconcile(self) -> None:
        now = time.monotonic()
        if now < self._paused_until:
            await self._probe_all()
            return
        if now - self._synced_at >= self.settings.sync_interval_s:
            await self.sync()
        await self._retry_terminations()
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
        self.memory.observe(now, sum(n.waiting + n.running for n in self.demand.needs), self.limits.max_pods)
        situation = FleetSituation(
            needs=self.demand.needs,
            pods=list(self.pods.values()),
            busy=busy,
            idle_for={pod_id: now - since for pod_id, since in self._idle_since.items()},
            stopped_for=stopped_for,
            blocked=self.breakers.blocked(),
            unresumable=self._unresumable,
            price=self.provider.new_pod_price,
        )
        plan = self.policy.plan(situation, self.memory, self.limits)
        self.held = plan.held
        replacements: list[int] = []
        for pod_id in plan.resume:
            stopped = self.pods.get(pod_id)
            if stopped is not None and await self._resume(stopped) == Resumed.REPLACE:
                replacements.append(self.class_of(stopped))
        creations = [*plan.create, *replacements]
        if creations and time.monotonic() >= self._create_not_before:
            for gpu_class in creations:
                if self.live_count() >= self.limits.max_pods or not self._affordable(gpu_class):
                    break
                if self.breakers.may_create(gpu_class) and not await self.create(gpu_class):
                    break
        for pod_id in plan.stop:
            await self._act(self._stop, pod_id, "idle")
        for pod_id in plan.terminate:
            await self._act(self._terminate, pod_id, "idle")
        await self._probe_all()

    def spend_per_hr(self) -> float:
        return hourly_spend(list(self.pods.values()), self.provider.new_pod_price)

    def spend_left(self) -> float | None:
        """What MAX_HOURLY_SPEND leaves for one more pod, per hour (None: no cap)."""
        cap = self.limits.max_hourly_spend
        return None if cap is None else cap - self.spend_per_hr()

    def _affordable(self, gpu_class: int) -> bool:
        """Whether one more pod of the class fits under the spend cap (a replacement after a failed resume
        too); if not, `held` says so."""
        left = self.spend_left()
        price = self.provider.new_pod_price(gpu_class)
        if left is None or (price is not None and price <= left + 1e-9):
            return True
        assert self.limits.max_hourly_spend is not None
        self.held = (
            f"the fleet is at its spend cap: MAX_HOURLY_SPEND is ${self.limits.max_hourly_spend:.2f}/h and the live "
            f"pods cost ${self.spend_per_hr():.2f}/h; new pods wait until spend drops"
        )
        return False

    async def _act(self, action: Callable[[PodRecord, str], Awaitable[object]], pod_id: str, reason: str) -> None:
        pod = self.pods.get(pod_id)
        if pod is None:
            return
        try:
            await action(pod, reason)
        except RateLimited:
            raise
        except ProviderError as exc:
            log.warning("%s of pod %s failed: %s", action.__name__.strip("_"), pod_id, exc.message)

    async def create(self, gpu_class: int = 0, *, surface_errors: bool = False) -> PodRecord | None:
        """Create one pod for a GPU class. A refusal that may pass (capacity, a 5xx) backs off, doubling up
        to a minute; one that will not (a bad key, no balance, no GPU type that fits) opens the class's
        breaker. Admin calls (`surface_errors`) get the error instead and leave the breakers alone."""
        name = self.pod_name(gpu_class)
        if not surface_errors:
            self.breakers.creating(gpu_class)
        boot = self._boot_began(name, gpu_class)
        try:
            found = await self._created(boot, name, gpu_class, self.spend_left())
        except RateLimited:
            raise
        except ProviderError as exc:
            if surface_errors:
                raise
            if exc.retryable:
                self._create_backoff = min(max(self._create_backoff * 2, 1.0), MAX_CREATE_BACKOFF_S)
                self._create_not_before = time.monotonic() + self._create_backoff
                self.note = f"creating a pod failed: {exc.message} (next try in {self._create_backoff:.0f}s)"
                log.warning("%s", self.note)
            else:
                cause = "no_gpu_type" if isinstance(exc, NoFittingGpu) else "refused"
                diagnosis = f"{self.provider.name} refused to create a pod of {self.provider.describe()}: {exc.message}"
                if cause == "no_gpu_type":
                    diagnosis = exc.message
                breaker = self.breakers.refused(gpu_class, cause, diagnosis)
                self.note = breaker.diagnosis
                log.error("circuit breaker open for GPU class %d GB: %s", gpu_class, breaker.diagnosis)
            return None
        self._create_backoff = 0.0
        self.note = None
        now = utcnow()
        pod = PodRecord(
            id=found.id,
            name=name,
            provider=self.provider.name,
            origin=self.provider.origin,
            status=PodStatus.STARTING,
            comfyui_url=found.comfyui_url,
            ip=found.ip,
            gpu_type=found.gpu_type,
            gpu_memory_gb=found.gpu_memory_gb,
            cost_per_hr=found.cost_per_hr,
            created_at=now,
            updated_at=now,
            started_at=now,
        )
        await self._save(pod)
        log.info("pod %s starting", pod.id, extra={"pod_id": pod.id, "gpu": found.gpu_type, "gpu_class": gpu_class})
        return pod

    # --------------------------------------------------------------------------------------- tracing

    def _demand_links(self, gpu_class: int) -> list[Link]:
        """Links to the traces of the requests a new pod of this class is for: the oldest waiting ones the
        scheduler's demand names for the class (any class's when it names none for this one)."""
        needs = self.demand.needs
        mine = [t for n in needs if n.min_gpu_memory_gb == gpu_class for t in n.traceparents]
        return links_to(mine or [t for n in needs for t in n.traceparents])

    def _boot_began(self, name: str, gpu_class: int) -> Span:
        """`pod boot`: from the create call until the pod is judged ready (or fails, or goes), a trace of its
        own linked to the requests whose demand caused it — a cold start is no gap in their traces."""
        return self.tracer.start_span(
            "pod boot",
            context=otel_context.Context(),
            links=self._demand_links(gpu_class),
            attributes={
                "vibewave.pod.name": name,
                "vibewave.gpu_class": gpu_class,
                "vibewave.provider": self.provider.name,
            },
        )

    async def _created(self, boot: Span, name: str, gpu_class: int, max_price: float | None) -> ProviderPod:
        """The provider's create call(s) as `pod create`, inside `pod boot`; a failed create ends the boot."""
        try:
            with (
                trace.use_span(boot, end_on_exit=False),
                self.tracer.start_as_current_span(
                    "pod create", links=self._demand_links(gpu_class), attributes={"vibewave.pod.name": name}
                ) as span,
            ):
                found = await self.provider.create(name, gpu_class, boot=self.boot.for_pod(name), max_price=max_price)
                span.set_attribute("vibewave.pod_id", found.id)
        except BaseException as exc:
            boot.set_status(Status(StatusCode.ERROR, f"create failed: {type(exc).__name__}"))
            boot.end()
            raise
        boot.set_attribute("vibewave.pod_id", found.id)
        self._boots[found.id] = boot
        return found

    def _boot_ended(self, pod_id: str, error: str | None) -> None:
        boot = self._boots.pop(pod_id, None)
        if boot is not None:
            boot.set_status(Status(StatusCode.OK) if error is None else Status(StatusCode.ERROR, error[:200]))
            boot.end()

    async def _resume(self, pod: PodRecord) -> Resumed:
        try:
            found = await self.provider.start(pod.id)
        except RateLimited:
            raise
        except HostBusy as exc:
            self.memory.resume_outcome(resumed=False)
            await self._will_not_resume(pod, exc.message)
            return Resumed.REPLACE
        except ProviderError as exc:
            failures = self._resume_failures.get(pod.id, 0) + 1
            self._resume_failures[pod.id] = failures
            if exc.retryable and failures < RESUME_FAILURES_BEFORE_REPLACING:
                log.warning("resuming pod %s failed (%s); trying again", pod.id, exc.message)
                return Resumed.LATER
            self.memory.resume_outcome(resumed=False)
            await self._will_not_resume(pod, f"{exc.message} ({failures} tries)")
            return Resumed.REPLACE
        self.memory.resume_outcome(resumed=True)
        self._resumed.add(pod.id)
        self._resume_failures.pop(pod.id, None)
        resumed = msgspec.structs.replace(
            pod, status=PodStatus.STARTING, comfyui_url=found.comfyui_url, ip=found.ip, started_at=utcnow(),
            stopped_at=None, error=None,
        )  # fmt: skip
        await self._save(resumed)
        log.info("pod %s resuming", pod.id, extra={"pod_id": pod.id})
        return Resumed.YES

    async def _will_not_resume(self, pod: PodRecord, reason: str) -> None:
        """A stopped pod that cannot come back is terminated (a new pod serves instead), or kept aside."""
        self._resume_failures.pop(pod.id, None)
        if self.settings.unresumable == "keep":
            self._unresumable.add(pod.id)
            log.warning("pod %s cannot resume (%s); kept stopped (POD_UNRESUMABLE=keep) and not tried again — "
                        "a new pod serves instead", pod.id, reason, extra={"pod_id": pod.id})  # fmt: skip
            await self._save(msgspec.structs.replace(pod, error=f"cannot resume: {reason}"))
            return
        log.warning("pod %s cannot resume (%s); terminating it, a new pod serves instead", pod.id, reason,
                    extra={"pod_id": pod.id})  # fmt: skip
        await self._terminate(pod, f"could not resume: {reason}")

    async def _stop(self, pod: PodRecord, reason: str = "idle") -> PodRecord:
        await self.provider.stop(pod.id)
        stopped = msgspec.structs.replace(pod, status=PodStatus.STOPPED, stopped_at=utcnow())
        await self._save(stopped)
        self._idle_since.pop(pod.id, None)
        log.info("pod %s stopped (%s)", pod.id, reason, extra={"pod_id": pod.id})
        return stopped

    async def _terminate(self, pod: PodRecord, reason: str) -> bool:
        """Terminate now if the provider lets us; else it stays `terminating` and is retried with backoff.
        True once the provider confirms the pod is gone."""
        if pod.status != PodStatus.TERMINATING:
            pod = await self._save(msgspec.structs.replace(pod, status=PodStatus.TERMINATING, error=reason))
        try:
            await self.provider.terminate(pod.id)
        except PodNotFound:
            pass  # gone already
        except ProviderError as exc:
            retry = self._terminations.setdefault(pod.id, _Termination())
            retry.delay_s = exc.retry_after_s if isinstance(exc, RateLimited) else min(
                max(retry.delay_s * 2, 1.0), MAX_TERMINATE_BACKOFF_S
            )  # fmt: skip
            retry.next_at = time.monotonic() + retry.delay_s
            log.warning("terminating pod %s failed (%s); retrying in %.0fs — it may bill until then", pod.id,
                        exc.message, retry.delay_s, extra={"pod_id": pod.id})  # fmt: skip
            return False
        self._terminations.pop(pod.id, None)
        self._idle_since.pop(pod.id, None)
        self._silent_since.pop(pod.id, None)
        self._probed_at.pop(pod.id, None)
        self._unresumable.discard(pod.id)
        await self._save(msgspec.structs.replace(pod, status=PodStatus.TERMINATED))
        log.info("pod %s terminated (%s)", pod.id, pod.error or reason, extra={"pod_id": pod.id})
        return True

    async def _retry_terminations(self) -> None:
        now = time.monotonic()
        for pod in [p for p in self.pods.values() if p.status in (PodStatus.TERMINATING, PodStatus.FAILED)]:
            retry = self._terminations.get(pod.id)
            if retry is None or now >= retry.next_at:
                await self._terminate(pod, pod.error or "terminating")

    # -------------------------------------------------------------------------------------- probing

    async def _probe_all(self) -> None:
        """Probe each live pod once per probe interval (sooner when a fault report made it suspect)."""
        now = time.monotonic()
        due = now - self.settings.probe_interval_s * 0.9
        live = [
            p
            for p in self.pods.values()
            if p.status in (PodStatus.STARTING, PodStatus.READY, PodStatus.SUSPECT)
            and (p.id in self._probe_now or self._probed_at.get(p.id, 0.0) <= due)
        ]
        for pod in live:
            self._probed_at[pod.id] = now
            self._probe_now.discard(pod.id)
        results = await asyncio.gather(*(self._probe(p) for p in live))
        for pod, probe in zip(live, results, strict=True):
            current = self.pods.get(pod.id)
            if current is not None and current.status == pod.status:  # unchanged while we probed
                await self._judge(current, probe)

    async def _probe(self, pod: PodRecord) -> Probe:
        assert self._session is not None
        if not pod.comfyui_url:
            return Probe(answers=False)
        return await probe_pod(self._session, pod.comfyui_url, self.boot.token(pod.name), self.wanted)

    async def _judge(self, pod: PodRecord, probe: Probe) -> None:
        """A starting pod must answer within POD_READY_TIMEOUT — within POD_BOOT_TIMEOUT while our bootstrap
        reports it installs and downloads — and is ready once ComfyUI lists the fleet's models. A pod that
        was ready and misses a probe is suspect (no work) until it answers again; silent for
        POD_UNHEALTHY_TIMEOUT, it has failed."""
        if probe.ready:
            self._silent_since.pop(pod.id, None)
            if pod.status != PodStatus.READY or pod.manager != self.incarnation or pod.models != probe.listed:
                await self._save(
                    msgspec.structs.replace(
                        pod, status=PodStatus.READY, manager=self.incarnation, checked_at=utcnow(), error=None,
                        models=probe.listed, models_missing=[], boot=None,
                        ready_at=utcnow() if pod.status == PodStatus.STARTING else pod.ready_at,
                    )
                )  # fmt: skip
                if pod.status == PodStatus.STARTING:
                    self.breakers.succeeded(self.class_of(pod))
                    booted = (utcnow() - (pod.started_at or pod.created_at)).total_seconds()
                    self._meters.pod_boot.record(max(0.0, booted), {"provider": pod.provider})
                    self.memory.booted(max(0.0, booted), resumed=pod.id in self._resumed)
                    self._resumed.discard(pod.id)
                    log.info("pod %s ready", pod.id, extra={"pod_id": pod.id})
                elif pod.status == PodStatus.SUSPECT:
                    log.info("pod %s answers again; ready", pod.id, extra={"pod_id": pod.id})
            return
        if pod.status == PodStatus.STARTING:
            if probe.boot_failed is not None:
                await self._never_ready(pod, f"its bootstrap gave up: {probe.boot_failed}")
                return
            if probe.boot != pod.boot or (probe.answers and pod.models_missing != probe.missing):
                pod = await self._save(msgspec.structs.replace(
                    pod, boot=probe.boot, models=probe.listed, models_missing=probe.missing,
                ))  # fmt: skip
            booting = probe.booting or probe.answers
            bound = self.settings.boot_timeout_s if booting else self.settings.ready_timeout_s
            if (utcnow() - (pod.started_at or pod.created_at)).total_seconds() > bound:
                await self._never_ready(pod, self._unready_reason(probe, bound))
            return
        silent_since = self._silent_since.setdefault(pod.id, time.monotonic())
        if time.monotonic() - silent_since >= self.settings.unhealthy_timeout_s:
            await self._fail(pod, f"ComfyUI stopped answering for {self.settings.unhealthy_timeout_s:.0f}s")
        elif pod.status == PodStatus.READY:
            await self._save(msgspec.structs.replace(pod, status=PodStatus.SUSPECT, error="missed a probe"))

    def _unready_reason(self, probe: Probe, bound: float) -> str:
        if probe.answers:
            return f"ComfyUI answered but did not list {', '.join(probe.missing)} within {bound:.0f}s"
        if probe.refused:
            return f"the pod's ComfyUI proxy refused our token for {bound:.0f}s (VIBEWAVE_POD_TOKEN_KEY changed?)"
        if probe.booting:
            return f"its bootstrap did not start ComfyUI within {bound:.0f}s (last: {probe.boot})"
        reason = f"ComfyUI did not answer within {bound:.0f}s"
        if not self.boot.bootstrap and self.settings.runpod.image.startswith("runpod/pytorch"):
            reason += (
                f": the image {self.settings.runpod.image} starts no ComfyUI by itself (its /start.sh runs nginx, "
                "sshd and Jupyter only) — set RUNPOD_BOOTSTRAP=on (the default) or RUNPOD_IMAGE to an image that "
                f"serves ComfyUI on port {self.settings.runpod.comfyui_port}"
            )
        return reason

    async def _never_ready(self, pod: PodRecord, reason: str) -> None:
        gpu_class = self.class_of(pod)
        count = self.breakers.failures(gpu_class, "never_ready") + 1
        size = f" for workflows needing {gpu_class} GB" if gpu_class else ""
        diagnosis = (
            f"{count} pod{'s' if count > 1 else ''} in a row never became ready{size}: {reason} "
            f"({self.provider.describe()}; last: pod {pod.id} on {pod.gpu_type or 'an unknown GPU'}, probed at "
            f"{pod.comfyui_url})"
        )
        breaker = self.breakers.failed(gpu_class, "never_ready", diagnosis)
        if breaker is not None:
            self.note = breaker.diagnosis
            log.error("circuit breaker open: %s; no more pods of this class until %s", breaker.diagnosis,
                      breaker.retry_at.isoformat() if breaker.retry_at else "the settings change")  # fmt: skip
        await self._fail(pod, reason)

    async def _fail(self, pod: PodRecord, reason: str) -> None:
        """Failed pods are terminated at once (retried until gone); the next pass replaces them if needed."""
        log.warning("pod %s failed: %s", pod.id, reason, extra={"pod_id": pod.id})
        failed = await self._save(msgspec.structs.replace(pod, status=PodStatus.FAILED, error=reason))
        await self._terminate(failed, reason)

    # --------------------------------------------------------------------------------- fault reports

    async def _on_fault_report(self, event: AttemptFailed) -> None:
        """An executor reported a pod fault: the pod is suspect until a probe passes. Recording the
        report's stream sequence on the pod tells the scheduler its own suspicion can end there."""
        if event.kind != FailureKind.POD_FAULT:
            return
        assert self.lease is not None
        await self.lease.until_held(LAPSE_WAIT_S)  # a lapse (NATS away) is waited out, not counted as a failure
        seq = int(runtime.current_message().raw_message.metadata.sequence.stream)
        async with self.lock:
            pod = self.pods.get(event.pod_id)
            if pod is None or pod.fault_seq >= seq:
                return
            if pod.status == PodStatus.READY:
                await self._save(msgspec.structs.replace(
                    pod, status=PodStatus.SUSPECT, fault_seq=seq, error=f"a run faulted: {event.error}"
                ))  # fmt: skip
                log.warning("pod %s suspect: a run on it faulted (%s)", pod.id, event.error, extra={"pod_id": pod.id})
                self._probe_now.add(pod.id)
                self._wake.set()
            else:
                await self._save(msgspec.structs.replace(pod, fault_seq=seq))

    # ------------------------------------------------------------------------------------ heartbeat

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval_s)
            with contextlib.suppress(Exception):
                await self._beat()

    async def _beat(self) -> None:
        assert self._fleet_kv is not None
        status = FleetStatus(
            manager=self.incarnation,
            provider=self.provider.name,
            origin=self.provider.origin,
            heartbeat_at=utcnow(),
            heartbeat_interval_s=self.heartbeat_interval_s,
            max_pods=self.limits.max_pods,
            live_pods=self.live_count(),
            breakers=self.breakers.open_breakers(),
            note=self.note,
            settings=self.fingerprint,
            stopping=self._stopping,
            models=self.wanted,
            policy=self.policy.name,
            spend_per_hr=round(self.spend_per_hr(), 4),
            max_hourly_spend=self.limits.max_hourly_spend,
            held=self.held,
        )
        self._check_lease()
        try:
            self._fleet_revision = await runtime.kv_update(
                runtime.jetstream(self.broker), FLEET_BUCKET.name, FLEET_STATUS_KEY, encode(status),
                last=self._fleet_revision,
            )  # fmt: skip
        except KeyWrongLastSequenceError:
            entry = await self._fleet_kv.get(FLEET_STATUS_KEY)
            self._fleet_revision = entry.revision or 0  # written by another: the lease says who may go on
            raise

    def fleet_health(self) -> tuple[bool, str]:
        """Whether new pods can be had, and why not."""
        blocking = [b for b in self.breakers.open_breakers() if b.retry_at is None or utcnow() < b.retry_at]
        if blocking:
            return False, "; ".join(f"circuit breaker open: {b.diagnosis}" for b in blocking)
        return True, self.note or "pods can be created"

    async def _save(self, pod: PodRecord, *, quiet: bool = False) -> PodRecord:
        """Store a pod's record (fenced: only over the revision this replica knows) and announce it."""
        assert self._kv is not None
        self._check_lease()
        pod = msgspec.structs.replace(pod, updated_at=utcnow())
        js = runtime.jetstream(self.broker)
        try:
            self._revisions[pod.id] = await runtime.kv_update(
                js, PODS_BUCKET.name, pod.id, encode(pod), last=self._revisions.get(pod.id, 0)
            )
        except KeyWrongLastSequenceError:
            with contextlib.suppress(Exception):  # the lease decides whether this replica may go on
                self._revisions[pod.id] = (await self._kv.get(pod.id)).revision or 0
            raise
        if pod.status == PodStatus.TERMINATED:
            self.pods.pop(pod.id, None)
        else:
            self.pods[pod.id] = pod
        if pod.id in self._boots and pod.status not in (PodStatus.CREATING, PodStatus.STARTING):
            self._boot_ended(pod.id, None if pod.status == PodStatus.READY else pod.error or str(pod.status))
        if quiet:
            return pod
        await runtime.publish(
            self._pod_events,
            PodEvent(pod=pod),
            subject=pod_subject(pod.id, pod.status),
            msg_id=f"{pod.id}.{pod.status}.{pod.updated_at}",
        )
        return pod

    # ------------------------------------------------------------------------------- admin (locked)

    async def admin_create(self, gpu_class: int) -> PodRecord:
        """A pod asked for through the API counts toward MAX_PODS like any other."""
        if self.live_count() >= self.limits.max_pods:
            raise Conflict(f"MAX_PODS ({self.limits.max_pods}) pods are already running; stop or terminate one first")
        if not self._affordable(gpu_class):
            raise Conflict(f"{self.held}: stop or terminate a pod first")
        pod = await self.create(gpu_class, surface_errors=True)
        assert pod is not None
        return pod

    async def _after(self, pod_id: str, action: Awaitable[object]) -> None:
        """Run an admin action, then record what the provider says the pod is now, whether or not it failed."""
        try:
            await action
        finally:
            pod = self.pods.get(pod_id)
            if pod is not None:
                with contextlib.suppress(ProviderError):
                    await self._follow(pod, await self.provider.get(pod_id))

    async def admin_start(self, pod_id: str) -> None:
        pod = self.pods.get(pod_id)
        if pod is None:
            await self.provider.start(pod_id)
            return
        self._unresumable.discard(pod_id)
        await self._after(pod_id, self.provider.start(pod_id))

    async def admin_stop(self, pod_id: str) -> None:
        pod = self.pods.get(pod_id)
        if pod is None:
            await self.provider.stop(pod_id)
            return
        await self._after(pod_id, self._stop(pod, "stopped by request"))

    async def admin_restart(self, pod_id: str) -> None:
        """In place where the provider can (the pod keeps its GPU); the pod is starting until it answers."""
        if not self.provider.restarts_in_place:
            raise Conflict(f"the {self.provider.name} provider cannot restart a pod")
        await self.provider.restart(pod_id)
        pod = self.pods.get(pod_id)
        if pod is None:
            return
        found = await self.provider.get(pod_id)
        restarted = msgspec.structs.replace(
            pod, status=PodStatus.STARTING, started_at=utcnow(), stopped_at=None,
            comfyui_url=found.comfyui_url if found else pod.comfyui_url, error=None,
        )  # fmt: skip
        await self._follow(await self._save(restarted), found)

    async def admin_terminate(self, pod_id: str) -> None:
        pod = self.pods.get(pod_id)
        if pod is None:
            await self.provider.terminate(pod_id)
            return
        if not await self._terminate(pod, "terminated by request"):
            raise Conflict(f"pod {pod_id} could not be terminated yet; pod-manager keeps trying")
