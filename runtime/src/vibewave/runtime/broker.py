"""Vibewave on FastStream: every service is a `NatsBroker` set up the same way.

FastStream does the bus work — connecting and reconnecting, subscribers and publishers, pull loops, ack
policies, W3C trace context (`NatsTelemetryMiddleware`), msgspec payloads (`MsgSpecSerializer`). What
remains here is what it has no notion of, each part small:

- `provision`: the streams, buckets and stores the contract declares, with the deployment's replicas and
  retention (FastStream declares a stream from a subscriber, not with our ages, TTLs and limits);
- `Deliveries`: a middleware giving every durable consumer the contract's delivery rules — in-progress
  acks while a handler works, a failure retried after the consumer's delays, and the last failure of
  `max_deliver` sent to the dead letters with its error instead of vanishing;
- `publish`: a JetStream publish with `Nats-Msg-Id`, retried over a NATS outage (the id dedupes, so a
  retry is harmless);
- `kv_snapshot` / `kv_write_many`: a whole bucket read in one pass, many keys written with one wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, TypeVar

import msgspec
import nats.errors
import nats.js.errors
from fast_depends.msgspec import MsgSpecSerializer
from faststream import BaseMiddleware
from faststream.exceptions import HandlerException
from faststream.message import StreamMessage
from faststream.nats import JStream, NatsBroker
from faststream.nats.message import NatsBatchMessage, NatsMessage
from faststream.nats.opentelemetry.provider import (
    NatsBatchTelemetrySettingsProvider,
    NatsTelemetrySettingsProvider,
    telemetry_attributes_provider_factory,
)
from faststream.nats.publisher.usecase import LogicPublisher
from faststream.nats.response import NatsPublishCommand
from faststream.nats.security import NatsUserPassword
from faststream.nats.subscriber.usecases.key_value_subscriber import KeyValueWatchSubscriber
from faststream.nats.subscriber.usecases.stream_pull_subscriber import BatchPullStreamSubscriber, PullStreamSubscriber
from faststream.opentelemetry.middleware import TelemetryMiddleware
from faststream.response.response import PublishCommand
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    Header,
    KeyValueConfig,
    ObjectStoreConfig,
    PubAck,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore
from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.trace import TracerProvider

from vibewave.contracts.events import (
    BUCKETS,
    CONSUMERS,
    OBJECT_STORES,
    STREAMS,
    BucketSpec,
    ConsumerSpec,
    DeadLetter,
    ObjectStoreSpec,
    StreamSpec,
    dead_letter_subject,
    subject_template,
    utcnow,
)
from vibewave.runtime.metrics import instruments
from vibewave.runtime.settings import CommonSettings
from vibewave.runtime.telemetry import records_spans

log = logging.getLogger("vibewave.runtime.broker")

MARKER_TTL_S = 60.0  # how long the delete marker of an expired key stays visible to watchers
TRANSIENT = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NoStreamResponseError,  # a stream electing its leader (a cluster node was lost)
)

T = TypeVar("T")
_encoder = msgspec.json.Encoder()


def encode(message: msgspec.Struct) -> bytes:
    return _encoder.encode(message)


def decode(data: bytes, type_: type[T]) -> T:
    return msgspec.json.decode(data, type=type_)


def new_broker(
    service: str,
    common: CommonSettings,
    tracer_provider: TracerProvider | None = None,
    *,
    on_reconnect: Callable[[], Awaitable[None]] | None = None,
) -> NatsBroker:
    """The service's broker: every server of NATS_URL, reconnecting for ever (NATS may restart), msgspec
    payloads, trace context in and out, and the contract's delivery rules on every durable consumer.
    Per-message logs are DEBUG: at thousands of messages a second they would be most of the log.
    With NATS_USER it connects as the service's own user, whose permissions the server enforces."""
    return NatsBroker(
        servers=common.nats_servers,
        name=f"vibewave-{service}",
        security=nats_credentials(common),
        connect_timeout=2,
        reconnect_time_wait=0.5,  # type: ignore[arg-type]  # nats-py takes seconds as a float
        max_reconnect_attempts=-1,
        reconnected_cb=_in_background(on_reconnect) if on_reconnect is not None else None,
        serializer=MsgSpecSerializer(),
        middlewares=(_tracing(tracer_provider), Deliveries),
        logger=logging.getLogger(f"vibewave.{service}.faststream"),
        log_level=logging.DEBUG,
        graceful_timeout=5.0,
    )


def nats_credentials(common: CommonSettings) -> NatsUserPassword | None:
    """The service's NATS user and password (NATS_USER, NATS_PASSWORD), or None to connect without."""
    if common.nats_user is None:
        return None
    return NatsUserPassword(common.nats_user, common.nats_password.reveal())


_background: set[asyncio.Task[None]] = set()


def _in_background(callback: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """nats-py awaits its reconnected callback inside the reconnect itself, and takes an error there for
    a failed reconnect (and reconnects again): run the callback as a task of its own instead."""

    async def schedule() -> None:
        task = asyncio.create_task(_logged(callback), name="nats:reconnected")
        _background.add(task)
        task.add_done_callback(_background.discard)

    return schedule


async def _logged(callback: Callable[[], Awaitable[None]]) -> None:
    try:
        await callback()
    except Exception:
        log.exception("the work after a NATS reconnect failed")


def _tracing(tracer_provider: TracerProvider | None) -> Any:
    """`NatsTelemetryMiddleware` (spans for each publish and each message handled) when spans are
    recorded; when they are not (no exporter is configured, see `telemetry.setup_tracing`), `TraceContext`,
    which carries the same W3C trace context without making spans nobody keeps: they were a third of a
    message's CPU in the scheduler and the executor (`make bench`, py-spy)."""
    if records_spans(tracer_provider):
        return NatsTelemetryMiddleware(tracer_provider=tracer_provider)
    return TraceContext


class NatsTelemetryMiddleware(TelemetryMiddleware[NatsPublishCommand]):
    """FastStream's NATS telemetry, with spans named after the subject's template
    (`vw.req.{request_id}.submitted process`) rather than the subject itself: a name per request id
    would make every span name unique, and an operator could not group or compare them."""

    def __init__(self, *, tracer_provider: TracerProvider | None = None) -> None:
        super().__init__(settings_provider_factory=_templated_names, tracer_provider=tracer_provider)


class _TemplatedNames(NatsTelemetrySettingsProvider):
    def get_publish_destination_name(self, cmd: PublishCommand) -> str:
        return subject_template(cmd.destination)

    def get_consume_destination_name(self, msg: StreamMessage[Msg]) -> str:
        return subject_template(msg.raw_message.subject)


class _TemplatedBatchNames(NatsBatchTelemetrySettingsProvider):
    def get_publish_destination_name(self, cmd: PublishCommand) -> str:
        return subject_template(cmd.destination)

    def get_consume_destination_name(self, msg: StreamMessage[list[Msg]]) -> str:
        return subject_template(msg.raw_message[0].subject)


def _templated_names(msg: Any) -> Any:
    """FastStream's choice of provider (one message, a batch, none for KV and object-store watches), named
    by subject template."""
    if msg is None or isinstance(msg, Msg):
        return _TemplatedNames()
    if isinstance(msg, Sequence):
        return _TemplatedBatchNames()
    return telemetry_attributes_provider_factory(msg)


class TraceContext(BaseMiddleware):
    """W3C trace context in and out, and no spans: `traceparent` is injected into each published
    message's headers and a handled message's context is made current around its handler."""

    async def publish_scope(self, call_next: Callable[[Any], Awaitable[Any]], cmd: PublishCommand) -> Any:
        propagate.inject(cmd.headers)
        return await call_next(cmd)

    async def consume_scope(self, call_next: Callable[[Any], Awaitable[Any]], msg: StreamMessage[Any]) -> Any:
        token = otel_context.attach(propagate.extract(msg.headers or {}))
        try:
            return await call_next(msg)
        finally:
            otel_context.detach(token)


async def connect(broker: NatsBroker, timeout: float = 10.0) -> None:
    """Start the broker, retrying a NATS that is not up yet until `timeout` (then ConnectionError)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            await broker.connect()
            return
        except (OSError, nats.errors.Error) as exc:
            if loop.time() >= deadline:
                raise ConnectionError(f"cannot reach NATS: {exc}") from exc
            await asyncio.sleep(0.2)


async def serve(broker: NatsBroker, timeout: float = 10.0) -> None:
    """Start the subscribers and flush, so the server holds every subscription when this returns. A
    subscribe is only queued on the connection: without the flush, a replica that has just taken over
    could say it serves while a request to it still meets "no responders"."""
    await broker.start()
    await broker.connection.flush(timeout=max(1, round(timeout)))


JETSTREAM_SUBJECT_LISTENER = """A core-NATS subscriber on a stream's subject (`no_reply=True`): a JetStream publish is a
request whose reply is the stream's PubAck, and a FastStream core subscriber answers every message that
has a reply subject — with its handler's None, an empty body. When that empty answer came first, the
publisher's nats-py failed to parse its PubAck (seen: a 500 on DELETE while the executor listened for
cancels)."""


def stream(spec: StreamSpec) -> JStream:
    """A stream for a subscriber or publisher to name. Never declared by FastStream (`declare=False`):
    its declaration would carry FastStream's default settings and, on a conflict, *update* the stream
    to them (a work queue cannot even be updated); `provision` declares streams as the contract says."""
    return JStream(spec.name, declare=False)


def jetstream(broker: NatsBroker) -> JetStreamContext:
    return broker.connection.jetstream()


# ------------------------------------------------------------------------------------------ provisioning


async def provision(broker: NatsBroker, common: CommonSettings) -> None:
    """Create or update every stream, bucket and object store of the contract (idempotent). With
    NATS_PROVISION=false, wait until they exist instead: a service whose NATS user may not create or
    update streams (with credentials, only the scheduler may: a stream's configuration can republish
    into any subject, bypassing the publish permissions of whoever configured it)."""
    js = jetstream(broker)
    if not common.provision:
        await wait_provisioned(js)
        return
    for stream in STREAMS:
        await ensure_stream(js, stream, common.replicas, common.retention_s)
    for bucket in BUCKETS:
        await ensure_kv(js, bucket, common.replicas, common.retention_s)
    for store in OBJECT_STORES:
        await ensure_object_store(js, store, common.replicas, common.retention_s)


def provisioned_streams() -> dict[str, bool]:
    """The JetStream stream behind each stream, bucket and store of the contract → whether it must allow
    per-message TTLs (set by the update that follows a bucket's create: until then it is not ready)."""
    streams = {spec.name: False for spec in STREAMS}
    streams.update({f"KV_{spec.name}": spec.finished_ttl or spec.key_ttl for spec in BUCKETS})
    streams.update({f"OBJ_{spec.name}": False for spec in OBJECT_STORES})
    return streams


async def wait_provisioned(js: JetStreamContext, timeout: float = 30.0) -> None:
    """Until every stream of the contract exists as `provision` leaves it; TimeoutError after `timeout`
    (the service's start is then retried)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    waiting = provisioned_streams()
    while True:
        for name, needs_ttl in list(waiting.items()):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                config = (await js.stream_info(name)).config
                if config.allow_msg_ttl or not needs_ttl:
                    del waiting[name]
        if not waiting:
            return
        if loop.time() >= deadline:
            raise TimeoutError(f"not provisioned within {timeout:.0f}s: {', '.join(waiting)} (NATS_PROVISION is "
                               "off: the scheduler creates them)")  # fmt: skip
        await asyncio.sleep(0.2)


async def ensure_stream(js: JetStreamContext, spec: StreamSpec, replicas: int, retention_s: float) -> None:
    max_age = spec.max_age_s if spec.max_age_s is not None else (retention_s if spec.retained else 0)
    config = StreamConfig(
        name=spec.name,
        subjects=list(spec.subjects),
        retention=RetentionPolicy.WORK_QUEUE if spec.work_queue else RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=max_age,
        duplicate_window=min(spec.duplicate_window_s, max_age) if max_age else spec.duplicate_window_s,
        num_replicas=replicas,
    )
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError:
        await js.update_stream(config)


async def ensure_kv(js: JetStreamContext, spec: BucketSpec, replicas: int, retention_s: float) -> KeyValue:
    """A bucket as the spec says; an existing one is brought to the current retention."""
    ttl = retention_s if spec.retained else None
    config = KeyValueConfig(
        bucket=spec.name,
        history=spec.history,
        storage=StorageType.FILE,
        replicas=replicas,
        description=spec.description,
        ttl=ttl,
        limit_marker_ttl=MARKER_TTL_S if spec.finished_ttl else None,
    )
    try:
        kv = await js.create_key_value(config)
        if not spec.key_ttl:
            return kv
    except nats.js.errors.BadRequestError:
        pass
    stream = (await js.stream_info(f"KV_{spec.name}")).config
    stream.max_age = ttl or 0
    if spec.finished_ttl:
        stream.allow_msg_ttl = True
        stream.subject_delete_marker_ttl = MARKER_TTL_S
    if spec.key_ttl:  # a lapsed key simply vanishes: `create` can take it again at once
        stream.allow_msg_ttl = True
    await js.update_stream(stream)
    return await js.key_value(spec.name)


async def ensure_object_store(
    js: JetStreamContext, spec: ObjectStoreSpec, replicas: int, retention_s: float
) -> ObjectStore:
    ttl = retention_s if spec.retained else None
    config = ObjectStoreConfig(
        bucket=spec.name, storage=StorageType.FILE, replicas=replicas, description=spec.description, ttl=ttl
    )
    try:
        return await js.create_object_store(bucket=spec.name, config=config)
    except nats.js.errors.BadRequestError:
        stream = (await js.stream_info(f"OBJ_{spec.name}")).config
        stream.max_age = ttl or 0
        await js.update_stream(stream)
        return await js.object_store(spec.name)


def consumer_config(spec: ConsumerSpec, replicas: int = 1) -> ConsumerConfig:
    """The JetStream consumer a `ConsumerSpec` describes (explicit acks, bounded deliveries)."""
    return ConsumerConfig(
        durable_name=spec.durable,
        deliver_policy=DeliverPolicy.NEW if spec.deliver_new else DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=spec.ack_wait_s,
        max_deliver=spec.max_deliver,
        max_ack_pending=spec.max_ack_pending,
        filter_subjects=list(spec.filter_subjects),
        num_replicas=replicas,
    )


async def ensure_consumer(js: JetStreamContext, spec: ConsumerSpec, replicas: int = 1) -> None:
    """Create the durable consumer, or bring one an older version left to the spec (its filters, ack wait
    and delivery limit; NATS updates a durable in place). Each service ensures its own, with the spec its
    process runs under (a tuned ack wait, say)."""
    await js.add_consumer(spec.stream, consumer_config(spec, replicas))


# --------------------------------------------------------------------------------------------- delivery

_CONSUMERS: dict[str, ConsumerSpec] = {spec.durable: spec for spec in CONSUMERS}


def consumer_spec(durable: str, default: ConsumerSpec) -> ConsumerSpec:
    """The delivery rules this process applies to `durable` (the registered spec, else `default`)."""
    return _CONSUMERS.get(durable, default)


def register_consumer(spec: ConsumerSpec) -> None:
    """Give the delivery rules of `spec` to its durable (the contract's consumers are known already;
    a service that tunes one, e.g. its ack wait, registers the tuned spec)."""
    _CONSUMERS[spec.durable] = spec


_message: ContextVar[StreamMessage[Any] | None] = ContextVar("vibewave_message", default=None)


def current_message() -> NatsMessage:
    """The JetStream or core NATS message being handled.

    Handlers read it here instead of declaring it as a parameter (`msg: NatsMessage`): FastStream
    resolves such a context parameter through fast_depends, which runs its (synchronous) resolver in a
    worker thread — one thread hop per message, the api's largest cost and a sixth of the scheduler's
    rate in `make bench` (py-spy)."""
    msg = _message.get()
    assert isinstance(msg, NatsMessage), "no NATS message is being handled"
    return msg


def current_batch() -> NatsBatchMessage:
    """The batch a batch subscriber is handling (see `current_message` for why not a parameter)."""
    msg = _message.get()
    assert isinstance(msg, NatsBatchMessage), "no batch is being handled"
    return msg


def current_kv_entry() -> KeyValue.Entry:
    """The KV entry a `KvWatch` handler is handling (see `current_message` for why not a parameter)."""
    msg = _message.get()
    assert msg is not None and isinstance(msg.raw_message, KeyValue.Entry), "no KV entry is being handled"
    return msg.raw_message


class Deliveries(BaseMiddleware):
    """The contract's delivery rules around each handler of a durable JetStream consumer.

    - While the handler runs, the message is reported in progress every third of the ack wait, so the
      ack wait can be short: a crashed process's messages come back within it.
    - A failure (any exception) is logged and the message redelivered after the consumer's retry delay.
    - The failure of its last allowed delivery (`max_deliver`) sends it to the dead letters — stream
      DEADLETTER, subject `vw.dlq.<consumer>`, with its subject, delivery count and the error — and
      terminates it, so the consumer goes on with the next one.
    Messages of other subscriptions (core NATS, KV watches) pass through untouched."""

    async def consume_scope(self, call_next: Callable[[Any], Awaitable[Any]], msg: StreamMessage[Any]) -> Any:
        token = _message.set(msg)
        try:
            return await self._deliver(call_next, msg)
        finally:
            _message.reset(token)

    async def _deliver(self, call_next: Callable[[Any], Awaitable[Any]], msg: StreamMessage[Any]) -> Any:
        if not isinstance(msg, NatsMessage):
            return await call_next(msg)
        raw = msg.raw_message
        meta = _metadata(raw)
        spec = _CONSUMERS.get(meta.consumer or "") if meta is not None else None
        if meta is None or spec is None:
            return await call_next(msg)
        keepalive = _KeepAlive(msg, spec.ack_wait_s / 3)
        try:
            return await call_next(msg)
        except HandlerException:
            raise
        except Exception as exc:
            await settle_failure(raw, spec, exc)
            return None
        finally:
            keepalive.cancel()


class ExpectedFailure(Exception):
    """A failure its handler foresaw and described (a webhook receiver down): retried and logged in a
    line, without the traceback an unforeseen failure gets."""


async def settle_failure(raw: Msg, spec: ConsumerSpec, exc: BaseException) -> None:
    """A message its handler failed on: redelivered after the consumer's retry delay, or — on its last
    allowed delivery — sent to the dead letters and terminated. (What `Deliveries` does for a handler
    that raises; a batch handler calls it for each message of the batch it could not handle.)"""
    meta = _metadata(raw)
    delivered = (meta.num_delivered if meta is not None else None) or 1
    if delivered >= spec.max_deliver:
        await _dead_letter(raw, spec, delivered, exc)
        with contextlib.suppress(Exception):
            await raw.term()
        return
    delay = spec.retry_delays_s[min(delivered, len(spec.retry_delays_s)) - 1]
    log.warning(
        "%s failed on %s (delivery %d of %d): %s; retrying in %.2fs",
        spec.durable, raw.subject, delivered, spec.max_deliver, _describe(exc), delay,
        exc_info=not isinstance(exc, (*TRANSIENT, ExpectedFailure)),
    )  # fmt: skip
    with contextlib.suppress(Exception):
        await raw.nak(delay=delay)


def keep_alive(msg: NatsMessage | NatsBatchMessage, spec: ConsumerSpec) -> _KeepAlive:
    """Report `msg` (one message or a batch) in progress while it is handled; `.cancel()` when done."""
    return _KeepAlive(msg, spec.ack_wait_s / 3)


def prompt_batches(subscriber: BatchPullStreamSubscriber) -> None:
    """Make a batch pull subscriber hand over each fetch as it comes: what is waiting, up to the batch
    size, without waiting to fill the batch. FastStream's own loop fetches again until the batch is full
    or its timeout passes (a workaround of nats.py#1034), so a lone event waited out the whole timeout;
    one nats-py fetch already returns a partial batch as soon as messages are there."""

    async def consume_each_fetch() -> None:
        assert subscriber.subscription is not None
        while subscriber.running:
            try:
                messages = await subscriber.subscription.fetch(
                    batch=subscriber.pull_sub.batch_size, timeout=subscriber.pull_sub.timeout
                )
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except (nats.errors.ConnectionClosedError, nats.js.errors.ServiceUnavailableError):
                await asyncio.sleep(0.1)  # unacked messages come back after their ack wait
                continue
            if messages and subscriber.running:
                await subscriber.consume(messages)

    subscriber._consume_pull = consume_each_fetch  # type: ignore[method-assign]


def steady_pulls(subscriber: object) -> None:
    """Keep a pull subscriber's loop going over both kinds of fetch timeout. nats-py's fetch raises the
    builtin `TimeoutError` when its deadline is spent before its lingering pull request goes out
    (`_fetch_n`), and FastStream's loop suppresses only `nats.errors.TimeoutError`: the loop then ended
    with a traceback in the log (seen under load, failing `test_make_run`) until FastStream's supervisor
    restarted it. The loop is FastStream's own, entered again."""
    if not isinstance(subscriber, PullStreamSubscriber):  # the concurrent one (max_workers) is one too
        raise TypeError(f"not a pull subscriber: {subscriber!r}")
    consume_pull = subscriber._consume_pull

    async def consume_pull_steadily(*args: Any, **kwargs: Any) -> None:
        while subscriber.running:
            with contextlib.suppress(TimeoutError):  # nats-py's TimeoutError is one as well
                await consume_pull(*args, **kwargs)

    subscriber._consume_pull = consume_pull_steadily  # type: ignore[method-assign]


def _metadata(raw: object) -> Msg.Metadata | None:
    if not isinstance(raw, Msg) or not raw.reply:
        return None
    try:
        return raw.metadata
    except Exception:
        return None


class _KeepAlive:
    """Reports a message in progress every `interval` while its handler runs. A timer, not a task: most
    handlers end long before the first report, and a task per message was a measurable share of the CPU."""

    def __init__(self, msg: NatsMessage | NatsBatchMessage, interval: float) -> None:
        self.msg = msg
        self.interval = interval
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(interval, self._report)
        self._sending: asyncio.Task[None] | None = None

    def _report(self) -> None:
        self._sending = self._loop.create_task(self._send())
        self._timer = self._loop.call_later(self.interval, self._report)

    async def _send(self) -> None:  # one message's or a whole batch's
        with contextlib.suppress(Exception):
            await self.msg.in_progress()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sending is not None:
            self._sending.cancel()


async def _dead_letter(raw: Msg, spec: ConsumerSpec, deliveries: int, exc: BaseException) -> None:
    meta = raw.metadata
    letter = DeadLetter(
        subject=raw.subject,
        stream=meta.stream,
        consumer=spec.durable,
        stream_sequence=meta.sequence.stream,
        deliveries=deliveries,
        error=_describe(exc),
        data=raw.data,
        headers={k: v for k, v in (raw.headers or {}).items() if k != "Nats-Msg-Id"},
        at=utcnow(),
    )
    log.error(
        "%s gave up on %s after %d deliveries (%s); it is in the dead letters (%s)",
        spec.durable, raw.subject, deliveries, letter.error, dead_letter_subject(spec.durable),
    )  # fmt: skip
    js = raw._client.jetstream()
    try:
        await js.publish(
            dead_letter_subject(spec.durable),
            encode(letter),
            headers={"Nats-Msg-Id": f"{meta.stream}.{meta.sequence.stream}.{spec.durable}"},
            timeout=5,
        )
    except Exception:
        log.exception("could not store the dead letter of %s; it stays unacknowledged", raw.subject)
        raise
    instruments().dead_letters.add(1, {"stream": meta.stream, "consumer": spec.durable})


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# ------------------------------------------------------------------------------------------- publishing


async def publish(
    publisher: LogicPublisher,
    message: msgspec.Struct,
    *,
    subject: str,
    msg_id: str,
    retry_for: float | None = 10.0,
    headers: Mapping[str, str] | None = None,
) -> PubAck | None:
    """Publish into a stream through a declared publisher, retrying transient failures (safe: `msg_id`
    dedupes) for `retry_for` seconds — or until cancelled when None, for what must not be lost."""
    loop = asyncio.get_running_loop()
    deadline = None if retry_for is None else loop.time() + retry_for
    delay = 0.1
    while True:
        try:
            ack: PubAck | None = await publisher.publish(  # type: ignore[func-returns-value]
                message,
                subject=subject,
                headers={"Nats-Msg-Id": msg_id, **(headers or {})},
                correlation_id=msg_id,  # FastStream would draw a uuid4 for each message otherwise
                timeout=2,
            )
            return ack
        except TRANSIENT:
            if deadline is not None and loop.time() >= deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


# ------------------------------------------------------------------------------------------------- KV


async def kv_write_many(
    js: JetStreamContext,
    kv: KeyValue,
    bucket: str,
    values: dict[str, bytes],
    *,
    new: set[str] | frozenset[str] = frozenset(),
    last: Mapping[str, int] | None = None,
    ttls: Mapping[str, float] | None = None,
    timeout: float = 10.0,
) -> dict[str, BaseException | int]:
    """Write several keys with one wait for all their acks, instead of one awaited round trip each.
    Keys in `new` are created (refused with `KeyWrongLastSequenceError` if they exist); keys in `last`
    are written only if still at that revision (refused the same way: see `kv_update`); the others are
    put as JetStream async publishes. A key in `ttls` expires that many seconds after this write (the
    bucket must allow per-key TTLs: `BucketSpec.finished_ttl`). Returns each key's failure or its new revision; raises
    TimeoutError when the acks do not all come within `timeout` (which landed is unknown).

    Checked writes are not async publishes: nats-py's async-publish reply handler raises a refusal
    instead of setting it on the future, which then never completes."""
    ttls, last = ttls or {}, last or {}
    writes: list[Awaitable[object]] = []
    for key, value in values.items():
        if key in new:
            writes.append(kv.create(key, value, msg_ttl=ttls.get(key)))
        elif key in last:
            writes.append(kv_update(js, bucket, key, value, last=last[key], ttl=ttls.get(key)))
        else:
            writes.append(await js.publish_async(f"$KV.{bucket}.{key}", value, msg_ttl=ttls.get(key)))
    async with asyncio.timeout(timeout):
        results = await asyncio.gather(*writes, return_exceptions=True)
    return dict(zip(values, (_revision_or_failure(result) for result in results), strict=True))


def _revision_or_failure(result: object) -> BaseException | int:
    if isinstance(result, BaseException):
        return result
    if isinstance(result, PubAck):
        return int(result.seq)
    assert isinstance(result, int), result  # a create's revision
    return result


async def kv_update(
    js: JetStreamContext, bucket: str, key: str, value: bytes, *, last: int, ttl: float | None = None
) -> int:
    """Write a key only if its revision is still `last` (0: only if it does not exist); the new revision.
    Raises `KeyWrongLastSequenceError` when another write came first — the fence of every leader write.
    (nats-py's `KeyValue.update` takes no TTL, and its `create` overwrites a deleted key's tombstone.)"""
    headers: dict[str, Any] = {Header.EXPECTED_LAST_SUBJECT_SEQUENCE: str(last)}
    try:
        ack = await js.publish(f"$KV.{bucket}.{key}", value, headers=headers, msg_ttl=ttl)
    except nats.js.errors.APIError as exc:
        if exc.err_code in (10071, 10164):  # wrong last sequence
            raise nats.js.errors.KeyWrongLastSequenceError(description=exc.description) from exc
        raise
    return int(ack.seq)


async def kv_snapshot(js: JetStreamContext, kv: KeyValue, bucket: str, timeout: float = 30.0) -> dict[str, bytes]:
    """Every current value of a bucket, read in one pass (see `kv_entries`)."""
    return {key: value for key, (value, _) in (await kv_entries(js, kv, bucket, timeout)).items()}


async def kv_entries(
    js: JetStreamContext, kv: KeyValue, bucket: str, timeout: float = 30.0
) -> dict[str, tuple[bytes, int]]:
    """Every current value of a bucket with its revision, read in one pass (a watch of each key's last
    value) instead of `keys()` and then one `get` round trip per key.

    It ends at the entry the server says nothing follows (its `delta` is 0), not at nats-py's end
    marker: that marker can come first when the server has already pushed every entry and the client
    has not yet read them — `keys()` then misses keys (seen here: a restarted scheduler loading none
    of 40 pending requests)."""
    if not (await js.stream_info(f"KV_{bucket}")).state.messages:
        return {}
    values: dict[str, tuple[bytes, int]] = {}
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
                    values[entry.key] = (entry.value or b"", entry.revision or 0)
                if entry.delta == 0:
                    return values
    finally:
        await bounded(watcher.stop())  # type: ignore[no-untyped-call]


def kv_deleted(entry_operation: str | None) -> bool:
    """A watched entry that says its key is gone: deleted, purged, or expired (its TTL's marker)."""
    return entry_operation in ("DEL", "PURGE")


async def reopen_kv_watches(broker: NatsBroker) -> None:
    """Open every `KvWatch` subscriber's watch again (they replay each key's current value, so handlers
    must be idempotent). Run after a reconnect: nats-py's KV watcher stays silent after a NATS server
    restart, and FastStream's KV subscriber does not reopen it."""
    for subscriber in list(broker.subscribers):
        if isinstance(subscriber, KeyValueWatchSubscriber) and subscriber.running:
            with contextlib.suppress(Exception):
                await subscriber.stop()
            delay = 0.25
            while True:  # until it opens: a bucket of a cluster may still be electing its leader
                try:
                    await subscriber.start()
                    break
                except Exception as exc:
                    log.warning("could not reopen the watch of %s (%s); retrying in %.2fs",
                                subscriber.kv_watch.name, type(exc).__name__, delay)  # fmt: skip
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)


# ---------------------------------------------------------------------------------------------- stopping


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


async def cancel_tasks(tasks: list[asyncio.Task[None]], timeout: float = 2.0) -> None:
    """Cancel background tasks and wait for them, within `timeout` and whatever they do. A cancel can be
    lost (Python 3.11's `wait_for` swallows one that meets its inner result: a loop then goes on), so a task
    still running is cancelled again each round; one that outlives the bound is left, named in the log."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pending = {task for task in tasks if not task.done()}
    first = True
    while pending:
        for task in pending:
            task.cancel()
        wait = min(timeout / 2, 1.0) if first else 0.2  # first, time to clean up as a cancelled task may
        first = False
        _, pending = await asyncio.wait(pending, timeout=max(0.0, min(wait, deadline - loop.time())))
        if pending and loop.time() >= deadline:
            log.warning("tasks still running after cancel: %s", ", ".join(t.get_name() for t in pending))
            return
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: a crashed task's error was logged where it happened


async def stop_broker(broker: NatsBroker, timeout: float = 5.0) -> None:
    """Stop subscribers and drain the connection, within `timeout` whatever NATS does meanwhile."""
    await bounded(broker.stop(), timeout)
