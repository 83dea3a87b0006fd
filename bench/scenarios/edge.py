"""Edge accept: `POST /api/qwen/generate-async` throughput and p99 at 50 connections, as a ratio of the
raw ceiling (bench/ceiling.py: decode the same body, one JetStream publish awaiting its ack) measured in
the same run with the same load generator, for 1 and 2 api workers (processes on their own ports). For
1 worker the ceiling is measured twice: as a bare app (the budget's ceiling), and with the services'
garbage-collector settings (`vibewave.runtime.heap`) to compare the two code paths on equal terms."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from typing import Any

import aiohttp

from bench import profile
from bench.common import BODY, log
from bench.context import Context
from bench.stack import Stack, cpu_seconds, free_port, wait_http

CONNECTIONS = 50


def load(ports: list[int], ctx: Context) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.loadgen", "--body", BODY, "--connections", str(CONNECTIONS),
            "--duration", str(ctx.edge_seconds), "--warmup", "2"]  # fmt: skip
    for port in ports:
        argv += ["--port", str(port)]
    out = subprocess.run(argv, check=True, capture_output=True, text=True, cwd=ctx.root, timeout=120).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


async def measure(stack: Stack, labels: list[str], ports: list[int], ctx: Context, what: str) -> dict[str, Any]:
    for port in ports:
        await wait_http(f"http://127.0.0.1:{port}/api/qwen/generate-async", ok=(405,), stack=stack)
    cpu_before = {label: cpu_seconds(stack.pid(label)) for label in stack.processes}
    profiles = [
        profile.start(stack.pid(label), f"{ctx.profile}-edge-{what.replace(' ', '-')}-{label}", ctx.edge_seconds + 1)
        for label in stack.processes
        if ctx.profile and (label in labels or label == "scheduler")
    ]
    result = load(ports, ctx)
    for process, _ in profiles:
        process.wait()
    cpu = {label: round(cpu_seconds(stack.pid(label)) - before, 2) for label, before in cpu_before.items()}
    result["cpu_s"] = cpu
    log(f"edge {what}: {result['rps']} rps, p50 {result.get('p50_ms')} ms, p99 {result.get('p99_ms')} ms, "
        f"statuses {result['statuses']}, errors {result['errors']}")  # fmt: skip
    return result


async def settle(api_port: int, timeout: float = 120) -> None:
    """Wait until the system has recorded every accepted request (the api's count stops moving)."""
    deadline = time.monotonic() + timeout
    last = -1
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            async with session.get(f"http://127.0.0.1:{api_port}/api/runpod/stats") as response:
                total = (await response.json())["total_requests"]
            if total == last:
                return
            last = total
            await asyncio.sleep(1.0)


async def run(ctx: Context) -> dict[str, Any]:
    stack = Stack(ctx.home("edge"), MAX_PODS="0", MIN_WARM_PODS="0")
    rows: list[dict[str, Any]] = []
    api_ports: list[int] = []
    try:
        stack.start_nats()
        for workers in (1, 2):
            if workers == 2:  # the scheduler is still recording the previous run's requests: let it finish
                await settle(api_ports[0])
            ceiling_labels = [f"ceiling-{i}" for i in range(workers)]
            ports = []
            for label in ceiling_labels:
                port = free_port()
                stack.spawn(label, [sys.executable, "-m", "bench.ceiling"], API_PORT=str(port))
                ports.append(port)
            ceiling = await measure(stack, ceiling_labels, ports, ctx, f"ceiling x{workers}")
            for label in ceiling_labels:
                stack.stop(label)

            row: dict[str, Any] = {"workers": workers, "ceiling": ceiling}
            if workers == 1:
                # the ceiling again with the services' collector settings (runtime.heap): the api's own
                # code path on equal terms (no budget; the budget's ratio is against the plain ceiling)
                port = free_port()
                stack.spawn("ceiling-heap", [sys.executable, "-m", "bench.ceiling"], API_PORT=str(port),
                            CEILING_HEAP="services")  # fmt: skip
                row["ceiling_heap"] = await measure(stack, ["ceiling-heap"], [port], ctx, "ceiling x1 services' heap")
                stack.stop("ceiling-heap")
                # diagnostic: the api alone (nothing consumes what it publishes), then the whole system,
                # whose scheduler records every accepted request on the same two cores
                api_ports = [stack.start_api("api-0")]
                row["api_alone"] = await measure(stack, ["api-0"], api_ports, ctx, "api x1 alone")
                for name in ("scheduler", "pod-manager", "executor"):
                    stack.start_service(name)
                await wait_http(f"http://127.0.0.1:{api_ports[0]}/health", timeout=60, stack=stack)
                await asyncio.sleep(1.0)  # let them settle: their start-up is not part of the measurement
            else:
                api_ports.append(stack.start_api("api-1"))
            row["api"] = await measure(stack, [f"api-{i}" for i in range(workers)], api_ports, ctx, f"api x{workers}")
            rows.append(row)
    finally:
        stack.close()

    one = rows[0]
    ratio = one["api"]["rps"] / one["ceiling"]["rps"] if one["ceiling"]["rps"] else 0.0
    return {
        "connections": CONNECTIONS,
        "seconds_per_run": ctx.edge_seconds,
        "rows": rows,
        "ratio_1_worker": round(ratio, 3),
        "budget": {
            "ratio >= 0.7": ratio >= 0.7,
            "p99 <= 50 ms": one["api"].get("p99_ms", 1e9) <= 50,
        },
    }
