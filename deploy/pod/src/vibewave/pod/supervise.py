"""Long-running children (ComfyUI, the token proxy): started, watched until they answer, restarted.

A child that exits is started again after a delay that doubles up to MAX_BACKOFF and goes back to one
second once a run has lasted STABLE seconds, so a crash loop costs little and a rare crash is quick.
"""

from __future__ import annotations

import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TextIO

from vibewave.pod import logs, procs
from vibewave.pod.files import Stopped

MAX_BACKOFF = 30.0
STABLE = 60.0

OnChange = Callable[[bool, int, "int | None"], None]
"""`(up, restarts, pid)` whenever one of them changes."""


def http_probe(url: str, expect: int = 200) -> Callable[[], bool]:
    """True once `url` answers `expect`: ComfyUI's `/system_stats` → 200; the proxy without a token → 401."""

    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == expect)
        except urllib.error.HTTPError as e:
            e.close()
            return e.code == expect
        except OSError:
            return False

    return probe


class Service:
    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path | None,
        log_path: Path,
        children: procs.Children,
        stop: threading.Event,
        probe: Callable[[], bool],
        on_change: OnChange,
    ) -> None:
        self.name = name
        self.command = list(command)
        self.env = dict(env)
        self.cwd = cwd
        self.log_path = log_path
        self.children = children
        self.stop = stop
        self.probe = probe
        self.on_change = on_change
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        restarts, delay = 0, 1.0
        with self.log_path.open("a", encoding="utf-8") as log:
            while not self.stop.is_set():
                try:
                    proc = self.children.start(self.command, env=self.env, cwd=self.cwd)
                except Stopped:
                    return
                except OSError as e:
                    logs.say(f"cannot start {self.name}: {e}")
                    code: int | None = None
                else:
                    started = time.monotonic()
                    code = self._watch(proc, restarts, log)
                    if time.monotonic() - started > STABLE:
                        delay = 1.0
                if self.stop.is_set():
                    return
                restarts += 1
                self.on_change(False, restarts, None)
                logs.say(f"{self.name} exited (code {code}); starting it again in {delay:.0f} s (restart {restarts})")
                if self.stop.wait(delay):
                    return
                delay = min(delay * 2, MAX_BACKOFF)

    def _watch(self, proc: subprocess.Popen[str], restarts: int, log: TextIO) -> int:
        started = time.monotonic()
        reader = threading.Thread(target=procs.pump, args=(proc, log), name=f"{self.name} output", daemon=True)
        reader.start()
        self.on_change(False, restarts, proc.pid)
        up = False
        try:
            while proc.poll() is None and not self.stop.is_set():
                if not up and self.probe():
                    up = True
                    logs.say(f"{self.name} is up ({time.monotonic() - started:.1f} s after its start, pid {proc.pid})")
                    self.on_change(True, restarts, proc.pid)
                self.stop.wait(1.0 if up else 0.25)
            code = proc.wait()
        finally:
            self.children.forget(proc)
        reader.join(5)
        return code
