"""Fault switches and the command line: validation, shorthands, counting down, flags vs environment."""

from __future__ import annotations

import pytest

from vibewave.runpod_emu.__main__ import config_from_args
from vibewave.runpod_emu.faults import Fault, Faults

pytestmark = pytest.mark.unit


def test_fault_shorthands_and_countdown() -> None:
    faults = Faults()
    faults.update({"capacity": 2, "host_busy": True, "never_ready": {"times": 1}, "latency": 0.5})
    assert faults.capacity == Fault(times=2)
    assert faults.host_busy == Fault()
    assert faults.never_ready is not None and faults.never_ready.mode == "no_comfyui"
    assert faults.fire("capacity") and faults.fire("capacity") and not faults.fire("capacity")
    faults.update({"capacity": None})
    assert faults.to_json()["capacity"] is None and faults.to_json()["latency"] == 0.5


def test_fault_filters() -> None:
    fault = Fault(operations=["podResume"], gpu_types=["A"], pod_ids=["p"])
    assert fault.matches("podResume", "A", "p")
    assert not fault.matches("podStop", "A", "p")
    assert not fault.matches("podResume", "B", "p")
    assert not fault.matches("podResume", "A", "q")


@pytest.mark.parametrize(
    "update",
    [
        {"nope": 1},
        {"latency": -1},
        {"capacity": "x"},
        {"capacity": {"bogus": 1}},
        {"capacity": {"gpu_types": "one"}},
        {"capacity": {"mode": "hang"}},
        {"never_ready": {"mode": "sometimes"}},
        {"rate_limit": {"retry_after": -1}},
        {"rate_limit": {"retry_after": 1.5}},
        {"capacity": {"retry_after": 2}},
        {"sim_env": {"A": 1}},
    ],
)
def test_bad_updates_change_nothing(update: dict[str, object]) -> None:
    faults = Faults()
    before = faults.to_json()
    with pytest.raises(ValueError):
        faults.update({"latency": 2, **update})
    assert faults.to_json() == before


def test_cli_flags_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIBEWAVE_RUNPOD_EMU_BOOT_DELAY", "7")
    monkeypatch.setenv("VIBEWAVE_RUNPOD_EMU_API_KEYS", "k1,k2")
    config, level = config_from_args(
        [
            "--port",
            "0",
            "--boot-delay",
            "1.5",
            "--capacity-error",
            "2",
            "--capacity-gpu-types",
            "NVIDIA GeForce RTX 4090",
            "--internal-error",
            "always",
            "--internal-error-after-action",
            "--never-ready",
            "hang",
            "--balance",
            "3.5",
            "--comfyui-args",
            "--node-time 0.1",
            "--faults",
            '{"cloudflare_403": 1}',
        ]
    )
    assert config.faults.boot_delay == 1.5 and config.api_keys == ["k1", "k2"] and level == "INFO"
    assert config.faults.capacity == Fault(times=2, gpu_types=["NVIDIA GeForce RTX 4090"])
    assert config.faults.internal_error == Fault(times=None, after_action=True)
    assert config.faults.never_ready is not None and config.faults.never_ready.mode == "hang"
    assert config.faults.cloudflare_403 == Fault(times=1)
    assert config.seed.account["clientBalance"] == 3.5
    assert config.comfyui_args == ["--node-time", "0.1"]
    default, _ = config_from_args([])
    assert default.faults.boot_delay == 7 and default.port == 8765 and default.faults.capacity is None


def test_rate_limit_switch_and_flags() -> None:
    faults = Faults()
    faults.update({"rate_limit": 2})
    assert faults.rate_limit == Fault(times=2, retry_after=1)
    faults.update({"rate_limit": {"operations": ["rest:createPod"], "retry_after": 0}})
    assert faults.to_json()["rate_limit"]["retry_after"] == 0
    flags = ["--rate-limit", "always", "--rate-limit-per-minute", "30", "--rest-status-mode", "spec"]
    config, _ = config_from_args([*flags, "--rest-omitted-gpu-count-capacity"])
    assert config.faults.rate_limit == Fault(times=None, retry_after=1)
    assert config.rate_limit_per_minute == 30 and config.rest_status_mode == "spec"
    assert config.rest_omitted_gpu_count_capacity
    default, _ = config_from_args([])
    assert (default.rate_limit_per_minute, default.rest_status_mode) == (0, "live")
    for bad in (["--rest-status-mode", "eventually"], ["--rate-limit-per-minute", "-1"]):
        with pytest.raises(SystemExit):
            config_from_args(bad)
