"""One request's trace, end to end, as an OTLP collector receives it: the api's server span (named by route
template) → the scheduler's handling → the executor's run → its ComfyUI calls → one span per node ComfyUI
executed; and the `pod boot` span of the pod created for it, in pod-manager's own trace, linked to the
request's. No span carries the API key, the pod's ComfyUI token or the RunPod key. With tracing off, every
event of a request carries its caller's trace id and sampled flag."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import nats
import pytest

from tests.e2e.conftest import StackFactory
from tests.support.emulator import Emulator
from tests.support.otlp import OtlpReceiver, ReceivedSpan
from vibewave.contracts.events import REQ_PREFIX, REQUESTS_STREAM

pytestmark = pytest.mark.e2e

KEY = f"rpa_E2ETRACE_{uuid4().hex}"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
SERVER, CLIENT = 2, 3  # OTLP span kinds


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    running = Emulator(tmp_path_factory.mktemp("emulator-trace"), KEY)
    yield running
    running.close()


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


def named(spans: list[ReceivedSpan], name: str, service: str | None = None) -> list[ReceivedSpan]:
    return [s for s in spans if s.name == name and (service is None or s.service == service)]


def ancestors(span: ReceivedSpan, by_id: dict[str, ReceivedSpan]) -> list[ReceivedSpan]:
    chain: list[ReceivedSpan] = []
    while span.parent_id in by_id:
        span = by_id[span.parent_id]
        chain.append(span)
    return chain


def every_value(span: ReceivedSpan) -> Iterator[str]:
    yield span.name
    for attributes in (span.attributes, *(e.attributes for e in span.events), *(lk.attributes for lk in span.links)):
        for value in attributes.values():
            yield from (str(v) for v in value) if isinstance(value, list) else (str(value),)


def test_one_requests_trace_reaches_each_comfyui_node_and_the_pod_booted_for_it(
    receiver: OtlpReceiver, start_own_stack: StackFactory, emulator: Emulator
) -> None:
    """(The receiver first: it stops after the stack, so the services' last exports still land.)"""
    admin = secrets.token_urlsafe(32)
    stack = start_own_stack(
        service_env={"pod-manager": emulator.pod_manager_env()},
        MAX_PODS="1",
        MIN_WARM_PODS="0",
        POD_SYNC_INTERVAL="1",
        VIBEWAVE_ADMIN_KEY=admin,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_BSP_SCHEDULE_DELAY="200",
    )
    assert not emulator.pods(), "no pod before the request: one is booted for it"
    stack.client.headers["Authorization"] = f"Bearer {admin}"
    accepted = stack.client.post(
        "/api/qwen/generate-async", json={"prompt": "traced to the GPU", "steps": 3}, headers={"traceparent": CALLER}
    )
    assert accepted.status_code == 202, accepted.text
    request_id = accepted.json()["request_id"]
    assert stack.wait_status(request_id, {"completed", "failed"}, timeout=120)["status"] == "completed"
    record = stack.record(request_id, {"completed"})
    pod = next(p for p in emulator.pods() if p["id"] == record.pod_id)
    token = stack.pod_token(pod["name"])
    entry = emulator.history(record.pod_id, token)[record.prompt_id]
    graph: dict[str, Any] = entry["prompt"][2]
    cached = {str(n) for kind, data in entry["status"]["messages"] if kind == "execution_cached" for n in data["nodes"]}
    executed = set(graph) - cached
    assert executed, "the workflow ran nodes on the pod"

    def whole(spans: list[ReceivedSpan]) -> list[ReceivedSpan] | None:
        mine = [s for s in spans if s.trace_id == TRACE_ID]
        nodes = [s for s in mine if s.name.startswith("comfyui node ")]
        boots = [s for s in named(spans, "pod boot") if any(lk.trace_id == TRACE_ID for lk in s.links)]
        polls = named(spans, "GET /api/qwen/status/{request_id}")
        return spans if len(nodes) >= len(executed) and named(mine, "store output") and boots and polls else None

    spans = receiver.wait_for_spans(whole, 30, "the request's spans down to its nodes, and the boot linked to it")
    mine = [s for s in spans if s.trace_id == TRACE_ID]
    by_id = {s.span_id: s for s in mine}

    [server] = [
        s for s in mine if s.service == "vibewave-api" and s.kind == SERVER and s.parent_id == "00f067aa0ba902b7"
    ]
    assert server.name == "POST /api/qwen/generate-async"
    assert server.attributes["http.route"] == "/api/qwen/generate-async"
    assert server.attributes["http.request.method"] == "POST"
    assert server.attributes["http.response.status_code"] == 202
    assert server.attributes["url.path"] == "/api/qwen/generate-async"
    polls = named(spans, "GET /api/qwen/status/{request_id}", "vibewave-api")
    assert polls and polls[0].attributes["http.route"] == "/api/qwen/status/{request_id}", "named by route template"
    concrete = [s.name for s in spans if request_id in s.name or str(record.prompt_id) in s.name]
    assert not concrete, f"every span is named by a template (route, path, subject), not by ids: {concrete}"
    assert named(mine, "vw.req.{request_id}.submitted process", "vibewave-scheduler"), "messages by subject template"

    assert [s for s in mine if s.service == "vibewave-scheduler"], "the scheduler handled it in the caller's trace"
    [execute] = named(mine, "execute workflow", "vibewave-executor")
    [prompt] = named(mine, "comfyui prompt", "vibewave-executor")
    assert execute in ancestors(prompt, by_id)
    assert any(s.service == "vibewave-scheduler" for s in ancestors(execute, by_id)), "executor ← scheduler"
    assert server in ancestors(execute, by_id), "api → scheduler → executor, one tree"
    posts = named(mine, "comfyui POST /prompt")
    assert len(posts) == 1 and posts[0].kind == CLIENT and prompt in ancestors(posts[0], by_id)
    assert posts[0].attributes["http.response.status_code"] == 200
    assert posts[0].attributes["http.request.method"] == "POST"
    assert "?" not in posts[0].attributes["url.full"]
    assert named(mine, "comfyui GET /history/{prompt_id}") and named(mine, "comfyui GET /view")

    nodes = [s for s in mine if s.name.startswith("comfyui node ")]
    assert sorted(s.attributes["comfyui.node.id"] for s in nodes) == sorted(executed), "one span per executed node"
    for node in nodes:
        spec = graph[node.attributes["comfyui.node.id"]]
        assert node.name == f"comfyui node {spec['class_type']}"
        assert node.attributes["comfyui.node.class_type"] == spec["class_type"]
        assert node.attributes["comfyui.prompt_id"] == record.prompt_id
        assert node.parent_id == prompt.span_id
    progress = [e for n in nodes for e in n.events if e.name == "progress"]
    assert progress and all(e.attributes["max"] >= e.attributes["value"] >= 0 for e in progress), "steps as events"
    [store] = named(mine, "store output")
    assert record.result is not None and store.attributes["vibewave.file.name"] in record.result.files
    assert store.attributes["vibewave.file.bytes"] > 0 and store.attributes["vibewave.store.kind"] == "nats"

    [boot] = [
        s for s in named(spans, "pod boot", "vibewave-pod-manager") if any(lk.trace_id == TRACE_ID for lk in s.links)
    ]
    assert boot.trace_id != TRACE_ID and boot.attributes["vibewave.pod_id"] == record.pod_id
    assert boot.status == 1, "ended when the pod was judged ready"
    [create] = [s for s in named(spans, "pod create") if s.parent_id == boot.span_id]
    runpod = [s for s in spans if s.trace_id == boot.trace_id and s.name.startswith("runpod ")]
    assert runpod and all(s.kind == CLIENT for s in runpod), "the RunPod calls of the create"
    assert any(create in ancestors(s, {x.span_id: x for x in spans}) for s in runpod)
    assert not [s.name for s in spans if s.name.startswith("runpod ") and record.pod_id in s.name], "templated"

    secrets_ = {admin, token, KEY}
    leaked = [(s.service, s.name) for s in spans for v in every_value(s) if any(x in v for x in secrets_)]
    assert not leaked, f"secrets in spans: {leaked}"


def test_with_tracing_off_every_event_keeps_the_callers_trace_and_sampled_flag(start_own_stack: StackFactory):
    stack = start_own_stack()
    accepted = stack.client.post(
        "/api/qwen/generate-async", json={"prompt": "untraced", "steps": 2}, headers={"traceparent": CALLER}
    )
    assert accepted.status_code == 202, accepted.text
    request_id = accepted.json()["request_id"]
    assert stack.wait_status(request_id, {"completed", "failed"}, timeout=90)["status"] == "completed"
    headers = asyncio.run(events_of(stack.env["NATS_URL"], request_id))
    kinds = {subject.rsplit(".", 1)[-1] for subject, _ in headers}
    assert {"submitted", "assigned", "started", "attempt_succeeded", "completed"} <= kinds, kinds
    for subject, traceparent in headers:
        assert traceparent is not None, subject
        _, trace_id, _, flags = traceparent.split("-")
        assert (trace_id, flags) == (TRACE_ID, "01"), (subject, traceparent)


async def events_of(nats_url: str, request_id: str) -> list[tuple[str, str | None]]:
    """(subject, traceparent) of every event of the request in the REQUESTS stream, in order."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        sub = await js.subscribe(f"{REQ_PREFIX}.{request_id}.>", stream=REQUESTS_STREAM.name, ordered_consumer=True)
        found: list[tuple[str, str | None]] = []
        while True:
            try:
                msg = await sub.next_msg(timeout=1)
            except nats.errors.TimeoutError:
                return found
            found.append((msg.subject, (msg.headers or {}).get("traceparent")))
    finally:
        await nc.close()
