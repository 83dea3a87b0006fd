"""History at scale: 10,000 and then 100,000 finished requests in the store.

Only NATS and the api run. Finished RequestRecords (80 % completed with a result, 15 % failed, 5 %
cancelled; realistic inputs) are written straight into KV `requests` — the scheduler's bucket, as it
would leave them — with async publishes for speed; the api's index takes them in through its KV watch.
Once the api counts them all (`/api/runpod/stats`), we report its RSS growth per request (the memory of
its index) and the latency of `GET /api/runpod/workflows/history?limit=10&status=completed`,
`GET /api/qwen/status/{id}` and `GET /api/runpod/stats`, each read one at a time by one client.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp

from bench.common import connect, finished_record, log, pick, probe, put_records
from bench.context import Context
from bench.stack import Stack, rss_kb, wait_http, wait_until


async def run(ctx: Context) -> dict[str, Any]:
    stack = Stack(ctx.home("history"))
    steps: list[dict[str, Any]] = []
    try:
        stack.start_nats()
        port = stack.start_api()
        base = f"http://127.0.0.1:{port}"
        await wait_http(f"{base}/api/runpod/stats", stack=stack)
        nc = await connect(stack.nats_url)
        now = datetime.now(UTC)
        ids: list[str] = []
        async with aiohttp.ClientSession(base_url=base) as session:

            async def total() -> int:
                async with session.get("/api/runpod/stats") as response:
                    body: dict[str, Any] = await response.json()
                    return int(body["total_requests"])

            await probe(session, ["/api/runpod/workflows/history?limit=10&status=completed"], count=200)
            rss = rss_kb(stack.pid("api"))
            for size in ctx.history_sizes:
                records = [finished_record(i, now) for i in range(len(ids), size)]
                started = time.monotonic()
                await put_records(nc, records)
                written = time.monotonic() - started
                ids.extend(r.id for r in records)

                async def indexed(size: int = size) -> bool:
                    return await total() >= size

                await wait_until(indexed, 600, f"{size} records indexed", interval=0.2)
                indexed_s = time.monotonic() - started
                await asyncio.sleep(1.0)
                rss_now = rss_kb(stack.pid("api"))
                per_request = (rss_now - rss) * 1024 / len(records)
                rss = rss_now
                sample = pick(ids, 1000)
                history = await probe(session, ["/api/runpod/workflows/history?limit=10&status=completed"],
                                      count=ctx.probes)  # fmt: skip
                status = await probe(session, [f"/api/qwen/status/{i}" for i in sample], count=ctx.probes)
                stats = await probe(session, ["/api/runpod/stats"], count=ctx.probes // 4)
                log(f"history {size}: index +{per_request:.0f} B/request, history p99 {history.get('p99_ms')} ms, "
                    f"status p99 {status.get('p99_ms')} ms")  # fmt: skip
                steps.append({
                    "requests": size,
                    "write_s": round(written, 2),
                    "indexed_s": round(indexed_s, 2),
                    "api_rss_kib": rss_now,
                    "index_bytes_per_request": round(per_request),
                    "history_limit10_completed": history,
                    "status_by_id": status,
                    "stats": stats,
                    "budget": {
                        "history p99 <= 10 ms": history.get("p99_ms", 1e9) <= 10,
                        "status p99 <= 10 ms": status.get("p99_ms", 1e9) <= 10,
                    },
                })  # fmt: skip
        await nc.close()
    finally:
        stack.close()
    budget = {f"{k} @ {s['requests']:,}": v for s in steps for k, v in s["budget"].items()}
    return {"steps": steps, "budget": budget}
