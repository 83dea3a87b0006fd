"""Pod-manager settings, from the environment. The RunPod key is read here and nowhere else."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass

from vibewave.contracts.runtime.settings import CommonSettings, env_float, env_int, env_str

DEFAULT_GPU_TYPES = "NVIDIA GeForce RTX 4090,NVIDIA RTX A6000,NVIDIA L40S,NVIDIA GeForce RTX 3090"
DEFAULT_IMAGE = "runpod/pytorch:2.1.0-py3.10-cuda11.8.0-devel-ubuntu22.04"
DEFAULT_PORTS = "22/tcp,8080/http,8188/http,8888/http,11434/http"
DEFAULT_PROXY_TEMPLATE = "https://{pod_id}-{port}.proxy.runpod.net"


class Secret:
    """A value that never shows itself in a repr, a log line or an exception."""

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret(<hidden>)" if self._value else "Secret(<empty>)"

    __str__ = __repr__


@dataclass(frozen=True, kw_only=True)
class RunPodSettings:
    api_key: Secret  # RUNPOD_API_KEY
    base_url: str  # RUNPOD_API_BASE_URL (https://api.runpod.io; the emulator's URL in tests)
    gpu_types: tuple[str, ...]  # RUNPOD_GPU_TYPES: preference order, comma-separated
    image: str  # RUNPOD_IMAGE
    container_disk_gb: int  # RUNPOD_CONTAINER_DISK_GB
    min_memory_gb: int  # RUNPOD_MIN_MEMORY_GB
    ports: str  # RUNPOD_PORTS
    cloud_type: str  # RUNPOD_CLOUD_TYPE: ALL, SECURE or COMMUNITY
    docker_args: str  # RUNPOD_DOCKER_ARGS: the container's start command (e.g. install and run ComfyUI)
    template_id: str | None  # RUNPOD_TEMPLATE_ID
    proxy_url_template: str  # RUNPOD_PROXY_URL_TEMPLATE: where a pod's ComfyUI answers ({pod_id}, {port})
    comfyui_port: int  # RUNPOD_COMFYUI_PORT
    timeout_s: float  # RUNPOD_TIMEOUT: per API call

    @classmethod
    def from_env(cls) -> RunPodSettings:
        return cls(
            api_key=Secret(os.environ.get("RUNPOD_API_KEY", "").strip()),
            base_url=env_str("RUNPOD_API_BASE_URL", "https://api.runpod.io"),
            gpu_types=tuple(g.strip() for g in env_str("RUNPOD_GPU_TYPES", DEFAULT_GPU_TYPES).split(",") if g.strip()),
            image=env_str("RUNPOD_IMAGE", DEFAULT_IMAGE),
            container_disk_gb=env_int("RUNPOD_CONTAINER_DISK_GB", 50),
            min_memory_gb=env_int("RUNPOD_MIN_MEMORY_GB", 24),
            ports=env_str("RUNPOD_PORTS", DEFAULT_PORTS),
            cloud_type=env_str("RUNPOD_CLOUD_TYPE", "ALL"),
            docker_args=os.environ.get("RUNPOD_DOCKER_ARGS", ""),
            template_id=os.environ.get("RUNPOD_TEMPLATE_ID") or None,
            proxy_url_template=env_str("RUNPOD_PROXY_URL_TEMPLATE", DEFAULT_PROXY_TEMPLATE),
            comfyui_port=env_int("RUNPOD_COMFYUI_PORT", 8188),
            timeout_s=env_float("RUNPOD_TIMEOUT", 30.0),
        )


@dataclass(frozen=True, kw_only=True)
class PodManagerSettings:
    common: CommonSettings
    provider: str  # POD_PROVIDER: runpod when RUNPOD_API_KEY is set, else local; or static
    max_pods: int  # MAX_PODS: never more running pods than this, all workflows together
    min_warm_pods: int  # MIN_WARM_PODS: ready pods kept per workflow even without demand
    idle_timeout_s: float  # POD_IDLE_TIMEOUT: an unneeded idle pod is stopped after this
    terminate_timeout_s: float  # POD_TERMINATE_TIMEOUT: a stopped pod is terminated after this
    ready_timeout_s: float  # POD_READY_TIMEOUT: a pod whose ComfyUI does not answer by then has failed
    probe_interval_s: float  # POD_PROBE_INTERVAL: how often pods' ComfyUI /system_stats is checked
    sync_interval_s: float  # POD_SYNC_INTERVAL: how often the provider's own list is compared with ours
    name_prefix: str  # POD_NAME_PREFIX: pods named so are ours (adopted after a restart)
    local_command: list[str] | None  # LOCAL_COMFYUI_COMMAND: run this instead of the simulator
    simulator_step_time_s: float  # SIM_STEP_TIME: seconds per sampler step in simulated pods
    static_urls: list[str]  # STATIC_COMFYUI_URLS: comma-separated ComfyUI base URLs
    runpod: RunPodSettings

    @classmethod
    def from_env(cls, common: CommonSettings | None = None) -> PodManagerSettings:
        command = os.environ.get("LOCAL_COMFYUI_COMMAND")
        runpod = RunPodSettings.from_env()
        return cls(
            common=common or CommonSettings.from_env(),
            provider=env_str("POD_PROVIDER", "runpod" if runpod.api_key else "local"),
            max_pods=env_int("MAX_PODS", 5),
            min_warm_pods=env_int("MIN_WARM_PODS", 0),
            idle_timeout_s=env_float("POD_IDLE_TIMEOUT", 300.0),
            terminate_timeout_s=env_float("POD_TERMINATE_TIMEOUT", 3600.0),
            ready_timeout_s=env_float("POD_READY_TIMEOUT", 600.0),
            probe_interval_s=env_float("POD_PROBE_INTERVAL", 2.0),
            sync_interval_s=env_float("POD_SYNC_INTERVAL", 15.0),
            name_prefix=env_str("POD_NAME_PREFIX", "vibewave"),
            local_command=shlex.split(command) if command else None,
            simulator_step_time_s=env_float("SIM_STEP_TIME", 0.05),
            static_urls=[u.strip() for u in os.environ.get("STATIC_COMFYUI_URLS", "").split(",") if u.strip()],
            runpod=runpod,
        )
