"""One in-process RunPod emulator for the whole suite, reset to its start-up state before every test."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from types import ModuleType

import pytest

from tests.integration.runpod_emu.helpers import BOOT_DELAY
from vibewave.runpod_emu import EmuConfig, Faults, RunningEmulator, serve


@pytest.fixture(scope="session")
async def runpod_emulator(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningEmulator]:
    config = EmuConfig(
        port=0,
        faults=Faults(boot_delay=BOOT_DELAY),
        work_dir=tmp_path_factory.mktemp("runpod-emu"),
        comfyui_step_time=0.01,
        comfyui_restart_delay=0.2,
        tick=0.05,
        rng_seed=11,
    )
    running = await serve(config)
    yield running
    await running.close()


# Settings a test may change on the shared emulator; restored after every test.
TEST_SETTABLE = (
    "billing_speed",
    "proxy_timeout",
    "insufficient_balance_message",
    "rate_limit_per_minute",
    "rest_status_mode",
    "pod_scoped_keys",
    "cloudflare_ua_check",
)


@pytest.fixture
async def emu(runpod_emulator: RunningEmulator) -> AsyncIterator[RunningEmulator]:
    emulator = runpod_emulator.emulator
    emulator.reset()
    await emulator.settle()
    config = emulator.config
    saved = dataclasses.replace(config, pod_scoped_keys=list(config.pod_scoped_keys))
    yield runpod_emulator
    for name in TEST_SETTABLE:
        setattr(config, name, getattr(saved, name))
    emulator.reset()
    await emulator.settle()


@pytest.fixture
def sdk(emu: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The official runpod 1.12.0 SDK pointed at the emulator (imported lazily: it is slow to import)."""
    import runpod

    monkeypatch.setenv("RUNPOD_API_BASE_URL", emu.url)
    monkeypatch.setattr(runpod, "api_key", "test-key")
    return runpod
