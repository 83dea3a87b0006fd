"""The REST v2 contract, both ways, over real HTTP.

1. A fake RunPod origin (an aiohttp server) answers with the reference's shapes verbatim (pods §4.2/§11.8,
   GPU catalogue §5.1, volumes §6, error bodies §2.3): our client parses every one and maps each error to
   the precise `ProviderError`, sending a key only in its Authorization header, a real User-Agent and
   values only in JSON bodies and percent-encoded paths.
2. The repo's RunPod emulator, as a process of its own, answers every request our REST client makes with
   those same shapes (field names and JSON types).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.support import runpod_v2 as ref
from tests.support.emulator import Emulator
from vibewave.pod_manager.providers.base import (
    BadRequest,
    CapacityError,
    Conflict,
    HostBusy,
    InsufficientBalance,
    PodBoot,
    PodNotFound,
    ProviderError,
    ProviderState,
    RateLimited,
    Unauthorized,
    Unavailable,
)
from vibewave.pod_manager.providers.runpod import RunPodPodDefaults, RunPodProvider
from vibewave.pod_manager.runpod_api import ApiRetired, Forbidden, RunPodClient, RunPodHttp

pytestmark = pytest.mark.integration

KEY = "rpa_CONTRACTSECRET_0123456789"
START = "bash -lc 'cd /workspace && echo \"$VW_POD_TOKEN\" | sha256sum && exec python3 -m vibewave.pod.boot'"
BOOT = PodBoot(env={"VW_POD_TOKEN": "tok-'\"$x", "VW_WORKFLOWS": "comfyui_image_qwen"}, start_command=START)
GPU_TYPES = ("NVIDIA GeForce RTX 4090", "NVIDIA RTX A6000")


@dataclass
class Seen:
    method: str
    raw_path: str
    headers: dict[str, str]
    body: Any


class Origin:
    """RunPod as the reference shows it: default answers per route, a queue of scripted ones on top."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.script: dict[str, list[tuple[int, Any, dict[str, str]]]] = {}

    def on(self, route: str, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        self.script.setdefault(route, []).append((status, body, headers or {}))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = json.loads(raw) if raw else None
        self.seen.append(Seen(request.method, request.raw_path, dict(request.headers), body))
        route = f"{request.method} {request.raw_path}"
        if self.script.get(route):
            status, answer, headers = self.script[route].pop(0)
        else:
            status, answer, headers = self.default(request.method, request.raw_path, body)
        if answer is None:
            return web.Response(status=status, headers=headers)
        if isinstance(answer, str):
            return web.Response(status=status, text=answer, content_type="text/html", headers=headers)
        kind = "application/problem+json" if status >= 400 else "application/json"
        return web.Response(status=status, text=json.dumps(answer), content_type=kind, headers=headers)

    def default(self, method: str, path: str, body: Any) -> tuple[int, Any, dict[str, str]]:
        pod_id = ref.V2_POD["id"]
        answers: dict[str, Any] = {
            "GET /v2/pods": (200, {"pods": [ref.V2_POD, ref.V2_POD_STOPPED | {"id": "k3v9x2q7m1p0ab"}]}),
            f"GET /v2/pods/{pod_id}": (200, ref.V2_POD),
            "POST /v2/pods": (201, ref.V2_POD_CREATED),
            f"DELETE /v2/pods/{pod_id}": (204, None),
            "GET /v2/catalog/gpus": (200, ref.GPUS),
            "GET /v2/network-volumes": (200, ref.VOLUMES),
            "GET /v2/network-volumes/grvtso8ftn": (200, ref.VOLUMES["networkVolumes"][0]),
            "GET /v2/templates": (200, {"templates": [ref.TEMPLATE]}),
            "POST /graphql": (200, {"data": {"myself": {"clientBalance": 27.64, "currentSpendPerHr": 0.44}}}),
        }
        if method == "POST" and path == f"/v2/pods/{pod_id}/action":
            action = body["action"]
            return (204, None, {}) if action == "terminate" else (200, {
                "stop": ref.V2_POD_STOPPED, "start": ref.V2_POD, "restart": ref.V2_POD}[action], {})  # fmt: skip
        status, answer = answers.get(f"{method} {path}", (404, ref.NOT_FOUND_404))
        return status, answer, {}


@pytest.fixture
async def origin() -> AsyncIterator[tuple[Origin, str]]:
    fake = Origin()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield fake, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@pytest.fixture
async def client(origin: tuple[Origin, str]) -> AsyncIterator[RunPodClient]:
    made = RunPodClient(RunPodHttp(origin[1], KEY), api="rest", query_retries=1, max_rate_limit_wait_s=5)
    try:
        yield made
    finally:
        await made.close()


def defaults(proxy: str, **kw: Any) -> RunPodPodDefaults:
    base = dict(
        gpu_types=GPU_TYPES[:1], image="runpod/pytorch:1.0.2-cu1281-torch280-ubuntu2404", container_disk_gb=50,
        min_memory_gb=24, ports="22/tcp,8188/http", cloud_type="ALL", docker_args="", template_id=None,
        proxy_url_template=proxy + "/proxy/{pod_id}-{port}", comfyui_port=8188,
        allowed_cuda_versions=("12.8", "12.9", "13.0"),
    )  # fmt: skip
    return RunPodPodDefaults(**(base | kw))


# --- 1. the fake origin: our client parses the reference's shapes -------------------------------


async def test_every_operation_parses_the_reference_shapes(origin, client):
    fake, url = origin
    provider = RunPodProvider(client, defaults(url, network_volume_id="grvtso8ftn"), url)
    await provider.validate()
    pods = {p.id: p for p in await provider.list()}
    running, stopped = pods["5xpma5eg46tqjq"], pods["k3v9x2q7m1p0ab"]
    assert (running.state, running.ip, running.cost_per_hr) == (ProviderState.RUNNING, "213.173.104.74", 0.72)
    assert running.details["env"] == {"PUBLIC_KEY": "<hidden>"}
    assert (stopped.state, stopped.cost_per_hr) == (ProviderState.STOPPED, 0.0)
    created = await provider.create("vibewave-wf-0001", 24, BOOT)
    assert (created.id, created.state, created.gpu_type) == ("k3v9x2q7m1p0ab", ProviderState.STARTING, "RTX 4090")
    assert created.gpu_memory_gb == 24 and created.details["env"] == {"PUBLIC_KEY": "<hidden>"}
    await provider.restart("5xpma5eg46tqjq")
    await provider.stop("5xpma5eg46tqjq")
    await provider.terminate("5xpma5eg46tqjq")
    assert (await client.gpu_types())[0]["name"] == "RTX 4090"
    assert (await provider.catalogue("network_volumes"))[0]["dataCenter"] == "EU-RO-1"
    assert (await provider.catalogue("templates"))[0]["id"] == "9x4m2p7v"
    assert (await provider.catalogue("account"))["clientBalance"] == 27.64, "the balance: GraphQL"
    (create,) = [s for s in fake.seen if (s.method, s.raw_path) == ("POST", "/v2/pods")]
    assert create.body["args"] == START and create.body["env"] == BOOT.env, "byte for byte, in the JSON body"
    assert create.body["mounts"] == {"network": [{"volumeId": "grvtso8ftn", "path": "/workspace"}]}
    assert create.body["dataCenterIds"] == ["EU-RO-1"] and create.body["gpu"]["count"] == 1
    assert [s.body for s in fake.seen if s.raw_path.endswith("/action")] == [{"action": "restart"}, {"action": "stop"}]
    assert ("DELETE", "/v2/pods/5xpma5eg46tqjq") in {(s.method, s.raw_path) for s in fake.seen}


async def test_the_key_travels_only_in_the_authorization_header_with_a_real_user_agent(origin, client):
    fake, _ = origin
    await client.pods()
    await client.pod("a/b c")
    await client.create_pod({"name": "x", "image": "i", "gpu": {"id": "NVIDIA GeForce RTX 4090", "count": 1}})
    await client.account()
    assert "/v2/pods/a%2Fb%20c" in {s.raw_path for s in fake.seen}, "ids are percent-encoded"
    for seen in fake.seen:
        assert seen.headers["Authorization"] == f"Bearer {KEY}"
        assert KEY not in seen.raw_path and KEY not in json.dumps(seen.body)
        assert seen.headers["User-Agent"].startswith("vibewave-pod-manager/")
        assert "Python-urllib" not in seen.headers["User-Agent"]
        if seen.body is not None:
            assert seen.headers["Content-Type"].startswith("application/json")
    assert KEY not in repr(client.transport)


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (401, ref.UNAUTHORIZED_401, Unauthorized),
        (403, ref.FORBIDDEN_403, Forbidden),
        (403, "error code: 1010", Unavailable),
        (402, ref.PAYMENT_402, InsufficientBalance),
        (404, ref.NOT_FOUND_404, PodNotFound),
        (409, ref.CONFLICT_409, Conflict),
        (400, ref.CAPACITY_400, CapacityError),
        (400, ref.HOST_BUSY_400, HostBusy),
        (422, ref.ACTION_422, BadRequest),
        (413, {"title": "Content Too Large", "status": 413, "detail": "request body too large"}, BadRequest),
        (410, {"title": "Gone", "status": 410, "detail": "gone"}, ApiRetired),
        (500, {"title": "Internal Server Error", "status": 500, "detail": "upstream failure"}, Unavailable),
        (502, "<html><body>502 Bad Gateway</body></html>", Unavailable),
    ],
)  # fmt: skip
async def test_each_error_maps_precisely(origin, client, status, body, error):
    fake, _ = origin
    fake.on("POST /v2/pods/5xpma5eg46tqjq/action", status, body)
    with pytest.raises(ProviderError) as raised:
        await client.pod_action("5xpma5eg46tqjq", "start")
    assert type(raised.value) is error, raised.value.message
    assert KEY not in raised.value.message


async def test_error_texts_keep_runpods_words(origin, client):
    fake, _ = origin
    fake.on("POST /v2/pods", 422, ref.FIELD_422)
    with pytest.raises(BadRequest, match=r"missing property 'dataCenter'.*'dataCenterId' not allowed"):
        await client.create_pod({"name": "x"})
    fake.on("POST /v2/pods", 400, ref.CAPACITY_400)
    with pytest.raises(CapacityError, match="no longer any instances available"):
        await client.create_pod({"name": "x"})
    fake.on("POST /v2/pods", 404, {"title": "Not Found", "status": 404, "detail": "template not found"})
    with pytest.raises(BadRequest, match="template"):
        await client.create_pod({"name": "x", "templateId": "nope"})
    assert await client.pod("nope") is None, "a missing pod reads as None"


async def test_a_429_is_waited_out_as_retry_after_says_then_given_up(origin, client):
    fake, _ = origin
    fake.on("GET /v2/pods", 429, ref.TOO_MANY_429, {"Retry-After": "0"})
    assert len(await client.pods()) == 2, "repeated after Retry-After"
    fake.on("POST /v2/pods", 429, ref.TOO_MANY_429, {"Retry-After": "7"})
    with pytest.raises(RateLimited) as raised:
        await client.create_pod({"name": "x"})
    assert raised.value.retry_after_s == 7 and "minute window" in raised.value.message
    assert [s.raw_path for s in fake.seen].count("/v2/pods") == 3


async def test_reads_are_retried_on_transient_failures_and_creates_never_blindly(origin, client):
    fake, url = origin
    fake.on("GET /v2/catalog/gpus", 502, "<html>bad gateway</html>")
    assert (await client.gpu_types())[0]["id"] == "NVIDIA GeForce RTX 4090"
    fake.on("POST /v2/pods", 500, {"title": "Internal Server Error", "status": 500, "detail": "upstream"})
    provider = RunPodProvider(client, defaults(url, cloud_type="SECURE"), url)
    adopted = await provider.create("imgtbx-v2-probe")  # the listed pod of that name: the create happened
    assert adopted.id == "5xpma5eg46tqjq"
    assert [(s.method, s.raw_path) for s in fake.seen].count(("POST", "/v2/pods")) == 1


async def test_the_list_follows_pagination_cursors(origin, client):
    fake, _ = origin
    page = {"hasNextPage": True, "nextCursor": "eyJpZCI6IjEifQ=="}
    fake.on("GET /v2/pods", 200, {"pods": [ref.V2_POD], "pagination": page})
    fake.on("GET /v2/pods?cursor=eyJpZCI6IjEifQ%3D%3D", 200, {"pods": [ref.V2_POD_CREATED],
                                                            "pagination": {"hasNextPage": False}})  # fmt: skip
    assert [p["id"] for p in await client.pods()] == ["5xpma5eg46tqjq", "k3v9x2q7m1p0ab"]


async def test_the_balance_degrades_when_graphql_is_gone(origin, client):
    fake, _ = origin
    fake.on("POST /graphql", 410, "Gone")
    account = await client.account()
    assert account["clientBalance"] is None and account["currentSpendPerHr"] == 0.72
    assert "410" in account["balanceUnavailable"]


# --- 2. the emulator answers our client's every request with the reference's shapes -------------


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    work: Path = tmp_path_factory.mktemp("contract-emulator")
    running = Emulator(work, KEY, "--no-comfyui", "--cloudflare-ua-check", "--rest-status-mode", "spec")
    yield running
    running.close()


def same_shape(ours: Any, reference: Any, optional: tuple[str, ...] = ()) -> None:
    errors = ref.shape_errors(ours, reference, optional=optional)
    assert not errors, errors


async def test_the_emulator_answers_our_rest_client_with_the_reference_shapes(emulator):
    client = RunPodClient(RunPodHttp(emulator.url, KEY), api="rest", query_retries=0)
    provider = RunPodProvider(
        client, defaults(emulator.url, gpu_types=GPU_TYPES, network_volume_id="agv6w2qcg7"), emulator.url
    )
    try:
        await provider.validate()  # GET /v2/catalog/gpus, GET /v2/network-volumes/{id}: the UA passed Cloudflare
        for gpu in await client.gpu_types():
            same_shape(gpu, ref.GPUS["gpus"][0], optional=ref.GPU_AVAILABILITY_ONLY)
        for volume in await client.network_volumes():
            same_shape(volume, ref.VOLUMES["networkVolumes"][0])
        same_shape(await client.network_volume("agv6w2qcg7"), ref.VOLUMES["networkVolumes"][0])
        templates = await client.templates()
        assert templates, "the emulator seeds an own template"
        for template in templates:
            same_shape(template, ref.TEMPLATE)

        made = await provider.create("vibewave-contract-0001", 24, BOOT)
        assert made.state == ProviderState.STARTING
        same_shape(made.details, ref.V2_POD_CREATED)
        raw = await client.pod(made.id)
        assert raw is not None and raw["args"] == START, "the start command arrived byte for byte"
        assert {k: raw["env"][k] for k in BOOT.env} == BOOT.env and made.details["env"]["VW_POD_TOKEN"] == "<hidden>"
        assert raw["mounts"] == {"network": [{"volumeId": "agv6w2qcg7", "path": "/workspace"}]}
        assert raw["dataCenterId"] == "EU-RO-1" and raw["cudaVersion"] in ("12.8", "12.9", "13.0")

        running = await wait_until_running(provider, made.id)
        same_shape(running.details, ref.V2_POD)
        assert running.ip and running.details["runtime"]["ports"]
        for listed in await client.pods():
            same_shape(listed, ref.V2_POD)

        await provider.stop(made.id)
        stopped = await provider.get(made.id)
        assert stopped is not None and stopped.state == ProviderState.STOPPED
        same_shape(stopped.details, ref.V2_POD_STOPPED)
        with pytest.raises(Conflict):
            await provider.restart(made.id)  # 409: restart is not an action of an EXITED pod
        await provider.start(made.id)
        await wait_until_running(provider, made.id)
        await provider.restart(made.id)
        await provider.terminate(made.id)
        assert await client.pod(made.id) is None, "404 after terminate"
        with pytest.raises(PodNotFound):
            await client.pod_action(made.id, "start")
        assert isinstance((await client.account())["clientBalance"], float | int), "GraphQL on the same origin"
    finally:
        await client.close()


async def test_the_emulators_errors_are_the_reference_problem_bodies(emulator):
    headers = {"Authorization": f"Bearer {KEY}", "User-Agent": "vibewave-contract-test/1"}
    async with httpx.AsyncClient(base_url=emulator.url, headers=headers) as http:
        missing = await http.get("/v2/pods/zzzzzzzzzzzzzz")
        bad_action = await http.post("/v2/pods/zzzzzzzzzzzzzz/action", json={"action": "reset"})
        no_key = await http.get("/v2/pods", headers={"Authorization": ""})
    for response, reference in [(missing, ref.NOT_FOUND_404), (bad_action, ref.ACTION_422),
                                (no_key, ref.UNAUTHORIZED_401)]:  # fmt: skip
        assert response.status_code == reference["status"]
        assert response.headers["content-type"].startswith("application/problem+json")
        same_shape(response.json(), reference)
    assert bad_action.json()["errors"] == ref.ACTION_422["errors"]
    assert no_key.json() == ref.UNAUTHORIZED_401


async def wait_until_running(provider: RunPodProvider, pod_id: str) -> Any:
    for _ in range(100):
        pod = await provider.get(pod_id)
        if pod is not None and pod.state == ProviderState.RUNNING:
            return pod
        await asyncio.sleep(0.1)
    raise AssertionError(f"pod {pod_id} never ran")
