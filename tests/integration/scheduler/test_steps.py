"""The scheduler's steps against a real NATS: what a step changes is stored before anything is sent, a
redelivered submission never revives a finished request, and a step whose store failed is recovered by
reloading state from the store."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import nats
import nats.js.errors
import pytest

from tests.support.fleet import TEST_MANAGER, beat
from tests.support.requests import wait_for_record
from vibewave.contracts.events import (
    BUCKETS,
    FLEET_BUCKET,
    PODS_BUCKET,
    REQUESTS_BUCKET,
    REQUESTS_STREAM,
    STREAMS,
    Assignment,
    PodRecord,
    PodStatus,
    RequestEvent,
    RequestRecord,
    RequestSubmitted,
    dispatch_subject,
    request_subject,
)
from vibewave.contracts.models import RequestStatus
from vibewave.devstack.nats_server import EmbeddedNats
from vibewave.runtime import broker as runtime
from vibewave.runtime.broker import decode, encode
from vibewave.runtime.settings import CommonSettings
from vibewave.scheduler.service import SchedulerService
from vibewave.scheduler.settings import SchedulerSettings

pytestmark = pytest.mark.integration

WORKFLOW = "comfyui_image_qwen"


def settings(nats_url: str, home: Path, **changes: float) -> SchedulerSettings:
    common = CommonSettings(nats_url=nats_url, home=home, log_level="INFO", debug=False, replicas=1)
    return dataclasses.replace(SchedulerSettings.from_env(common), **changes)


def submitted(request_id: str) -> RequestSubmitted:
    return RequestSubmitted(
        request_id=request_id, workflow_name=WORKFLOW, inputs={"prompt": request_id}, created_at=datetime.now(UTC)
    )


def ready_pod(pod_id: str) -> PodRecord:
    now = datetime.now(UTC)
    return PodRecord(
        id=pod_id, name=pod_id, provider="local", status=PodStatus.READY, manager=TEST_MANAGER,
        comfyui_url="http://127.0.0.1:9", created_at=now, updated_at=now,
    )  # fmt: skip


@pytest.fixture
async def nc(nats_url: str, vibewave_home: Path) -> AsyncIterator[nats.aio.client.Client]:
    """A plain client on a provisioned NATS, with a live pod-manager heartbeat."""
    client = await nats.connect(nats_url)
    js = client.jetstream()
    common = CommonSettings(nats_url=nats_url, home=vibewave_home, log_level="INFO", debug=False, replicas=1)
    for stream in STREAMS:
        await runtime.ensure_stream(js, stream, 1, common.retention_s)
    for bucket in BUCKETS:
        await runtime.ensure_kv(js, bucket, 1, common.retention_s)
    await beat(await js.key_value(FLEET_BUCKET.name))
    yield client
    await client.close()


async def publish(nc: nats.aio.client.Client, event: RequestSubmitted, msg_id: str) -> None:
    subject = request_subject(event.request_id, RequestEvent.SUBMITTED)
    await nc.jetstream().publish(subject, encode(event), headers={"Nats-Msg-Id": msg_id})


async def test_a_redelivered_submission_never_revives_a_finished_request(nats_url, vibewave_home, nc):
    """The finished request is not in the scheduler's memory, so only the store can refuse it: the refusal
    frees the pod it had been placed on, which then takes the next request — and only that one is sent."""
    now = datetime.now(UTC)
    done = RequestRecord(
        id="req-done", workflow_name=WORKFLOW, inputs={}, status=RequestStatus.COMPLETED, created_at=now,
        updated_at=now, attempts=1,
    )  # fmt: skip
    requests = await nc.jetstream().key_value(REQUESTS_BUCKET.name)
    revision = await requests.put(done.id, encode(done))
    await (await nc.jetstream().key_value(PODS_BUCKET.name)).put("pod-1", encode(ready_pod("pod-1")))
    dispatched: asyncio.Queue[Assignment] = asyncio.Queue()

    async def on_dispatch(msg: nats.aio.msg.Msg) -> None:
        await dispatched.put(decode(msg.data, Assignment))

    await nc.subscribe(dispatch_subject("pod-1"), cb=on_dispatch)
    scheduler = SchedulerService(settings(nats_url, vibewave_home))
    await scheduler.start()
    try:
        for event in (submitted("req-done"), submitted("req-new")):
            await publish(nc, event, f"{event.request_id}.redelivered")
        first = await asyncio.wait_for(dispatched.get(), 10)
        assert first.request_id == "req-new"
        new = await wait_for_record(nats_url, "req-new", {RequestStatus.ASSIGNED}, timeout=5)
        assert new.pod_id == "pod-1"
    finally:
        await scheduler.stop()
    assert dispatched.empty()
    entry = await requests.get(done.id)
    assert entry.revision == revision, "the finished request's record was not written again"


class LogWatch(logging.Handler):
    """Counts the log lines containing `text`, and wakes a waiter at each."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.count = 0
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.count += 1
            self.seen.set()


async def test_a_step_whose_store_failed_is_recovered_from_the_store(tmp_path, vibewave_home):
    """Requests expire while NATS is down: the sweep's writes fail, so the scheduler no longer trusts its
    memory (it had already dropped them from its queue). Once NATS is back it reloads and expires them
    again: each ends failed, and its `failed` event is published."""
    logger = logging.getLogger("vibewave.scheduler")
    sweep_failed, loaded = LogWatch("timeout sweep failed"), LogWatch("open requests")
    for watch in (sweep_failed, loaded):
        logger.addHandler(watch)
    level = logger.level
    logger.setLevel(logging.INFO)
    server = EmbeddedNats(tmp_path / "nats")
    server.start()
    scheduler = SchedulerService(settings(server.url, vibewave_home, queue_ttl_s=1.0))
    ids = {f"req-ttl-{n}" for n in range(4)}
    try:
        await scheduler.start()
        client = await nats.connect(server.url)
        try:
            for request_id in ids:
                await publish(client, submitted(request_id), f"{request_id}.submitted")
            for request_id in ids:
                await wait_for_record(server.url, request_id, {RequestStatus.PENDING}, timeout=5)
        finally:
            await client.close()
        await asyncio.to_thread(server.stop)
        await asyncio.wait_for(sweep_failed.seen.wait(), 30)  # it expired them, and could not store that
        await asyncio.to_thread(server.start)
        for request_id in ids:
            record = await wait_for_record(server.url, request_id, {RequestStatus.FAILED}, timeout=30)
            assert "queue TTL" in (record.error or "")
        nc = await nats.connect(server.url)
        try:
            failed_events = await nc.jetstream().subscribe(
                "vw.req.*.failed", stream=REQUESTS_STREAM.name, ordered_consumer=True
            )
            announced: set[str] = set()
            async with asyncio.timeout(10):
                while announced != ids:
                    msg = await failed_events.next_msg(timeout=10)
                    announced.add(msg.subject.split(".")[2])
        finally:
            await nc.close()
        assert loaded.count >= 2, "loaded at start, and again after the failed step"
    finally:
        await scheduler.stop()
        server.stop()
        for watch in (sweep_failed, loaded):
            logger.removeHandler(watch)
        logger.setLevel(level)
