"""Waiting on a request's recorded state through a KV watch: event-driven, bounded, no polling."""

from __future__ import annotations

import asyncio

import nats

from vibewave.contracts.events import REQUESTS_BUCKET, RequestRecord
from vibewave.runtime.broker import decode, kv_snapshot


async def wait_for_record(nats_url: str, request_id: str, statuses: set[str], timeout: float) -> RequestRecord:
    """The request's record once its status is one of `statuses` (fails after `timeout` seconds)."""
    nc = await nats.connect(nats_url.split(","))  # one server, or a cluster's comma-separated list
    try:
        kv = await nc.jetstream().key_value(REQUESTS_BUCKET.name)
        watcher = await kv.watch(request_id)
        async with asyncio.timeout(timeout):
            async for entry in watcher:
                if entry is not None and entry.value:
                    record = decode(entry.value, RequestRecord)
                    if record.status in statuses:
                        await watcher.stop()
                        return record
    finally:
        await nc.close()
    raise AssertionError(f"watch on {request_id} ended before it reached {statuses}")


async def read_bucket(nats_url: str, bucket: str) -> list[bytes]:
    """Every current value of a KV bucket, read in one pass."""
    nc = await nats.connect(nats_url.split(","))  # one server, or a cluster's comma-separated list
    try:
        js = nc.jetstream()
        return list((await kv_snapshot(js, await js.key_value(bucket), bucket)).values())
    finally:
        await nc.close()
