"""The emulated account: pods and their lifecycle, network volumes, templates, balance and billing.

Pure logic on an injectable clock, so unit tests can step time. The lifecycle follows reference §5:
create → desiredStatus RUNNING with `runtime` null for the boot delay → runtime up (uptime, ports) →
podStop → EXITED (runtime null) → podResume → RUNNING on the same host (boot delay again, fresh public ports)
→ podTerminate → gone. REST v2 adds restart in place (reference-v2 §4.5-§4.6) and reads the same pods through
its own status and `actions`. Side effects on processes (the pods' containers) are reported as `Event`s,
and deleted network volumes (whose files go) in `dropped_volumes`, which the service drains after every
request and tick. The world also counts what clients did
(`calls`, pods created and terminated, resumes, restarts) and keeps their rate-limit windows.
"""

from __future__ import annotations

import random
import string
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from vibewave.runpod_emu.catalogue import (
    COMMUNITY_LOCATIONS,
    CPU_FLAVOR_PRICES,
    DATA_CENTERS,
    DEFAULT_CUDA_VERSION,
    DISK_RUNNING_PER_GB_MONTH,
    HOURS_PER_MONTH,
    VOLUME_STOPPED_PER_GB_MONTH,
    GpuType,
    Seed,
    default_gpu_types,
    host_cuda_version,
    network_volume_cost_per_hr,
)
from vibewave.runpod_emu.config import EmuConfig
from vibewave.runpod_emu.faults import (
    CAPACITY_MESSAGE,
    CUDA_MESSAGE,
    DEFAULT_RETRY_AFTER,
    DISK_SPACE_MESSAGE,
    HOST_BUSY_MESSAGE,
    INTERNAL_ERROR_MESSAGE,
    POD_NOT_FOUND_MESSAGE,
    Faults,
)
from vibewave.runpod_emu.ratelimit import RateLimiter, Verdict

ALNUM = string.ascii_lowercase + string.digits
PUBLIC_IP_PREFIXES = ("213.173", "194.68", "38.147", "69.30", "149.36", "103.196")
SYMMETRIC_PORT_MIN = 70000


class ApiError(Exception):
    """A domain error. GraphQL: HTTP 200, `errors[0].message`, `extensions.code` (RUNPOD or
    INTERNAL_SERVER_ERROR). REST v2: a problem body with `status` (400 unless the error says otherwise)."""

    def __init__(self, message: str, code: str = "RUNPOD", status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.extensions = {"code": code}
        self.status = status


def internal_error() -> ApiError:
    return ApiError(INTERNAL_ERROR_MESSAGE, "INTERNAL_SERVER_ERROR", status=500)


def js_date(moment: datetime) -> str:
    """JavaScript `Date.toString()` in UTC, the format RunPod's lastStatusChange texts use."""
    return moment.strftime("%a %b %d %Y %H:%M:%S GMT+0000 (Coordinated Universal Time)")


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_ports(spec: str | None) -> list[tuple[int, str]]:
    """`"8888/http,22/tcp"` → [(8888, "http"), (22, "tcp")]; RunPod's GraphQL ports string."""
    out: list[tuple[int, str]] = []
    for raw in (spec or "").split(","):
        item = raw.strip()
        if not item:
            continue
        number, _, proto = item.partition("/")
        proto = proto or "http"
        if not number.isdigit() or proto not in ("http", "tcp"):
            raise ApiError(f'Invalid port specification "{item}": expected <port>/http or <port>/tcp.')
        out.append((int(number), proto))
    return out


@dataclass
class Machine:
    """The host a pod is bound to for life (resume goes back to the same one)."""

    id: str
    host_suffix: str
    public_ip: str
    data_center_id: str
    secure_cloud: bool
    support_public_ip: bool
    gpu_type: GpuType | None
    location: str


@dataclass
class Pod:
    id: str
    name: str
    image_name: str
    gpu_type: GpuType | None
    gpu_count: int
    cloud_type: str
    vcpu_count: int
    memory_in_gb: int
    container_disk_in_gb: int
    volume_in_gb: int
    volume_mount_path: str
    ports: str
    env: list[tuple[str, str]]
    docker_args: str | None
    template_id: str | None
    network_volume_id: str | None
    cost_per_hr: float
    machine: Machine
    created_at: datetime
    boot_at: float
    boot_delay: float
    desired_status: str = "RUNNING"
    last_status_change: str = ""
    last_started_at: datetime | None = None
    runtime_at: float | None = None
    runtime_ports: list[dict[str, Any]] | None = None
    internal_ip: str = ""
    never_ready: str | None = None
    cpu_flavor_id: str | None = None
    start_count: int = 1
    holds_gpus: bool = False
    registry: str | None = None
    cuda_version: str = DEFAULT_CUDA_VERSION
    global_networking: bool = False

    @property
    def running(self) -> bool:
        return self.desired_status == "RUNNING"

    @property
    def runtime_up(self) -> bool:
        return self.running and self.runtime_at is not None

    @property
    def pod_host_id(self) -> str:
        return f"{self.id}-{self.machine.host_suffix}"

    def env_strings(self) -> list[str]:
        return [f"{k}={v}" for k, v in self.env]

    def env_map(self) -> dict[str, str]:
        return dict(self.env)

    def storage_cost_per_hr(self) -> float:
        if self.running:
            return (self.container_disk_in_gb + self.volume_in_gb) * DISK_RUNNING_PER_GB_MONTH / HOURS_PER_MONTH
        return self.volume_in_gb * VOLUME_STOPPED_PER_GB_MONTH / HOURS_PER_MONTH

    def spend_per_hr(self) -> float:
        return (self.cost_per_hr if self.running else 0.0) + self.storage_cost_per_hr()

    def uptime(self, now: float) -> int:
        return int(now - self.runtime_at) if self.runtime_up and self.runtime_at is not None else 0


@dataclass
class Event:
    """Something the process layer must act on: runtime "up", "down" (stopped), "restarting" or "terminated"."""

    kind: str
    pod_id: str
    pod: Pod


@dataclass
class Account:
    id: str
    email: str
    client_balance: float
    spend_limit: int
    pub_key: str | None
    lifetime_spend: float = 0.0
    notify_pods_stale: bool = True
    notify_pods_general: bool = True
    notify_low_balance: bool = True
    credit_alert_threshold: float = 5.0


@dataclass
class World:
    """All mutable state of one emulator; every public method advances the clock first."""

    config: EmuConfig
    clock: Callable[[], float]
    wall: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    rng: random.Random = field(default_factory=random.Random)
    # Boot delays and resume failures draw from a stream of their own, so ids stay as `rng_seed` made them.
    delay_rng: random.Random = field(default_factory=random.Random)
    pods: dict[str, Pod] = field(default_factory=dict)
    volumes: dict[str, dict[str, Any]] = field(default_factory=dict)
    templates: dict[str, dict[str, Any]] = field(default_factory=dict)
    gpu_types: list[GpuType] = field(default_factory=default_gpu_types)
    events: list[Event] = field(default_factory=list)
    dropped_volumes: list[str] = field(default_factory=list)
    account: Account = field(default_factory=lambda: Account("", "", 0.0, 80, None))
    last_billed: float = 0.0
    # What clients did since the last reset: calls per operation (GraphQL root field or `rest:` operation),
    # of which `rate_limited` got a 429; pods created; ids terminated, in order; successful resumes and restarts.
    calls: Counter[str] = field(default_factory=Counter)
    rate_limited: int = 0
    pods_created: int = 0
    terminated_pod_ids: list[str] = field(default_factory=list)
    resumes: int = 0
    restarts: int = 0
    limiter: RateLimiter = field(default_factory=RateLimiter)

    def __post_init__(self) -> None:
        if self.config.rng_seed is not None:
            self.rng.seed(self.config.rng_seed)
            self.delay_rng.seed(f"delays-{self.config.rng_seed}")
        self.reset(self.config.seed)

    @property
    def faults(self) -> Faults:
        return self.config.faults

    # --- set-up ---------------------------------------------------------------------------------

    def reset(self, seed: Seed) -> None:
        """Forget pods (their processes are reported as terminated), reload seeded objects and the account,
        and start counting calls and rate-limit windows afresh."""
        for pod in list(self.pods.values()):
            self.events.append(Event("terminated", pod.id, pod))
        self.pods.clear()
        self.calls.clear()
        self.rate_limited = self.pods_created = self.resumes = self.restarts = 0
        self.terminated_pod_ids.clear()
        self.limiter = RateLimiter(self.config.rate_limit_per_minute)
        self.dropped_volumes.extend(self.volumes)
        self.volumes = {v["id"]: {"type": "STANDARD", **v} for v in seed.network_volumes}
        self.templates = {}
        for tpl in seed.templates:
            self.templates[tpl["id"]] = self._template(tpl, tpl["id"])
        acc = seed.account
        self.account = Account(
            id=str(acc.get("id", "user_emulator")),
            email=str(acc.get("email", "emulator@vibewave.invalid")),
            client_balance=float(acc.get("clientBalance", 100.0)),
            spend_limit=int(acc.get("spendLimit", 80)),
            pub_key=acc.get("pubKey"),
        )
        self.gpu_types = default_gpu_types()
        self.last_billed = self.clock()

    def new_id(self, length: int) -> str:
        return "".join(self.rng.choice(ALNUM) for _ in range(length))

    def gpu(self, gpu_id: str) -> GpuType | None:
        return next((g for g in self.gpu_types if g.id == gpu_id), None)

    # --- what clients did -----------------------------------------------------------------------

    def admit(self, key: str, operations: list[str]) -> Verdict:
        """Count a call that reached its operations, then let it through or refuse it with a 429: the
        `rate_limit` fault first (filtered on any of the operations), then the per-minute quota."""
        self.calls.update(operations)
        candidates: list[str | None] = [*operations] or [None]
        for operation in candidates:
            fault = self.faults.fire("rate_limit", operation)
            if fault is not None:
                self.rate_limited += 1
                return self.limiter.refused(DEFAULT_RETRY_AFTER if fault.retry_after is None else fault.retry_after)
        verdict = self.limiter.take(key, self.clock())
        if not verdict.allowed:
            self.rate_limited += 1
        return verdict

    # --- REST v2's view of a pod ----------------------------------------------------------------

    def status(self, pod: Pod) -> str:
        """REST v2 `status`: RUNNING once the runtime is up; before that RUNNING ("live") or, in "spec" mode,
        PROVISIONING for the first half of the first boot and STARTING after (also after start and restart)."""
        if not pod.running:
            return "EXITED"
        if pod.runtime_up or self.config.rest_status_mode == "live":
            return "RUNNING"
        if pod.start_count == 1 and self.clock() < pod.boot_at + pod.boot_delay / 2:
            return "PROVISIONING"
        return "STARTING"

    def actions(self, pod: Pod) -> list[str]:
        """The transitions valid now (reference-v2 §4.5)."""
        status = self.status(pod)
        if status == "RUNNING":
            return ["stop", "restart", "terminate"]
        if status == "EXITED":
            return ["start", "terminate"]
        return ["stop", "terminate"]

    # --- time -----------------------------------------------------------------------------------

    def advance(self) -> None:
        """Bring runtimes up whose boot delay passed, and bill the time since the last call."""
        now = self.clock()
        for pod in self.pods.values():
            if pod.running and pod.runtime_at is None and pod.never_ready != "no_runtime":
                up_at = pod.boot_at + pod.boot_delay
                if now >= up_at:
                    pod.runtime_at = up_at
                    pod.runtime_ports = self._runtime_ports(pod)
                    self.events.append(Event("up", pod.id, pod))
        elapsed = max(0.0, now - self.last_billed) * self.config.billing_speed
        self.last_billed = now
        spend = self.current_spend_per_hr()
        if elapsed <= 0 or spend <= 0:
            return
        charge = spend * elapsed / 3600.0
        self.account.client_balance -= charge
        self.account.lifetime_spend += charge
        if self.account.client_balance <= 0:
            self.account.client_balance = 0.0
            self._out_of_money()

    def _out_of_money(self) -> None:
        """At $0: pods with a network volume are stopped (data kept), the others terminated (reference §5)."""
        for pod in list(self.pods.values()):
            if pod.network_volume_id:
                if pod.running:
                    self._stop(pod, "Exited by Runpod")
            else:
                self._terminate(pod)

    def current_spend_per_hr(self) -> float:
        pods = sum(p.spend_per_hr() for p in self.pods.values())
        return pods + sum(network_volume_cost_per_hr(int(v["size"])) for v in self.volumes.values())

    # --- reads ----------------------------------------------------------------------------------

    def get_pod(self, pod_id: str) -> Pod | None:
        self.advance()
        return self.pods.get(pod_id)

    def list_pods(self) -> list[Pod]:
        self.advance()
        return list(self.pods.values())

    def _require(self, pod_id: str) -> Pod:
        pod = self.pods.get(pod_id)
        if pod is None:
            raise ApiError(POD_NOT_FOUND_MESSAGE, status=404)
        return pod

    # --- pod mutations --------------------------------------------------------------------------

    def create_pod(self, inp: dict[str, Any], cpu: bool, operation: str | None = None) -> Pod:
        """podFindAndDeployOnDemand / deployCpuPod (REST v2 translates its body into this input and passes its
        own operation name for the fault filters): validation order mirrors what clients hit first."""
        self.advance()
        operation = operation or ("deployCpuPod" if cpu else "podFindAndDeployOnDemand")
        template = None
        template_id = inp.get("templateId")
        if template_id:
            template = self.templates.get(template_id)
            if template is None:
                raise ApiError(f'Template "{template_id}" not found.', status=404)
            if inp.get("containerDiskInGb") is None and self.faults.fire("disk_space", operation):
                raise ApiError(DISK_SPACE_MESSAGE)
        image = inp.get("imageName") or (template or {}).get("imageName")
        if not image:
            raise ApiError("Either imageName or templateId must be provided.")
        cloud_type = str(inp.get("cloudType") or "ALL")
        volume = self._network_volume_for(inp, cloud_type)
        data_center_id = inp.get("dataCenterId") or (volume or {}).get("dataCenterId")
        if data_center_id is not None and data_center_id not in {d.id for d in DATA_CENTERS}:
            raise ApiError(CAPACITY_MESSAGE)
        cuda = self.faults.cuda
        if cuda is not None and cuda.matches(operation) and (inp.get("allowedCudaVersions") or cuda.operations):
            cuda.consume()
            raise ApiError(CUDA_MESSAGE)

        gpu: GpuType | None = None
        gpu_count = 0
        if cpu:
            flavor, vcpu, memory, price = self._cpu_instance(inp.get("instanceId"))
            secure = cloud_type != "COMMUNITY"
            cost = round(price * vcpu, 4)
            if self.faults.fire("capacity", operation):
                raise ApiError(CAPACITY_MESSAGE)
        else:
            flavor = None
            gpu_count = int(inp.get("gpuCount") or 1)
            gpu, secure = self._pick_gpu(inp, cloud_type, gpu_count, operation)
            vcpu = max(gpu.vcpu_per_gpu * gpu_count, int(inp.get("minVcpuCount") or 0))
            memory = max(gpu.ram_per_gpu * gpu_count, int(inp.get("minMemoryInGb") or 0))
            price = gpu.price("SECURE" if secure else "COMMUNITY") or 0.0
            cost = round(price * gpu_count, 4)

        container_disk = inp.get("containerDiskInGb")
        if container_disk is None:
            container_disk = (template or {}).get("containerDiskInGb", 10)
        volume_gb = inp.get("volumeInGb")
        if volume_gb is None:
            volume_gb = (template or {}).get("volumeInGb", 0)
        if volume is not None:
            volume_gb = 0
        storage = (int(container_disk) + int(volume_gb)) * DISK_RUNNING_PER_GB_MONTH / HOURS_PER_MONTH
        self._check_balance(cost + storage, operation)

        now, wall = self.clock(), self.wall()
        machine = self._machine(gpu, secure, data_center_id, bool(inp.get("supportPublicIp", True)))
        env = self._pod_env(inp, template)
        pod = Pod(
            id=self.new_id(14),
            name=str(inp.get("name") or ""),
            image_name=str(image),
            gpu_type=gpu,
            gpu_count=gpu_count,
            cloud_type="SECURE" if secure else "COMMUNITY",
            vcpu_count=vcpu,
            memory_in_gb=memory,
            container_disk_in_gb=int(container_disk),
            volume_in_gb=int(volume_gb),
            volume_mount_path=str(
                inp.get("volumeMountPath") or (template or {}).get("volumeMountPath") or "/workspace"
            ),
            ports=",".join(f"{n}/{p}" for n, p in parse_ports(_ports_spec(inp, template))),
            env=env,
            docker_args=inp.get("dockerArgs", (template or {}).get("dockerArgs")),
            template_id=template_id,
            network_volume_id=(volume or {}).get("id"),
            cost_per_hr=cost,
            machine=machine,
            created_at=wall,
            boot_at=now,
            boot_delay=self.boot_delay(resumed=False),
            last_status_change=f"Rented by User: {js_date(wall)}",
            last_started_at=wall,
            internal_ip=self._internal_ip(),
            cpu_flavor_id=flavor,
            registry=(inp if "containerRegistryAuthId" in inp else template or {}).get("containerRegistryAuthId")
            or None,
            cuda_version=host_cuda_version(inp.get("allowedCudaVersions"), inp.get("minCudaVersion"))
            or DEFAULT_CUDA_VERSION,
            global_networking=bool(inp.get("globalNetworking")),
        )
        never_ready = self.faults.fire("never_ready", operation, gpu.id if gpu else None)
        pod.never_ready = never_ready.mode if never_ready else None
        self._take_gpus(pod)
        self.pods[pod.id] = pod
        self.pods_created += 1
        return pod

    def stop_pod(self, pod_id: str) -> Pod:
        self.advance()
        pod = self._require(pod_id)
        if pod.running:
            self._stop(pod, "Exited by user")
        return pod

    def resume_pod(self, pod_id: str, gpu_count: int | None, operation: str = "podResume") -> Pod:
        self.advance()
        pod = self._require(pod_id)
        if pod.running:
            return pod
        if self.faults.fire("host_busy", operation, pod.gpu_type.id if pod.gpu_type else None, pod.id):
            raise ApiError(HOST_BUSY_MESSAGE)
        rate = self.faults.resume_failure_rate
        if rate > 0 and self.delay_rng.random() < rate:
            raise ApiError(HOST_BUSY_MESSAGE)
        count = pod.gpu_count
        if pod.gpu_type is not None:
            # resume_pod(id, 0) still got one GPU (runpod-python #371).
            count = max(1, int(gpu_count if gpu_count is not None else pod.gpu_count))
            available = pod.gpu_type.available
            if available is not None and available < count:
                raise ApiError(HOST_BUSY_MESSAGE)
            price = pod.gpu_type.price(pod.cloud_type) or 0.0
            cost = round(price * count, 4)
        else:
            cost = pod.cost_per_hr
        storage = (pod.container_disk_in_gb + pod.volume_in_gb) * DISK_RUNNING_PER_GB_MONTH / HOURS_PER_MONTH
        self._check_balance(cost + storage, operation)
        wall = self.wall()
        pod.gpu_count, pod.cost_per_hr = count, cost
        pod.desired_status = "RUNNING"
        pod.boot_at, pod.boot_delay = self.clock(), self.boot_delay(resumed=True)
        pod.runtime_at, pod.runtime_ports = None, None
        pod.internal_ip = self._internal_ip()
        pod.last_status_change = f"Rented by User: {js_date(wall)}"
        pod.last_started_at = wall
        pod.start_count += 1
        self._take_gpus(pod)
        self.resumes += 1
        return pod

    def restart_pod(self, pod_id: str) -> Pod:
        """REST v2 `restart`: the container of a RUNNING pod restarts in place, on the same machine with the GPUs
        it holds (so never the busy-host error), runtime null for the boot delay, fresh public ports and a new
        container (its disk wiped as on stop). Anything but RUNNING is a 409."""
        self.advance()
        pod = self._require(pod_id)
        self.check_action(pod, "restart")
        pod.boot_at, pod.boot_delay = self.clock(), self.boot_delay(resumed=True)
        pod.runtime_at, pod.runtime_ports = None, None
        pod.internal_ip = self._internal_ip()
        pod.last_started_at = self.wall()
        pod.start_count += 1
        self.restarts += 1
        self.events.append(Event("restarting", pod.id, pod))
        return pod

    def check_action(self, pod: Pod, action: str) -> None:
        """REST v2 refuses an action that is not in the pod's `actions` with a 409."""
        if action not in self.actions(pod):
            # The detail text is not documented (reference-v2 §12); the 409 is.
            raise ApiError(f"action '{action}' is not valid for status {self.status(pod)}", status=409)

    def terminate_pod(self, pod_id: str) -> None:
        self.advance()
        self._terminate(self._require(pod_id))

    def _stop(self, pod: Pod, by: str) -> None:
        pod.desired_status = "EXITED"
        pod.runtime_at, pod.runtime_ports = None, None
        pod.last_status_change = f"{by}: {js_date(self.wall())}"
        self._release_gpus(pod)
        self.events.append(Event("down", pod.id, pod))

    def _terminate(self, pod: Pod) -> None:
        self._release_gpus(pod)
        self.pods.pop(pod.id, None)
        self.terminated_pod_ids.append(pod.id)
        self.events.append(Event("terminated", pod.id, pod))

    def platform_stop(self, pod_id: str) -> Pod:
        """A platform-initiated stop ("Exited by Runpod"), e.g. a host failure; for tests."""
        self.advance()
        pod = self._require(pod_id)
        if pod.running:
            self._stop(pod, "Exited by Runpod")
        return pod

    # --- pod helpers ----------------------------------------------------------------------------

    def _pick_gpu(self, inp: dict[str, Any], cloud_type: str, count: int, operation: str) -> tuple[GpuType, bool]:
        """First requested GPU type with capacity (gpuTypeIdList is a preference order); else the capacity error."""
        wanted: list[str] = []
        if inp.get("gpuTypeId"):
            wanted.append(str(inp["gpuTypeId"]))
        wanted.extend(str(g) for g in inp.get("gpuTypeIdList") or [] if g not in wanted)
        for gpu_id in wanted:
            gpu = self.gpu(gpu_id)
            if gpu is None or count > gpu.max_gpu_count or (gpu.available is not None and gpu.available < count):
                continue
            fault = self.faults.capacity
            if fault is not None and fault.matches(operation, gpu.id):
                continue
            if cloud_type == "SECURE" and gpu.secure_cloud:
                return gpu, True
            if cloud_type == "COMMUNITY" and gpu.community_cloud:
                return gpu, False
            if cloud_type == "ALL" and (gpu.secure_cloud or gpu.community_cloud):
                return gpu, gpu.secure_cloud
        self.faults.fire("capacity", operation, wanted[0] if wanted else None)
        raise ApiError(CAPACITY_MESSAGE)

    def _cpu_instance(self, instance_id: Any) -> tuple[str, int, int, float]:
        flavor, _, rest = str(instance_id or "cpu3c-2-4").partition("-")
        vcpu_s, _, mem_s = rest.partition("-")
        if flavor not in CPU_FLAVOR_PRICES or not vcpu_s.isdigit() or not mem_s.isdigit():
            raise ApiError(CAPACITY_MESSAGE)
        return flavor, int(vcpu_s), int(mem_s), CPU_FLAVOR_PRICES[flavor]

    def _network_volume_for(self, inp: dict[str, Any], cloud_type: str) -> dict[str, Any] | None:
        volume_id = inp.get("networkVolumeId")
        if not volume_id:
            return None
        volume = self.volumes.get(volume_id)
        if volume is None:
            raise ApiError(f'Network volume "{volume_id}" not found.')
        if self.config.strict_network_volume_cloud and cloud_type != "SECURE":
            raise internal_error()
        wanted_dc = inp.get("dataCenterId")
        if wanted_dc is not None and wanted_dc != volume["dataCenterId"]:
            raise ApiError(CAPACITY_MESSAGE)
        return volume

    def _check_balance(self, cost_per_hr: float, operation: str) -> None:
        too_low = self.account.client_balance < cost_per_hr * self.config.min_balance_hours
        fault = self.faults.fire("insufficient_balance", operation)
        if too_low or fault:
            message = (fault.message if fault else None) or self.config.insufficient_balance_message
            raise ApiError(message, status=402)

    def _machine(self, gpu: GpuType | None, secure: bool, data_center_id: str | None, public_ip: bool) -> Machine:
        if data_center_id is None:
            data_center_id = self.rng.choice(DATA_CENTERS).id if secure else self.rng.choice(COMMUNITY_LOCATIONS)
        location = next((d.location for d in DATA_CENTERS if d.id == data_center_id), data_center_id)
        prefix = self.rng.choice(PUBLIC_IP_PREFIXES)
        return Machine(
            id=self.new_id(12),
            host_suffix="".join(self.rng.choice(string.digits) for _ in range(8)),
            public_ip=f"{prefix}.{self.rng.randint(1, 254)}.{self.rng.randint(2, 254)}",
            data_center_id=data_center_id,
            secure_cloud=secure,
            support_public_ip=secure or public_ip,
            gpu_type=gpu,
            location=location,
        )

    def _internal_ip(self) -> str:
        return f"100.65.{self.rng.randint(0, 255)}.{self.rng.randint(2, 254)}"

    def _pod_env(self, inp: dict[str, Any], template: dict[str, Any] | None) -> list[tuple[str, str]]:
        env: dict[str, str] = {}
        for item in (template or {}).get("env") or []:
            env[str(item["key"])] = str(item["value"])
        for item in inp.get("env") or []:
            env[str(item["key"])] = str(item["value"])
        if inp.get("startSsh") and self.account.pub_key:
            env.setdefault("PUBLIC_KEY", self.account.pub_key)
        if inp.get("startJupyter"):
            env.setdefault("JUPYTER_PASSWORD", self.new_id(20))
        return list(env.items())

    def _runtime_ports(self, pod: Pod) -> list[dict[str, Any]]:
        """http → internal 100.65.x.y (the proxy's backend); tcp → public IP and a fresh random public port."""
        out: list[dict[str, Any]] = []
        for number, proto in parse_ports(pod.ports):
            public_port = self.rng.randint(10000, 60000)
            private_port = public_port if number >= SYMMETRIC_PORT_MIN else number
            if proto == "tcp" and pod.machine.support_public_ip:
                ip, public = pod.machine.public_ip, True
            else:
                ip, public = pod.internal_ip, False
            out.append(
                {"ip": ip, "isIpPublic": public, "privatePort": private_port, "publicPort": public_port, "type": proto}
            )
        return out

    def _take_gpus(self, pod: Pod) -> None:
        if pod.gpu_type is not None and pod.gpu_type.available is not None and not pod.holds_gpus:
            pod.gpu_type.available -= pod.gpu_count
        pod.holds_gpus = True

    def _release_gpus(self, pod: Pod) -> None:
        if pod.holds_gpus and pod.gpu_type is not None and pod.gpu_type.available is not None:
            pod.gpu_type.available += pod.gpu_count
        pod.holds_gpus = False

    # --- account, volumes, templates ------------------------------------------------------------

    def update_user(self, inp: dict[str, Any]) -> Account:
        self.advance()
        if "pubKey" in inp:
            self.account.pub_key = inp["pubKey"]
        for key, attr in (
            ("notifyPodsStale", "notify_pods_stale"),
            ("notifyPodsGeneral", "notify_pods_general"),
            ("notifyLowBalance", "notify_low_balance"),
            ("creditAlertThreshold", "credit_alert_threshold"),
        ):
            if inp.get(key) is not None:
                setattr(self.account, attr, inp[key])
        return self.account

    def create_volume(self, inp: dict[str, Any]) -> dict[str, Any]:
        self.advance()
        size = int(inp["size"])
        dc = next((d for d in DATA_CENTERS if d.id == inp["dataCenterId"]), None)
        if dc is None or not dc.storage_support:
            raise ApiError(f'Data center "{inp["dataCenterId"]}" does not support network volumes.')
        if not 1 <= size <= 4000:
            raise ApiError("Network volume size must be between 1 and 4000 GB.")
        return self.add_volume(str(inp["name"]), size, dc.id, "STANDARD")

    def add_volume(self, name: str, size: int, data_center_id: str, tier: str) -> dict[str, Any]:
        """A new network volume; callers have checked the size and data center by their API's rules."""
        self.advance()
        volume_id = self.new_id(10)
        volume: dict[str, Any] = {
            "id": volume_id,
            "name": name,
            "size": size,
            "dataCenterId": data_center_id,
            "type": tier,
        }
        self.volumes[volume_id] = volume
        return volume

    def delete_volume(self, volume_id: str) -> None:
        self.advance()
        if volume_id not in self.volumes:
            raise ApiError(f'Network volume "{volume_id}" not found.')
        if any(p.network_volume_id == volume_id for p in self.pods.values()):
            raise ApiError("Network volume is in use by a pod.")
        del self.volumes[volume_id]
        self.dropped_volumes.append(volume_id)

    def _template(self, data: dict[str, Any], template_id: str) -> dict[str, Any]:
        return {
            "id": template_id,
            "name": data.get("name"),
            "imageName": data.get("imageName"),
            "dockerArgs": data.get("dockerArgs", ""),
            "containerDiskInGb": data.get("containerDiskInGb", 10),
            "volumeInGb": data.get("volumeInGb", 0),
            "volumeMountPath": data.get("volumeMountPath", "/workspace"),
            "ports": data.get("ports", ""),
            "env": [{"key": str(e["key"]), "value": str(e["value"])} for e in data.get("env") or []],
            "isServerless": bool(data.get("isServerless", False)),
            "isPublic": bool(data.get("isPublic", False)),
            "isRunpod": template_id.startswith("runpod-"),
            "readme": data.get("readme", ""),
            "category": data.get("category", "NVIDIA"),
            "startSsh": bool(data.get("startSsh", True)),
            "startJupyter": bool(data.get("startJupyter", False)),
            "containerRegistryAuthId": data.get("containerRegistryAuthId") or None,
        }

    def save_template(self, inp: dict[str, Any]) -> dict[str, Any]:
        self.advance()
        template_id = inp.get("id")
        if template_id:
            if template_id not in self.templates:
                raise ApiError(f'Template "{template_id}" not found.')
            merged = {**self.templates[template_id], **{k: v for k, v in inp.items() if v is not None}}
        else:
            if any(t["name"] == inp.get("name") for t in self.templates.values()):
                raise ApiError("A template with this name already exists.")
            if inp.get("dockerArgs") is None:
                # saveTemplate without dockerArgs answered the generic error (reference §2.8, pulumi #18).
                raise internal_error()
            template_id = self.new_id(10)
            merged = dict(inp)
        template = self._template(merged, template_id)
        self.templates[template_id] = template
        return template

    def delete_template(self, name: str) -> None:
        self.advance()
        found = next((t for t in self.templates.values() if t["name"] == name and not t["isRunpod"]), None)
        if found is None:
            raise ApiError(f'Template "{name}" not found.')
        if any(p.template_id == found["id"] for p in self.pods.values()):
            raise ApiError("Template is in use by a pod and cannot be deleted.")
        del self.templates[found["id"]]

    def boot_delay(self, *, resumed: bool) -> float:
        """This boot's delay: fixed, or drawn from the configured range (a draw only when there is a range, so
        a fixed-delay run consumes nothing from the delay stream)."""
        low, high = self.faults.boot_range(resumed=resumed)
        return low if high <= low else self.delay_rng.uniform(low, high)

    def drain_events(self) -> list[Event]:
        events, self.events = self.events, []
        return events

    def drain_dropped_volumes(self) -> list[str]:
        dropped, self.dropped_volumes = self.dropped_volumes, []
        return dropped


def _ports_spec(inp: dict[str, Any], template: dict[str, Any] | None) -> str:
    if inp.get("ports") is not None:
        return str(inp["ports"])
    if template is not None:
        return str(template.get("ports") or "")
    return ""
