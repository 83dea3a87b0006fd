"""One emulator instance: the world, its clock ticker, and the pods' containers.

Requests and the ticker both call `sync()`, which advances the world (boot delays, billing) and hands its
events to the process layer, so lifecycle effects happen even when nobody polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from typing import Any

import aiohttp
from aiohttp import web

from vibewave.runpod_emu.api import pod_json
from vibewave.runpod_emu.config import EmuConfig
from vibewave.runpod_emu.container import ContainerFleet
from vibewave.runpod_emu.faults import NEVER_READY_MODES, Faults
from vibewave.runpod_emu.model_host import ModelHost
from vibewave.runpod_emu.state import World

log = logging.getLogger("vibewave.runpod_emu")

EMULATOR_NAME = "vibewave-runpod-emulator"


class Emulator:
    """Owns the state; handlers reach it through the aiohttp app."""

    def __init__(self, config: EmuConfig, owns_work_dir: bool = False) -> None:
        self.config = config
        self.owns_work_dir = owns_work_dir
        self.initial_faults: Faults = config.faults.copy()
        self.world = World(config, clock=time.monotonic)
        self.model_host = ModelHost.in_work_dir(config.resolve_work_dir())
        self.fleet = ContainerFleet(
            config, self._is_current, model_host=self.model_host, public_url=lambda: self.public_url
        )
        self.public_url = f"http://{config.host}:{config.port}"
        self._ticker: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None

    @property
    def faults(self) -> Faults:
        return self.config.faults

    @property
    def http(self) -> aiohttp.ClientSession:
        """Client session for the proxy (no decompression: bytes go through untouched)."""
        if self._http is None:
            self._http = aiohttp.ClientSession(
                auto_decompress=False,
                connector=aiohttp.TCPConnector(limit=0, force_close=False),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._http

    def _is_current(self, pod_id: str, generation: int) -> bool:
        pod = self.world.pods.get(pod_id)
        return pod is not None and pod.runtime_up and pod.start_count == generation

    def sync(self) -> None:
        """Advance time and start/stop pod containers accordingly (stop and restart wipe the container disk,
        terminate removes everything of the pod, deleting a network volume removes its files)."""
        self.world.advance()
        for event in self.world.drain_events():
            if event.kind == "up":
                if self.config.comfyui:
                    self.fleet.spawn(self.fleet.start(event.pod, dict(self.faults.sim_env)))
                log.info("pod %s: runtime up", event.pod_id)
            elif event.kind == "down":
                self.fleet.spawn(self.fleet.stop(event.pod_id, wipe=True))
                log.info("pod %s: stopped (%s)", event.pod_id, event.pod.last_status_change)
            elif event.kind == "restarting":
                self.fleet.spawn(self.fleet.stop(event.pod_id, wipe=True))
                log.info("pod %s: restarting in place", event.pod_id)
            else:
                self.fleet.spawn(self.fleet.stop(event.pod_id, remove=True))
                log.info("pod %s: terminated", event.pod_id)
        self.fleet.remove_volumes(self.world.drain_dropped_volumes())

    async def start(self) -> None:
        self._ticker = asyncio.create_task(self._tick(), name="runpod-emu-ticker")

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.config.tick)
            try:
                self.sync()
            except Exception:
                log.exception("emulator tick failed")

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        await self.fleet.close()
        if self._http is not None:
            await self._http.close()
        if self.owns_work_dir and self.config.work_dir is not None:
            await asyncio.to_thread(shutil.rmtree, self.config.work_dir, True)

    async def settle(self) -> None:
        """Wait until pending container starts/stops are done (tests: after reset, before asserting)."""
        while self.fleet.tasks:
            await asyncio.gather(*list(self.fleet.tasks), return_exceptions=True)

    def reset(self) -> None:
        """Back to start-up: no pods (containers killed), seeded volumes (empty again), templates and account,
        start-up faults."""
        self.config.faults = self.initial_faults.copy()
        self.world.reset(self.config.seed)
        self.sync()

    def proxy_url(self, pod_id: str, port: int | None = None) -> str:
        return f"{self.public_url}/proxy/{pod_id}-{port or self.config.comfyui_port}"

    def state_json(self) -> dict[str, Any]:
        """Everything a test may want to assert on, including what RunPod would not show (processes)."""
        self.sync()
        world = self.world
        pods = []
        for pod in world.pods.values():
            data = pod_json(world, pod)
            data["machine"].pop("gpuType", None)
            data["container"] = self.fleet.describe(pod)
            data["proxyUrl"] = self.proxy_url(pod.id)
            data["neverReady"] = pod.never_ready
            data["bootDelay"] = pod.boot_delay
            data["cloudType"] = pod.cloud_type
            data["publicIp"] = pod.machine.public_ip
            pods.append(data)
        acc = world.account
        return {
            "emulator": EMULATOR_NAME,
            "url": self.public_url,
            "workDir": str(self.config.resolve_work_dir()),
            "account": {
                "id": acc.id,
                "email": acc.email,
                "clientBalance": acc.client_balance,
                "currentSpendPerHr": world.current_spend_per_hr(),
                "spendLimit": acc.spend_limit,
                "clientLifetimeSpend": acc.lifetime_spend,
                "pubKey": acc.pub_key,
            },
            "pods": pods,
            "networkVolumes": [{**v, "dir": str(self.fleet.volume_dir(v["id"]))} for v in world.volumes.values()],
            "templates": [dict(t) for t in world.templates.values()],
            "gpuTypes": [g.to_json() for g in world.gpu_types],
            "faults": self.faults.to_json(),
            "modelHost": self.model_host.describe(),
            "billingSpeed": self.config.billing_speed,
            "calls": dict(world.calls),
            "rateLimited": world.rate_limited,
            "podsCreated": world.pods_created,
            "terminatedPodIds": list(world.terminated_pod_ids),
            "resumes": world.resumes,
            "restarts": world.restarts,
        }

    def update_account(self, data: dict[str, Any]) -> None:
        """Test hook: set the balance (e.g. near zero), spend limit or public key."""
        self.world.advance()
        acc = self.world.account
        for key in data:
            if key not in ("clientBalance", "spendLimit", "pubKey"):
                raise ValueError(f"unknown account field {key!r}")
        if "clientBalance" in data:
            acc.client_balance = _number(data["clientBalance"], "clientBalance")
        if "spendLimit" in data:
            acc.spend_limit = int(_number(data["spendLimit"], "spendLimit"))
        if "pubKey" in data:
            if data["pubKey"] is not None and not isinstance(data["pubKey"], str):
                raise ValueError("pubKey must be a string or null")
            acc.pub_key = data["pubKey"]
        self.sync()

    def update_gpu_types(self, data: dict[str, Any]) -> None:
        """Test hook: per GPU id, `available` (free GPUs, null = unlimited), `stockStatus`, prices."""
        changes: list[tuple[Any, str, Any]] = []
        fields = {
            "available": "available",
            "stockStatus": "stock_status",
            "securePrice": "secure_price",
            "communityPrice": "community_price",
        }
        for gpu_id, patch in data.items():
            gpu = self.world.gpu(gpu_id)
            if gpu is None:
                raise ValueError(f"unknown GPU type {gpu_id!r}")
            if not isinstance(patch, dict):
                raise ValueError(f"{gpu_id}: expected an object")
            for key, value in patch.items():
                if key not in fields:
                    raise ValueError(f"{gpu_id}: unknown field {key!r}")
                if key == "stockStatus":
                    if value is not None and not isinstance(value, str):
                        raise ValueError("stockStatus must be a string or null")
                elif value is not None:
                    value = _number(value, key)
                    value = int(value) if key == "available" else value
                changes.append((gpu, fields[key], value))
        for gpu, attr, value in changes:
            setattr(gpu, attr, value)

    def update_pod(self, pod_id: str, data: dict[str, Any]) -> None:
        """Test hook: `neverReady` (mode or null) and `bootDelay` of an existing pod; apply from its next boot."""
        self.world.advance()
        pod = self.world.pods.get(pod_id)
        if pod is None:
            raise KeyError(pod_id)
        for key, value in data.items():
            if key == "neverReady":
                if value is not None and value not in NEVER_READY_MODES:
                    raise ValueError(f"neverReady must be null or one of {list(NEVER_READY_MODES)}")
                pod.never_ready = value
            elif key == "bootDelay":
                pod.boot_delay = _number(value, "bootDelay")
            else:
                raise ValueError(f"unknown pod field {key!r}")
        self.sync()


EMULATOR_KEY = web.AppKey("vibewave_runpod_emu", Emulator)


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{name} must be a non-negative number")
    return float(value)
