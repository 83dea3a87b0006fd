"""The provider interface and the errors every provider speaks in.

A provider creates, lists, starts, stops, restarts and terminates pods and says where a pod's ComfyUI
answers; it also answers catalogue reads (GPU types, cloud types, volumes, templates, account) for the
admin endpoints. It knows nothing of requests or demand: pod-manager decides what to do.
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
    details: dict[str, Any] = field(default_factory=dict)  # the provider's own view, for admin endpoints


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


class Unavailable(ProviderError):
    """The provider's API failed in a way that may pass (5xx, timeout, generic error)."""

    retryable = True


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

    async def create(self, name: str, workflow_name: str) -> ProviderPod: ...

    async def get(self, pod_id: str) -> ProviderPod | None: ...

    async def list(self) -> list[ProviderPod]: ...

    async def start(self, pod_id: str) -> ProviderPod: ...

    async def stop(self, pod_id: str) -> None: ...

    async def restart(self, pod_id: str) -> None: ...

    async def terminate(self, pod_id: str) -> None: ...

    async def catalogue(self, kind: str) -> Any: ...

    async def close(self) -> None: ...
