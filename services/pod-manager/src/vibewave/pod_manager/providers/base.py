"""The provider interface and the errors every provider speaks in.

A provider creates, lists, starts, stops, restarts and terminates pods and says where a pod's ComfyUI
answers; it also answers catalogue reads (GPU types, cloud types, volumes, templates, account) for the
admin endpoints. It knows nothing of requests or demand: pod-manager decides what to do. Its errors say
whether trying again may help (`retryable`) and, for rate limits, when (`retry_after_s`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol


class ProviderState(StrEnum):
    STARTING = "starting"  # asked to run; the container is not up yet
    RUNNING = "running"  # the container is up (its ComfyUI may still be booting)
    STOPPED = "stopped"
    TERMINATED = "terminated"


@dataclass(frozen=True)
class ProviderPod:
    id: str
    name: str
    state: ProviderState
    comfyui_url: str | None = None
    ip: str | None = None
    gpu_type: str | None = None
    cost_per_hr: float | None = None
    gpu_memory_gb: int | None = None  # None: unknown (the pod serves every workflow)
    details: dict[str, Any] = field(default_factory=dict)  # the provider's own view, for admin endpoints


@dataclass(frozen=True)
class PodBoot:
    """What one pod boots with, beyond the provider's defaults: its environment and its start command (one shell
    string, carried byte for byte). Providers that run no container of their own accept and ignore it."""

    env: dict[str, str] = field(default_factory=dict)
    start_command: str = ""


class ProviderError(Exception):
    """A provider refused or failed; `status` is the HTTP status the admin endpoints answer with."""

    status = 500
    retryable = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PodNotFound(ProviderError):
    status = 404


class BadRequest(ProviderError):
    status = 400


class Conflict(ProviderError):
    """The action does not fit the pod's state now (e.g. restarting a stopped pod), or a limit is reached."""

    status = 409


class Unauthorized(ProviderError):
    """The API key was refused."""


class CapacityError(ProviderError):
    """No machine with the requested GPU type is free; another GPU type may have one."""

    retryable = True


class HostBusy(ProviderError):
    """A stopped pod cannot resume: its host's GPUs are taken."""

    retryable = True


class InsufficientBalance(ProviderError):
    pass


class NoFittingGpu(ProviderError):
    """No GPU type this provider may use has the memory a workflow needs: no pod of it can ever serve it."""


class Unavailable(ProviderError):
    """The provider's API failed in a way that may pass (5xx, timeout, generic error)."""

    retryable = True


class RateLimited(Unavailable):
    """The provider refused the call for now (HTTP 429); `retry_after_s` is when it may be asked again."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def no_cloud_catalogue(kind: str, account: dict[str, Any]) -> Any:
    """Catalogue answers of a provider without a cloud behind it: its own account note, nothing else invented."""
    answers: dict[str, Any] = {
        "account": account,
        "gpu_types": [],
        "cloud_types": [],
        "network_volumes": [],
        "templates": [],
    }
    if kind not in answers:
        raise BadRequest(f"unknown catalogue {kind!r}")
    return answers[kind]


class Provider(Protocol):
    name: str
    ephemeral: bool  # pods die with pod-manager (local processes): nothing to adopt after a restart
    origin: str  # which account or machine its pods live in: records of another origin are not its pods
    capacity: int | None  # at most this many pods can exist at once (static servers); None: no limit
    restarts_in_place: bool  # restart keeps the pod's GPU and disk (else it is a stop and a start)

    async def validate(self) -> None:
        """Check the settings against the provider itself (e.g. GPU type ids against its catalogue);
        raises ConfigurationError naming what is wrong and what would be right."""

    def describe(self) -> str:
        """What a new pod is, for diagnoses: image, template, start command, port."""

    async def create(
        self, name: str, min_gpu_memory_gb: int = 0, boot: PodBoot | None = None, max_price: float | None = None
    ) -> ProviderPod: ...

    def new_pod_price(self, min_gpu_memory_gb: int) -> float | None:
        """$/hour of the pod a create for this GPU class would make first (None: unknown)."""
        ...

    async def get(self, pod_id: str) -> ProviderPod | None: ...

    async def list(self) -> list[ProviderPod]: ...

    async def start(self, pod_id: str) -> ProviderPod: ...

    async def stop(self, pod_id: str) -> None: ...

    async def restart(self, pod_id: str) -> None: ...

    async def terminate(self, pod_id: str) -> None: ...

    async def catalogue(self, kind: str) -> Any: ...

    async def close(self) -> None: ...
