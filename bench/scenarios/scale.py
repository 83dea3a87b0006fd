"""Scale reaction, on RunPod-emulator pods.

The whole system runs with POD_PROVIDER=runpod against `python -m vibewave.runpod_emu` (boot delay
BENCH_BOOT_DELAY s), with no pod at the start. Between pod-manager and the emulator's GraphQL API sits a
tap (an in-bench HTTP proxy) that timestamps every mutation as it arrives: that is "a pod is requested"
(`podFindAndDeployOnDemand`) and "a pod is stopped" (`podStop`). A burst of requests is sent at once;
we report the time from the burst to the first create, and from the last request finishing (its
record's `updated_at`, stamped by the scheduler) to each idle stop, next to the configured timeouts.
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import datetime
from typing import Any

import aiohttp
from aiohttp import web

from bench.common import PROMPT, log
from bench.context import Context
from bench.stack import Stack, free_port, wait_http, wait_until

API_KEY = "bench-key"
BURST = 4
MAX_PODS = 2
DEMAND_INTERVAL = 1.0
PROBE_INTERVAL = 2.0
SYNC_INTERVAL = 5.0


class GraphQLTap:
    """Forwards everything to the emulator; notes when each pod mutation arrived (wall clock)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.events: list[tuple[float, str]] = []
        self.session: aiohttp.ClientSession | None = None

    async def forward(self, request: web.Request) -> web.Response:
        body = await request.read()
        for operation in ("podFindAndDeployOnDemand", "podStop", "podResume", "podTerminate"):
            if operation.encode() in body:
                self.events.append((time.time(), operation))
        assert self.session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with self.session.request(
            request.method, self.upstream + request.path_qs, data=body, headers=headers
        ) as response:
            payload = await response.read()
            return web.Response(body=payload, status=response.status, content_type=response.content_type)

    async def start(self, port: int) -> web.AppRunner:
        self.session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.forward)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner

    def first(self, operation: str, after: float = 0.0) -> float | None:
        return next((t for t, op in self.events if op == operation and t >= after), None)


async def run(ctx: Context) -> dict[str, Any]:
    emu_port, tap_port = free_port(), free_port()
    idle = ctx.idle_timeout_s
    env = {
        "POD_PROVIDER": "runpod",
        "RUNPOD_API_KEY": API_KEY,
        "RUNPOD_API_BASE_URL": f"http://127.0.0.1:{tap_port}",
        "RUNPOD_PROXY_URL_TEMPLATE": f"http://127.0.0.1:{emu_port}/proxy/{{pod_id}}-{{port}}",
        "POD_IDLE_TIMEOUT": str(idle),
        "POD_TERMINATE_TIMEOUT": "600",
        "POD_SYNC_INTERVAL": str(SYNC_INTERVAL),
        "POD_PROBE_INTERVAL": str(PROBE_INTERVAL),
        "SCHEDULER_DEMAND_INTERVAL": str(DEMAND_INTERVAL),
        "MAX_PODS": str(MAX_PODS),
        "MIN_WARM_PODS": "0",
    }
    stack = Stack(ctx.home("scale"), **env)
    tap = GraphQLTap(f"http://127.0.0.1:{emu_port}")
    runner = await tap.start(tap_port)
    try:
        stack.start_nats()
        stack.spawn("runpod-emu", [sys.executable, "-m", "vibewave.runpod_emu", "--port", str(emu_port),
                                   "--api-keys", API_KEY, "--boot-delay", str(ctx.boot_delay_s),
                                   "--comfyui-step-time", "0", "--work-dir", str(stack.home / "emu")])  # fmt: skip
        await wait_http(f"http://127.0.0.1:{emu_port}/", stack=stack)
        for name in ("scheduler", "pod-manager", "executor"):
            stack.start_service(name)
        port = stack.start_api()
        base = f"http://127.0.0.1:{port}"
        await wait_http(f"{base}/health", timeout=60, stack=stack)
        await asyncio.sleep(1.0)
        async with aiohttp.ClientSession(base_url=base) as session:
            burst_at = time.time()

            async def submit(i: int) -> str:
                body = {"prompt": PROMPT, "width": 1024, "height": 1024, "seed": 77 + i}
                async with session.post("/api/qwen/generate-async", json=body) as response:
                    return str((await response.json())["request_id"])

            ids = await asyncio.gather(*(submit(i) for i in range(BURST)))

            async def statuses() -> list[dict[str, Any]] | None:
                records = []
                for request_id in ids:
                    async with session.get(f"/api/qwen/status/{request_id}") as response:
                        records.append(await response.json())
                return records if all(r["status"] == "completed" for r in records) else None

            records = await wait_until(statuses, 120, "the burst to complete", interval=0.1)
            finished_at = max(datetime.fromisoformat(r["updated_at"]).timestamp() for r in records)
            first_create = tap.first("podFindAndDeployOnDemand", burst_at)

            async def stopped() -> bool:
                return sum(1 for _, op in tap.events if op == "podStop") >= len(
                    [op for _, op in tap.events if op == "podFindAndDeployOnDemand"]
                )

            await wait_until(stopped, idle + 4 * PROBE_INTERVAL + 30, "the idle stops", interval=0.1)
    finally:
        stack.close()
        await runner.cleanup()
        if tap.session is not None:
            await tap.session.close()
    creates = [t for t, op in tap.events if op == "podFindAndDeployOnDemand"]
    stops = [t for t, op in tap.events if op == "podStop"]
    reaction = (first_create - burst_at) if first_create else None
    stop_after = [round(t - finished_at, 3) for t in stops]
    log(f"scale: first create {reaction:.3f}s after the burst; stops {stop_after}s after the last finish "
        f"(idle timeout {idle}s)")  # fmt: skip
    late = max(stop_after) - idle if stop_after else None
    return {
        "burst": BURST,
        "max_pods": MAX_PODS,
        "boot_delay_s": ctx.boot_delay_s,
        "configured": {
            "SCHEDULER_DEMAND_INTERVAL": DEMAND_INTERVAL,
            "POD_PROBE_INTERVAL": PROBE_INTERVAL,
            "POD_SYNC_INTERVAL": SYNC_INTERVAL,
            "POD_IDLE_TIMEOUT": idle,
        },
        "pods_created": len(creates),
        "burst_to_first_create_s": round(reaction, 3) if reaction is not None else None,
        "creates_after_burst_s": [round(t - burst_at, 3) for t in creates],
        "burst_to_all_completed_s": round(finished_at - burst_at, 3),
        "last_finish_to_stop_s": stop_after,
        "stop_later_than_idle_timeout_s": round(late, 3) if late is not None else None,
        "budget": {
            "first create within one demand interval": reaction is not None and reaction <= DEMAND_INTERVAL,
            "idle stop within idle timeout + one probe interval": late is not None
            and -0.5 <= late <= PROBE_INTERVAL + 0.5,
        },
    }
