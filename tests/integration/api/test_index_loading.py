"""The api is not ready until its index has loaded: reads that need it answer 503 (never a stale
`pending`, never partial counts) while writes are accepted; and the index keeps following its buckets
after a NATS restart (its KV watches are reopened)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from vibewave.api.app import create_app
from vibewave.api.settings import ApiSettings
from vibewave.contracts.events import REQUESTS_BUCKET, RequestRecord
from vibewave.contracts.models import RequestStatus
from vibewave.devstack.nats_server import EmbeddedNats
from vibewave.runtime import broker as runtime
from vibewave.runtime.settings import CommonSettings

pytestmark = pytest.mark.integration


def running(n: int) -> RequestRecord:
    now = datetime.now(UTC)
    return RequestRecord(
        id=f"req-{n:016x}", workflow_name="comfyui_image_qwen", inputs={"prompt": f"p{n}"},
        status=RequestStatus.RUNNING, created_at=now, updated_at=now, attempts=1,
    )  # fmt: skip


async def seed(common: CommonSettings, *records: RequestRecord) -> None:
    broker = runtime.new_broker("seed", common)
    try:
        await runtime.connect(broker)
        await runtime.provision(broker, common)
        js = runtime.jetstream(broker)
        kv = await js.key_value(REQUESTS_BUCKET.name)
        values = {r.id: runtime.encode(r) for r in records}
        written = await runtime.kv_write_many(js, kv, REQUESTS_BUCKET.name, values)
        assert not [f for f in written.values() if isinstance(f, BaseException)]
    finally:
        await runtime.stop_broker(broker)


async def eventually(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Poll `condition` until true, at most `timeout` seconds: a removal from the index, a key's or an
    object's expiry raise no event of their own to wait on."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    assert condition(), what


async def test_reads_answer_503_and_health_is_not_ready_until_the_index_has_loaded(nats_url, vibewave_home):
    common = CommonSettings(nats_url=nats_url, home=vibewave_home, log_level="INFO", debug=False, replicas=1)
    known = running(1)
    await seed(common, known)
    release = asyncio.Event()
    app = create_app(ApiSettings.from_env(common), before_load=release.wait)
    async with AsyncTestClient(app) as client:
        gateway = app.state.gateway
        health = await client.get("/health")
        assert health.status_code == 503
        report = health.json()
        assert not report["api"]["healthy"] and "loading" in report["api"]["detail"] and "api" in report["unhealthy"]
        reads = [
            f"/api/qwen/status/{known.id}",
            f"/api/runpod/workflows/status/{known.id}",
            "/api/qwen/status/batch-0123456789abcdef",
            "/api/runpod/workflows/history",
            "/api/runpod/workflows/queue/status",
            "/api/runpod/stats",
        ]
        for path in reads:
            response = await client.get(path)
            assert response.status_code == 503, path
            assert "index is loading" in response.json()["detail"], path
            assert response.headers["retry-after"] == "1"
        cancel = await client.delete(f"/api/runpod/workflows/{known.id}")
        assert cancel.status_code == 503 and "index is loading" in cancel.json()["detail"]
        qwen_health = await client.get("/api/qwen/health")
        assert qwen_health.status_code == 503 and "api" in qwen_health.json()["unhealthy"]

        accepted = await client.post("/api/qwen/generate-async", json={"prompt": "while loading"})
        assert accepted.status_code == 202, "writes go to NATS: accepted while the index loads"
        queued = await client.post("/api/runpod/workflows/queue", json={"workflow_name": "comfyui_image_qwen",
                                                                         "inputs": {"prompt": "queued"}})  # fmt: skip
        assert queued.status_code == 202 and queued.json()["status"] == "pending"

        release.set()
        await asyncio.wait_for(gateway.index.loaded.wait(), 10)
        status = await client.get(f"/api/qwen/status/{known.id}")
        assert status.status_code == 200 and status.json()["status"] == "running"
        report = (await client.get("/health")).json()
        assert report["api"]["healthy"] and "api" not in report["unhealthy"]
        stats = (await client.get("/api/runpod/stats")).json()
        assert stats["running_requests"] == 1 and stats["total_requests"] == 1
        mine = await client.get(f"/api/qwen/status/{accepted.json()['request_id']}")
        assert mine.status_code == 200 and mine.json()["status"] == "pending", "from the stream: not yet recorded"
        assert gateway.follower.load_s is not None


async def test_the_index_follows_its_buckets_across_a_nats_restart(tmp_path: Path, vibewave_home):
    server = EmbeddedNats(tmp_path / "nats")
    server.start()
    common = CommonSettings(nats_url=server.url, home=vibewave_home, log_level="INFO", debug=False, replicas=1)
    first, second = running(1), running(2)
    try:
        await seed(common, first)
        app = create_app(ApiSettings.from_env(common))
        async with AsyncTestClient(app) as client:
            index = app.state.gateway.index
            await asyncio.wait_for(index.loaded.wait(), 10)
            assert index.get(first.id) is not None
            await asyncio.to_thread(server.restart)
            async with asyncio.timeout(20):  # NATS back: the seed retries until it is
                while True:
                    try:
                        await seed(common, second)
                        break
                    except Exception:  # refused, reset, timed out: all mean "not back yet"
                        await asyncio.sleep(0.2)
            assert await index.wait(second.id, lambda r: True, 15), "a value written after the restart"
            broker = runtime.new_broker("deleter", common)
            await runtime.connect(broker)
            try:
                kv = await runtime.jetstream(broker).key_value(REQUESTS_BUCKET.name)
                await kv.purge(first.id)
            finally:
                await runtime.stop_broker(broker)
            await eventually(lambda: index.get(first.id) is None, 10, "a key purged after the restart")
            response = await client.get(f"/api/qwen/status/{first.id}")
            assert response.status_code == 404
    finally:
        server.stop()
