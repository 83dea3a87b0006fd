"""The progress stream end to end, two api replicas on one NATS: a request's events as Server-Sent
Events, progress then completed; a client that drops mid-run and reconnects to the other replica with
`Last-Event-ID` misses nothing and sees nothing twice; a finished request replays its history."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import msgspec
import pytest

from tests.e2e.conftest import StackFactory
from tests.support.stack import free_port, wait_for

pytestmark = pytest.mark.e2e

STEPS = 30  # at SIM_STEP_TIME 0.1: a run of about 3 s, long enough to drop in the middle of it
BOUND_S = 90.0


class Event(msgspec.Struct, frozen=True):
    id: int
    event: str
    data: dict[str, Any]


def read_events(
    base_url: str,
    request_id: str,
    *,
    last_event_id: int | None = None,
    until: Callable[[Event], bool] | None = None,
) -> tuple[list[Event], bool]:
    """The stream's events until `until` holds for one (then the connection is dropped) or the server ends
    it; and whether the server ended it. Bounded: BOUND_S in all, 30 s per read (heartbeats come every 15)."""
    headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
    deadline = time.monotonic() + BOUND_S
    events: list[Event] = []
    fields: dict[str, str] = {}
    with (
        httpx.Client(base_url=base_url, timeout=httpx.Timeout(10, read=30)) as client,
        client.stream("GET", f"/api/requests/{request_id}/events", headers=headers) as response,
    ):
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            assert time.monotonic() < deadline, f"the stream of {request_id} did not end within {BOUND_S}s"
            if line.startswith(":"):
                continue
            if line:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
                continue
            if not fields:
                continue
            event = Event(id=int(fields["id"]), event=fields["event"], data=json.loads(fields["data"]))
            fields = {}
            events.append(event)
            if until is not None and until(event):
                return events, False
    return events, True


def healthy(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/health", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def test_a_dropped_stream_resumes_on_the_other_replica_with_nothing_lost_or_repeated(
    start_own_stack: StackFactory,
) -> None:
    port = free_port()
    stack = start_own_stack(service_env={"api@2": {"API_PORT": str(port)}}, SIM_STEP_TIME="0.1")
    stack.start("api@2")
    other = f"http://127.0.0.1:{port}"
    wait_for(lambda: healthy(other), 60, "the second api replica")

    request_id = stack.generate("a lighthouse in a storm", steps=STEPS)
    before, ended = read_events(stack.base_url, request_id, until=lambda e: e.event == "progress")
    assert not ended and before[0].event == "submitted" and before[-1].event == "progress"
    assert before[0].data["request_id"] == request_id and "tenant" not in before[0].data

    after, ended = read_events(other, request_id, last_event_id=before[-1].id)
    assert ended, "the stream ends after the terminal event"
    assert after[-1].event == "completed" and after[-1].data["result"]["success"] is True
    assert any(e.event == "progress" for e in after), "the drop came mid-run: the other replica streamed it live"

    seen = before + after
    ids = [e.id for e in seen]
    assert ids == sorted(set(ids)), f"ids repeat or go back: {ids}"
    assert [e.event for e in seen if e.event not in ("progress",)] == ["submitted", "assigned", "started", "completed"]
    assert not {"attempt_succeeded", "cancel_requested"} & {e.event for e in seen}

    replay, ended = read_events(stack.base_url, request_id)  # finished: its whole history, then the end
    assert ended and replay == seen
    resumed_at_end, ended = read_events(other, request_id, last_event_id=seen[-1].id)
    assert ended and resumed_at_end == []
    query = httpx.get(f"{other}/api/requests/{request_id}/events", params={"last_event_id": before[-1].id}, timeout=30)
    assert query.status_code == 200 and query.text.count("event: ") == len(after)

    unknown = stack.client.get("/api/requests/req-0000000000000000/events")
    assert unknown.status_code == 404 and unknown.json() == {"detail": "Request not found"}
    bad = stack.client.get(f"/api/requests/{request_id}/events", headers={"Last-Event-ID": "soon"})
    assert bad.status_code == 400

    running = stack.generate("a slow one", steps=50)  # an open stream must not hold up a stopping api
    with (
        httpx.Client(base_url=other, timeout=httpx.Timeout(10, read=30)) as client,
        client.stream("GET", f"/api/requests/{running}/events") as response,
    ):
        lines = response.iter_lines()
        assert next(lines).startswith("id: ")
        started = time.monotonic()
        stack.stop("api@2")
        assert time.monotonic() - started < 8, "the api waited for the open stream"
        rest = list(lines)  # the server ended the stream: no hang until the read timeout
    assert "event: completed" not in rest
