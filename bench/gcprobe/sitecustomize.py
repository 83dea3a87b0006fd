"""Time spent in the garbage collector, per process: `PYTHONPATH=bench/gcprobe make bench SCENARIO=edge`.

Every Python process started with this directory on PYTHONPATH imports this module at start-up, times
each collection through `gc.callbacks`, and every 2 s writes its totals (collections and milliseconds
per generation, objects tracked) to `$GC_PROBE_DIR/<pid>.txt` (default `/tmp/vibewave-gc-probe`). It
measured the cost `vibewave.runtime.heap` removes; it changes nothing in the process it watches.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from pathlib import Path
from typing import Any

_DIR = Path(os.environ.get("GC_PROBE_DIR", "/tmp/vibewave-gc-probe"))
_started: dict[int, float] = {}
_totals = {generation: [0, 0.0] for generation in range(3)}


def _on_collection(phase: str, info: dict[str, Any]) -> None:
    generation = info["generation"]
    if phase == "start":
        _started[generation] = time.perf_counter()
        return
    total = _totals[generation]
    total[0] += 1
    total[1] += time.perf_counter() - _started.pop(generation, time.perf_counter())


def _write() -> None:
    command = Path("/proc/self/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    lines = [command.strip()]
    lines += [f"gen{g}: {n} collections, {seconds * 1000:.1f} ms" for g, (n, seconds) in _totals.items()]
    lines.append(f"objects tracked: {len(gc.get_objects())}")
    (_DIR / f"{os.getpid()}.txt").write_text("\n".join(lines) + "\n")


def _report_every(seconds: float) -> None:
    while True:
        time.sleep(seconds)
        _write()


_DIR.mkdir(parents=True, exist_ok=True)
gc.callbacks.append(_on_collection)
threading.Thread(target=_report_every, args=(2.0,), daemon=True, name="gc-probe").start()
