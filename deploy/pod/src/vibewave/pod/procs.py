"""Child processes: every one the bootstrap starts is registered, so a SIGTERM ends them all."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

from vibewave.pod import logs
from vibewave.pod.files import Stopped

SECRETS = ("COMFY_PROXY_TOKEN", "HF_TOKEN", "VIBEWAVE_BOOTSTRAP")
"""Not passed to ComfyUI or pip: the proxy token is the proxy's alone (custom nodes would read it), and
the bootstrap archive is tens of KB nobody else needs."""


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Children:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: dict[subprocess.Popen[str], bool] = {}  # process → started in a group of its own
        self._closed = False

    def start(
        self,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        capture: bool = True,
        own_group: bool = False,
    ) -> subprocess.Popen[str]:
        """Start `command`; with `capture`, its stdout and stderr are one text pipe for the caller to read.

        `own_group`: a script that leaves children of its own (`/start.sh` ends in `sleep infinity`) gets a
        process group, so ending it ends them too.
        """
        with self._lock:
            if self._closed:
                raise Stopped
            proc = subprocess.Popen(
                list(command),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if capture else None,
                stderr=subprocess.STDOUT if capture else None,
                text=True,
                errors="replace",
                bufsize=1,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=own_group,
            )
            self._procs[proc] = own_group
            return proc

    def forget(self, proc: subprocess.Popen[str]) -> None:
        with self._lock:
            self._procs.pop(proc, None)

    def terminate(self, timeout: float = 15.0) -> None:
        """SIGTERM to every child still running, SIGKILL to those still there after `timeout`; no new ones."""
        with self._lock:
            self._closed = True
            procs = dict(self._procs)
        for proc, own_group in procs.items():
            _signal(proc, signal.SIGTERM, own_group)
        deadline = time.monotonic() + timeout
        for proc, own_group in procs.items():
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal(proc, signal.SIGKILL, own_group)
                proc.wait()
            if own_group:  # what the script left behind in its group
                _signal(proc, signal.SIGKILL, own_group)


def _signal(proc: subprocess.Popen[str], signum: int, own_group: bool) -> None:
    try:
        if own_group:
            os.killpg(proc.pid, signum)
        elif proc.poll() is None:
            proc.send_signal(signum)
    except (ProcessLookupError, PermissionError):
        pass


def pump(proc: subprocess.Popen[str], log: TextIO | None) -> None:
    """Mirror a captured child's output, line by line, to stdout and `log`, until it closes."""
    assert proc.stdout is not None
    for line in proc.stdout:
        logs.echo(line, log)


def run(
    children: Children,
    command: Sequence[str],
    *,
    log: TextIO | None,
    stop: threading.Event,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Run `command` to its end with its output mirrored; its exit code. Raises Stopped on a SIGTERM."""
    proc = children.start(command, env=env if env is not None else child_env(), cwd=cwd)
    try:
        pump(proc, log)
        code = proc.wait()
    finally:
        children.forget(proc)
    if stop.is_set():
        raise Stopped
    return code


def output(command: Sequence[str], timeout: float = 300.0) -> str | None:
    """The stripped stdout of a short command, or None when it fails (a probe: `import torch`, say)."""
    try:
        done = subprocess.run(
            list(command), capture_output=True, text=True, timeout=timeout, env=child_env(), stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None
