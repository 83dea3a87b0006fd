"""`GET /api/requests/{request_id}/events`: a request's events as Server-Sent Events, resumable anywhere.

Why the REQUESTS stream and not the api's memory: every event of a request is stored there with its stream
sequence, and that sequence is each SSE event's `id:`. A client that reconnects with `Last-Event-ID` (to
any replica, or after the api restarted) resumes right after the last event it saw: nothing lost, nothing
twice. A request that has finished replays its history and the stream ends.

Why an ordered push consumer (nats-py `subscribe(ordered_consumer=True)`) and not a pull ephemeral: one
reader wants every message in order once and acknowledges nothing. An ordered consumer is exactly that:
the server pushes with flow control, nats-py re-creates it from the next sequence on a gap or missed
heartbeats, it is held in memory with one replica, and the server deletes it once its subscription goes.
A pull consumer would add a fetch loop, its expiries and acks for the same messages. After a NATS
reconnect the feed re-creates its consumer itself from the next sequence (the server may have lost it).

What a client sees (`client_event`): the public events — `submitted`, `assigned`, `started`, `progress`,
`attempt_failed` (an attempt failed; a retry may follow), and the terminal `completed`, `failed` or
`cancelled` — each as JSON of its contract message. `attempt_succeeded` (the executor's report, announced
as `completed` by the scheduler) and `cancel_requested` (the client's own ask, answered by `cancelled`)
are internal and never sent, nor are events a later version may add. Of `submitted` only what the client
sent is kept (not the tenant, key, fair-share weight, webhook or placement needs); pods' addresses
(`pod_ip`, `comfyui_url`) are for admin keys only. Their ids still advance: a resume skips them too.

If the stream no longer holds a finished request's history (past the retention), one `state` event (no
id) carries the request as its status read shows it, and the stream ends.

A comment is sent after 15 s without an event, so that proxies keep the connection. uvicorn waits for open
responses before it stops the app, so the feed checks `state.stopping` (set in `__main__`) every second
and ends once uvicorn has begun to stop; a client disconnect cancels it (Litestar's streaming response).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import msgspec
import nats.errors
import nats.js.errors
from litestar import Request, get
from litestar.datastructures import State
from litestar.exceptions import NotFoundException
from litestar.params import HeaderParameter, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext

from vibewave.api.auth import principal_of
from vibewave.api.routes import NOT_FOUND, READS, RequestId, gateway_of
from vibewave.contracts.events import (
    REQUESTS_STREAM,
    AttemptFailed,
    RequestAssigned,
    RequestCancelled,
    RequestCompleted,
    RequestEvent,
    RequestFailed,
    RequestProgress,
    RequestStarted,
    RequestSubmitted,
    request_all_subject,
    request_subject,
    split_request_subject,
)
from vibewave.contracts.models import ComfyUIRequest
from vibewave.runtime.broker import bounded, jetstream

log = logging.getLogger("vibewave.api.sse")

HEARTBEAT_S = 15.0  # a comment after this long without an event
TICK_S = 1.0  # how often the feed looks at shutdown and reconnects while no event comes
UNSUBSCRIBE_S = 2.0
STATE_EVENT = "state"

PUBLIC_EVENTS: dict[str, type[msgspec.Struct]] = {
    RequestEvent.SUBMITTED: RequestSubmitted,
    RequestEvent.ASSIGNED: RequestAssigned,
    RequestEvent.STARTED: RequestStarted,
    RequestEvent.PROGRESS: RequestProgress,
    RequestEvent.ATTEMPT_FAILED: AttemptFailed,
    RequestEvent.COMPLETED: RequestCompleted,
    RequestEvent.FAILED: RequestFailed,
    RequestEvent.CANCELLED: RequestCancelled,
}
TERMINAL_EVENTS = frozenset({RequestEvent.COMPLETED, RequestEvent.FAILED, RequestEvent.CANCELLED})
HIDDEN_FIELDS: dict[str, frozenset[str]] = {
    RequestEvent.SUBMITTED: frozenset({"tenant", "key_id", "share_weight", "webhook", "models", "min_gpu_memory_gb"}),
}
POD_ADDRESSES = frozenset({"pod_ip", "comfyui_url"})
HEARTBEAT = ServerSentEventMessage(data=None, comment="keep-alive")

EXAMPLE = (
    "id: 41\nevent: submitted\n"
    'data: {"request_id":"req-0123456789abcdef","workflow_name":"comfyui_image_qwen",'
    '"inputs":{"prompt":"a lighthouse"},"priority":"normal","created_at":"2025-01-01T12:00:00Z",'
    '"batch_id":null,"execution_timeout_s":300.0,"preset":null}\n\n'
    'id: 44\nevent: assigned\ndata: {"request_id":"req-0123456789abcdef","pod_id":"pod-67890","attempt":1}\n\n'
    "id: 47\nevent: progress\n"
    'data: {"request_id":"req-0123456789abcdef","node":"3","value":2,"max":4,"percent":50.0}\n\n'
    ": keep-alive\n\n"
    "id: 52\nevent: completed\n"
    'data: {"request_id":"req-0123456789abcdef","attempt":1,"result":{"success":true,'
    '"files":["qwen_12345_001.png"],"error":null,"request_id":"req-0123456789abcdef","pod_id":"pod-67890",'
    '"pod_ip":null}}\n\n'
)
EVENT_SCHEMA = {  # one event (OpenAPI 3.1: a text/event-stream `schema` describes each event, not the stream)
    "type": "object",
    "required": ["data"],
    "properties": {
        "id": {
            "type": "string",
            "pattern": "^[0-9]+$",
            "description": "Its REQUESTS stream sequence (none on `state`).",
        },
        "event": {"type": "string", "enum": [*PUBLIC_EVENTS, STATE_EVENT]},
        "data": {"type": "string", "description": "JSON of the event's contract message (`state`: the request)."},
    },
}
OPENAPI_CONTENT = {"text/event-stream": {"schema": EVENT_SCHEMA, "example": EXAMPLE}}
OPENAPI_DESCRIPTION = (
    "Server-Sent Events, one per event of the request (`id:` its stream sequence, `event:` its name, `data:` "
    "its JSON): `submitted`, `assigned`, `started`, `progress`, `attempt_failed`, then one of `completed`, "
    "`failed` or `cancelled`, after which the stream ends (an EventSource should close on it). Reconnect "
    "with `Last-Event-ID` to resume after that event. A comment every 15 s keeps it open. A finished request "
    "whose history is past the retention gets one `state` event: the request as its status shows it."
)


def _without(value: Any, names: frozenset[str]) -> Any:
    """`value` (JSON builtins) with every object's keys in `names` removed, at any depth."""
    if isinstance(value, dict):
        return {k: _without(v, names) for k, v in value.items() if k not in names}
    if isinstance(value, list):
        return [_without(v, names) for v in value]
    return value


def client_event(event: str, data: bytes, sequence: int, *, reveal_pod: bool) -> ServerSentEventMessage | None:
    """The SSE event a client gets for one stored event; None for an internal (or unreadable) one."""
    kind = PUBLIC_EVENTS.get(event)
    if kind is None:
        return None
    try:
        body = msgspec.to_builtins(msgspec.json.decode(data, type=kind))
    except msgspec.MsgspecError as exc:
        log.warning("event %d (%s) not sent: unreadable (%s)", sequence, event, exc)
        return None
    for name in HIDDEN_FIELDS.get(event, frozenset()):
        body.pop(name, None)
    if not reveal_pod:
        body = _without(body, POD_ADDRESSES)
    return ServerSentEventMessage(data=msgspec.json.encode(body).decode(), event=event, id=sequence)


def state_event(request: ComfyUIRequest) -> ServerSentEventMessage:
    """The request as it stands, for when the stream has lost its history."""
    return ServerSentEventMessage(data=msgspec.json.encode(request).decode(), event=STATE_EVENT)


def resume_after(header: int | None, query: int | None) -> int:
    """The sequence to resume after (0: from the start). The header wins: an EventSource reconnecting
    sends it with the newest id, while the URL's query still holds the one the client first gave."""
    if header is not None:
        return header
    return query if query is not None else 0


class EventFeed:
    """One client's events of one request: those stored after `after`, up to its terminal event."""

    def __init__(
        self,
        connection: Client,
        request_id: str,
        after: int,
        *,
        reveal_pod: bool,
        stopping: Callable[[], bool],
    ) -> None:
        self.connection = connection
        self.request_id = request_id
        self.last = after
        self.ended = False
        self.reveal_pod = reveal_pod
        self.stopping = stopping
        self._idle = 0.0

    def _idle_tick(self) -> bool:
        """A tick went by without an event: True when a heartbeat is due."""
        self._idle += TICK_S
        if self._idle < HEARTBEAT_S:
            return False
        self._idle = 0.0
        return True

    async def _subscribe(self) -> JetStreamContext.PushSubscription:
        config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self.last + 1)
        return await self.connection.jetstream().subscribe(
            request_all_subject(self.request_id), stream=REQUESTS_STREAM.name, config=config, ordered_consumer=True
        )

    def _accept(self, msg: Msg) -> ServerSentEventMessage | None:
        sequence = msg.metadata.sequence.stream
        if sequence <= self.last:  # not expected of an ordered consumer, but a resume must never repeat
            return None
        self.last = sequence
        _, event = split_request_subject(msg.subject)
        self.ended = event in TERMINAL_EVENTS
        return client_event(event, msg.data, sequence, reveal_pod=self.reveal_pod)

    async def events(self) -> AsyncIterator[ServerSentEventMessage]:
        """Until the terminal event, the api stopping, or the connection to NATS closed for good."""
        while not self.ended and not self.stopping() and not self.connection.is_closed:
            try:
                subscription = await self._subscribe()
            except (nats.errors.Error, OSError) as exc:
                log.info("events of %s: subscribing failed (%s); retrying", self.request_id, exc)
                await asyncio.sleep(TICK_S)
                if self._idle_tick():
                    yield HEARTBEAT
                continue
            try:
                async for message in self._follow(subscription):
                    yield message
            except (nats.errors.Error, OSError) as exc:
                log.info("events of %s: feed interrupted (%s); resubscribing", self.request_id, exc)
            finally:  # the unsubscribe goes on by itself if this wait is cancelled (a client disconnect)
                await bounded(subscription.unsubscribe(), UNSUBSCRIBE_S)

    async def _follow(self, subscription: JetStreamContext.PushSubscription) -> AsyncIterator[ServerSentEventMessage]:
        """One consumer's messages, until the terminal event, the api stopping or a NATS reconnect."""
        reconnects = self.connection.stats["reconnects"]
        while not self.stopping() and self.connection.stats["reconnects"] == reconnects:
            try:
                msg = await subscription.next_msg(timeout=TICK_S)
            except nats.errors.TimeoutError:
                if self._idle_tick():
                    yield HEARTBEAT
                continue
            message = self._accept(msg)
            if message is not None:
                self._idle = 0.0
                yield message
            if self.ended:
                return


async def terminal_sequence(js: JetStreamContext, request: ComfyUIRequest) -> int | None:
    """The stream sequence of a finished request's terminal event; None once the stream has lost it."""
    try:
        raw = await js.get_last_msg(REQUESTS_STREAM.name, request_subject(request.id, request.status))
    except nats.js.errors.NotFoundError:
        return None
    return raw.seq


def _stopping(state: State) -> Callable[[], bool]:
    check = state.get("stopping")
    return check if callable(check) else lambda: False


@get(
    "/api/requests/{request_id:str}/events",
    operation_id="requestEvents",
    tags=["Workflows"],
    guards=READS,
)
async def request_events(
    state: State,
    request: Request[Any, Any, Any],
    request_id: RequestId,
    last_event_id_header: Annotated[
        int | None, HeaderParameter(name="Last-Event-ID", ge=0, description="Resume after this event's `id`.")
    ] = None,
    last_event_id: Annotated[
        int | None, QueryParameter(ge=0, description="As `Last-Event-ID`, for clients that cannot set headers.")
    ] = None,
) -> ServerSentEvent:
    """A request's progress and lifecycle as Server-Sent Events, resumable with `Last-Event-ID`."""
    gateway, principal = gateway_of(state), principal_of(request)
    current = await gateway.get_request(request_id, principal)
    if current is None:
        raise NotFoundException(detail=NOT_FOUND)
    after = resume_after(last_event_id_header, last_event_id)
    if current.status.terminal:
        ended_at = await terminal_sequence(jetstream(gateway.broker), current)
        if ended_at is None:
            return ServerSentEvent([state_event(current)])
        if after >= ended_at:
            return ServerSentEvent([])  # the client has seen it all
    feed = EventFeed(
        gateway.broker.connection, request_id, after, reveal_pod=principal.admin, stopping=_stopping(state)
    )
    return ServerSentEvent(feed.events())
