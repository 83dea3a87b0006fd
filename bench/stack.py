"""Processes for a benchmark: an embedded NATS server and the real services, each its own process.

Services are started as `make run` starts them (`python -m vibewave.<service>`, configured by environment
variables), against a fresh NATS store per scenario, with WARNING logs so logging does not dominate.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from vibewave.devstack.nats_cluster import NatsCluster
from vibewave.devstack.nats_server import EmbeddedNats

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rss_kb(pid: int) -> int:
    """Resident set size of a process (Linux /proc), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise LookupError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


class Stack:
    """One scenario's NATS and service processes; `close()` stops everything it started."""

    def __init__(self, home: Path, *, cluster: bool = False, **env: str) -> None:
        """`cluster`: a local 3-node NATS cluster (R3 streams, buckets and store) instead of one server."""
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.nats: EmbeddedNats | NatsCluster = (
            NatsCluster(home / "cluster") if cluster else EmbeddedNats(home / "nats")
        )
        self.nats_url = ""
        self.env: dict[str, str] = {}
        self.extra_env = env
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.api_ports: list[int] = []

    def start_nats(self) -> str:
        self.nats_url = self.nats.start()
        self.env = {
            **os.environ,
            "NATS_URL": self.nats_url,
            "NATS_REPLICAS": "3" if isinstance(self.nats, NatsCluster) else "1",
            "VIBEWAVE_HOME": str(self.home),
            "LOG_LEVEL": "WARNING",
            "API_HOST": "127.0.0.1",
            "SIM_STEP_TIME": "0",
            "POD_PROBE_INTERVAL": "0.2",
            "SCHEDULER_DEMAND_INTERVAL": "0.2",
            "OTEL_TRACES_EXPORTER": "none",
            **self.extra_env,
        }
        return self.nats_url

    def spawn(self, label: str, argv: list[str], **env: str) -> subprocess.Popen[bytes]:
        log = (self.home / f"{label}.out").open("ab")
        process = subprocess.Popen(
            argv,
            env={**self.env, **env},
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes[label] = process
        return process

    def start_service(self, name: str, label: str | None = None, **env: str) -> subprocess.Popen[bytes]:
        return self.spawn(label or name, [sys.executable, "-m", f"vibewave.{name.replace('-', '_')}"], **env)

    def start_api(self, label: str = "api", **env: str) -> int:
        port = free_port()
        self.start_service("api", label, API_PORT=str(port), **env)
        self.api_ports.append(port)
        return port

    def pid(self, label: str) -> int:
        return self.processes[label].pid

    def stop(self, label: str) -> None:
        process = self.processes.pop(label, None)
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def check_alive(self) -> None:
        for label, process in self.processes.items():
            if process.poll() is not None:
                tail = (self.home / f"{label}.out").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{label} exited with {process.returncode}:\n{tail}")

    def close(self) -> None:
        for label in reversed(list(self.processes)):
            self.stop(label)
        self.nats.stop()


async def wait_http(url: str, timeout: float = 60, ok: tuple[int, ...] = (200,), stack: Stack | None = None) -> Any:
    """Poll a URL until it answers one of `ok`; returns the JSON body (or None)."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response:
                    if response.status in ok:
                        return await response.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError):
                pass
            if stack is not None:
                stack.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer {ok} within {timeout}s")
            await asyncio.sleep(0.1)


async def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)
