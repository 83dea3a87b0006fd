"""What the progress stream shows a client: only the public events, without what is not the client's
(its tenant, key, webhook; pods' addresses for non-admins), each with its stream sequence as `id:`; and a
feed that resumes after `Last-Event-ID`, never repeats, keeps the connection alive and ends after the
terminal event (or when the api stops)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import msgspec
import nats.errors
import pytest
from nats.aio.msg import Msg

from vibewave.api import sse
from vibewave.api.sse import EventFeed, client_event, resume_after, state_event
from vibewave.contracts.events import (
    AttemptFailed,
    AttemptSucceeded,
    CancelRequested,
    FailureKind,
    RequestCompleted,
    RequestEvent,
    RequestProgress,
    RequestSubmitted,
)
from vibewave.contracts.models import ComfyUIRequest, RequestStatus, WebhookSpec, WorkflowResult
from vibewave.runtime.broker import encode

pytestmark = pytest.mark.unit

RID = "req-0123456789abcdef"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def body(message: Any) -> dict[str, Any]:
    assert message is not None
    data: dict[str, Any] = json.loads(message.data)
    return data


def submitted() -> RequestSubmitted:
    return RequestSubmitted(
        request_id=RID, workflow_name="comfyui_image_qwen", inputs={"prompt": "p"}, created_at=T0, tenant="acme",
        key_id="key-1", share_weight=2.0, webhook=WebhookSpec(url="https://hooks.example.com/x"),
        models=["diffusion_models/q.safetensors"], min_gpu_memory_gb=24,
    )  # fmt: skip


def completed() -> RequestCompleted:
    result = WorkflowResult(success=True, files=["a.png"], request_id=RID, pod_id="pod-1", pod_ip="10.0.0.7")
    return RequestCompleted(request_id=RID, attempt=1, result=result)


def test_internal_events_are_not_sent() -> None:
    result = WorkflowResult(success=True, files=["a.png"])
    succeeded = AttemptSucceeded(request_id=RID, pod_id="pod-1", attempt=1, result=result)
    assert client_event(RequestEvent.ATTEMPT_SUCCEEDED, encode(succeeded), 5, reveal_pod=True) is None
    cancel = CancelRequested(request_id=RID, at=T0)
    assert client_event(RequestEvent.CANCEL_REQUESTED, encode(cancel), 6, reveal_pod=True) is None
    assert client_event("rescheduled", b"{}", 7, reveal_pod=True) is None  # a later version's: not sent either


def test_each_public_event_carries_its_sequence_name_and_message() -> None:
    progress = RequestProgress(request_id=RID, node="3", value=2, max=4, percent=50.0)
    message = client_event(RequestEvent.PROGRESS, encode(progress), 42, reveal_pod=False)
    assert message is not None and (message.id, message.event) == (42, "progress")
    assert body(message) == msgspec.to_builtins(progress)
    wire = message.encode().decode()
    assert wire.startswith("id: 42\r\nevent: progress\r\ndata: {") and wire.endswith("\r\n\r\n")
    failed = AttemptFailed(request_id=RID, pod_id="pod-1", attempt=1, kind=FailureKind.POD_FAULT, error="gone")
    assert body(client_event(RequestEvent.ATTEMPT_FAILED, encode(failed), 43, reveal_pod=False))["kind"] == "pod_fault"


def test_submitted_keeps_only_what_the_client_sent() -> None:
    seen = body(client_event(RequestEvent.SUBMITTED, encode(submitted()), 1, reveal_pod=True))
    assert seen["request_id"] == RID and seen["inputs"] == {"prompt": "p"} and seen["priority"] == "normal"
    for hidden in ("tenant", "key_id", "share_weight", "webhook", "models", "min_gpu_memory_gb"):
        assert hidden not in seen, hidden


def test_pod_addresses_are_for_admins_only() -> None:
    client = body(client_event(RequestEvent.COMPLETED, encode(completed()), 9, reveal_pod=False))
    assert "pod_ip" not in client["result"] and client["result"]["files"] == ["a.png"]
    admin = body(client_event(RequestEvent.COMPLETED, encode(completed()), 9, reveal_pod=True))
    assert admin["result"]["pod_ip"] == "10.0.0.7"


def test_an_unreadable_event_is_skipped() -> None:
    assert client_event(RequestEvent.PROGRESS, b"{not json", 3, reveal_pod=True) is None
    assert client_event(RequestEvent.PROGRESS, b'{"request_id": 1}', 3, reveal_pod=True) is None


def test_the_state_event_has_no_id() -> None:
    request = ComfyUIRequest(
        id=RID, workflow_name="comfyui_image_qwen", inputs={}, status=RequestStatus.COMPLETED, pod_id=None,
        created_at=T0, updated_at=T0,
    )  # fmt: skip
    message = state_event(request)
    assert message.id is None and message.event == "state" and body(message)["status"] == "completed"


def test_the_header_wins_over_the_query() -> None:
    assert resume_after(None, None) == 0
    assert resume_after(None, 7) == 7
    assert resume_after(12, 7) == 12  # an EventSource's reconnect: the header is newer than the URL's query
    assert resume_after(0, 7) == 0


# ------------------------------------------------------------------------------------------------ the feed


def stored(sequence: int, event: RequestEvent, message: msgspec.Struct) -> Msg:
    reply = f"$JS.ACK.REQUESTS.ordered.1.{sequence}.{sequence}.1700000000000000000.0"
    return Msg(_client=None, subject=f"vw.req.{RID}.{event}", reply=reply, data=encode(message))  # type: ignore[arg-type]


class FakeSubscription:
    def __init__(self, messages: list[Msg]) -> None:
        self.messages = messages
        self.unsubscribed = False

    async def next_msg(self, timeout: float) -> Msg:
        if not self.messages:
            raise nats.errors.TimeoutError
        return self.messages.pop(0)

    async def unsubscribe(self) -> None:
        self.unsubscribed = True


class FakeConnection:
    """Just what the feed uses of nats-py's client: its JetStream `subscribe` and reconnect count."""

    def __init__(self, *rounds: list[Msg]) -> None:
        self.rounds = list(rounds)
        self.starts: list[int] = []
        self.subscriptions: list[FakeSubscription] = []
        self.stats = {"reconnects": 0}
        self.is_closed = False

    def jetstream(self) -> FakeConnection:
        return self

    async def subscribe(self, subject: str, **options: Any) -> FakeSubscription:
        assert subject == f"vw.req.{RID}.>" and options["ordered_consumer"] and options["stream"] == "REQUESTS"
        self.starts.append(options["config"].opt_start_seq)
        subscription = FakeSubscription(self.rounds.pop(0) if self.rounds else [])
        self.subscriptions.append(subscription)
        return subscription


async def collect(feed: EventFeed, limit: int = 50) -> list[Any]:
    seen = []
    async for message in feed.events():
        seen.append(message)
        if len(seen) >= limit:
            break
    return seen


PROGRESS = RequestProgress(request_id=RID, node="3", value=1, max=4, percent=25.0)


async def test_the_feed_resumes_after_the_last_id_and_ends_after_the_terminal_event() -> None:
    result = WorkflowResult(success=True, files=["a.png"])
    succeeded = AttemptSucceeded(request_id=RID, pod_id="p", attempt=1, result=result)
    connection = FakeConnection([
        stored(5, RequestEvent.PROGRESS, PROGRESS),
        stored(6, RequestEvent.ATTEMPT_SUCCEEDED, succeeded),
        stored(6, RequestEvent.PROGRESS, PROGRESS),  # a repeat: never sent twice
        stored(8, RequestEvent.COMPLETED, completed()),
        stored(9, RequestEvent.PROGRESS, PROGRESS),  # after the end: not read
    ])  # fmt: skip
    feed = EventFeed(connection, RID, 4, reveal_pod=False, stopping=lambda: False)  # type: ignore[arg-type]
    seen = await collect(feed)
    assert [(m.id, m.event) for m in seen] == [(5, "progress"), (8, "completed")]
    assert connection.starts == [5] and connection.subscriptions[0].unsubscribed and feed.last == 8


async def test_an_idle_feed_sends_heartbeats_and_ends_when_the_api_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse, "TICK_S", 1.0)
    monkeypatch.setattr(sse, "HEARTBEAT_S", 3.0)
    ticks = iter(range(100))
    feed = EventFeed(FakeConnection(), RID, 0, reveal_pod=False, stopping=lambda: next(ticks) >= 7)  # type: ignore[arg-type]
    seen = await collect(feed)
    assert seen and all(m.comment == "keep-alive" and m.id is None for m in seen)
    assert len(seen) == 2  # six idle ticks before the stop: a heartbeat every third


async def test_after_a_nats_reconnect_the_feed_resubscribes_from_the_next_sequence() -> None:
    connection = FakeConnection(
        [stored(3, RequestEvent.PROGRESS, PROGRESS)], [stored(4, RequestEvent.COMPLETED, completed())]
    )
    original = connection.subscribe

    async def reconnect_after_first(subject: str, **options: Any) -> FakeSubscription:
        subscription = await original(subject, **options)
        if len(connection.starts) == 1:
            first = subscription.next_msg

            async def then_reconnect(timeout: float) -> Msg:
                msg = await first(timeout)
                connection.stats["reconnects"] += 1
                return msg

            subscription.next_msg = then_reconnect  # type: ignore[method-assign]
        return subscription

    connection.subscribe = reconnect_after_first  # type: ignore[method-assign]
    feed = EventFeed(connection, RID, 0, reveal_pod=True, stopping=lambda: False)  # type: ignore[arg-type]
    seen = await collect(feed)
    assert [(m.id, m.event) for m in seen] == [(3, "progress"), (4, "completed")]
    assert connection.starts == [1, 4] and all(s.unsubscribed for s in connection.subscriptions)


def test_the_route_is_documented_as_an_event_stream() -> None:
    from litestar._openapi.plugin import OpenAPIPlugin

    from vibewave.api.app import create_app
    from vibewave.api.settings import ApiSettings

    document = create_app(ApiSettings.from_env()).plugins.get(OpenAPIPlugin).provide_openapi_schema()
    operation = document["paths"]["/api/requests/{request_id}/events"]["get"]
    ok = operation["responses"]["200"]
    assert (
        list(ok["content"]) == ["text/event-stream"]
        and "event: completed" in ok["content"]["text/event-stream"]["example"]
    )
    assert {"401", "403", "404"} <= set(operation["responses"])
    assert operation["responses"]["404"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }
    assert {p["name"] for p in operation["parameters"]} == {"request_id", "Last-Event-ID", "last_event_id"}
    assert operation["security"] == [{"apiKey": []}]
