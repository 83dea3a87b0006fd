"""Sampling profiles of running services with py-spy (`BENCH_PROFILE=1`): collapsed stacks written to
bench/results/profiles/, and the top frames (by inclusive share of samples) summarized for the report."""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

from bench.context import ROOT

PROFILES = ROOT / "bench" / "results" / "profiles"


def start(pid: int, name: str, seconds: float) -> tuple[subprocess.Popen[bytes], Path]:
    PROFILES.mkdir(parents=True, exist_ok=True)
    out = PROFILES / f"{name}.collapsed"
    py_spy = str(Path(__import__("sys").executable).parent / "py-spy")
    process = subprocess.Popen(
        [py_spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "200",
         "--format", "raw", "--output", str(out), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return process, out


def top(path: Path, n: int = 15) -> list[tuple[str, float]]:
    """Frames with the largest inclusive share of samples (each frame counted once per stack)."""
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        samples = int(count)
        total += samples
        for frame in set(stack.split(";")):
            inclusive[frame] += samples
    return [(frame, round(100 * c / total, 1)) for frame, c in inclusive.most_common(n)] if total else []
