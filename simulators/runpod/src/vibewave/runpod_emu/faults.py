"""Failure switches and RunPod's exact error texts.

The CLI, the environment and `POST /emulator/faults` all write into one `Faults` object, so a test can make
the next create fail for one GPU type, a resume hit a busy host, or a pod never become ready, and then check
that its client reacts to exactly what RunPod would have sent.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# Exact strings seen from the live API (reference §2.8).
CAPACITY_MESSAGE = (
    "There are no longer any instances available with the requested specifications. Please refresh and try again."
)
DISK_SPACE_MESSAGE = "There are no longer any instances available with enough disk space."
HOST_BUSY_MESSAGE = "There are not enough free GPUs on the host machine to start this pod."
INTERNAL_ERROR_MESSAGE = "Something went wrong. Please try again later or contact support."
CUDA_MESSAGE = "No compatible CUDA host is currently available."
UNAUTHORIZED_MESSAGE = "Unauthorized"
# RunPod's real wording was not found in any source (reference §2.8): configurable, this is a guess.
DEFAULT_INSUFFICIENT_BALANCE_MESSAGE = (
    "Your account balance is too low to deploy this pod. At least one hour of credit is required."
)
# Not documented either (reference §7 suggests it).
POD_NOT_FOUND_MESSAGE = "pod not found"
# REST v2's 429 body (reference-v2 §1.5, spec example); `/graphql` answers the same, its own is undocumented.
RATE_LIMIT_DETAIL = "rate limit exceeded for the minute window"
DEFAULT_RETRY_AFTER = 1

CREATE_OPERATIONS = ("podFindAndDeployOnDemand", "deployCpuPod")
NEVER_READY_MODES = ("no_runtime", "no_comfyui", "hang")


@dataclass
class Fault:
    """One switch: fires `times` more times (None: every time), optionally only for some operations/GPUs/pods."""

    times: int | None = None
    operations: list[str] | None = None
    gpu_types: list[str] | None = None
    pod_ids: list[str] | None = None
    message: str | None = None
    after_action: bool = False
    mode: str | None = None
    retry_after: int | None = None

    def matches(self, operation: str | None = None, gpu_type: str | None = None, pod_id: str | None = None) -> bool:
        """Whether the switch applies here (filters left unset match anything)."""
        if self.times is not None and self.times <= 0:
            return False
        if operation is not None and self.operations is not None and operation not in self.operations:
            return False
        if self.gpu_types is not None and gpu_type not in self.gpu_types:
            return False
        return self.pod_ids is None or pod_id in self.pod_ids

    def consume(self) -> None:
        if self.times is not None:
            self.times -= 1

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any, name: str) -> Fault | None:
        """`null`/`false` switch off, `true` means always, an integer N means the next N times."""
        if data is None or data is False:
            return None
        if data is True:
            return cls._checked(cls(), name)
        if isinstance(data, int):
            return cls._checked(cls(times=data), name)
        if not isinstance(data, dict):
            raise ValueError(f"{name}: a fault is null, true, an integer count or an object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{name}: unknown fault fields {sorted(unknown)}")
        fault = cls(**data)
        if fault.times is not None and (not isinstance(fault.times, int) or isinstance(fault.times, bool)):
            raise ValueError(f"{name}: 'times' must be an integer or null")
        for list_name in ("operations", "gpu_types", "pod_ids"):
            value = getattr(fault, list_name)
            if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
                raise ValueError(f"{name}: {list_name!r} must be a list of strings or null")
        if fault.message is not None and not isinstance(fault.message, str):
            raise ValueError(f"{name}: 'message' must be a string or null")
        if not isinstance(fault.after_action, bool):
            raise ValueError(f"{name}: 'after_action' must be a boolean")
        if fault.retry_after is not None and (
            isinstance(fault.retry_after, bool) or not isinstance(fault.retry_after, int) or fault.retry_after < 0
        ):
            raise ValueError(f"{name}: 'retry_after' must be a non-negative integer")
        return cls._checked(fault, name)

    @classmethod
    def _checked(cls, fault: Fault, name: str) -> Fault:
        if name == "never_ready":
            fault.mode = fault.mode or "no_comfyui"
            if fault.mode not in NEVER_READY_MODES:
                raise ValueError(f"never_ready: 'mode' must be one of {list(NEVER_READY_MODES)}")
        elif fault.mode is not None:
            raise ValueError(f"{name}: 'mode' only applies to never_ready")
        if name == "rate_limit":
            fault.retry_after = DEFAULT_RETRY_AFTER if fault.retry_after is None else fault.retry_after
        elif fault.retry_after is not None:
            raise ValueError(f"{name}: 'retry_after' only applies to rate_limit")
        return fault


@dataclass
class Faults:
    """Runtime-switchable behaviour. Fault fields and what they do:

    capacity: creates fail with the capacity message (filter by `gpu_types` to test falling over to another type).
    host_busy: podResume fails with the busy-host message.
    internal_error: the generic INTERNAL_SERVER_ERROR; with `after_action` the action happens anyway.
    insufficient_balance: creates/resumes fail with the balance message, whatever the balance.
    disk_space: creates with a templateId but no containerDiskInGb fail with the disk-space message.
    cuda: creates fail with "No compatible CUDA host is currently available." (only those that pass
        allowedCudaVersions unless `operations` says otherwise).
    http_502: /graphql answers an HTML 502 page. cloudflare_403: /graphql answers 403 `error code: 1010`.
    never_ready: new pods never become usable: mode `no_runtime` (runtime stays null), `no_comfyui` (runtime
        up, nothing listens: proxy 502) or `hang` (ComfyUI accepts connections but never answers).
    rate_limit: the call is refused with HTTP 429 and `Retry-After: retry_after` (GraphQL and REST alike).

    Pod behaviour (numbers): a new pod's runtime comes up `boot_delay` seconds after its create or, with
    `boot_delay_max` above it, after a delay drawn uniformly from [boot_delay, boot_delay_max] per create; a
    resumed (or restarted) pod's from [resume_delay, resume_delay_max] when `resume_delay` is set, else as a new
    pod's. `resume_failure_rate` is the probability that a resume hits the busy-host error (RunPod re-rents a
    stopped pod's GPUs); draws come from the emulator's seeded delay stream (`rng_seed`).

    Operation names are GraphQL root fields (`podResume`) or REST v2 operations (`rest:podAction:start`).
    """

    latency: float = 0.0
    boot_delay: float = 3.0
    boot_delay_max: float | None = None
    resume_delay: float | None = None
    resume_delay_max: float | None = None
    resume_failure_rate: float = 0.0
    sim_env: dict[str, str] = field(default_factory=dict)
    capacity: Fault | None = None
    host_busy: Fault | None = None
    internal_error: Fault | None = None
    insufficient_balance: Fault | None = None
    disk_space: Fault | None = None
    cuda: Fault | None = None
    http_502: Fault | None = None
    cloudflare_403: Fault | None = None
    never_ready: Fault | None = None
    rate_limit: Fault | None = None

    FAULT_FIELDS = (
        "capacity",
        "host_busy",
        "internal_error",
        "insufficient_balance",
        "disk_space",
        "cuda",
        "http_502",
        "cloudflare_403",
        "never_ready",
        "rate_limit",
    )
    NUMBER_FIELDS = ("latency", "boot_delay", "resume_failure_rate")
    OPTIONAL_NUMBER_FIELDS = ("boot_delay_max", "resume_delay", "resume_delay_max")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: getattr(self, name) for name in self.NUMBER_FIELDS}
        out.update({name: getattr(self, name) for name in self.OPTIONAL_NUMBER_FIELDS})
        out["sim_env"] = dict(self.sim_env)
        for name in self.FAULT_FIELDS:
            fault: Fault | None = getattr(self, name)
            out[name] = None if fault is None else fault.to_json()
        return out

    def update(self, data: dict[str, Any]) -> None:
        """Apply a partial update; validates everything before changing anything."""
        changes: dict[str, Any] = {}
        for key, value in data.items():
            if key in self.NUMBER_FIELDS:
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    raise ValueError(f"{key} must be a non-negative number")
                if key == "resume_failure_rate" and value > 1:
                    raise ValueError("resume_failure_rate must be a probability between 0 and 1")
                changes[key] = float(value)
            elif key in self.OPTIONAL_NUMBER_FIELDS:
                if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
                    raise ValueError(f"{key} must be a non-negative number or null")
                changes[key] = None if value is None else float(value)
            elif key == "sim_env":
                if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                    raise ValueError("sim_env must be an object of strings")
                changes[key] = {str(k): v for k, v in value.items()}
            elif key in self.FAULT_FIELDS:
                changes[key] = Fault.from_json(value, key)
            else:
                raise ValueError(f"unknown field {key!r}")
        for key, value in changes.items():
            setattr(self, key, value)

    def copy(self) -> Faults:
        return Faults(**self.to_kwargs())

    def to_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {name: getattr(self, name) for name in self.NUMBER_FIELDS}
        kwargs.update({name: getattr(self, name) for name in self.OPTIONAL_NUMBER_FIELDS})
        kwargs["sim_env"] = dict(self.sim_env)
        for name in self.FAULT_FIELDS:
            fault: Fault | None = getattr(self, name)
            kwargs[name] = None if fault is None else dataclasses.replace(fault)
        return kwargs

    def boot_range(self, *, resumed: bool) -> tuple[float, float]:
        """The (low, high) seconds a boot's delay is drawn from; low == high means a fixed delay."""
        if resumed and self.resume_delay is not None:
            low, high = self.resume_delay, self.resume_delay_max
        else:
            low, high = self.boot_delay, self.boot_delay_max
        return low, max(low, high if high is not None else low)

    def fire(
        self, name: str, operation: str | None = None, gpu_type: str | None = None, pod_id: str | None = None
    ) -> Fault | None:
        """Return (and count down) the named fault if it applies here."""
        fault: Fault | None = getattr(self, name)
        if fault is None or not fault.matches(operation, gpu_type, pod_id):
            return None
        fault.consume()
        return fault
