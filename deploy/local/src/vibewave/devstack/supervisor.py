"""Run the whole system on one machine: embedded NATS, the four services, their simulated pods.

Each service is its own process, as in production; their log lines are interleaved on the console,
labelled and made readable (the JSON stays in `<home>/logs/`). A service that dies is restarted with
backoff. Ctrl-C (or SIGTERM) stops the services, then NATS, cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from vibewave.devstack.nats_server import EmbeddedNats

SERVICES = ("scheduler", "pod-manager", "executor", "api")
COLORS = {"nats": 90, "runpod-emu": 34, "scheduler": 35, "pod-manager": 33, "executor": 36, "api": 32, "devstack": 1}
LEVEL_COLORS = {"WARNING": 33, "ERROR": 31, "CRITICAL": 31}


@dataclass(frozen=True)
class StackSettings:
    home: Path  # VIBEWAVE_HOME
    nats_url: str | None  # NATS_URL: use this server instead of starting one
    nats_port: int  # NATS_PORT: the embedded server's port
    api_port: int  # API_PORT
    raw_logs: bool  # VIBEWAVE_RAW_LOGS=1: print the services' JSON lines as they are
    color: bool
    runpod_emulator: bool  # RUNPOD_EMULATOR=1: pods come from the RunPod emulator instead of local processes
    emulator_port: int  # RUNPOD_EMULATOR_PORT

    @classmethod
    def from_env(cls) -> StackSettings:
        return cls(
            home=Path(os.environ.get("VIBEWAVE_HOME", ".vibewave")).absolute(),
            nats_url=os.environ.get("NATS_URL") or None,
            nats_port=int(os.environ.get("NATS_PORT", "4222")),
            api_port=int(os.environ.get("API_PORT", "8000")),
            raw_logs=os.environ.get("VIBEWAVE_RAW_LOGS", "") in {"1", "true"},
            color=sys.stdout.isatty() and "NO_COLOR" not in os.environ,
            runpod_emulator=os.environ.get("RUNPOD_EMULATOR", "") in {"1", "true"},
            emulator_port=int(os.environ.get("RUNPOD_EMULATOR_PORT", "8765")),
        )


class Console:
    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.width = max(len(s) for s in (*SERVICES, "devstack", "runpod-emu"))

    def line(self, label: str, text: str) -> None:
        if not self.settings.raw_logs:
            text = self._readable(text)
        tag = label.ljust(self.width)
        if self.settings.color:
            tag = f"\033[{COLORS.get(label, 0)}m{tag}\033[0m"
        print(f"{tag} | {text}", flush=True)

    def _readable(self, text: str) -> str:
        try:
            entry = json.loads(text)
        except ValueError:
            return text
        if not isinstance(entry, dict) or "msg" not in entry:
            return text
        level = str(entry.pop("level", "INFO"))
        ts = str(entry.pop("ts", ""))[11:23]
        message = str(entry.pop("msg"))
        for key in ("service", "logger", "span_id"):
            entry.pop(key, None)
        exc = entry.pop("exc", None)
        extras = " ".join(f"{k}={v}" for k, v in entry.items())
        if self.settings.color and level in LEVEL_COLORS:
            level = f"\033[{LEVEL_COLORS[level]}m{level}\033[0m"
        out = f"{ts} {level:<7} {message}" + (f"  {extras}" if extras else "")
        return out + (f"\n{exc}" if exc else "")


class ServiceProcess:
    def __init__(self, name: str, env: dict[str, str], console: Console, module: str | None = None) -> None:
        self.name = name
        self.env = env
        self.console = console
        self.module = module or f"vibewave.{name.replace('-', '_')}"
        self.process: asyncio.subprocess.Process | None = None
        self.stopping = False

    async def run_forever(self) -> None:
        """Start the service and restart it whenever it dies, with backoff (1 s doubling to 10 s)."""
        backoff = 1.0
        while not self.stopping:
            started = time.monotonic()
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", self.module,
                env=self.env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
            await self._pump()
            code = await self.process.wait()
            if self.stopping:
                return
            if time.monotonic() - started > 30:
                backoff = 1.0
            self.console.line("devstack", f"{self.name} exited with {code}; restarting in {backoff:.0f}s")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    async def _pump(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        async for raw in self.process.stdout:
            self.console.line(self.name, raw.decode(errors="replace").rstrip())

    async def stop(self) -> None:
        self.stopping = True
        process = self.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()


async def _wait_healthy(port: int, console: Console, started: float) -> None:
    url = f"http://127.0.0.1:{port}/health"
    while True:
        try:
            status = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=2).status)
        except OSError:
            status = 0
        if status == 200:
            console.line(
                "devstack",
                f"Vibewave is ready in {time.monotonic() - started:.1f}s: http://localhost:{port} "
                f"(docs: http://localhost:{port}/docs). Ctrl-C stops everything.",
            )
            return
        await asyncio.sleep(0.25)


def emulator_process(
    settings: StackSettings, env: dict[str, str], console: Console, services: list[ServiceProcess]
) -> ServiceProcess:
    """The RunPod emulator as one more labelled process; pod-manager (alone) gets a key for it."""
    key = f"rpa_local_{secrets.token_hex(16)}"
    url = f"http://127.0.0.1:{settings.emulator_port}"
    emulator_env = {
        **env,
        "VIBEWAVE_RUNPOD_EMU_PORT": str(settings.emulator_port),
        "VIBEWAVE_RUNPOD_EMU_API_KEYS": key,
        "VIBEWAVE_RUNPOD_EMU_WORK_DIR": str(settings.home / "runpod-emulator"),
    }
    for service in services:
        if service.name == "pod-manager":
            service.env = {
                **service.env,
                "POD_PROVIDER": "runpod",
                "RUNPOD_API_KEY": key,
                "RUNPOD_API_BASE_URL": url,
                "RUNPOD_PROXY_URL_TEMPLATE": url + "/proxy/{pod_id}-{port}",
            }
    console.line("devstack", f"pods come from the RunPod emulator at {url}")
    return ServiceProcess("runpod-emu", emulator_env, console, module="vibewave.runpod_emu")


async def run_stack(settings: StackSettings) -> None:
    started = time.monotonic()
    console = Console(settings)
    nats: EmbeddedNats | None = None
    nats_url = settings.nats_url
    if nats_url is None:
        nats = EmbeddedNats(settings.home / "nats", port=settings.nats_port)
        nats_url = await asyncio.to_thread(nats.start)
        console.line("nats", f"embedded nats-server with JetStream at {nats_url} (store {settings.home / 'nats'})")
    env = {**os.environ, "NATS_URL": nats_url, "VIBEWAVE_HOME": str(settings.home), "API_PORT": str(settings.api_port)}
    services = [ServiceProcess(name, env, console) for name in SERVICES]
    if settings.runpod_emulator:
        services.insert(0, emulator_process(settings, env, console, services))
    tasks = [asyncio.create_task(s.run_forever()) for s in services]
    ready = asyncio.create_task(_wait_healthy(settings.api_port, console, started))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        console.line("devstack", "stopping services…")
        ready.cancel()
        for service in reversed(services):  # the api first: no new requests while the rest stop
            await service.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if nats is not None:
            await asyncio.to_thread(nats.stop)
            console.line("nats", "stopped")
        console.line("devstack", "all stopped")
