"""History filters and stats stay exact with 10,000 requests in the store (seeded into KV `requests` the way
the scheduler writes it), and follow status changes."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from faststream.nats import NatsBroker
from litestar.testing import AsyncTestClient

from vibewave.api.app import create_app
from vibewave.api.settings import ApiSettings
from vibewave.contracts.events import REQUESTS_BUCKET, RequestRecord
from vibewave.contracts.models import RequestStatus, WorkflowResult
from vibewave.runtime import broker as runtime
from vibewave.runtime.broker import encode
from vibewave.runtime.settings import CommonSettings

pytestmark = pytest.mark.integration

COUNT = 10_000
T0 = datetime(2026, 11, 1, tzinfo=UTC)
WEIGHTS = {
    RequestStatus.COMPLETED: 70, RequestStatus.FAILED: 8, RequestStatus.CANCELLED: 4,
    RequestStatus.PENDING: 10, RequestStatus.RUNNING: 5, RequestStatus.ASSIGNED: 3,
}  # fmt: skip


def seeded() -> list[RequestRecord]:
    rng = random.Random(7)
    statuses = rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()), k=COUNT)
    records = []
    for n, status in enumerate(statuses):
        created = T0 + timedelta(seconds=n)
        records.append(RequestRecord(
            id=f"req-{n:016x}", workflow_name="comfyui_image_qwen", inputs={"prompt": f"p{n}", "seed": n},
            status=status, created_at=created, updated_at=created + timedelta(seconds=3), attempts=1,
            result=WorkflowResult(success=True, files=[f"qwen_{n}_001.png"]) if status == "completed" else None,
            error="boom" if status == "failed" else None,
        ))  # fmt: skip
    rng.shuffle(records)  # the KV does not hand them over in creation order
    return records


async def put_all(broker: NatsBroker, records: list[RequestRecord]) -> None:
    js = runtime.jetstream(broker)
    kv = await js.key_value(REQUESTS_BUCKET.name)
    for start in range(0, len(records), 2000):
        values = {r.id: encode(r) for r in records[start : start + 2000]}
        failures = await runtime.kv_write_many(js, kv, REQUESTS_BUCKET.name, values)
        assert not [f for f in failures.values() if isinstance(f, BaseException)]


async def test_history_and_stats_with_ten_thousand_requests(nats_url, vibewave_home):
    records = seeded()
    common = CommonSettings(nats_url=nats_url, home=vibewave_home, log_level="WARNING", debug=False, replicas=1)
    seed = runtime.new_broker("seed", common)
    app = create_app(ApiSettings.from_env(common))
    try:
        await runtime.connect(seed)
        await runtime.provision(seed, common)
        await put_all(seed, records)
        async with AsyncTestClient(app) as client:
            index = app.state.gateway.index
            await asyncio.wait_for(index.loaded.wait(), 30)
            newest_first = sorted(records, key=lambda r: r.created_at, reverse=True)

            async def check() -> None:
                for status in RequestStatus:
                    expected = [r.id for r in newest_first if r.status == status][:10]
                    response = await client.get(f"/api/runpod/workflows/history?limit=10&status={status}")
                    assert [r["id"] for r in response.json()] == expected, status
                everything = (await client.get("/api/runpod/workflows/history?limit=1000")).json()
                assert [r["id"] for r in everything] == [r.id for r in newest_first[:1000]]
                counts = Counter(str(r.status) for r in records)
                stats = (await client.get("/api/runpod/stats")).json()
                assert stats["total_requests"] == COUNT
                assert stats["completed_requests"] == counts["completed"]
                assert stats["failed_requests"] == counts["failed"]
                assert stats["cancelled_requests"] == counts["cancelled"]
                assert stats["running_requests"] == counts["running"]
                assert stats["pending_requests"] == counts["pending"] + counts["assigned"] + counts["running"]
                sample = random.Random(1).sample(records, 20)
                for record in sample:
                    body = (await client.get(f"/api/qwen/status/{record.id}")).json()
                    assert (body["id"], body["status"]) == (record.id, record.status)

            await check()
            # Requests move on: 500 pending ones complete; the index follows.
            moved = [r for r in records if r.status == RequestStatus.PENDING][:500]
            for record in moved:
                record.status = RequestStatus.COMPLETED
                record.result = WorkflowResult(success=True, files=[f"qwen_{record.inputs['seed']}_001.png"])
            await put_all(seed, moved)
            for record in moved:
                assert await index.wait(record.id, lambda r: r.status == RequestStatus.COMPLETED, 10)
            await check()
    finally:
        await runtime.stop_broker(seed)
