"""Settings of one `make bench` run (sizes and durations), and scratch space for the scenarios."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


def _float(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


@dataclass
class Context:
    root: Path = ROOT
    scratch: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="vibewave-bench-")))
    edge_seconds: float = field(default_factory=lambda: _float("BENCH_EDGE_SECONDS", 8.0))
    sequential: int = field(default_factory=lambda: _int("BENCH_SEQUENTIAL", 1000))
    deep_queue: int = field(default_factory=lambda: _int("BENCH_DEEP_QUEUE", 10_000))
    deep_queue_pods: int = field(default_factory=lambda: _int("BENCH_DEEP_QUEUE_PODS", 50))
    history_sizes: tuple[int, ...] = field(
        default_factory=lambda: tuple(int(x) for x in os.environ.get("BENCH_HISTORY_SIZES", "10000,100000").split(","))
    )
    probes: int = field(default_factory=lambda: _int("BENCH_PROBES", 2000))
    idle_timeout_s: float = field(default_factory=lambda: _float("BENCH_IDLE_TIMEOUT", 5.0))
    boot_delay_s: float = field(default_factory=lambda: _float("BENCH_BOOT_DELAY", 1.0))
    profile: str = field(default_factory=lambda: os.environ.get("BENCH_PROFILE", ""))  # a name: profile on
    state: dict[str, Any] = field(default_factory=dict)

    def home(self, scenario: str) -> Path:
        path = self.scratch / scenario
        path.mkdir(parents=True, exist_ok=True)
        return path
