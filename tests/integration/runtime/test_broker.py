"""The runtime's FastStream broker against a real NATS: provisioning, dedupe, the delivery rules
(retry, in-progress, dead letters) and trace context across a JetStream hop."""

import asyncio
import contextlib
import dataclasses
from pathlib import Path
from typing import Any

import msgspec
import pytest
from faststream import AckPolicy
from faststream.nats import KvWatch, NatsBroker, NatsMessage, PullSub
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from vibewave.contracts.events import (
    BUCKETS,
    DEAD_LETTER_STREAM,
    PODS_BUCKET,
    REQUESTS_STREAM,
    STREAMS,
    ConsumerSpec,
    DeadLetter,
    RequestEvent,
    RequestProgress,
    request_subject,
)
from vibewave.runtime import broker as runtime
from vibewave.runtime.settings import CommonSettings

pytestmark = pytest.mark.integration


def common(url: str, home: Path, **overrides: object) -> CommonSettings:
    base = CommonSettings(nats_url=url, home=home, log_level="INFO", debug=False, replicas=1)
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


def progress(n: int) -> RequestProgress:
    return RequestProgress(request_id="req-1", node="3", value=n, max=4, percent=25.0 * n)


def progress_consumer(broker: NatsBroker, spec: ConsumerSpec, batch_size: int) -> Any:
    """A durable pull subscriber on progress events, as the services declare theirs."""
    return broker.subscriber(
        "vw.req.*.progress",
        stream=runtime.stream(REQUESTS_STREAM),
        durable=spec.durable,
        config=runtime.consumer_config(spec),
        pull_sub=PullSub(batch_size=batch_size, timeout=1),
        ack_policy=AckPolicy.NACK_ON_ERROR,
    )


async def started(broker: NatsBroker, settings: CommonSettings) -> NatsBroker:
    await runtime.connect(broker)
    await runtime.provision(broker, settings)
    await broker.start()
    return broker


async def test_provisioning_is_idempotent_and_applies_the_retention(nats_url, vibewave_home):
    settings = common(nats_url, vibewave_home, retention_s=3600.0)
    first, second = runtime.new_broker("one", settings), runtime.new_broker("two", settings)
    try:
        await asyncio.gather(runtime.connect(first), runtime.connect(second))
        await asyncio.gather(runtime.provision(first, settings), runtime.provision(second, settings))
        await runtime.provision(first, common(nats_url, vibewave_home, retention_s=7200.0))
        js = runtime.jetstream(first)
        names = {info.config.name for info in await js.streams_info()}
        assert {s.name for s in STREAMS} <= names
        assert {f"KV_{b.name}" for b in BUCKETS} <= names
        assert (await js.stream_info(REQUESTS_STREAM.name)).config.max_age == 7200
        assert (await js.stream_info("OBJ_outputs")).config.max_age == 7200
        requests = (await js.stream_info("KV_requests")).config
        assert requests.allow_msg_ttl and not requests.max_age  # open requests never expire; finished ones do
    finally:
        await runtime.stop_broker(first)
        await runtime.stop_broker(second)


async def test_same_message_id_is_stored_once(nats_url, vibewave_home):
    settings = common(nats_url, vibewave_home)
    broker = await started(runtime.new_broker("test", settings), settings)
    try:
        publisher = broker.publisher("vw.req.*.progress", stream=runtime.stream(REQUESTS_STREAM))
        subject = request_subject("req-1", RequestEvent.PROGRESS)
        first = await runtime.publish(publisher, progress(1), subject=subject, msg_id="dup-1")
        again = await runtime.publish(publisher, progress(1), subject=subject, msg_id="dup-1")
        assert first is not None and again is not None
        assert not first.duplicate and again.duplicate
        assert (await runtime.jetstream(broker).stream_info(REQUESTS_STREAM.name)).state.messages == 1
    finally:
        await runtime.stop_broker(broker)


async def test_a_poison_message_lands_in_the_dead_letters_and_the_consumer_goes_on(nats_url, vibewave_home):
    """Bad payloads and handler failures are retried up to max_deliver, then dead-lettered with their
    subject, consumer, delivery count and error; the next message is handled normally."""
    spec = ConsumerSpec(
        stream=REQUESTS_STREAM.name,
        durable="poison-test",
        filter_subjects=("vw.req.*.progress",),
        max_deliver=3,
        retry_delays_s=(0.05,),
    )
    runtime.register_consumer(spec)
    settings = common(nats_url, vibewave_home)
    broker = runtime.new_broker("test", settings)
    handled: list[int] = []
    good = asyncio.Event()

    @progress_consumer(broker, spec, batch_size=8)
    async def on_progress(event: RequestProgress) -> None:
        if event.value == 2:
            raise RuntimeError("the handler cannot take value 2")
        handled.append(event.value)
        if event.value == 3:
            good.set()

    await started(broker, settings)
    try:
        js = runtime.jetstream(broker)
        await js.publish("vw.req.req-1.progress", b"{not json", headers={"Nats-Msg-Id": "bad"})
        await js.publish("vw.req.req-1.progress", runtime.encode(progress(2)), headers={"Nats-Msg-Id": "two"})
        await js.publish("vw.req.req-1.progress", runtime.encode(progress(3)), headers={"Nats-Msg-Id": "three"})
        await asyncio.wait_for(good.wait(), 10)
        letters: list[DeadLetter] = []
        sub = await js.subscribe("vw.dlq.poison-test", stream=DEAD_LETTER_STREAM.name, ordered_consumer=True)
        while len(letters) < 2:
            msg = await sub.next_msg(timeout=10)
            letters.append(msgspec.json.decode(msg.data, type=DeadLetter))
        await sub.unsubscribe()
        assert [letter.data for letter in letters] == [b"{not json", runtime.encode(progress(2))]
        assert all(letter.deliveries == 3 and letter.consumer == "poison-test" for letter in letters)
        assert all(letter.subject == "vw.req.req-1.progress" for letter in letters)
        assert "cannot take value 2" in letters[1].error
        assert handled == [3]
        info = await js.consumer_info(REQUESTS_STREAM.name, spec.durable)
        assert info.num_ack_pending == 0 and info.num_pending == 0
    finally:
        await runtime.stop_broker(broker)


async def test_a_long_handler_is_kept_alive_past_its_ack_wait(nats_url, vibewave_home):
    spec = ConsumerSpec(
        stream=REQUESTS_STREAM.name, durable="slow-test", filter_subjects=("vw.req.*.progress",), ack_wait_s=1
    )
    runtime.register_consumer(spec)
    settings = common(nats_url, vibewave_home)
    broker = runtime.new_broker("test", settings)
    deliveries: list[int] = []
    done = asyncio.Event()

    @progress_consumer(broker, spec, batch_size=1)
    async def on_progress(event: RequestProgress) -> None:
        deliveries.append(runtime.current_message().raw_message.metadata.num_delivered)
        await asyncio.sleep(3.5)  # the work itself: longer than three ack waits
        done.set()

    await started(broker, settings)
    try:
        await runtime.jetstream(broker).publish("vw.req.req-1.progress", runtime.encode(progress(1)))
        await asyncio.wait_for(done.wait(), 10)
        assert deliveries == [1]
    finally:
        await runtime.stop_broker(broker)


async def test_trace_context_travels_across_a_jetstream_hop(nats_url, vibewave_home):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = common(nats_url, vibewave_home)
    spec = ConsumerSpec(stream=REQUESTS_STREAM.name, durable="trace-test", filter_subjects=("vw.req.*.progress",))
    broker = runtime.new_broker("test", settings, provider)
    got = asyncio.Event()

    @progress_consumer(broker, spec, batch_size=1)
    async def on_progress(event: RequestProgress) -> None:
        got.set()

    await started(broker, settings)
    try:
        publisher = broker.publisher("vw.req.*.progress", stream=runtime.stream(REQUESTS_STREAM))
        tracer = provider.get_tracer("test")
        with tracer.start_as_current_span("client") as client:
            await runtime.publish(publisher, progress(1), subject="vw.req.req-1.progress", msg_id="t-1")
        await asyncio.wait_for(got.wait(), 10)
        trace_id = client.get_span_context().trace_id
        assert len({s.name for s in exporter.get_finished_spans() if s.context.trace_id == trace_id}) >= 3
    finally:
        await runtime.stop_broker(broker)


async def test_kv_watches_are_reopened_after_a_nats_restart(tmp_path, vibewave_home):
    """nats-py's KV watcher is silent for ~15 s after a server restart (until its ordered consumer
    notices); the broker's reconnect reopens it, so a change is heard within seconds."""
    from faststream.nats import KvWatch

    from vibewave.devstack.nats_server import EmbeddedNats

    server = EmbeddedNats(tmp_path / "nats")
    server.start()
    settings = common(server.url, vibewave_home)
    seen: dict[str, bytes] = {}
    changed = asyncio.Event()
    holder: list[NatsBroker] = []

    async def reopen() -> None:
        await runtime.reopen_kv_watches(holder[0])

    broker = runtime.new_broker("test", settings, on_reconnect=reopen)
    holder.append(broker)

    @broker.subscriber("*", kv_watch=KvWatch("pods", declare=False))
    async def on_pod(msg: NatsMessage) -> None:
        entry = msg.raw_message
        seen[entry.key] = entry.value
        changed.set()

    try:
        await started(broker, settings)
        kv = await runtime.jetstream(broker).key_value("pods")
        await kv.put("a", b"1")
        await asyncio.wait_for(changed.wait(), 10)
        server.restart()
        async with asyncio.timeout(8):
            while True:  # writes fail until the client has reconnected; then the reopened watch hears them
                changed.clear()
                with contextlib.suppress(Exception):
                    await kv.put("b", b"2")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), 1)
                if seen.get("b") == b"2":
                    break
    finally:
        await runtime.stop_broker(broker)
        server.stop()


async def test_a_durable_left_by_an_older_version_is_brought_to_the_contract(nats_url, vibewave_home):
    """An upgrade: the scheduler's durable from before `attempt_succeeded` existed, with no delivery limit,
    is updated in place — its filters, ack wait and max_deliver — not left as it was."""
    from nats.js.api import AckPolicy as JsAckPolicy
    from nats.js.api import ConsumerConfig

    from vibewave.contracts.events import SCHEDULER_CONSUMER

    settings = common(nats_url, vibewave_home)
    broker = runtime.new_broker("test", settings)
    try:
        await runtime.connect(broker)
        await runtime.provision(broker, settings)
        js = runtime.jetstream(broker)
        old = ConsumerConfig(durable_name="scheduler", ack_policy=JsAckPolicy.EXPLICIT, ack_wait=60,
                             filter_subjects=["vw.req.*.submitted", "vw.req.*.completed"])  # fmt: skip
        await js.add_consumer(REQUESTS_STREAM.name, old)
        await runtime.ensure_consumer(js, SCHEDULER_CONSUMER)
        config = (await js.consumer_info(REQUESTS_STREAM.name, "scheduler")).config
        assert sorted(config.filter_subjects or []) == sorted(SCHEDULER_CONSUMER.filter_subjects)
        assert config.max_deliver == SCHEDULER_CONSUMER.max_deliver
        assert config.ack_wait == SCHEDULER_CONSUMER.ack_wait_s
    finally:
        await runtime.stop_broker(broker)


async def test_a_fetch_that_times_out_the_builtin_way_does_not_end_the_pull_loop(nats_url, vibewave_home):
    """nats-py's fetch sometimes raises the builtin TimeoutError (its deadline spent before the lingering
    pull request); with `steady_pulls` the subscriber's own loop goes on, and the next message is handled."""
    spec = ConsumerSpec(stream=REQUESTS_STREAM.name, durable="steady-test", filter_subjects=("vw.req.*.progress",))
    runtime.register_consumer(spec)
    settings = common(nats_url, vibewave_home)
    broker = runtime.new_broker("test", settings)
    handled: asyncio.Queue[RequestProgress] = asyncio.Queue()
    subscriber = progress_consumer(broker, spec, batch_size=1)

    async def on_progress(event: RequestProgress) -> None:
        await handled.put(event)

    subscriber(on_progress)
    runtime.steady_pulls(subscriber)
    await started(broker, settings)
    try:
        fetch = subscriber.subscription.fetch
        timeouts = 0

        async def fetch_timing_out_once(*args: Any, **kwargs: Any) -> Any:
            nonlocal timeouts
            if timeouts == 0:
                timeouts += 1
                raise TimeoutError  # what nats-py's `_fetch_n` raises, not `nats.errors.TimeoutError`
            return await fetch(*args, **kwargs)

        subscriber.subscription.fetch = fetch_timing_out_once
        loop_task = next(iter(subscriber.tasks))
        publisher = broker.publisher("vw.req.*.progress", stream=runtime.stream(REQUESTS_STREAM))
        await runtime.publish(
            publisher, progress(2), subject=request_subject("req-1", RequestEvent.PROGRESS), msg_id="steady-1"
        )
        assert (await asyncio.wait_for(handled.get(), 10)).value == 2
        assert timeouts == 1
        assert not loop_task.done() and list(subscriber.tasks) == [loop_task]  # the same loop, never restarted
    finally:
        await runtime.stop_broker(broker)


async def test_a_kv_watch_that_cannot_reopen_at_once_is_retried_until_it_does(nats_url, vibewave_home):
    """After a reconnect on a cluster, a bucket may still be electing its leader: the first reopen fails,
    and the watch must still come back (it was left closed: the scheduler then never saw the fleet again)."""
    settings = common(nats_url, vibewave_home)
    broker = runtime.new_broker("watcher", settings)
    seen: list[str] = []
    changed = asyncio.Event()

    async def on_pod() -> None:
        seen.append((runtime.current_kv_entry().value or b"").decode())
        changed.set()

    watch = broker.subscriber("*", kv_watch=KvWatch(PODS_BUCKET.name, declare=False))
    watch(on_pod)
    try:
        await started(broker, settings)
        kv = await runtime.jetstream(broker).key_value(PODS_BUCKET.name)
        real_start, failures = watch.start, [1, 1]

        async def start_failing_twice() -> None:
            if failures:
                failures.pop()
                raise TimeoutError("the bucket is electing its leader")
            await real_start()

        watch.start = start_failing_twice  # type: ignore[method-assign]
        await asyncio.wait_for(runtime.reopen_kv_watches(broker), 10)
        assert not failures, "both failed tries were made"
        changed.clear()
        await kv.put("pod-after", b"after the reopen")
        await asyncio.wait_for(changed.wait(), 5)
        assert "after the reopen" in seen
    finally:
        await runtime.stop_broker(broker)
