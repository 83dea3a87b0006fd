"""The studio-day live replay end to end: a tiny window of a day trace through the real services on the RunPod
emulator at clock factor 600, with consistent accounting and nothing left running afterwards."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from bench.daylive import replay

pytestmark = pytest.mark.e2e

# Six requests over ten emulated minutes (one real second at K=600): a burst of three, then three singles.
ROWS = [
    (0.0, "comfyui_image_qwen", "fast", "burst-1"),
    (0.0, "comfyui_image_qwen", "quality", "burst-1"),
    (0.0, "comfyui_image_qwen", "fast", "burst-1"),
    (200.0, "comfyui_image_qwen", "fast", None),
    (400.0, "comfyui_video_wan22", "preview", None),
    (600.0, "comfyui_image_qwen", "fast", None),
]
START = 36_000.0


def write_trace(path: Path) -> Path:
    header = {"trace": "tiny", "seed": 0, "description": "six requests for the live replay test", "requests": 6}
    rows = [
        {"t": START + t, "workflow": w, "preset": p, "run_s": 60.0, "video_s": None, "batch": b} for t, w, p, b in ROWS
    ]
    path.write_text("\n".join(json.dumps(r) for r in [header, *rows]) + "\n")
    return path


def processes_under(path: Path) -> list[str]:
    """Processes whose command line or working directory is under `path` (the stack's and the pods' homes)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if str(path) in cmdline or cwd.startswith(str(path)):
            found.append(f"{proc.name}: {cmdline[:200]}")
    return found


def test_a_tiny_window_replays_end_to_end_with_consistent_accounting(tmp_path: Path) -> None:
    trace = write_trace(tmp_path / "tiny.jsonl")
    result = asyncio.run(
        replay(trace, "economic", window=(START, START + 900.0), clock=600.0, tail_s=300.0, home=tmp_path / "home")
    )

    assert result["requests"] == len(ROWS) and result["statuses"] == {"completed": len(ROWS)}
    assert result["wait_s"]["n"] == len(ROWS)
    assert set(result["run_s"]) == {f"{w}:{p}" for _, w, p, _ in ROWS}
    assert 1 <= result["pods_created"] <= 5
    assert result["busy_gpu_hours"] > 0
    assert result["paid_gpu_hours"] >= result["busy_gpu_hours"], "a pod is paid for at least while it runs"
    assert 0 <= result["paid_idle_fraction"] < 1
    # The emulator's own bill (GPU and disk) is at least the GPU time the watch priced, less a sampling slack.
    assert result["billed_usd"] >= 0.95 * result["paid_usd"] > 0
    assert result["boot_s"]["create"]["n"] == result["pods_created"]
    assert result["measured_s"] >= 900.0 + 300.0 - 60.0

    assert not processes_under(tmp_path), "nothing the replay started is left running"
