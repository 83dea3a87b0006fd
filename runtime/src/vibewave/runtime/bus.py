"""The one way Vibewave processes use NATS: provision what `events` declares, publish, consume.

Publishing adds `Nats-Msg-Id` (JetStream dedupe, so a retried publish is harmless) and W3C trace
context; consuming restores that context around the handler, so one request is one trace across
services. A consumer acks after its handler returns, naks with backoff when it raises, and keeps a long
handler's message alive with progress acks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any, TypeVar

import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    PubAck,
)
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, TracerProvider

from vibewave.contracts.events import (
    BUCKETS,
    OBJECT_STORES,
    STREAMS,
    BucketSpec,
    ConsumerSpec,
    ObjectStoreSpec,
)
from vibewave.runtime.telemetry import records_spans

log = logging.getLogger("vibewave.contracts.bus")

T = TypeVar("T")
MessageHandler = Callable[[Msg], Awaitable[None]]
BatchStep = Callable[[], AbstractAsyncContextManager[None]]

_encoder = msgspec.json.Encoder()
SEQUENTIAL_BATCH = 64  # what a sequential consumer fetches at once (handled in order; acked after each, or its step)
_TRANSIENT = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.js.errors.ServiceUnavailableError,
)


def encode(message: msgspec.Struct) -> bytes:
    return _encoder.encode(message)


def decode(data: bytes, type_: type[T]) -> T:
    return msgspec.json.decode(data, type=type_)


def operation(subject: str) -> str:
    """A low-cardinality span name part: `vw.req.<id>.completed` → `completed`, `vw.dispatch.<pod>` → `dispatch`."""
    parts = subject.split(".")
    if len(parts) == 4 and parts[1] in ("req", "pod"):
        return parts[3] if parts[1] == "req" else f"pod {parts[3]}"
    if len(parts) >= 2 and parts[1] == "dispatch":
        return "dispatch"
    return subject


def trace_headers() -> dict[str, str]:
    """W3C trace context of the current span, as message headers."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


class _ConnectionLog:
    """Logs connection trouble, except the disconnect our own close causes, and tells listeners of
    each reconnect (a KV watch does not survive a NATS restart and must be opened again)."""

    def __init__(self) -> None:
        self.closing = False
        self.listeners: list[asyncio.Event] = []

    async def error(self, exc: Exception) -> None:
        if not self.closing:
            log.warning("nats connection error: %s", exc)

    async def disconnected(self) -> None:
        if not self.closing:
            log.warning("nats disconnected; reconnecting")

    async def reconnected(self) -> None:
        log.info("nats reconnected")
        for listener in self.listeners:
            listener.set()


class Bus:
    """A NATS connection with JetStream, shared by one service's handlers."""

    def __init__(
        self,
        nc: NATS,
        name: str,
        tracer_provider: TracerProvider | None = None,
        connection_log: _ConnectionLog | None = None,
    ) -> None:
        self.nc = nc
        self._connection_log = connection_log or _ConnectionLog()
        self.js: JetStreamContext = nc.jetstream()
        self.tracer = trace.get_tracer(f"vibewave.{name}", tracer_provider=tracer_provider)
        self.recording = records_spans(tracer_provider)
        self._kv: dict[str, KeyValue] = {}
        self._stores: dict[str, ObjectStore] = {}
        self._consumers: list[Consumer] = []

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        name: str,
        tracer_provider: TracerProvider | None = None,
        connect_timeout: float = 10,
    ) -> Bus:
        """Connect, retrying until `connect_timeout`; afterwards reconnect forever (NATS may restart)."""

        events = _ConnectionLog()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + connect_timeout
        while True:
            try:
                nc = await nats.connect(
                    servers=[url],
                    name=name,
                    connect_timeout=2,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    error_cb=events.error,
                    disconnected_cb=events.disconnected,
                    reconnected_cb=events.reconnected,
                )
                return cls(nc, name, tracer_provider, events)
            except (OSError, nats.errors.Error) as exc:
                if loop.time() >= deadline:
                    raise ConnectionError(f"cannot reach NATS at {url}: {exc}") from exc
                await asyncio.sleep(0.2)

    # ------------------------------------------------------------------------------------ provisioning

    async def provision(self, replicas: int = 1) -> None:
        """Create or update every stream, bucket and object store of the contract (idempotent)."""
        from vibewave.contracts.events import DEFAULT_RETENTION_S
        from vibewave.runtime.broker import ensure_kv, ensure_object_store, ensure_stream

        for stream in STREAMS:
            await ensure_stream(self.js, stream, replicas, DEFAULT_RETENTION_S)
        for bucket in BUCKETS:
            self._kv[bucket.name] = await ensure_kv(self.js, bucket, replicas, DEFAULT_RETENTION_S)
        for store in OBJECT_STORES:
            self._stores[store.name] = await ensure_object_store(self.js, store, replicas, DEFAULT_RETENTION_S)

    async def kv(self, spec: BucketSpec, replicas: int = 1) -> KeyValue:
        if spec.name not in self._kv:
            self._kv[spec.name] = await self.js.key_value(spec.name)
        return self._kv[spec.name]

    async def object_store(self, spec: ObjectStoreSpec, replicas: int = 1) -> ObjectStore:
        if spec.name not in self._stores:
            self._stores[spec.name] = await self.js.object_store(spec.name)
        return self._stores[spec.name]

    # -------------------------------------------------------------------------------------- publishing

    async def publish(self, subject: str, message: msgspec.Struct, *, msg_id: str, retry_for: float = 10.0) -> PubAck:
        """Publish into a stream, retrying transient failures (safe: `msg_id` dedupes) for `retry_for` s."""
        with self.span(
            f"send {operation(subject)}",
            SpanKind.PRODUCER,
            {"messaging.system": "nats", "messaging.destination.name": subject},
        ):
            headers = {"Nats-Msg-Id": msg_id, **trace_headers()}
            payload = encode(message)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + retry_for
            while True:
                try:
                    return await self.js.publish(subject, payload, headers=headers, timeout=2)
                except _TRANSIENT:
                    if loop.time() >= deadline:
                        raise
                    await asyncio.sleep(0.25)

    def span(
        self, name: str, kind: SpanKind, attributes: dict[str, str], context: Context | None = None
    ) -> AbstractContextManager[object]:
        """A span in `context` (default: the current one) — when spans are recorded. When they are not
        (no exporter), only `context` is made current: an unrecorded span carries the same trace id, and
        making one was a tenth of a message's CPU (`make bench SCENARIO=edge`, py-spy)."""
        if self.recording:
            return self.tracer.start_as_current_span(name, context=context, kind=kind, attributes=attributes)
        return _current(context)

    async def publish_core(self, subject: str, message: msgspec.Struct) -> None:
        """Fire-and-forget core NATS publish, for periodic signals that the next one supersedes."""
        await self.nc.publish(subject, encode(message), headers=trace_headers())

    # ---------------------------------------------------------------------------------------- watching

    async def follow_kv(
        self,
        spec: BucketSpec,
        apply: Callable[[str, bytes | None], None],
        ready: asyncio.Event | None = None,
    ) -> None:
        """Apply every value of a bucket, then every change, forever (run it as a task).

        The watch is opened again after each reconnect, replaying current values: nats-py's watcher
        stays silent after a NATS restart. `apply` must therefore be idempotent; deletes arrive as None.
        """
        reconnected = asyncio.Event()
        self._connection_log.listeners.append(reconnected)
        try:
            while True:
                reconnected.clear()
                watcher = None
                try:
                    watcher = await (await self.kv(spec)).watchall()
                    while not reconnected.is_set():
                        try:
                            entry = await watcher.updates(timeout=1.0)  # type: ignore[no-untyped-call]
                        except nats.errors.TimeoutError:
                            continue
                        if entry is None:
                            if ready is not None:
                                ready.set()
                            continue
                        deleted = entry.operation in ("DEL", "PURGE")
                        apply(entry.key, None if deleted else entry.value)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("watch of %s interrupted (%s); reopening", spec.name, exc)
                    await asyncio.sleep(0.5)
                finally:
                    if watcher is not None:
                        await bounded(watcher.stop())  # type: ignore[no-untyped-call]
        finally:
            self._connection_log.listeners.remove(reconnected)

    async def kv_write_many(
        self,
        spec: BucketSpec,
        values: dict[str, bytes],
        *,
        new: set[str] | frozenset[str] = frozenset(),
        timeout: float = 10.0,
    ) -> dict[str, BaseException | None]:
        """Write several keys with one wait for all their acks, instead of one awaited round trip each.
        Keys in `new` are created (refused with `KeyWrongLastSequenceError` if they exist); the others are
        put as JetStream async publishes (no inbox request and timer each). Returns each key's failure or
        None; raises TimeoutError when the acks do not all come within `timeout` (which landed is unknown).

        Creates are not async publishes: nats-py's async-publish reply handler raises a refusal instead of
        setting it on the future, which then never completes — so a put the server refuses (rare: a stream
        fault, never a conflict) ends as the timeout."""
        kv = await self.kv(spec)
        writes: list[Awaitable[object]] = []
        for key, value in values.items():
            if key in new:
                writes.append(kv.create(key, value))
            else:
                writes.append(await self.js.publish_async(f"$KV.{spec.name}.{key}", value))
        async with asyncio.timeout(timeout):
            results = await asyncio.gather(*writes, return_exceptions=True)
        return {
            key: result if isinstance(result, BaseException) else None
            for key, result in zip(values, results, strict=True)
        }

    async def kv_snapshot(self, spec: BucketSpec, timeout: float = 30.0) -> dict[str, bytes]:
        """Every current value of a bucket, read in one pass (a watch of each key's last value) instead of
        `keys()` and then one `get` round trip per key.

        It ends at the entry the server says nothing follows (its `delta` is 0), not at nats-py's end
        marker: that marker can come first when the server has already pushed every entry and the client
        has not yet read them — `keys()` then misses keys (seen here: a restarted scheduler loading none
        of 40 pending requests)."""
        kv = await self.kv(spec)
        if not (await self.js.stream_info(f"KV_{spec.name}")).state.messages:
            return {}
        values: dict[str, bytes] = {}
        watcher = await kv.watchall()
        try:
            async with asyncio.timeout(timeout):
                while True:
                    entry = await watcher.updates(timeout=timeout)  # type: ignore[no-untyped-call]
                    if entry is None:
                        continue
                    if entry.operation in ("DEL", "PURGE"):
                        values.pop(entry.key, None)
                    else:
                        values[entry.key] = entry.value or b""
                    if entry.delta == 0:
                        return values
        finally:
            await bounded(watcher.stop())  # type: ignore[no-untyped-call]

    # -------------------------------------------------------------------------------------- consuming

    def consume(
        self,
        spec: ConsumerSpec,
        handler: MessageHandler,
        *,
        concurrency: int = 1,
        replicas: int = 1,
        step: BatchStep | None = None,
    ) -> Consumer:
        """Run `handler` on each message. A sequential consumer (concurrency 1) may pass `step`: each fetched
        batch is then handled inside one `step()` context, and its messages are acked only once that context
        has exited cleanly (nak'd if it raises) — so handlers may change state in memory and leave the step
        to store it once for the whole batch."""
        consumer = Consumer(self, spec, handler, concurrency=concurrency, replicas=replicas, step=step)
        consumer.start()
        self._consumers.append(consumer)
        return consumer

    async def close(self, step_timeout: float = 5.0) -> None:
        """Stop consumers (their pull subscriptions first, see stack notes), then drain the connection;
        each step given up after `step_timeout`, so a process's whole stop stays within its bound."""
        self._connection_log.closing = True
        for consumer in self._consumers:
            await bounded(consumer.stop(), step_timeout)
        self._consumers.clear()
        if not self.nc.is_closed:
            await bounded(self.nc.drain(), step_timeout)
            if not self.nc.is_closed:
                await bounded(self.nc.close(), step_timeout)


class Consumer:
    """A durable pull consumer running `handler` for each message, up to `concurrency` at once."""

    def __init__(
        self,
        bus: Bus,
        spec: ConsumerSpec,
        handler: MessageHandler,
        *,
        concurrency: int,
        replicas: int,
        step: BatchStep | None = None,
    ) -> None:
        if step is not None and concurrency != 1:
            raise ValueError("a batch step needs a sequential consumer (concurrency 1)")
        self.step = step
        self.bus = bus
        self.spec = spec
        self.handler = handler
        self.concurrency = concurrency
        self.replicas = replicas
        self._slots = asyncio.Semaphore(concurrency)
        self._inflight: set[asyncio.Task[bool]] = set()
        self._task: asyncio.Task[None] | None = None
        self._sub: JetStreamContext.PullSubscription | None = None
        self._stopping = False
        self._backlog = 1

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"consumer:{self.spec.durable}")

    async def ensure(self) -> None:
        config = ConsumerConfig(
            durable_name=self.spec.durable,
            deliver_policy=DeliverPolicy.NEW if self.spec.deliver_new else DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.spec.ack_wait_s,
            max_ack_pending=self.spec.max_ack_pending,
            max_deliver=self.spec.max_deliver,
            filter_subjects=list(self.spec.filter_subjects),
            num_replicas=self.replicas,
        )
        await self.bus.js.add_consumer(self.spec.stream, config)

    async def _run(self) -> None:
        backoff = 0.2
        while not self._stopping:
            try:
                if self._sub is None:
                    await self.ensure()
                    self._sub = await self.bus.js.pull_subscribe_bind(
                        durable=self.spec.durable, stream=self.spec.stream
                    )
                free = await self._wait_for_slot()
                try:
                    messages = await self._sub.fetch(free, timeout=1.0)
                except nats.errors.TimeoutError:
                    continue
                backoff = 0.2
                self._backlog = _pending_after(messages)
                if self.step is not None:
                    await self._handle_batch(messages, self.step)
                    continue
                for message in messages:
                    await self._slots.acquire()
                    if self.concurrency == 1:
                        await self._handle(message)
                    else:
                        task = asyncio.create_task(self._handle(message))
                        self._inflight.add(task)
                        task.add_done_callback(self._inflight.discard)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._stopping:
                    return
                log.warning("consumer %s: %s; retrying", self.spec.durable, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _wait_for_slot(self) -> int:
        """How many messages to fetch: the free handler slots, waiting for at least one.

        A sequential consumer (concurrency 1) handles messages in order, so it may take as many as are
        known to wait (the last message's `num_pending`, up to SEQUENTIAL_BATCH): one fetch round trip per
        batch instead of per message, which is what bounds a busy sequential consumer's rate. It asks for
        one otherwise, so an idle consumer's fetch returns with the first message that arrives."""
        await self._slots.acquire()
        self._slots.release()
        if self.concurrency == 1:
            return self._backlog
        return max(1, min(self.concurrency - len(self._inflight), 64))

    async def _handle_batch(self, messages: list[Msg], step: BatchStep) -> None:
        """Handle a batch inside one step; ack what was handled once the step has exited.

        A failed step (its store failed: NATS restarting, say) is tried again here with the same messages,
        with backoff, for up to a third of the ack wait: a nak sent to a server going down is lost, and the
        batch would otherwise wait the whole ack wait for its redelivery. Then it is nak'd."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.spec.ack_wait_s / 3
        delay = 0.25
        while True:
            handled: list[Msg] = []
            reached = 0
            try:
                async with step():
                    for message in messages:
                        reached += 1
                        await self._slots.acquire()
                        if await self._handle(message, ack=False):
                            handled.append(message)
            except Exception as exc:
                if loop.time() + delay < give_up and not self._stopping:
                    log.warning("consumer %s: a batch step failed (%s); trying it again", self.spec.durable, exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    messages = [*handled, *messages[reached:]]  # those settled by their handler stay settled
                    continue
                log.exception("consumer %s: a batch step failed; its messages will be redelivered", self.spec.durable)
                for message in [*handled, *messages[reached:]]:
                    await _quietly(message.nak(delay=0.5))
                return
            for message in handled:
                await _quietly(message.ack())
            return

    async def _handle(self, msg: Msg, *, ack: bool = True) -> bool:
        """Run the handler; ack when it returns (or leave that to the batch), nak (with backoff) when it
        raises. True if it returned, False if the message was settled here (nak'd or dropped)."""
        try:
            with self.bus.span(
                f"process {operation(msg.subject)}",
                SpanKind.CONSUMER,
                {
                    "messaging.system": "nats",
                    "messaging.destination.name": msg.subject,
                    "messaging.consumer.group.name": self.spec.durable,
                },
                context=propagate.extract(msg.headers or {}),
            ):
                # a batch's handlers only change memory; its step is bounded by the handler timeout
                keepalive = None if self.step is not None else asyncio.create_task(self._keep_alive(msg))
                try:
                    async with asyncio.timeout(None):
                        await self.handler(msg)
                except msgspec.DecodeError as exc:
                    log.error("dropping malformed message on %s: %s", msg.subject, exc)
                    await _quietly(msg.term())
                    return False
                except Exception:
                    delivered = msg.metadata.num_delivered if msg.metadata else 1
                    log.exception("handler failed on %s (delivery %d); will retry", msg.subject, delivered)
                    await _quietly(msg.nak(delay=min(0.5 * 2 ** (delivered - 1), 30)))
                    return False
                finally:
                    if keepalive is not None:
                        keepalive.cancel()
                if ack:
                    await _quietly(msg.ack())
                return True
        finally:
            self._slots.release()

    async def _keep_alive(self, msg: Msg) -> None:
        while True:
            await asyncio.sleep(self.spec.ack_wait_s / 3)
            await _quietly(msg.in_progress())

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for task in list(self._inflight):
            task.cancel()
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None


def _pending_after(messages: list[Msg]) -> int:
    """How many to fetch next: what the server said still waited after the last message (1 when none)."""
    try:
        pending = messages[-1].metadata.num_pending if messages else 0
    except Exception:
        return 1
    return max(1, min(pending or 0, SEQUENTIAL_BATCH))


@contextlib.contextmanager
def _current(context: Context | None) -> Iterator[None]:
    if context is None:
        yield
        return
    token = otel_context.attach(context)
    try:
        yield
    finally:
        otel_context.detach(token)


async def bounded(awaitable: Awaitable[Any], timeout: float = 5.0) -> None:
    """A shutdown step that may not hang the shutdown: given up after `timeout`, its errors ignored
    (a connection being closed or a server gone can leave such a step waiting for ever).

    Not `asyncio.wait_for`: on its timeout it waits for the step to finish cancelling, and a step that
    swallows or outlasts its cancellation (nats-py's drain waits out its own 30 s) then hangs the caller.
    A step given up is cancelled and left, not awaited."""
    step = asyncio.ensure_future(awaitable)
    step.add_done_callback(_forget_outcome)
    await asyncio.wait({step}, timeout=timeout)
    if not step.done():
        step.cancel()


def _forget_outcome(step: asyncio.Future[Any]) -> None:
    """A bounded step's error is ignored on purpose: retrieve it so it is not reported as never retrieved."""
    if not step.cancelled():
        step.exception()


async def _quietly(awaitable: Awaitable[Any]) -> None:
    """Ack/nak on a connection that may be reconnecting: the server redelivers if this one is lost."""
    with contextlib.suppress(Exception):
        await awaitable
