"""`make run` as a process under test: its own home and ports, its own session (so its process group can
be signalled the way a terminal would), its output in a file, and every process of it findable by its
home in /proc. Used by `tests/e2e/test_make_run.py` and the chaos tool (`python -m tests.chaos.make_run`)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.stack import free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
# Settings of the developer's shell that would change what a test's stack does.
_INHERITED_OUT = ("NATS_URL", "NATS_USER", "NATS_PASSWORD", "NATS_PROVISION", "POD_PROVIDER", "LOCAL_COMFYUI_COMMAND",
                  "STATIC_COMFYUI_URLS")  # fmt: skip
_INHERITED_OUT_PREFIXES = ("RUNPOD_", "VIBEWAVE_", "OTEL_")


@dataclass(frozen=True)
class Ports:
    nats: int
    api: int
    emulator: int

    @classmethod
    def free(cls) -> Ports:
        return cls(free_port(), free_port(), free_port())


def processes_of(home: Path) -> dict[int, str]:
    """Live processes (pid → command line) whose VIBEWAVE_HOME is `home` or whose command line names it."""
    found: dict[int, str] = {}
    marker = f"VIBEWAVE_HOME={home}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[-1].split()[0]
        except (OSError, IndexError):
            continue
        if state == b"Z":
            continue
        if marker in environ.split(b"\0") or str(home).encode() in cmdline:
            found[int(entry)] = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
    return found


def kill_all(pids: dict[int, str]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


class MakeRun:
    """One `make run` (or `python -m vibewave.devstack`) on `home`."""

    def __init__(
        self, home: Path, *, ports: Ports | None = None, env: dict[str, str] | None = None, direct: bool = False
    ) -> None:
        self.home = home
        self.ports = ports or Ports.free()
        self.base_url = f"http://127.0.0.1:{self.ports.api}"
        self.nats_url = f"nats://127.0.0.1:{self.ports.nats}"
        inherited = {
            key: value
            for key, value in os.environ.items()
            if key not in _INHERITED_OUT and not key.startswith(_INHERITED_OUT_PREFIXES)
        }
        self.env = {
            **inherited,
            "VIBEWAVE_HOME": str(home),
            "NATS_PORT": str(self.ports.nats),
            "API_HOST": "127.0.0.1",
            "API_PORT": str(self.ports.api),
            "RUNPOD_EMULATOR_PORT": str(self.ports.emulator),
            "NO_COLOR": "1",
            "SIM_STEP_TIME": "0.01",
            "POD_PROBE_INTERVAL": "0.2",
            "SCHEDULER_DEMAND_INTERVAL": "0.2",
            "MAX_PODS": "3",
            **(env or {}),
        }
        devstack = [sys.executable, "-m", "vibewave.devstack"]
        self.command = devstack if direct else ["make", "--no-print-directory", "run"]
        self.process: subprocess.Popen[bytes] | None = None
        self.out_path = home.parent / f"{home.name}.{time.monotonic_ns()}.out"
        self.client = httpx.Client(base_url=self.base_url, timeout=10)

    def start(self) -> MakeRun:
        self.home.mkdir(parents=True, exist_ok=True)
        with self.out_path.open("ab") as out:
            self.process = subprocess.Popen(
                self.command, cwd=REPO, env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        return self

    @property
    def pgid(self) -> int:
        assert self.process is not None
        return self.process.pid  # a session leader: its pid is its process group

    def output(self) -> str:
        try:
            return self.out_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_output(self, text: str, timeout: float) -> str:
        wait_for(lambda: text in self.output(), timeout, f"{text!r} in the output of make run", interval=0.1)
        return self.output()

    def health(self) -> int:
        try:
            return self.client.get("/health").status_code
        except httpx.TransportError:
            return 0

    def wait_healthy(self, timeout: float = 60) -> None:
        def healthy() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"make run exited with {self.process.returncode}:\n{self.output()[-3000:]}")
            return self.health() == 200

        wait_for(healthy, timeout, "a healthy stack", interval=0.2)

    def signal_group(self, sig: signal.Signals) -> None:
        os.killpg(self.pgid, sig)

    def wait_exit(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def child_pids(self) -> dict[str, int]:
        """name → pid from `<home>/devstack.pids` (devstack, nats-server, the services)."""
        pids: dict[str, int] = {}
        with contextlib.suppress(OSError):
            for line in (self.home / "devstack.pids").read_text().splitlines():
                pid, _, name = line.partition(" ")
                if pid.isdigit():
                    pids[name] = int(pid)
        return pids

    def processes(self) -> dict[int, str]:
        return processes_of(self.home)

    def wait_no_processes(self, timeout: float) -> None:
        wait_for(lambda: not self.processes(), timeout, f"no process of the run on {self.home}", interval=0.2)

    def submit(self, body: dict[str, Any] | None = None, key: str | None = None) -> str:
        headers = {"Idempotency-Key": key} if key else {}
        response = self.client.post("/api/qwen/generate-async", json=body or {"prompt": "make run"}, headers=headers)
        assert response.status_code == 202, response.text
        request_id: str = response.json()["request_id"]
        return request_id

    def wait_completed(self, request_id: str, timeout: float = 60) -> dict[str, Any]:
        def terminal() -> dict[str, Any] | None:
            body: dict[str, Any] = self.client.get(f"/api/qwen/status/{request_id}").json()
            return body if body.get("status") in {"completed", "failed", "cancelled"} else None

        body: dict[str, Any] = wait_for(terminal, timeout, f"request {request_id} to end", interval=0.1)
        assert body["status"] == "completed", body
        return body

    def close(self) -> None:
        """Stop it (Ctrl-C, bounded) if it still runs, and SIGKILL anything of this home that is left."""
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                self.signal_group(signal.SIGINT)
            try:
                self.wait_exit(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.signal_group(signal.SIGKILL)
                self.wait_exit(10)
        kill_all(self.processes())
        self.client.close()
