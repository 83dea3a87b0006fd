"""Emulator settings fixed at start-up, plus the initial fault switches.

The CLI (`__main__`), the environment (`VIBEWAVE_RUNPOD_EMU_*`) and in-process tests all build one `EmuConfig`.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from vibewave.runpod_emu.catalogue import Seed
from vibewave.runpod_emu.faults import DEFAULT_INSUFFICIENT_BALANCE_MESSAGE, Faults

ENV_PREFIX = "VIBEWAVE_RUNPOD_EMU_"
DEFAULT_PORT = 8765
DEFAULT_API_KEY = "test-key"
# How REST v2 reports a pod whose runtime is not up yet: "live" says RUNNING with `runtime: null`, as a pod
# recorded moments after creation did (reference-v2 §4.1); "spec" walks PROVISIONING → STARTING as the spec says.
REST_STATUS_MODES = ("live", "spec")


@dataclass
class EmuConfig:
    """Everything that shapes one emulator instance."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    # Keys accepted as `Authorization: Bearer <key>` or `?api_key=<key>`; anything else gets HTTP 401.
    api_keys: list[str] = field(default_factory=lambda: [DEFAULT_API_KEY])
    # Pod-scoped keys (RunPod's in-pod RUNPOD_API_KEY): `myself` answers "Unauthorized", pods still readable.
    pod_scoped_keys: list[str] = field(default_factory=list)
    seed: Seed = field(default_factory=Seed.default)
    faults: Faults = field(default_factory=Faults)
    # Pod containers (the names are older than containers): whether pods run them at all; the pod port the
    # proxy maps to the container's VIBEWAVE_LISTEN_PORT; VIBEWAVE_SIM_STEP_TIME for the simulators in them;
    # extra arguments of the simulator that emulates runpod/comfyui; restart after the main process exits.
    comfyui: bool = True
    comfyui_port: int = 8188
    comfyui_step_time: float = 0.05
    comfyui_args: list[str] = field(default_factory=list)
    comfyui_restart: bool = True
    comfyui_restart_delay: float = 1.0
    work_dir: Path | None = None
    # Proxy: Cloudflare's 100 s limit answers 524.
    proxy_timeout: float = 100.0
    # Billing: emulated seconds per real second (60 bills a minute per second), how often the clock ticks.
    billing_speed: float = 1.0
    tick: float = 0.2
    min_balance_hours: float = 1.0
    insufficient_balance_message: str = DEFAULT_INSUFFICIENT_BALANCE_MESSAGE
    # Network-volume pods need SECURE cloud; COMMUNITY/ALL get the generic error (reference §6.8).
    strict_network_volume_cloud: bool = True
    # Answer 403 `error code: 1010` to bot-like User-Agents (Python-urllib, ...) as Cloudflare does.
    cloudflare_ua_check: bool = False
    rng_seed: int | None = None
    # Calls per minute per API key on /graphql and /v2 (0: no quota, no RateLimit headers).
    rate_limit_per_minute: int = 0
    rest_status_mode: str = "live"
    # Mimic the live quirk of a v2 create without `gpu.count` matching no machine (capacity 400).
    rest_omitted_gpu_count_capacity: bool = False

    def resolve_work_dir(self) -> Path:
        """Where pod directories (disks, logs) and network volumes live; a fresh temp dir unless configured."""
        if self.work_dir is None:
            self.work_dir = Path(tempfile.mkdtemp(prefix="vibewave-runpod-emu-"))
        self.work_dir = self.work_dir.resolve()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        return self.work_dir
