"""What several scenarios share: request bodies, seeding the stores as the services would, HTTP probes."""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import aiohttp
import nats
from nats.aio.client import Client as NATS

from bench.stats import summarize
from vibewave.contracts.events import (
    REQUESTS_BUCKET,
    RequestEvent,
    RequestRecord,
    RequestSubmitted,
    request_subject,
)
from vibewave.contracts.models import DEFAULT_WORKFLOW, Priority, RequestStatus, WorkflowResult
from vibewave.contracts.workflows import WorkflowCatalog
from vibewave.runtime.broker import encode

PROMPT = "A futuristic cyberpunk cityscape at night with neon lights, rain on the streets, wide angle"
BODY = json.dumps({"prompt": PROMPT, "width": 1024, "height": 1024, "seed": 12345})


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def new_request_id() -> str:
    return f"req-{uuid4().hex[:16]}"


def submitted_event(seed: int, created_at: datetime | None = None) -> RequestSubmitted:
    """A request exactly as the api would publish it for BODY with this seed (inputs resolved)."""
    workflow = WorkflowCatalog(None)[DEFAULT_WORKFLOW]
    inputs = workflow.resolve_inputs({"prompt": PROMPT, "width": 1024, "height": 1024, "seed": seed})
    return RequestSubmitted(
        request_id=new_request_id(),
        workflow_name=workflow.name,
        inputs=inputs,
        priority=Priority.NORMAL,
        created_at=created_at or datetime.now(UTC),
        execution_timeout_s=workflow.timeout_for(None),
    )


async def publish_submitted(nc: NATS, events: list[RequestSubmitted], window: int = 2000) -> None:
    """Publish `submitted` events into the REQUESTS stream (what the api does), acks awaited in windows."""
    js = nc.jetstream()
    for start in range(0, len(events), window):
        futures = [
            await js.publish_async(
                request_subject(e.request_id, RequestEvent.SUBMITTED),
                encode(e),
                headers={"Nats-Msg-Id": f"{e.request_id}.submitted"},
            )
            for e in events[start : start + window]
        ]
        await asyncio.gather(*futures)


def finished_record(index: int, now: datetime) -> RequestRecord:
    """A finished request as the scheduler leaves it: mostly completed, some failed or cancelled."""
    event = submitted_event(index, created_at=now - timedelta(seconds=200_000 - index * 0.5))
    roll = index % 20
    status = RequestStatus.COMPLETED if roll < 16 else RequestStatus.FAILED if roll < 19 else RequestStatus.CANCELLED
    pod = f"local-{index % 7:010d}"
    result = (
        WorkflowResult(success=True, files=[f"qwen_{index}_001.png"], request_id=event.request_id, pod_id=pod,
                       pod_ip="127.0.0.1")
        if status == RequestStatus.COMPLETED else None
    )  # fmt: skip
    return RequestRecord(
        id=event.request_id,
        workflow_name=event.workflow_name,
        inputs=event.inputs,
        status=status,
        priority=Priority.NORMAL,
        created_at=event.created_at,
        updated_at=event.created_at + timedelta(seconds=3),
        pod_id=pod,
        pod_ip="127.0.0.1",
        attempts=1,
        prompt_id=str(uuid4()),
        result=result,
        error=None if status == RequestStatus.COMPLETED else "out of memory in node 3 (KSampler)",
        execution_timeout_s=event.execution_timeout_s,
        traceparent=f"00-{uuid4().hex}-{uuid4().hex[:16]}-01",
    )


async def put_records(nc: NATS, records: list[RequestRecord], window: int = 2000) -> None:
    """Write records into KV `requests` (the scheduler's bucket) with async publishes, acks awaited."""
    js = nc.jetstream()
    subject = f"$KV.{REQUESTS_BUCKET.name}."
    for start in range(0, len(records), window):
        futures = [await js.publish_async(subject + r.id, encode(r)) for r in records[start : start + window]]
        await asyncio.gather(*futures)


async def connect(url: str) -> NATS:
    return await nats.connect(url.split(","), pending_size=64 * 1024 * 1024)  # one server or a cluster


async def probe(
    session: aiohttp.ClientSession, urls: list[str], count: int | None = None, until: asyncio.Event | None = None,
    pause: float = 0.0,
) -> dict[str, Any]:  # fmt: skip
    """GET the urls in turn, one at a time, `count` times in all or until `until` is set; latency summary."""
    latencies: list[float] = []
    failures = 0
    i = 0
    while (count is None or i < count) and not (until is not None and until.is_set()):
        url = urls[i % len(urls)]
        i += 1
        started = time.perf_counter()
        async with session.get(url) as response:
            await response.read()
            if response.status != 200:
                failures += 1
        latencies.append(time.perf_counter() - started)
        if pause:
            await asyncio.sleep(pause)
    return {**summarize(latencies), "non_200": failures}


def pick(ids: list[str], n: int) -> list[str]:
    return random.Random(7).sample(ids, min(n, len(ids)))
