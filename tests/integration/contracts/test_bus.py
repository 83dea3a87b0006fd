import asyncio
import contextlib

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from vibewave.contracts.events import (
    BUCKETS,
    REQUESTS_STREAM,
    STREAMS,
    ConsumerSpec,
    RequestEvent,
    RequestProgress,
    request_subject,
)
from vibewave.runtime.bus import Bus, decode

pytestmark = pytest.mark.integration


def progress(n: int) -> RequestProgress:
    return RequestProgress(request_id="req-1", node="3", value=n, max=4, percent=25.0 * n)


async def test_provisioning_is_idempotent(nats_url):
    first = await Bus.connect(nats_url, name="one")
    second = await Bus.connect(nats_url, name="two")
    try:
        await asyncio.gather(first.provision(), second.provision())
        await first.provision()
        names = {info.config.name for info in await first.js.streams_info()}
        assert {s.name for s in STREAMS} <= names
        assert {f"KV_{b.name}" for b in BUCKETS} <= names
        assert "OBJ_outputs" in names
    finally:
        await first.close()
        await second.close()


async def test_same_message_id_is_stored_once(nats_url):
    bus = await Bus.connect(nats_url, name="test")
    try:
        await bus.provision()
        subject = request_subject("req-1", RequestEvent.PROGRESS)
        first = await bus.publish(subject, progress(1), msg_id="dup-1")
        again = await bus.publish(subject, progress(1), msg_id="dup-1")
        assert not first.duplicate and again.duplicate
        info = await bus.js.stream_info(REQUESTS_STREAM.name)
        assert info.state.messages == 1
    finally:
        await bus.close()


async def test_failed_handler_is_redelivered_in_the_producers_trace(nats_url):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    bus = await Bus.connect(nats_url, name="test", tracer_provider=provider)
    delivered: list[int] = []
    done = asyncio.Event()

    async def handler(msg):
        delivered.append(decode(msg.data, RequestProgress).value)
        if len(delivered) == 1:
            raise RuntimeError("first delivery fails")
        done.set()

    try:
        await bus.provision()
        spec = ConsumerSpec(
            stream=REQUESTS_STREAM.name, durable="test-redelivery", filter_subjects=("vw.req.*.progress",)
        )
        bus.consume(spec, handler)
        with provider.get_tracer("test").start_as_current_span("client") as root:
            await bus.publish(request_subject("req-1", RequestEvent.PROGRESS), progress(2), msg_id="m-2")
        await asyncio.wait_for(done.wait(), 10)
    finally:
        await bus.close()
    assert delivered == [2, 2]
    consumer_spans = [s for s in exporter.get_finished_spans() if s.name == "process progress"]
    assert len(consumer_spans) == 2
    assert {s.context.trace_id for s in consumer_spans} == {root.get_span_context().trace_id}


async def test_kv_follow_survives_a_nats_restart(tmp_path):
    """nats-py's own watcher goes silent after a server restart; Bus.follow_kv reopens it."""
    from vibewave.contracts.events import PODS_BUCKET
    from vibewave.devstack.nats_server import EmbeddedNats

    server = EmbeddedNats(tmp_path / "nats")
    server.start()
    seen: dict[str, bytes | None] = {}
    changed = asyncio.Event()

    def apply(key: str, value: bytes | None) -> None:
        seen[key] = value
        changed.set()

    bus = await Bus.connect(server.url, name="test")
    try:
        await bus.provision()
        kv = await bus.kv(PODS_BUCKET)
        ready = asyncio.Event()
        follower = asyncio.create_task(bus.follow_kv(PODS_BUCKET, apply, ready))
        await asyncio.wait_for(ready.wait(), 5)
        await kv.put("before", b"1")
        async with asyncio.timeout(5):
            while "before" not in seen:
                changed.clear()
                await changed.wait()
        await asyncio.to_thread(server.restart)
        async with asyncio.timeout(15):
            while True:
                try:
                    await kv.put("after", b"2")
                    break
                except Exception:
                    await asyncio.sleep(0.2)
            while seen.get("after") != b"2":
                changed.clear()
                await changed.wait()
        follower.cancel()
    finally:
        await bus.close()
        server.stop()


async def test_a_batch_is_acked_only_after_its_step_and_handled_again_when_the_step_fails(nats_url):
    """A sequential consumer with a step: handlers run inside it; nothing is acked until it has exited,
    and a step that raises (its store failed) has its whole batch handled again."""
    bus = await Bus.connect(nats_url, name="test")
    spec = ConsumerSpec(stream=REQUESTS_STREAM.name, durable="test-batch-step", filter_subjects=("vw.req.*.progress",))
    current: list[int] | None = None
    steps: list[tuple[list[int], bool, int]] = []  # values handled, step succeeded, unacked at its end
    stored: set[int] = set()
    all_stored = asyncio.Event()

    async def handler(msg):
        assert current is not None, "handled outside a step"
        current.append(decode(msg.data, RequestProgress).value)

    @contextlib.asynccontextmanager
    async def step():
        nonlocal current
        current = []
        try:
            yield
            unacked = (await bus.js.consumer_info(REQUESTS_STREAM.name, spec.durable)).num_ack_pending
            failing = not steps
            steps.append((current, not failing, unacked))
            if failing:
                raise RuntimeError("the step's store failed")
            stored.update(current)
            if stored == {1, 2, 3}:
                all_stored.set()
        finally:
            current = None

    try:
        await bus.provision()
        for value in (1, 2, 3):
            await bus.publish(request_subject("req-1", RequestEvent.PROGRESS), progress(value), msg_id=f"b-{value}")
        bus.consume(spec, handler, step=step)
        await asyncio.wait_for(all_stored.wait(), 10)
        for _ in range(100):  # the acks follow the step: wait (bounded) until the server has them all
            if not (await bus.js.consumer_info(REQUESTS_STREAM.name, spec.durable)).num_ack_pending:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the batch was never acked")
    finally:
        await bus.close()
    failed_values, _, _ = steps[0]
    assert failed_values, "the first step handled something"
    later = [value for values, ok, _ in steps[1:] if ok for value in values]
    assert set(failed_values) <= set(later), "the failed step's batch came back"
    assert all(unacked >= len(values) for values, _, unacked in steps), "nothing acked before its step ended"


async def test_kv_snapshot_holds_each_keys_current_value(nats_url):
    from vibewave.contracts.events import PODS_BUCKET

    bus = await Bus.connect(nats_url, name="test")
    try:
        await bus.provision()
        assert await bus.kv_snapshot(PODS_BUCKET) == {}
        kv = await bus.kv(PODS_BUCKET)
        await kv.put("a", b"1")
        await kv.put("b", b"1")
        await kv.put("a", b"2")
        await kv.put("c", b"1")
        await kv.delete("c")
        assert await bus.kv_snapshot(PODS_BUCKET) == {"a": b"2", "b": b"1"}
    finally:
        await bus.close()
