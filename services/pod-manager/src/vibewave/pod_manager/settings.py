"""Pod-manager settings, from the environment. The RunPod key is read here and nowhere else."""

from __future__ import annotations

import math
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from vibewave.pod_manager.policy import POLICIES, WAIT_WORTH
from vibewave.runtime.pod_token import POD_TOKEN_KEY_ENV
from vibewave.runtime.process import ConfigurationError
from vibewave.runtime.settings import CommonSettings, Secret, env_bool, env_float, env_int, env_str

DEFAULT_GPU_TYPES = "NVIDIA GeForce RTX 4090,NVIDIA RTX A6000,NVIDIA L40S,NVIDIA GeForce RTX 3090"
DEFAULT_IMAGE = "runpod/pytorch:2.1.0-py3.10-cuda11.8.0-devel-ubuntu22.04"
DEFAULT_PORTS = "22/tcp,8080/http,8188/http,8888/http,11434/http"
DEFAULT_PROXY_TEMPLATE = "https://{pod_id}-{port}.proxy.runpod.net"
DEFAULT_POD_WORKFLOWS = "comfyui_image_qwen"  # its ~33 GB fit the 50 GB container disk; with a volume, add more
RUNPOD_APIS = ("rest", "graphql")
# Host CUDA versions whose drivers run CUDA 12.8 wheels: the pod bootstrap installs torch 2.8 cu128, which a
# 12.4/12.6 driver cannot load. An exact list (not a minimum) because it is the one CUDA filter both APIs share.
DEFAULT_ALLOWED_CUDA_VERSIONS = "12.8,12.9,13.0"
CUDA_VERSION = re.compile(r"^\d+\.\d+$")


@dataclass(frozen=True, kw_only=True)
class RunPodSettings:
    api_key: Secret  # RUNPOD_API_KEY
    base_url: str  # RUNPOD_API_BASE_URL (https://api.runpod.io; the emulator's URL in tests)
    api: str = "rest"  # RUNPOD_API: rest (REST v2, default) or graphql (retired by RunPod early 2027)
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
    # RUNPOD_ALLOWED_CUDA_VERSIONS: host CUDA versions a pod may land on, comma-separated ("any": no filter)
    allowed_cuda_versions: tuple[str, ...] = ()
    network_volume_id: str | None = None  # RUNPOD_NETWORK_VOLUME_ID: at /workspace; pods go to its data center
    bootstrap: bool = True  # RUNPOD_BOOTSTRAP: pods boot deploy/pod's bootstrap (off: the image boots itself)
    # RUNPOD_GPU_CHOICE: which fitting type of RUNPOD_GPU_TYPES a new pod tries first — `preference` (list order)
    # or `cheapest` (by the catalogue's price in the cloud asked; the default with FLEET_POLICY=economic)
    gpu_choice: str = "preference"

    @classmethod
    def from_env(cls) -> RunPodSettings:
        api = env_str("RUNPOD_API", "rest").lower()
        if api not in RUNPOD_APIS:
            raise ConfigurationError(f"RUNPOD_API={api!r}: use one of {', '.join(RUNPOD_APIS)}")
        cuda = env_str("RUNPOD_ALLOWED_CUDA_VERSIONS", DEFAULT_ALLOWED_CUDA_VERSIONS)
        allowed_cuda = () if cuda.lower() == "any" else tuple(v.strip() for v in cuda.split(",") if v.strip())
        malformed = [v for v in allowed_cuda if not CUDA_VERSION.match(v)]
        if malformed:
            raise ConfigurationError(
                f"RUNPOD_ALLOWED_CUDA_VERSIONS names {', '.join(map(repr, malformed))}: use versions like 12.8, or any"
            )
        return cls(
            api_key=Secret(os.environ.get("RUNPOD_API_KEY", "").strip()),
            base_url=env_str("RUNPOD_API_BASE_URL", "https://api.runpod.io"),
            api=api,
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
            allowed_cuda_versions=allowed_cuda,
            network_volume_id=os.environ.get("RUNPOD_NETWORK_VOLUME_ID", "").strip() or None,
            bootstrap=env_bool("RUNPOD_BOOTSTRAP", True),
            gpu_choice=env_str(
                "RUNPOD_GPU_CHOICE", "cheapest" if env_str("FLEET_POLICY", "demand") == "economic" else "preference"
            ).lower(),
        )


GPU_CHOICES = ("preference", "cheapest")
SHUTDOWN_POLICIES = ("terminate", "stop", "keep")
UNRESUMABLE_POLICIES = ("terminate", "keep")


@dataclass(frozen=True, kw_only=True)
class PodManagerSettings:
    common: CommonSettings
    provider: str  # POD_PROVIDER: runpod when RUNPOD_API_KEY is set, else local; or static
    max_pods: int  # MAX_PODS: never more running pods than this (all workflows, API-created ones too)
    min_warm_pods: int  # MIN_WARM_PODS: ready pods kept even without demand
    idle_timeout_s: float  # POD_IDLE_TIMEOUT: an unneeded idle pod is stopped after this
    terminate_timeout_s: float  # POD_TERMINATE_TIMEOUT: a stopped pod is terminated after this
    ready_timeout_s: float  # POD_READY_TIMEOUT: a pod whose ComfyUI does not answer by then has failed
    boot_timeout_s: float  # POD_BOOT_TIMEOUT: the same bound while the pod's bootstrap reports it installs/downloads
    pod_workflows: list[str] | None  # POD_WORKFLOWS: workflows whose model files new RunPod pods fetch (all: every one)
    optional_models: bool  # POD_OPTIONAL_MODELS: fetch the files models.json marks optional too
    models_file: Path | None  # POD_MODELS_FILE: a model list replacing files' url/size/sha256 (a mirror)
    workflows_dir: Path | None  # WORKFLOWS_DIR: operator's workflow folders (their models.json too)
    pod_token_key: Secret  # VIBEWAVE_POD_TOKEN_KEY: derives each pod's ComfyUI token (shared with the executor)
    unhealthy_timeout_s: float  # POD_UNHEALTHY_TIMEOUT: a ready pod silent this long has failed (is replaced)
    ready_attempts: int  # POD_READY_ATTEMPTS: pods of a GPU class that never become ready before its breaker opens
    breaker_cooldown_s: float  # POD_BREAKER_COOLDOWN: an open breaker allows one more try after this (doubling)
    unresumable: str  # POD_UNRESUMABLE: terminate (default) or keep a stopped pod whose host has no GPU for it
    shutdown: str  # POD_SHUTDOWN: terminate (default), stop or keep RunPod pods when pod-manager stops
    probe_interval_s: float  # POD_PROBE_INTERVAL: how often pods' ComfyUI /system_stats is checked
    sync_interval_s: float  # POD_SYNC_INTERVAL: how often the provider's own list is compared with ours
    name_prefix: str  # POD_NAME_PREFIX: pods named so are ours (adopted after a restart)
    manage_foreign: bool  # POD_MANAGE_FOREIGN: admin start/stop/restart/terminate act on pods not ours too
    local_command: list[str] | None  # LOCAL_COMFYUI_COMMAND: run this instead of the simulator
    local_gpu_memory_gb: int | None  # LOCAL_GPU_MEMORY_GB: GPU memory of local pods (unset: they serve all)
    local_output_keep_s: float  # LOCAL_OUTPUT_KEEP: seconds a local pod keeps a generated file (0: for ever)
    simulator_step_time_s: float  # SIM_STEP_TIME: seconds per sampler step in simulated pods
    static_urls: list[str]  # STATIC_COMFYUI_URLS: comma-separated ComfyUI base URLs
    static_gpu_memory_gb: int | None  # STATIC_GPU_MEMORY_GB: GPU memory of the static servers (unset: serve all)
    runpod: RunPodSettings
    # LOCAL_GPU_COST_PER_HR: the hourly price of local and static pods, in USD, for requests' `cost` (unset: none)
    local_gpu_cost_per_hr: float | None = None
    fleet_policy: str = "demand"  # FLEET_POLICY: demand (default), serverless or economic (see `policy`)
    max_hourly_spend: float | None = None  # MAX_HOURLY_SPEND: USD/hour the live pods may cost together (unset: no cap)
    fleet_wait_worth: float = WAIT_WORTH  # FLEET_WAIT_WORTH: economic's price of a second waited, in pod-seconds

    @classmethod
    def from_env(cls, common: CommonSettings | None = None) -> PodManagerSettings:
        command = os.environ.get("LOCAL_COMFYUI_COMMAND")
        runpod = RunPodSettings.from_env()
        try:
            settings = cls(
                common=common or CommonSettings.from_env(),
                provider=env_str("POD_PROVIDER", "runpod" if runpod.api_key else "local"),
                max_pods=env_int("MAX_PODS", 5),
                min_warm_pods=env_int("MIN_WARM_PODS", 0),
                idle_timeout_s=env_float("POD_IDLE_TIMEOUT", 300.0),
                terminate_timeout_s=env_float("POD_TERMINATE_TIMEOUT", 3600.0),
                ready_timeout_s=env_float("POD_READY_TIMEOUT", 600.0),
                boot_timeout_s=env_float("POD_BOOT_TIMEOUT", 3600.0),
                pod_workflows=_workflows(env_str("POD_WORKFLOWS", DEFAULT_POD_WORKFLOWS)),
                optional_models=env_bool("POD_OPTIONAL_MODELS", False),
                models_file=Path(models_file) if (models_file := os.environ.get("POD_MODELS_FILE")) else None,
                workflows_dir=Path(workflows) if (workflows := os.environ.get("WORKFLOWS_DIR")) else None,
                pod_token_key=Secret(os.environ.get(POD_TOKEN_KEY_ENV, "").strip()),
                unhealthy_timeout_s=env_float("POD_UNHEALTHY_TIMEOUT", 60.0),
                ready_attempts=env_int("POD_READY_ATTEMPTS", 2),
                breaker_cooldown_s=env_float("POD_BREAKER_COOLDOWN", 1800.0),
                unresumable=env_str("POD_UNRESUMABLE", "terminate"),
                shutdown=env_str("POD_SHUTDOWN", "terminate"),
                probe_interval_s=env_float("POD_PROBE_INTERVAL", 2.0),
                sync_interval_s=env_float("POD_SYNC_INTERVAL", 15.0),
                name_prefix=env_str("POD_NAME_PREFIX", "vibewave"),
                manage_foreign=env_bool("POD_MANAGE_FOREIGN", False),
                local_command=shlex.split(command) if command else None,
                local_gpu_memory_gb=_optional_int("LOCAL_GPU_MEMORY_GB"),
                local_output_keep_s=env_float("LOCAL_OUTPUT_KEEP", 300.0),
                simulator_step_time_s=env_float("SIM_STEP_TIME", 0.05),
                static_urls=[u.strip() for u in os.environ.get("STATIC_COMFYUI_URLS", "").split(",") if u.strip()],
                static_gpu_memory_gb=_optional_int("STATIC_GPU_MEMORY_GB"),
                runpod=runpod,
                local_gpu_cost_per_hr=_optional_float("LOCAL_GPU_COST_PER_HR"),
                fleet_policy=env_str("FLEET_POLICY", "demand").lower(),
                max_hourly_spend=_optional_float("MAX_HOURLY_SPEND"),
                fleet_wait_worth=env_float("FLEET_WAIT_WORTH", WAIT_WORTH),
            )
        except ValueError as exc:
            raise ConfigurationError(f"a pod-manager setting is not a number: {exc}") from None
        settings.check()
        return settings

    def check(self) -> None:
        """Settings that cannot work are a start-up error (exit 78), not a loop that never gets a pod."""
        if self.fleet_policy not in POLICIES:
            raise ConfigurationError(f"FLEET_POLICY={self.fleet_policy!r}: use one of {', '.join(POLICIES)}")
        if self.runpod.gpu_choice not in GPU_CHOICES:
            raise ConfigurationError(
                f"RUNPOD_GPU_CHOICE={self.runpod.gpu_choice!r}: use one of {', '.join(GPU_CHOICES)}"
            )
        if not (math.isfinite(self.fleet_wait_worth) and self.fleet_wait_worth > 0):
            raise ConfigurationError(
                f"FLEET_WAIT_WORTH ({self.fleet_wait_worth}) must be a finite number over 0 (default {WAIT_WORTH:g})"
            )
        if self.max_hourly_spend is not None and self.max_hourly_spend <= 0:
            raise ConfigurationError(
                f"MAX_HOURLY_SPEND ({self.max_hourly_spend}) must be more than 0 (unset it for no cap)"
            )
        if self.shutdown not in SHUTDOWN_POLICIES:
            raise ConfigurationError(f"POD_SHUTDOWN={self.shutdown!r}: use one of {', '.join(SHUTDOWN_POLICIES)}")
        if self.unresumable not in UNRESUMABLE_POLICIES:
            raise ConfigurationError(
                f"POD_UNRESUMABLE={self.unresumable!r}: use one of {', '.join(UNRESUMABLE_POLICIES)}"
            )
        if self.max_pods < 0 or self.min_warm_pods < 0 or self.ready_attempts < 1:
            raise ConfigurationError("MAX_PODS and MIN_WARM_PODS must be 0 or more, POD_READY_ATTEMPTS 1 or more")
        if self.local_output_keep_s < 0:
            raise ConfigurationError(f"LOCAL_OUTPUT_KEEP ({self.local_output_keep_s}) must be 0 (keep) or more")
        if self.provider == "runpod" and self.runpod.bootstrap and not self.pod_token_key:
            raise ConfigurationError(
                f"{POD_TOKEN_KEY_ENV} is not set: every RunPod pod's ComfyUI sits behind a token derived from it, "
                "and the executor needs the same key (make run makes one; elsewhere set it on pod-manager and "
                "executor, e.g. from `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
            )
        if self.provider == "runpod" and self.runpod.bootstrap and self.runpod.docker_args:
            raise ConfigurationError(
                "RUNPOD_DOCKER_ARGS would replace the pod bootstrap's start command: set RUNPOD_BOOTSTRAP=off to "
                "boot pods with your own command (then the image must serve ComfyUI on its port by itself)"
            )
        if self.boot_timeout_s < self.ready_timeout_s:
            raise ConfigurationError(
                f"POD_BOOT_TIMEOUT ({self.boot_timeout_s:.0f}) is shorter than POD_READY_TIMEOUT "
                f"({self.ready_timeout_s:.0f})"
            )
        if self.min_warm_pods > self.max_pods:
            raise ConfigurationError(f"MIN_WARM_PODS ({self.min_warm_pods}) is more than MAX_PODS ({self.max_pods})")


def _workflows(raw: str) -> list[str] | None:
    names = [n.strip() for n in raw.split(",") if n.strip()]
    return None if names == ["all"] else names


def _optional_float(name: str) -> float | None:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else None


def _optional_int(name: str) -> int | None:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else None
