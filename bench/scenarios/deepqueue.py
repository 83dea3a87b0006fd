"""Deep queue: 10,000 requests pending with no capacity, then capacity arrives.

Only NATS, the scheduler and the api run (no pod-manager: nothing can create capacity). The requests
are published as `submitted` events straight into the REQUESTS stream — exactly what the api publishes —
with async publishes for speed. Once the scheduler has recorded them all (the api's stats count them
pending), its RSS growth over the baseline, divided by the count, is the memory per pending request.

Capacity then arrives: the bench writes READY PodRecords into KV `pods` and a heartbeat into KV
`fleet` (as pod-manager would: the scheduler only places on pods a live pod-manager verified) and
`bench/fake_executor.py` answers each dispatch with `started` + `completed` at once, so draining
measures the scheduler's assignment rate (counted from the `assigned` events it publishes), not a GPU.
While it drains, one client reads `GET /api/qwen/status/{id}` and `GET .../history?limit=10&status=
completed` in turn, one request at a time; their latency is reported.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp

from bench import profile
from bench.common import connect, log, pick, probe, publish_submitted, submitted_event
from bench.context import Context
from bench.stack import Stack, cpu_seconds, rss_kb, wait_http, wait_until
from vibewave.contracts.events import (
    FLEET_BUCKET,
    FLEET_STATUS_KEY,
    PODS_BUCKET,
    REQ_PREFIX,
    FleetStatus,
    PodRecord,
    PodStatus,
)
from vibewave.runtime.broker import encode

BENCH_MANAGER = "bench"

WARMUP = 200


async def stats(session: aiohttp.ClientSession) -> dict[str, Any]:
    async with session.get("/api/runpod/stats") as response:
        body: dict[str, Any] = await response.json()
        return body


async def run(ctx: Context) -> dict[str, Any]:
    n, pods = ctx.deep_queue, ctx.deep_queue_pods
    stack = Stack(ctx.home("deepqueue"))
    try:
        stack.start_nats()
        stack.start_service("scheduler")
        port = stack.start_api()
        base = f"http://127.0.0.1:{port}"
        await wait_http(f"{base}/api/runpod/stats", stack=stack)
        nc = await connect(stack.nats_url)
        async with aiohttp.ClientSession(base_url=base) as session:

            async def pending_is(count: int) -> bool:
                return (await stats(session))["pending_requests"] >= count

            await publish_submitted(nc, [submitted_event(i) for i in range(WARMUP)])
            await wait_until(lambda: pending_is(WARMUP), 60, "warm-up requests recorded", interval=0.1)
            await asyncio.sleep(1.0)
            rss_before = rss_kb(stack.pid("scheduler"))
            events = [submitted_event(WARMUP + i) for i in range(n)]
            gc.collect()
            started = time.monotonic()
            await publish_submitted(nc, events)
            published = time.monotonic() - started
            await wait_until(lambda: pending_is(WARMUP + n), 300, "the queue recorded", interval=0.05)
            ingested = time.monotonic() - started
            await asyncio.sleep(1.0)
            rss_after = rss_kb(stack.pid("scheduler"))
            per_request = (rss_after - rss_before) * 1024 / n
            log(f"deepqueue: {n} pending; scheduler RSS +{rss_after - rss_before} KiB = {per_request:.0f} B/request; "
                f"ingested in {ingested:.1f}s")  # fmt: skip

            stack.spawn("fake-executor", [sys.executable, "-m", "bench.fake_executor"])
            await asyncio.sleep(1.5)
            stack.check_alive()
            assigned_at: list[float] = []

            async def on_assigned(msg: Any) -> None:
                assigned_at.append(time.monotonic())

            sub = await nc.subscribe(f"{REQ_PREFIX}.*.assigned", cb=on_assigned)
            ids = [e.request_id for e in events]
            urls = [f"/api/qwen/status/{i}" for i in pick(ids, 500)]
            history = "/api/runpod/workflows/history?limit=10&status=completed"
            drained = asyncio.Event()
            status_probe = asyncio.create_task(probe(session, urls, until=drained, pause=0.005))
            history_probe = asyncio.create_task(probe(session, [history], until=drained, pause=0.005))
            profiles = [
                profile.start(stack.pid(label), f"{ctx.profile}-deepqueue-{label}", 10)
                for label in ("scheduler", "api", "fake-executor") if ctx.profile
            ]  # fmt: skip
            kv = await nc.jetstream().key_value(PODS_BUCKET.name)
            now = datetime.now(UTC)
            beat = FleetStatus(manager=BENCH_MANAGER, provider="bench", origin="bench", heartbeat_at=now,
                               heartbeat_interval_s=3600.0, max_pods=pods)  # fmt: skip
            await (await nc.jetstream().key_value(FLEET_BUCKET.name)).put(FLEET_STATUS_KEY, encode(beat))
            cpu_before = {label: cpu_seconds(stack.pid(label)) for label in stack.processes}
            arrived = time.monotonic()
            for i in range(pods):
                pod = PodRecord(id=f"bench-{i:04d}", name=f"vibewave-{i:04d}", provider="bench", origin="bench",
                                manager=BENCH_MANAGER, status=PodStatus.READY, comfyui_url="http://127.0.0.1:9",
                                ip="127.0.0.1", created_at=now, updated_at=now, started_at=now)  # fmt: skip
                await kv.put(pod.id, encode(pod))

            async def done() -> bool:
                return (await stats(session))["completed_requests"] >= WARMUP + n

            await wait_until(done, 600, "the queue drained", interval=0.2)
            drain_s = time.monotonic() - arrived
            cpu = {label: round(cpu_seconds(stack.pid(label)) - cpu_before[label], 2) for label in cpu_before}
            for process, _ in profiles:
                process.wait()
            drained.set()
            status_latency, history_latency = await status_probe, await history_probe
            await sub.unsubscribe()
            await nc.close()
    finally:
        stack.close()
    first, last = (assigned_at[0], assigned_at[-1]) if assigned_at else (0.0, 0.0)
    rate = (len(assigned_at) - 1) / (last - first) if len(assigned_at) > 1 and last > first else 0.0
    log(f"deepqueue: {len(assigned_at)} assignments at {rate:.0f}/s; status p99 {status_latency.get('p99_ms')} ms, "
        f"history p99 {history_latency.get('p99_ms')} ms")  # fmt: skip
    return {
        "pending": n,
        "pods_arriving": pods,
        "publish_s": round(published, 2),
        "ingest_s": round(ingested, 2),
        "ingest_per_s": round(n / ingested, 1),
        "scheduler_rss_before_kib": rss_before,
        "scheduler_rss_after_kib": rss_after,
        "bytes_per_pending": round(per_request),
        "assignments": len(assigned_at),
        "assignments_per_s": round(rate, 1),
        "first_assignment_after_s": round(first - arrived, 3) if assigned_at else None,
        "drain_s": round(drain_s, 2),
        "cpu_s_while_draining": cpu,
        "status_while_draining": status_latency,
        "history_while_draining": history_latency,
        "budget": {
            "<= 2 KB per pending request": per_request <= 2048,
            ">= 1000 assignments/s": rate >= 1000,
            "status p99 <= 10 ms": status_latency.get("p99_ms", 1e9) <= 10,
        },
    }
