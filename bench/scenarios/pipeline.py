"""Dispatch overhead and end-to-end overhead, from one series of sequential requests on warm idle pods.

Each request is `POST /api/qwen/generate` (the sync call: it answers the moment the api's index holds
the finished record, i.e. when a status read would show the result). For each request we join:

* `created_at` — stamped by the api when it accepts the request (before its JetStream publish);
* the simulator's `create_time` — stamped (ms epoch) in its `POST /prompt` handler, read afterwards
  from the pod's `/history` entry (`prompt[3].create_time`);
* the simulator's `execution_success` timestamp (ms epoch, `/history` `status.messages`);
* the moment the client received the answer.

All clocks are this machine's wall clock. Legs: accept → POST /prompt = create_time - created_at;
execution_success → readable = answer - success; the simulator's own time = success - create_time;
end-to-end overhead = (answer - sent) - simulator's own time. The simulator's ms timestamps are
truncated, so the first leg reads up to 1 ms short and the second up to 1 ms long.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import aiohttp
import msgspec

from bench.common import PROMPT, connect, log
from bench.context import Context
from bench.stack import Stack, wait_http, wait_until
from bench.stats import summarize
from vibewave.contracts.events import PODS_BUCKET, PodRecord, PodStatus
from vibewave.executor.service import prompt_id_for

WARM_PODS = 2
WARMUP = 20


async def ready_pods(nats_url: str) -> list[PodRecord]:
    nc = await connect(nats_url)
    try:
        kv = await nc.jetstream().key_value(PODS_BUCKET.name)
        try:
            keys = await kv.keys()
        except Exception:
            return []
        pods = [msgspec.json.decode((await kv.get(k)).value or b"", type=PodRecord) for k in keys]
        return [p for p in pods if p.status == PodStatus.READY]
    finally:
        await nc.close()


async def run(ctx: Context) -> dict[str, Any]:
    return await measure(ctx, cluster=False)


async def measure(ctx: Context, *, cluster: bool, label: str = "pipeline") -> dict[str, Any]:
    """The series on one NATS server, or (`cluster`) on a local 3-node cluster with R3 everywhere."""
    stack = Stack(
        ctx.home(label), cluster=cluster, MAX_PODS=str(WARM_PODS), MIN_WARM_PODS=str(WARM_PODS), SIM_STEP_TIME="0"
    )
    try:
        await asyncio.to_thread(stack.start_nats)  # a cluster's start waits for JetStream with its own loop
        for name in ("scheduler", "pod-manager", "executor"):
            stack.start_service(name)
        port = stack.start_api()
        base = f"http://127.0.0.1:{port}"
        await wait_http(f"{base}/health", timeout=60, stack=stack)

        async def warm() -> list[PodRecord] | None:
            pods = await ready_pods(stack.nats_url)
            return pods if len(pods) >= WARM_PODS else None

        pods = await wait_until(warm, 60, "warm pods")
        samples: list[dict[str, Any]] = []
        async with aiohttp.ClientSession(base_url=base) as session:
            for i in range(WARMUP + ctx.sequential):
                body = {"prompt": PROMPT, "width": 1024, "height": 1024, "seed": 1_000_000 + i}
                sent = time.time()
                async with session.post("/api/qwen/generate", json=body) as response:
                    result = await response.json()
                answered = time.time()
                if response.status != 200 or not result.get("success"):
                    raise RuntimeError(f"request {i} answered {response.status}: {result}")
                if i >= WARMUP:
                    samples.append({"id": result["request_id"], "sent": sent, "answered": answered})
            log(f"pipeline: {len(samples)} sequential requests done; joining with the simulators' history")
            for sample in samples:
                async with session.get(f"/api/qwen/status/{sample['id']}") as response:
                    record = await response.json()
                created = record["created_at"].replace("Z", "+00:00")
                sample["created"] = datetime.fromisoformat(created).timestamp()
        history: dict[str, Any] = {}
        async with aiohttp.ClientSession() as session:
            for pod in pods:
                async with session.get(f"{pod.comfyui_url}/history", params={"max_items": "100000"}) as response:
                    history.update(await response.json())
    finally:
        stack.close()

    accept_to_prompt, success_to_readable, sim_own, total, overhead = [], [], [], [], []
    for sample in samples:
        entry = history.get(prompt_id_for(sample["id"], 1))
        if entry is None:
            continue
        create_time = entry["prompt"][3]["create_time"] / 1000
        success = next(m[1]["timestamp"] for m in entry["status"]["messages"] if m[0] == "execution_success") / 1000
        accept_to_prompt.append(create_time - sample["created"])
        success_to_readable.append(sample["answered"] - success)
        sim_own.append(success - create_time)
        total.append(sample["answered"] - sample["sent"])
        overhead.append(sample["answered"] - sample["sent"] - (success - create_time))
    dispatch = summarize(accept_to_prompt)
    readable = summarize(success_to_readable)
    e2e = summarize(overhead)
    return {
        "nats": "3-node cluster, R3" if cluster else "one server, R1",
        "requests": len(samples),
        "joined": len(overhead),
        "warm_pods": WARM_PODS,
        "sim_step_time_s": 0,
        "accept_to_prompt": dispatch,
        "success_to_readable": readable,
        "simulator_own": summarize(sim_own),
        "client_total": summarize(total),
        "e2e_overhead": e2e,
        "budget": {
            "accept→prompt p50 <= 10 ms": dispatch.get("p50_ms", 1e9) <= 10,
            "accept→prompt p99 <= 30 ms": dispatch.get("p99_ms", 1e9) <= 30,
            "success→readable p50 <= 10 ms": readable.get("p50_ms", 1e9) <= 10,
            "success→readable p99 <= 30 ms": readable.get("p99_ms", 1e9) <= 30,
            "e2e overhead p50 <= 20 ms": e2e.get("p50_ms", 1e9) <= 20,
        },
    }
