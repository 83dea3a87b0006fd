"""The pod fleet on RunPod — the RunPod emulator — end to end: autoscaling within the maximum, idle
stop then terminate, a never-ready pod replaced, GPU fall-over, adoption after a pod-manager crash,
every /api/runpod endpoint, and the key found nowhere it must not be."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any
from uuid import uuid4

import httpx
import nats
import pytest

from tests.support.emulator import Emulator
from tests.support.stack import Stack, wait_for
from vibewave.contracts.events import PODS_STREAM, PodEvent
from vibewave.devstack.nats_server import EmbeddedNats
from vibewave.runtime.broker import decode

pytestmark = pytest.mark.e2e

KEY = f"rpa_E2ESECRET_{uuid4().hex}"
MAX_PODS = 3
# POD_READY_TIMEOUT: three pods bootstrap at once here (token proxy, ComfyUI simulator); on a loaded 2-core CI
# machine that took more than 4 s, so the bound leaves room while a never-ready pod still fails in seconds.
IDLE_S, TERMINATE_S, READY_S = 2.0, 3.0, 10.0


@pytest.fixture(scope="module", params=["rest", "graphql"])
def api(request: pytest.FixtureRequest) -> str:
    """RUNPOD_API: the whole module runs once over REST v2 (the default) and once over GraphQL."""
    return str(request.param)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory, api: str) -> Iterator[Emulator]:
    running = Emulator(tmp_path_factory.mktemp(f"emulator-{api}"), KEY)
    yield running
    running.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, emulator: Emulator, api: str) -> Iterator[Stack]:
    """A stack on a NATS server of each transport's own: the tests count every pod event on the streams."""
    pod_manager_env = {
        **emulator.pod_manager_env(),
        "RUNPOD_API": api,
        "OTEL_TRACES_EXPORTER": "console",  # spans go to the captured output, where the key must not be
    }
    with ExitStack() as cleanup:
        server = EmbeddedNats(tmp_path_factory.mktemp(f"fleet-nats-{api}"))
        server.start()
        cleanup.callback(server.stop)
        services = Stack(
            server.url, tmp_path_factory.mktemp(f"fleet-home-{api}"), service_env={"pod-manager": pod_manager_env},
            MAX_PODS=str(MAX_PODS), POD_IDLE_TIMEOUT=str(IDLE_S), POD_TERMINATE_TIMEOUT=str(TERMINATE_S),
            POD_READY_TIMEOUT=str(READY_S), POD_SYNC_INTERVAL="1", LOG_LEVEL="DEBUG",
        )  # fmt: skip
        cleanup.callback(services.close)
        services.start()
        services.wait_healthy(timeout=60)
        services.responses: list[str] = []  # type: ignore[misc]
        services.client.event_hooks["response"] = [
            lambda r: services.responses.append(r.read().decode(errors="replace"))
        ]
        yield services


def record(stack: Stack, request_id: str, statuses: set[str], timeout: float = 90) -> Any:
    return stack.record(request_id, statuses, timeout)


def submit(stack: Stack, n: int, steps: int = 20) -> list[str]:
    ids = []
    for i in range(n):
        response = stack.client.post("/api/qwen/generate-async", json={"prompt": f"fleet {i}", "steps": steps})
        assert response.status_code == 202
        ids.append(response.json()["request_id"])
    return ids


async def _pod_events(nats_url: str) -> list[PodEvent]:
    nc = await nats.connect(nats_url)
    events: list[PodEvent] = []
    try:
        js = nc.jetstream()
        pending = (await js.stream_info(PODS_STREAM.name)).state.messages
        sub = await js.subscribe("vw.pod.>", ordered_consumer=True)
        while len(events) < pending:
            msg = await sub.next_msg(timeout=5)
            events.append(decode(msg.data, PodEvent))
        await sub.unsubscribe()
    finally:
        await nc.close()
    return events


def pod_events(stack: Stack) -> list[PodEvent]:
    return asyncio.run(_pod_events(stack.env["NATS_URL"]))


def live_pods(stack: Stack) -> set[str]:
    live: dict[str, str] = {}
    for event in pod_events(stack):
        live[event.pod.id] = event.pod.status
    return {pod_id for pod_id, status in live.items() if status in ("creating", "starting", "ready")}


def max_concurrent_live(events: list[PodEvent]) -> int:
    status: dict[str, str] = {}
    peak = 0
    for event in events:
        status[event.pod.id] = event.pod.status
        peak = max(peak, sum(1 for s in status.values() if s in ("creating", "starting", "ready")))
    return peak


def all_terminated(stack: Stack) -> bool:
    return not live_pods(stack) and not any(
        e.pod.status == "stopped" and e.pod.id not in terminated_ids(stack) for e in pod_events(stack)
    )


def terminated_ids(stack: Stack) -> set[str]:
    return {e.pod.id for e in pod_events(stack) if e.pod.status == "terminated"}


def test_a_burst_scales_to_the_maximum_never_beyond_then_stops_and_terminates(stack: Stack):
    ids = submit(stack, 9)
    for request_id in ids:
        assert record(stack, request_id, {"completed", "failed"}).status == "completed"
    wait_for(lambda: all_terminated(stack), 60, "idle pods to stop and then terminate", interval=0.5)
    events = pod_events(stack)
    assert max_concurrent_live(events) == MAX_PODS, "scaled to the maximum, never beyond"
    by_pod: dict[str, dict[str, float]] = {}
    for event in events:
        by_pod.setdefault(event.pod.id, {})[event.pod.status] = event.pod.updated_at.timestamp()
    assert len(by_pod) == MAX_PODS
    for pod_id, times in by_pod.items():
        assert {"starting", "ready", "stopped", "terminated"} <= set(times), (pod_id, times)
        assert times["stopped"] - times["ready"] >= IDLE_S, "stopped only after the idle timeout"
        assert times["terminated"] - times["stopped"] >= TERMINATE_S, "terminated only after the longer timeout"


def test_a_pod_that_never_becomes_ready_is_replaced(stack: Stack, emulator: Emulator):
    emulator.faults({"never_ready": {"mode": "no_comfyui", "times": 1}})
    try:
        (request_id,) = submit(stack, 1)
        done = record(stack, request_id, {"completed", "failed"})
    finally:
        emulator.faults(None)
    assert done.status == "completed"
    failed = [e.pod for e in pod_events(stack) if e.pod.status == "failed"]
    assert failed and "did not answer within" in (failed[-1].error or "")
    assert failed[-1].id in terminated_ids(stack), "the failed pod is terminated, not left to bill"
    assert done.pod_id != failed[-1].id


def test_a_capacity_error_falls_over_to_the_next_gpu_type(stack: Stack, emulator: Emulator, api: str):
    emulator.faults({"capacity": {"gpu_types": ["NVIDIA GeForce RTX 4090"], "times": 3}})
    try:
        created = stack.client.post("/api/runpod/pods", json={})
    finally:
        emulator.faults(None)
    assert created.status_code == 201, created.text
    pod = created.json()
    assert pod["gpu_type"] == "RTX A6000"
    if api == "rest":
        assert pod["details"]["gpu"]["id"] == "NVIDIA RTX A6000"
    else:
        assert pod["details"]["machine"]["gpuDisplayName"] == "RTX A6000"
    assert stack.client.post(f"/api/runpod/pods/{pod['id']}/terminate").status_code == 200


def test_a_restarted_pod_manager_adopts_its_pods(stack: Stack, emulator: Emulator):
    ids = submit(stack, 6, steps=40)
    wait_for(lambda: len(live_pods(stack)) >= 2, 30, "the fleet to grow")
    stack.kill("pod-manager")
    before = {p["id"] for p in emulator.pods()}
    stack.start("pod-manager")
    for request_id in ids:
        assert record(stack, request_id, {"completed", "failed"}).status == "completed"
    created_after = {p["id"] for p in emulator.pods()} - before
    assert len(before) + len(created_after) <= MAX_PODS, "nothing was created twice"
    adopted = {e.pod.id for e in pod_events(stack)}
    assert before <= adopted, "every pod that existed at the crash is known again"
    ours = {p["id"] for p in stack.client.get("/api/runpod/pods").json() if p["managed"]}
    assert {p["id"] for p in emulator.pods()} <= ours, "no orphan"


def test_every_runpod_endpoint(stack: Stack, emulator: Emulator, api: str):
    c = stack.client
    health = c.get("/api/runpod/health")
    assert health.status_code == 200 and health.json()["provider"] == "runpod" and health.json()["healthy"]
    account = c.get("/api/runpod/account").json()["account"]
    assert account["clientBalance"] > 0 and "spendLimit" in account
    gpus = c.get("/api/runpod/gpu-types").json()["gpu_types"]
    assert "NVIDIA GeForce RTX 4090" in {g["id"] for g in gpus} and "unknown" not in {g["id"] for g in gpus}
    assert {t["id"] for t in c.get("/api/runpod/cloud-types").json()["cloud_types"]} == {"SECURE", "COMMUNITY", "ALL"}
    volumes = c.get("/api/runpod/network-volumes").json()["network_volumes"]
    assert volumes and c.get(f"/api/runpod/network-volumes/{volumes[0]['id']}").json()["id"] == volumes[0]["id"]
    assert c.get("/api/runpod/network-volumes/nope").status_code == 404
    assert isinstance(c.get("/api/runpod/templates").json()["templates"], list)

    wait_for(lambda: len(live_pods(stack)) < MAX_PODS, 60, "room in the fleet for one more pod", interval=0.5)
    pod = c.post("/api/runpod/pods", json={"workflow_name": "comfyui_image_qwen"}).json()
    pod_id = pod["id"]
    ports = pod["details"]["ports"]  # REST v2: a list; GraphQL: one comma-separated string
    assert len(pod_id) == 14 and pod["managed"] and (ports[0] if api == "rest" else ports).startswith("22/tcp")
    env = pod["details"].get("env") or {}  # REST v2 pods carry theirs (GraphQL's selection has none)
    assert all(value == "<hidden>" for value in env.values()), "env keys only: the pod's token stays hidden"
    assert stack.pod_token(pod["name"]) not in json.dumps(pod)
    rest_calls = emulator.calls("rest:createPod") + emulator.calls("rest:listPods") + emulator.calls("rest:getPod")
    graphql_calls = emulator.calls("podFindAndDeployOnDemand") + emulator.calls("pod") + emulator.calls("myself")
    assert (rest_calls > 0) == (api == "rest"), f"RUNPOD_API={api}: {emulator.state()['calls']}"
    assert graphql_calls > 0, "the balance is read over GraphQL in both modes"
    assert pod_id in {p["id"] for p in c.get("/api/runpod/pods").json()}
    wait_for(lambda: c.get(f"/api/runpod/pods/{pod_id}/ip").json()["ip"], 20, "the pod's runtime")
    address = c.get(f"/api/runpod/pods/{pod_id}/ip").json()
    assert address["comfyui_url"].endswith(f"/proxy/{pod_id}-8188") and address["ports"]
    assert c.post(f"/api/runpod/pods/{pod_id}/stop").json()["provider_state"] == "stopped"
    assert c.post(f"/api/runpod/pods/{pod_id}/start").json()["provider_state"] in ("starting", "running")
    wait_for(lambda: c.get(f"/api/runpod/pods/{pod_id}").json()["status"] == "ready", 20, "the resumed pod ready")
    gpu = next(p for p in emulator.pods() if p["id"] == pod_id)["machine"]["gpuTypeId"]
    httpx.post(f"{emulator.url}/emulator/gpu-types", json={gpu: {"available": 0}}).raise_for_status()
    try:  # no GPU of its type is free: a stop and a resume could not get one back, an in-place restart keeps its own
        assert c.post(f"/api/runpod/pods/{pod_id}/restart").json()["status"] == "starting", "not ready until it answers"
        assert emulator.calls("rest:podAction:restart") == 1, "RunPod's in-place restart"
        wait_for(lambda: c.get(f"/api/runpod/pods/{pod_id}").json()["status"] == "ready", 20, "the restarted pod ready")
    finally:
        httpx.post(f"{emulator.url}/emulator/gpu-types", json={gpu: {"available": None}}).raise_for_status()
    assert c.post(f"/api/runpod/pods/{pod_id}/terminate").json()["status"] == "terminated"
    for method, path in [
        ("GET", f"/api/runpod/pods/{pod_id}"),
        ("GET", "/api/runpod/pods/zzzzzzzzzzzzzz/ip"),
        ("POST", "/api/runpod/pods/zzzzzzzzzzzzzz/stop"),
    ]:
        assert c.request(method, path).status_code == 404, path  # fmt: skip
    assert c.post("/api/runpod/pods", json={"workflow_name": "nope"}).status_code == 400

    emulator.faults({"internal_error": True})
    try:
        failing = c.get("/api/runpod/gpu-types")
        assert failing.status_code == 500
        assert (
            failing.json()["detail"]
            == "RunPod API error: Something went wrong. Please try again later or contact support."
        )
        assert c.get("/api/runpod/health").status_code == 503
    finally:
        emulator.faults(None)
    emulator.faults({"insufficient_balance": True})
    try:
        broke = c.post("/api/runpod/pods", json={})
        assert broke.status_code == 500 and broke.json()["detail"].startswith("RunPod API error: ")
    finally:
        emulator.faults(None)


def test_the_key_and_pod_tokens_appear_in_no_log_trace_event_or_response(stack: Stack, emulator: Emulator):
    async def bus_contents() -> list[bytes]:
        nc = await nats.connect(stack.env["NATS_URL"])
        found: list[bytes] = []
        try:
            js = nc.jetstream()
            for info in await js.streams_info():
                for seq in range(info.state.first_seq, info.state.last_seq + 1):
                    try:
                        message = await js.get_msg(info.config.name, seq)
                    except Exception:
                        continue
                    found.append((message.data or b"") + str(message.headers or {}).encode())
        finally:
            await nc.close()
        return found

    contents = asyncio.run(bus_contents())
    assert len(contents) > 100, "the streams and buckets were read"
    logs = [p.read_text(errors="replace") for p in (stack.home / "logs").glob("*.log")]
    outputs = [p.read_text(errors="replace") for p in stack.home.glob("*.out")]
    assert any('"trace_id"' in text or "span_id" in text for text in outputs), "traces were captured"
    assert stack.responses, "responses were captured"  # type: ignore[attr-defined]
    names = set(re.findall(rb'"name":"(vibewave-[0-9a-z-]+)"', b"".join(contents)))
    assert names, "pods were created and their events read"
    secrets = [KEY, stack.pod_token_key, *(stack.pod_token(name.decode()) for name in names)]
    emulator_log = "\n".join(  # the emulator's own log and every pod's container log (the bootstrap, ComfyUI)
        p.read_text(errors="replace") for p in [emulator.work / "emulator.out", *emulator.work.rglob("*.log")]
    )
    assert "vibewave-bootstrap:" in emulator_log, "the pods' own logs were read"
    for secret in secrets:
        assert not [c for c in contents if secret.encode() in c], "a secret is in a NATS message or KV value"
        for text in [*logs, *outputs, *stack.responses]:  # type: ignore[attr-defined]
            assert secret not in text
    for secret in secrets[1:]:  # RunPod's side (the emulator) knows its own key, never the pods' tokens
        assert secret not in emulator_log
