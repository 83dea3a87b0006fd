"""Where pods come from, behind one small interface: `runpod`, `local` and `static`."""

from __future__ import annotations

from vibewave.pod_manager.providers.base import (
    CapacityError,
    Conflict,
    HostBusy,
    InsufficientBalance,
    NoFittingGpu,
    PodNotFound,
    Provider,
    ProviderError,
    ProviderPod,
    ProviderState,
    RateLimited,
    Unauthorized,
)
from vibewave.pod_manager.providers.local import LocalProvider
from vibewave.pod_manager.providers.runpod import RunPodPodDefaults, RunPodProvider
from vibewave.pod_manager.providers.static import StaticProvider
from vibewave.pod_manager.runpod_api import RunPodClient, RunPodHttp
from vibewave.pod_manager.settings import PodManagerSettings
from vibewave.runtime.process import ConfigurationError

__all__ = [
    "CapacityError",
    "Conflict",
    "HostBusy",
    "InsufficientBalance",
    "NoFittingGpu",
    "PodNotFound",
    "Provider",
    "ProviderError",
    "ProviderPod",
    "ProviderState",
    "RateLimited",
    "Unauthorized",
    "create_provider",
]


def create_provider(settings: PodManagerSettings) -> Provider:
    """The provider `POD_PROVIDER` names, built from settings; `ConfigurationError` when it cannot be."""
    if settings.provider == "local":
        return LocalProvider(
            settings.common.home,
            command=settings.local_command,
            step_time_s=settings.simulator_step_time_s,
            gpu_memory_gb=settings.local_gpu_memory_gb,
            output_keep_s=settings.local_output_keep_s,
            cost_per_hr=settings.local_gpu_cost_per_hr,
        )
    if settings.provider == "static":
        return StaticProvider(settings.static_urls, settings.static_gpu_memory_gb, settings.local_gpu_cost_per_hr)
    if settings.provider == "runpod":
        rp = settings.runpod
        if not rp.api_key:
            raise ConfigurationError("POD_PROVIDER=runpod needs RUNPOD_API_KEY")
        transport = RunPodHttp(rp.base_url, rp.api_key.reveal(), timeout_s=rp.timeout_s)
        defaults = RunPodPodDefaults(
            gpu_types=rp.gpu_types,
            image=rp.image,
            container_disk_gb=rp.container_disk_gb,
            min_memory_gb=rp.min_memory_gb,
            ports=rp.ports,
            cloud_type=rp.cloud_type,
            docker_args=rp.docker_args,
            template_id=rp.template_id,
            proxy_url_template=rp.proxy_url_template,
            comfyui_port=rp.comfyui_port,
            allowed_cuda_versions=rp.allowed_cuda_versions,
            network_volume_id=rp.network_volume_id,
            gpu_choice=rp.gpu_choice,
        )
        return RunPodProvider(RunPodClient(transport, api=rp.api), defaults, rp.base_url)
    raise ConfigurationError(f"unknown POD_PROVIDER {settings.provider!r} (runpod, local or static)")
