"""REST v2 over HTTP on the shared emulator: shapes, status codes, headers, every fault, rate limits, restart in
place with a real ComfyUI simulator, and the counters of `/emulator/state`."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.runpod_emu.helpers import wait_for
from vibewave.runpod_emu import RunningEmulator
from vibewave.runpod_emu.faults import (
    CAPACITY_MESSAGE,
    DEFAULT_INSUFFICIENT_BALANCE_MESSAGE,
    HOST_BUSY_MESSAGE,
    INTERNAL_ERROR_MESSAGE,
)

pytestmark = pytest.mark.integration

AUTH = {"Authorization": "Bearer test-key", "User-Agent": "vibewave-pod-manager/0.1"}
GPU = "NVIDIA GeForce RTX 4090"
POD = {"name": "vw-rest", "image": "vibewave/comfyui:0.33", "gpu": {"id": GPU, "count": 1}, "disk": 40}
COMFY_POD = POD | {"image": "runpod/comfyui:latest", "ports": ["8188/http", "22/tcp"]}
PROBLEM = "application/problem+json"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class Answer:
    def __init__(self, status: int, headers: Any, content_type: str, body: Any) -> None:
        self.status, self.headers, self.content_type, self.body = status, headers, content_type, body


async def rest(
    http: aiohttp.ClientSession,
    emu: RunningEmulator,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> Answer:
    async with http.request(
        method, emu.url + path, json=body, headers=AUTH if headers is None else headers, **kwargs
    ) as resp:
        assert resp.headers["X-Vibewave-Emulator"] == "runpod"
        uuid.UUID(resp.headers["x-request-id"])
        text = await resp.text()
        parsed: Any = text
        if resp.content_type in ("application/json", PROBLEM):
            parsed = await resp.json(content_type=None)
        return Answer(resp.status, resp.headers, resp.content_type, parsed)


async def gql(http: aiohttp.ClientSession, emu: RunningEmulator, query: str, variables: Any = None) -> Any:
    async with http.post(f"{emu.url}/graphql", json={"query": query, "variables": variables}, headers=AUTH) as resp:
        return resp.status, resp.headers, await resp.json(content_type=None)


async def faults(http: aiohttp.ClientSession, emu: RunningEmulator, switches: dict[str, Any]) -> None:
    async with http.post(f"{emu.url}/emulator/faults", json=switches) as resp:
        assert resp.status == 200, await resp.text()


async def state(http: aiohttp.ClientSession, emu: RunningEmulator) -> Any:
    async with http.get(f"{emu.url}/emulator/state") as resp:
        return await resp.json()


def is_problem(answer: Answer, status: int, title: str, detail: str) -> bool:
    return (
        answer.status == status
        and answer.content_type == PROBLEM
        and answer.body == {"title": title, "status": status, "detail": detail}
    )


async def test_pods_shared_with_graphql_both_ways(http: aiohttp.ClientSession, emu: RunningEmulator) -> None:
    created = await rest(http, emu, "POST", "/v2/pods", POD | {"env": {"K": "v"}})
    assert created.status == 201 and created.content_type == "application/json"
    assert "RateLimit" not in created.headers  # no quota configured: rate-limit-exempt, as RunPod sends then
    pod = created.body
    assert pod["status"] == "RUNNING" and pod["runtime"] is None and pod["cost"] == 0.69
    query = "query($i: PodFilter!) { pod(input: $i) { id desiredStatus imageName env costPerHr } }"
    _, _, seen = await gql(http, emu, query, {"i": {"podId": pod["id"]}})
    assert seen["data"]["pod"] == {
        "id": pod["id"],
        "desiredStatus": "RUNNING",
        "imageName": "vibewave/comfyui:0.33",
        "env": ["K=v"],
        "costPerHr": 0.69,
    }
    create = """mutation { podFindAndDeployOnDemand(input: {name: "g", imageName: "i", cloudType: SECURE,
        gpuTypeId: "NVIDIA L40S", ports: "8188/http"}) { id } }"""
    graphql_id = (await gql(http, emu, create))[2]["data"]["podFindAndDeployOnDemand"]["id"]
    listed = await rest(http, emu, "GET", "/v2/pods", params={"desiredStatus": "RUNNING", "includeClusterPods": "1"})
    assert {p["id"] for p in listed.body["pods"]} == {pod["id"], graphql_id}
    from_graphql = (await rest(http, emu, "GET", f"/v2/pods/{graphql_id}")).body
    assert from_graphql["gpu"] == {"id": "NVIDIA L40S", "count": 1} and from_graphql["ports"] == ["8188/http"]
    stopped = await rest(http, emu, "POST", f"/v2/pods/{graphql_id}/action", {"action": "stop"})
    assert stopped.body["status"] == "EXITED" and stopped.body["cost"] == 0.0
    resume = "mutation($i: PodResumeInput!) { podResume(input: $i) { desiredStatus } }"
    assert (await gql(http, emu, resume, {"i": {"podId": graphql_id, "gpuCount": 1}}))[2]["data"]["podResume"] == {
        "desiredStatus": "RUNNING"
    }
    assert (await rest(http, emu, "DELETE", f"/v2/pods/{pod['id']}")).status == 204
    assert is_problem(await rest(http, emu, "GET", f"/v2/pods/{pod['id']}"), 404, "Not Found", "pod not found")
    assert (await gql(http, emu, query, {"i": {"podId": pod["id"]}}))[2] == {"data": {"pod": None}}
    terminate = await rest(http, emu, "POST", f"/v2/pods/{graphql_id}/action", {"action": "terminate"})
    assert terminate.status == 204 and terminate.body == ""

    counted = await state(http, emu)
    assert counted["calls"] == {
        "rest:createPod": 1,
        "pod": 2,
        "podFindAndDeployOnDemand": 1,
        "rest:listPods": 1,
        "rest:getPod": 2,
        "rest:podAction:stop": 1,
        "podResume": 1,
        "rest:deletePod": 1,
        "rest:podAction:terminate": 1,
    }
    assert counted["podsCreated"] == 2 and counted["resumes"] == 1 and counted["restarts"] == 0
    assert counted["terminatedPodIds"] == [pod["id"], graphql_id] and counted["rateLimited"] == 0
    async with http.post(f"{emu.url}/emulator/reset") as resp:
        after = await resp.json()
    assert (after["calls"], after["podsCreated"], after["terminatedPodIds"]) == ({}, 0, [])


async def test_auth_and_router_answers(http: aiohttp.ClientSession, emu: RunningEmulator) -> None:
    missing = await rest(http, emu, "GET", "/v2/pods", headers={})
    assert is_problem(missing, 401, "Unauthorized", "missing bearer token")
    query_key = await rest(http, emu, "GET", "/v2/pods", headers={}, params={"api_key": "test-key"})
    assert is_problem(query_key, 401, "Unauthorized", "missing bearer token")
    wrong = await rest(http, emu, "GET", "/v2/pods", headers={"Authorization": "Bearer nope"})
    assert is_problem(wrong, 401, "Unauthorized", "invalid bearer token")

    emu.emulator.config.pod_scoped_keys.append("pod-key")
    scoped = {"Authorization": "Bearer pod-key"}
    assert is_problem(await rest(http, emu, "POST", "/v2/pods", POD, headers=scoped), 403, "Forbidden", "access denied")
    assert (await rest(http, emu, "GET", "/v2/pods/nopodnopodnopo", headers=scoped)).status == 404
    assert (await rest(http, emu, "GET", "/v2/catalog/gpus", headers=scoped)).status == 200

    for v1_path in ("/v2/networkvolumes", "/v2/pods/abc/stop", "/v2/pods/abc/update"):
        assert is_problem(await rest(http, emu, "POST", v1_path, {}), 404, "Not Found", "resource not found")
    wrong_method = await rest(http, emu, "PUT", "/v2/pods")
    assert wrong_method.status == 405 and wrong_method.headers["Allow"] == "GET, POST"
    assert wrong_method.body["detail"] == "The requested method is not allowed for this path."
    assert (await rest(http, emu, "PATCH", "/v2/pods/abc")).headers["Allow"] == "DELETE, GET"

    huge = await rest(http, emu, "POST", "/v2/pods", POD | {"env": {"BLOB": "x" * 102400}})
    assert huge.status == 413 and huge.body["title"] == "Request Entity Too Large"
    async with http.post(f"{emu.url}/v2/pods", data=b"{not json", headers=AUTH) as resp:
        assert resp.status == 400 and resp.content_type == PROBLEM
    invalid = await rest(http, emu, "POST", "/v2/pods/abc/action", {"action": "reset"})
    assert invalid.status == 422 and invalid.body == {
        "title": "Unprocessable Entity",
        "status": 422,
        "detail": "Request validation failed.",
        "errors": ["$.action: value must be one of 'start', 'stop', 'restart', 'terminate'"],
    }
    calls = (await state(http, emu))["calls"]
    assert calls == {"rest:createPod": 2, "rest:getPod": 1, "rest:listGpuTypes": 1, "rest:podAction": 1}


async def test_catalog_volumes_templates(http: aiohttp.ClientSession, emu: RunningEmulator) -> None:
    plain = await rest(http, emu, "GET", "/v2/catalog/gpus")
    assert all("availability" not in g for g in plain.body["gpus"])
    one = await rest(http, emu, "GET", "/v2/catalog/gpus/NVIDIA%20RTX%20A6000", params={"include": "AVAILABILITY"})
    assert one.status == 400 and "product" in one.body["detail"]
    query = {"include": "AVAILABILITY", "product": "POD", "count": "2"}
    one = await rest(http, emu, "GET", "/v2/catalog/gpus/NVIDIA%20RTX%20A6000", params=query)
    assert one.body["id"] == "NVIDIA RTX A6000" and one.body["availability"] == "HIGH" and one.body["dataCenters"]
    assert (await rest(http, emu, "GET", "/v2/catalog/gpus/NVIDIA%20Imaginary")).status == 404

    made = await rest(http, emu, "POST", "/v2/network-volumes", {"name": "m", "size": 50, "dataCenter": "EU-SE-1"})
    assert made.status == 201 and made.body["dataCenter"] == "EU-SE-1" and made.body["type"] == "STANDARD"
    assert (await rest(http, emu, "GET", f"/v2/network-volumes/{made.body['id']}")).body == made.body
    listed = (await rest(http, emu, "GET", "/v2/network-volumes")).body["networkVolumes"]
    assert made.body in listed and len(listed) == 3
    _, _, body = await gql(http, emu, "query { myself { networkVolumes { id dataCenterId } } }")
    assert {"id": made.body["id"], "dataCenterId": "EU-SE-1"} in body["data"]["myself"]["networkVolumes"]
    templates = (await rest(http, emu, "GET", "/v2/templates")).body["templates"]
    assert [t["id"] for t in templates] == ["vw7cmfy0ui"]


async def test_faults_over_rest(http: aiohttp.ClientSession, emu: RunningEmulator) -> None:
    await faults(http, emu, {"capacity": {"gpu_types": [GPU], "times": 1}})
    capacity = await rest(http, emu, "POST", "/v2/pods", POD)
    assert is_problem(capacity, 400, "Bad Request", CAPACITY_MESSAGE)
    assert (await rest(http, emu, "POST", "/v2/pods", POD | {"gpu": {"id": "NVIDIA Imaginary", "count": 1}})).body[
        "detail"
    ] == CAPACITY_MESSAGE  # an unknown GPU type id answers the capacity text, as GraphQL does

    await faults(http, emu, {"insufficient_balance": 1})
    balance = await rest(http, emu, "POST", "/v2/pods", POD)
    assert is_problem(balance, 402, "Payment Required", DEFAULT_INSUFFICIENT_BALANCE_MESSAGE)

    pod_id = (await rest(http, emu, "POST", "/v2/pods", POD)).body["id"]
    await rest(http, emu, "POST", f"/v2/pods/{pod_id}/action", {"action": "stop"})
    await faults(http, emu, {"host_busy": {"operations": ["rest:podAction:start"], "times": 1}})
    busy = await rest(http, emu, "POST", f"/v2/pods/{pod_id}/action", {"action": "start"})
    assert is_problem(busy, 400, "Bad Request", HOST_BUSY_MESSAGE)
    assert (await rest(http, emu, "POST", f"/v2/pods/{pod_id}/action", {"action": "start"})).status == 200

    await faults(http, emu, {"internal_error": {"operations": ["rest:deletePod"], "times": 1}})
    refused = await rest(http, emu, "DELETE", f"/v2/pods/{pod_id}")
    assert is_problem(refused, 500, "Internal Server Error", INTERNAL_ERROR_MESSAGE)
    assert (await rest(http, emu, "GET", f"/v2/pods/{pod_id}")).status == 200  # not terminated
    switch = {"operations": ["rest:deletePod", "rest:podAction:terminate"], "after_action": True, "times": 1}
    await faults(http, emu, {"internal_error": switch})
    assert (await rest(http, emu, "DELETE", f"/v2/pods/{pod_id}")).status == 500
    assert (await rest(http, emu, "GET", f"/v2/pods/{pod_id}")).status == 404  # terminated behind the 500
    other = (await rest(http, emu, "POST", "/v2/pods", POD)).body["id"]
    await faults(http, emu, {"internal_error": switch})
    assert (await rest(http, emu, "POST", f"/v2/pods/{other}/action", {"action": "terminate"})).status == 500
    assert (await state(http, emu))["terminatedPodIds"] == [pod_id, other]

    await faults(http, emu, {"http_502": {"operations": ["rest:createPod"], "after_action": True, "times": 1}})
    gateway = await rest(http, emu, "POST", "/v2/pods", POD | {"name": "behind-502"})
    assert gateway.status == 502 and gateway.content_type == "text/html" and "502 Bad Gateway" in gateway.body
    names = [p["name"] for p in (await rest(http, emu, "GET", "/v2/pods")).body["pods"]]
    assert names == ["behind-502"]  # created anyway: a client must reconcile by name

    await faults(http, emu, {"never_ready": {"mode": "no_runtime", "times": 1}})
    stuck = (await rest(http, emu, "POST", "/v2/pods", POD)).body["id"]
    await wait_for(lambda: emu.emulator.world.clock() > emu.emulator.world.pods[stuck].boot_at + 0.6)
    assert (await rest(http, emu, "GET", f"/v2/pods/{stuck}")).body["runtime"] is None

    await faults(http, emu, {"cloudflare_403": 1})
    blocked = await rest(http, emu, "GET", "/v2/pods")
    assert blocked.status == 403 and blocked.body == "error code: 1010"


async def test_rate_limits_on_both_apis(http: aiohttp.ClientSession, emu: RunningEmulator) -> None:
    await faults(http, emu, {"rate_limit": {"operations": ["rest:createPod", "myself"], "retry_after": 3, "times": 2}})
    limited = await rest(http, emu, "POST", "/v2/pods", POD)
    assert is_problem(limited, 429, "Too Many Requests", "rate limit exceeded for the minute window")
    assert limited.headers["Retry-After"] == "3"
    status, headers, body = await gql(http, emu, "query { myself { id } }")
    assert status == 429 and headers["Retry-After"] == "3" and headers["Content-Type"].startswith(PROBLEM)
    assert body == {"title": "Too Many Requests", "status": 429, "detail": "rate limit exceeded for the minute window"}
    assert (await rest(http, emu, "POST", "/v2/pods", POD)).status == 201
    counted = await state(http, emu)
    assert counted["calls"] == {"rest:createPod": 2, "myself": 1} and counted["rateLimited"] == 2

    emu.emulator.config.rate_limit_per_minute = 3
    emu.emulator.reset()
    first = await rest(http, emu, "GET", "/v2/pods")
    assert first.headers["RateLimit-Policy"] == '"minute";q=3;w=60'
    assert first.headers["RateLimit"].startswith('"minute";r=2;t=')
    _, headers, _ = await gql(http, emu, "query { myself { id } }")
    assert headers["RateLimit"].startswith('"minute";r=1;t=')  # one budget per key for both APIs
    assert (await rest(http, emu, "GET", "/v2/catalog/gpus")).headers["RateLimit"].startswith('"minute";r=0;t=')
    over = await rest(http, emu, "GET", "/v2/pods")
    assert over.status == 429 and 1 <= int(over.headers["Retry-After"]) <= 60
    assert over.headers["RateLimit"] == f'"minute";r=0;t={over.headers["Retry-After"]}'
    assert (await gql(http, emu, "query { myself { id } }"))[0] == 429
    assert (await state(http, emu))["rateLimited"] == 2


async def test_restart_in_place_restarts_comfyui(http: aiohttp.ClientSession, emu: RunningEmulator) -> None:
    created = await rest(http, emu, "POST", "/v2/pods", COMFY_POD)
    pod_id = created.body["id"]
    stats = emu.proxy_url(pod_id) + "/system_stats"

    async def proxy_status() -> int:
        async with http.get(stats) as resp:
            return resp.status

    async def comfy() -> dict[str, Any]:
        pods = (await state(http, emu))["pods"]
        return dict(next(p for p in pods if p["id"] == pod_id)["container"])

    await wait_for(lambda: _is(proxy_status(), 200), timeout=15)
    before = await rest(http, emu, "GET", f"/v2/pods/{pod_id}")
    first = await comfy()
    restarted = await rest(http, emu, "POST", f"/v2/pods/{pod_id}/action", {"action": "restart"})
    assert restarted.status == 200 and restarted.body["runtime"] is None and restarted.body["status"] == "RUNNING"
    assert restarted.body["dataCenterId"] == before.body["dataCenterId"]
    assert await proxy_status() == 502
    await wait_for(lambda: _is(proxy_status(), 200), timeout=15)
    second = await comfy()
    assert second["pid"] != first["pid"] and second["starts"] == first["starts"] + 1 and second["crashes"] == 0
    assert Path(second["log"]).name == "container-2.log"
    after = (await rest(http, emu, "GET", f"/v2/pods/{pod_id}")).body
    old_ssh, new_ssh = before.body["ssh"]["direct"], after["ssh"]["direct"]
    assert new_ssh["host"] == old_ssh["host"] and new_ssh["port"] != old_ssh["port"]
    counted = await state(http, emu)
    assert counted["restarts"] == 1 and counted["calls"]["rest:podAction:restart"] == 1

    stopped = await rest(http, emu, "POST", f"/v2/pods/{pod_id}/action", {"action": "stop"})
    conflict = await rest(http, emu, "POST", f"/v2/pods/{pod_id}/action", {"action": "restart"})
    assert stopped.status == 200
    assert is_problem(conflict, 409, "Conflict", "action 'restart' is not valid for status EXITED")


async def _is(status: Any, wanted: int) -> bool:
    return bool(await status == wanted)


async def test_pod_simulators_get_model_files(http: aiohttp.ClientSession, emu: RunningEmulator) -> None:
    default = (await rest(http, emu, "POST", "/v2/pods", COMFY_POD)).body["id"]
    without = (
        await rest(http, emu, "POST", "/v2/pods", COMFY_POD | {"env": {"VIBEWAVE_SIM_MODELS_PRESENT": "0"}})
    ).body["id"]

    async def environ(pod_id: str) -> dict[str, str] | None:
        pods = (await state(http, emu))["pods"]
        pid = next(p for p in pods if p["id"] == pod_id)["container"]["pid"]
        if pid is None:
            return None
        raw = await asyncio.to_thread(Path(f"/proc/{pid}/environ").read_bytes)
        return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)

    assert (await wait_for(lambda: environ(default), timeout=15))["VIBEWAVE_SIM_MODELS_PRESENT"] == "1"
    assert (await wait_for(lambda: environ(without), timeout=15))["VIBEWAVE_SIM_MODELS_PRESENT"] == "0"
