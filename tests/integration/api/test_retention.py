"""VIBEWAVE_RETENTION end to end for the api, with a 2 s retention: a finished request recorded with the
retention as its TTL (as the scheduler writes it) leaves KV `requests` and the api's index, and its output
file leaves the object store, once the retention has passed; an unfinished one stays."""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime, timedelta

import msgspec
import nats.js.errors
import pytest
from litestar.testing import AsyncTestClient
from nats.js import JetStreamContext

from tests.integration.api.test_index_loading import eventually, running
from vibewave.api.app import create_app
from vibewave.api.settings import ApiSettings
from vibewave.contracts.events import OUTPUTS_STORE, REQUESTS_BUCKET
from vibewave.contracts.models import RequestStatus, WorkflowResult
from vibewave.runtime import broker as runtime
from vibewave.runtime.settings import CommonSettings

pytestmark = pytest.mark.integration

RETENTION_S = 2.0


async def expired_in_kv(js: JetStreamContext, key: str) -> bool:
    """The key's last message is the server's expiry marker (or nothing at all, once the marker's own
    TTL has passed). Not `KeyValue.get`: nats-py reads the marker (header `Nats-Marker-Reason`, not
    `KV-Operation`) as an entry with an empty value instead of raising KeyNotFoundError."""
    try:
        last = await js.get_last_msg(f"KV_{REQUESTS_BUCKET.name}", f"$KV.{REQUESTS_BUCKET.name}.{key}")
    except nats.js.errors.NotFoundError:
        return True
    return bool((last.headers or {}).get("Nats-Marker-Reason")) and not last.data


async def test_a_finished_request_and_its_file_expire_after_the_retention(nats_url, vibewave_home):
    common = CommonSettings(
        nats_url=nats_url, home=vibewave_home, log_level="INFO", debug=False, replicas=1, retention_s=RETENTION_S
    )
    writer = runtime.new_broker("scheduler-like", common)
    await runtime.connect(writer)
    try:
        await runtime.provision(writer, common)
        js = runtime.jetstream(writer)
        kv = await js.key_value(REQUESTS_BUCKET.name)
        store = await js.object_store(OUTPUTS_STORE.name)
        open_one = running(1)
        done = msgspec.structs.replace(running(2), status=RequestStatus.COMPLETED)
        done.result = WorkflowResult(success=True, files=["qwen_2_001.png"], request_id=done.id)
        # an update stamped far ahead: the index's own-clock backstop leaves it alone, so what removes it
        # here is the key's expiry (the watch's PURGE), not the backstop
        done.updated_at = datetime.now(UTC) + timedelta(hours=1)
        await store.put("qwen_2_001.png", io.BytesIO(b"\x89PNG fake"))
        values = {r.id: runtime.encode(r) for r in (open_one, done)}
        failures = await runtime.kv_write_many(js, kv, REQUESTS_BUCKET.name, values, ttls={done.id: RETENTION_S})
        assert not [f for f in failures.values() if isinstance(f, BaseException)]

        app = create_app(ApiSettings.from_env(common))
        async with AsyncTestClient(app) as client:
            index = app.state.gateway.index
            await asyncio.wait_for(index.loaded.wait(), 10)
            status = await client.get(f"/api/qwen/status/{done.id}")
            if status.status_code == 200:  # not yet expired when the index loaded
                assert status.json()["status"] == "completed"
                assert (await client.get("/api/files/qwen_2_001.png")).status_code == 200

            def expired() -> bool:
                return index.get(done.id) is None

            await eventually(expired, RETENTION_S + 10, "the finished request left the index")
            assert await expired_in_kv(js, done.id)
            assert (await client.get(f"/api/qwen/status/{done.id}")).status_code == 404
            stats = (await client.get("/api/runpod/stats")).json()
            assert stats["total_requests"] == 1 and stats["completed_requests"] == 0

            async def file_gone() -> bool:
                return (await client.get("/api/files/qwen_2_001.png")).status_code == 404

            async with asyncio.timeout(RETENTION_S + 10):
                while not await file_gone():  # noqa: ASYNC110  (an object's expiry raises no event)
                    await asyncio.sleep(0.1)
            with pytest.raises(nats.js.errors.ObjectNotFoundError):
                await store.get_info("qwen_2_001.png")

            assert index.get(open_one.id) is not None, "an unfinished request does not expire"
            assert (await kv.get(open_one.id)).value
    finally:
        await runtime.stop_broker(writer)
