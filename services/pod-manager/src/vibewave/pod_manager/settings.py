"""Pod-manager settings, from the environment."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass

from vibewave.contracts.runtime.settings import CommonSettings, env_float, env_int


@dataclass(frozen=True, kw_only=True)
class PodManagerSettings:
    common: CommonSettings
    provider: str  # POD_PROVIDER: local (default without a RunPod key)
    max_pods: int  # MAX_PODS: never more pods than this, all workflows together
    min_warm_pods: int  # MIN_WARM_PODS: ready pods kept per workflow even without demand
    idle_timeout_s: float  # POD_IDLE_TIMEOUT: an unneeded idle pod is retired after this
    ready_timeout_s: float  # POD_READY_TIMEOUT: a pod whose ComfyUI does not answer by then has failed
    probe_interval_s: float  # POD_PROBE_INTERVAL: how often ComfyUI's /system_stats is checked
    local_command: list[str] | None  # LOCAL_COMFYUI_COMMAND: run this instead of the simulator
    simulator_step_time_s: float  # SIM_STEP_TIME: seconds per sampler step in simulated pods

    @classmethod
    def from_env(cls, common: CommonSettings | None = None) -> PodManagerSettings:
        command = os.environ.get("LOCAL_COMFYUI_COMMAND")
        return cls(
            common=common or CommonSettings.from_env(),
            provider=os.environ.get("POD_PROVIDER", "local"),
            max_pods=env_int("MAX_PODS", 5),
            min_warm_pods=env_int("MIN_WARM_PODS", 0),
            idle_timeout_s=env_float("POD_IDLE_TIMEOUT", 300.0),
            ready_timeout_s=env_float("POD_READY_TIMEOUT", 120.0),
            probe_interval_s=env_float("POD_PROBE_INTERVAL", 2.0),
            local_command=shlex.split(command) if command else None,
            simulator_step_time_s=env_float("SIM_STEP_TIME", 0.05),
        )
