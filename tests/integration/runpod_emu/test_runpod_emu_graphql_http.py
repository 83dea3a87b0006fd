"""Raw GraphQL over HTTP with variables (how our own aiohttp client talks), status codes and error bodies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.integration.runpod_emu.helpers import wait_for
from vibewave.runpod_emu import RunningEmulator
from vibewave.runpod_emu.faults import CAPACITY_MESSAGE, HOST_BUSY_MESSAGE, INTERNAL_ERROR_MESSAGE

pytestmark = pytest.mark.integration

AUTH = {"Authorization": "Bearer test-key", "User-Agent": "vibewave-pod-manager/0.1"}
POD_FIELDS = """id name desiredStatus imageName gpuCount costPerHr env ports lastStatusChange uptimeSeconds
    runtime { uptimeInSeconds ports { ip isIpPublic privatePort publicPort type } }
    machine { podHostId gpuDisplayName }"""
CREATE = f"""mutation Create($input: PodFindAndDeployOnDemandInput!) {{
    podFindAndDeployOnDemand(input: $input) {{ {POD_FIELDS} }} }}"""
GET = f"query Pod($input: PodFilter!) {{ pod(input: $input) {{ {POD_FIELDS} }} }}"
STOP = "mutation Stop($input: PodStopInput!) { podStop(input: $input) { id desiredStatus } }"
RESUME = "mutation Resume($input: PodResumeInput!) { podResume(input: $input) { id desiredStatus } }"
TERMINATE = "mutation Terminate($input: PodTerminateInput!) { podTerminate(input: $input) }"
POD_INPUT = {
    "name": "vw-1",
    "imageName": "vibewave/comfyui:0.33",
    "gpuTypeId": "NVIDIA L40S",
    "cloudType": "SECURE",
    "gpuCount": 1,
    "containerDiskInGb": 40,
    "volumeInGb": 0,
    "ports": "8188/http,22/tcp",
    "env": [{"key": "K", "value": "v"}],
    "startSsh": True,
}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def gql(
    http: aiohttp.ClientSession,
    emu: RunningEmulator,
    query: str,
    variables: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> tuple[int, Any]:
    body: dict[str, Any] = {"query": query}
    if variables is not None:
        body["variables"] = variables
    async with http.post(
        f"{emu.url}/graphql", json=body, headers=AUTH if headers is None else headers, params=params
    ) as resp:
        assert resp.headers["X-Vibewave-Emulator"] == "runpod"
        if resp.content_type == "application/json":
            return resp.status, await resp.json()
        return resp.status, await resp.text()


async def test_lifecycle_with_variables(http: aiohttp.ClientSession, emu: RunningEmulator) -> None:
    status, body = await gql(http, emu, CREATE, {"input": POD_INPUT})
    assert status == 200, body
    pod = body["data"]["podFindAndDeployOnDemand"]
    assert pod["desiredStatus"] == "RUNNING" and pod["runtime"] is None and pod["costPerHr"] == 0.86
    assert pod["env"] == ["K=v"] and pod["machine"]["gpuDisplayName"] == "L40S"
    ref = {"input": {"podId": pod["id"]}}

    async def runtime() -> Any:
        return (await gql(http, emu, GET, ref))[1]["data"]["pod"]["runtime"]

    up = await wait_for(runtime)
    assert {p["privatePort"] for p in up["ports"]} == {8188, 22}
    assert (await gql(http, emu, STOP, ref))[1] == {"data": {"podStop": {"id": pod["id"], "desiredStatus": "EXITED"}}}
    resumed = (await gql(http, emu, RESUME, {"input": {"podId": pod["id"], "gpuCount": 1}}))[1]
    assert resumed == {"data": {"podResume": {"id": pod["id"], "desiredStatus": "RUNNING"}}}
    assert (await gql(http, emu, TERMINATE, ref))[1] == {"data": {"podTerminate": None}}
    assert (await gql(http, emu, GET, ref))[1] == {"data": {"pod": None}}
    status, body = await gql(http, emu, STOP, ref)
    assert status == 200 and body["errors"][0]["message"] == "pod not found"


async def test_account_catalogue_volumes_templates(http: aiohttp.ClientSession, emu: RunningEmulator) -> None:
    query = "query { myself { id email clientBalance currentSpendPerHr spendLimit underBalance pubKey pods { id } } }"
    me = (await gql(http, emu, query))[1]["data"]["myself"]
    assert me["email"] and me["spendLimit"] == 80 and me["underBalance"] is False and me["pods"] == []
    gpus = """query Gpus($input: GpuTypeFilter, $price: GpuLowestPriceInput) {
        gpuTypes(input: $input) { id displayName memoryInGb securePrice communityPrice
            lowestPrice(input: $price) { uninterruptablePrice stockStatus } } }"""
    variables = {"input": {"ids": ["NVIDIA GeForce RTX 3090", "NVIDIA L4"]}, "price": {"gpuCount": 1}}
    listed = (await gql(http, emu, gpus, variables))[1]["data"]["gpuTypes"]
    assert [g["displayName"] for g in listed] == ["RTX 3090", "L4"]
    assert listed[0]["lowestPrice"] == {"uninterruptablePrice": 0.22, "stockStatus": "High"}

    create = """mutation($input: CreateNetworkVolumeInput!) {
        createNetworkVolume(input: $input) { id name size dataCenterId } }"""
    volume = (await gql(http, emu, create, {"input": {"name": "v", "size": 50, "dataCenterId": "EU-SE-1"}}))[1]
    volume_id = volume["data"]["createNetworkVolume"]["id"]
    delete = "mutation($input: DeleteNetworkVolumeInput!) { deleteNetworkVolume(input: $input) }"
    assert (await gql(http, emu, delete, {"input": {"id": volume_id}}))[1] == {"data": {"deleteNetworkVolume": None}}

    save = "mutation($input: SaveTemplateInput!) { saveTemplate(input: $input) { id name ports env { key value } } }"
    tpl = {"name": "t1", "imageName": "img", "dockerArgs": "", "ports": "8188/http", "env": []}
    saved = (await gql(http, emu, save, {"input": tpl}))[1]["data"]["saveTemplate"]
    assert saved["name"] == "t1" and saved["ports"] == "8188/http"
    templates = (await gql(http, emu, "query { myself { podTemplates { id name } } }"))[1]
    assert {"id": saved["id"], "name": "t1"} in templates["data"]["myself"]["podTemplates"]
    deleted = await gql(http, emu, 'mutation { deleteTemplate(templateName: "t1") }')
    assert deleted == (200, {"data": {"deleteTemplate": None}})

    centers = (await gql(http, emu, "query { dataCenters { id location storageSupport } }"))[1]
    assert {"id": "EU-RO-1", "location": "Romania", "storageSupport": True} in centers["data"]["dataCenters"]

    cpu = """mutation($input: deployCpuPodInput!) { deployCpuPod(input: $input) { id gpuCount vcpuCount } }"""
    cpu_pod = (await gql(http, emu, cpu, {"input": {"name": "c", "imageName": "img", "instanceId": "cpu3g-4-16"}}))[1]
    assert cpu_pod["data"]["deployCpuPod"]["vcpuCount"] == 4


async def test_auth(http: aiohttp.ClientSession, emu: RunningEmulator) -> None:
    query = "query { myself { id } }"
    assert (await gql(http, emu, query, headers={}))[0] == 401
    assert (await gql(http, emu, query, headers={"Authorization": "Bearer nope"}))[0] == 401
    status, body = await gql(http, emu, query, headers={}, params={"api_key": "test-key"})
    assert status == 200 and body["data"]["myself"]["id"]
    emu.emulator.config.pod_scoped_keys.append("pod-key")
    try:
        status, body = await gql(http, emu, query, headers={"Authorization": "Bearer pod-key"})
        assert status == 200 and body["errors"][0]["message"] == "Unauthorized" and body["data"] == {"myself": None}
    finally:
        emu.emulator.config.pod_scoped_keys.remove("pod-key")


async def test_validation_and_domain_errors(http: aiohttp.ClientSession, emu: RunningEmulator) -> None:
    status, body = await gql(http, emu, CREATE, {"input": {**POD_INPUT, "objectMounts": []}})
    assert status == 400
    message = body["errors"][0]["message"]
    assert 'Field "objectMounts" is not defined by type "PodFindAndDeployOnDemandInput".' in message
    status, body = await gql(http, emu, 'query { pod(input: {podId: "x"}) { id bogus } }')
    assert status == 400 and body["errors"][0]["message"].startswith('Cannot query field "bogus" on type "Pod".')
    async with http.post(f"{emu.url}/graphql", data=b"not json", headers=AUTH) as resp:
        assert resp.status == 400

    async with http.post(f"{emu.url}/emulator/faults", json={"capacity": {"times": 1}}) as resp:
        assert resp.status == 200
    status, body = await gql(http, emu, CREATE, {"input": POD_INPUT})
    assert status == 200
    assert body["errors"][0]["message"] == CAPACITY_MESSAGE
    assert body["errors"][0]["path"] == ["podFindAndDeployOnDemand"]
    assert body["errors"][0]["extensions"] == {"code": "RUNPOD"}
    assert body["data"] == {"podFindAndDeployOnDemand": None}

    pod_id = (await gql(http, emu, CREATE, {"input": POD_INPUT}))[1]["data"]["podFindAndDeployOnDemand"]["id"]
    await gql(http, emu, STOP, {"input": {"podId": pod_id}})
    faults = {"host_busy": 1, "internal_error": {"operations": ["podStop"], "times": 1}}
    async with http.post(f"{emu.url}/emulator/faults", json=faults) as resp:
        assert resp.status == 200
    status, body = await gql(http, emu, RESUME, {"input": {"podId": pod_id, "gpuCount": 1}})
    assert body["errors"][0]["message"] == HOST_BUSY_MESSAGE
    status, body = await gql(http, emu, STOP, {"input": {"podId": pod_id}})
    assert body["errors"][0] | {"locations": None} == {
        "message": INTERNAL_ERROR_MESSAGE,
        "locations": None,
        "path": ["podStop"],
        "extensions": {"code": "INTERNAL_SERVER_ERROR"},
    }


async def test_gateway_faults(http: aiohttp.ClientSession, emu: RunningEmulator) -> None:
    faults = {"http_502": {"operations": ["podFindAndDeployOnDemand"], "after_action": True, "times": 1}}
    async with http.post(f"{emu.url}/emulator/faults", json=faults) as resp:
        assert resp.status == 200
    status, body = await gql(http, emu, "query { myself { id } }")
    assert status == 200
    status, body = await gql(http, emu, CREATE, {"input": POD_INPUT})
    assert status == 502 and "502 Bad Gateway" in body
    async with http.get(f"{emu.url}/emulator/state") as resp:
        state = await resp.json()
    assert len(state["pods"]) == 1  # the pod was created behind the 502
    async with http.post(f"{emu.url}/emulator/faults", json={"cloudflare_403": 1}) as resp:
        assert resp.status == 200
    async with http.post(f"{emu.url}/graphql", json={"query": "{ myself { id } }"}, headers=AUTH) as resp:
        assert resp.status == 403 and await resp.text() == "error code: 1010"
    emu.emulator.config.cloudflare_ua_check = True
    try:
        headers = {"Authorization": "Bearer test-key", "User-Agent": "Python-urllib/3.11"}
        async with http.post(f"{emu.url}/graphql", json={"query": "{ myself { id } }"}, headers=headers) as resp:
            assert resp.status == 403
    finally:
        emu.emulator.config.cloudflare_ua_check = False


async def test_control_routes(http: aiohttp.ClientSession, emu: RunningEmulator) -> None:
    async with http.post(f"{emu.url}/emulator/faults", json={"bogus": 1}) as resp:
        assert resp.status == 400 and "bogus" in (await resp.json())["error"]
    async with http.post(f"{emu.url}/emulator/gpu-types", json={"NVIDIA L40S": {"available": 0}}) as resp:
        assert resp.status == 200
    _, body = await gql(http, emu, CREATE, {"input": POD_INPUT})
    assert body["errors"][0]["message"] == CAPACITY_MESSAGE
    async with http.post(f"{emu.url}/emulator/reset") as resp:
        state = await resp.json()
    assert state["pods"] == [] and state["faults"]["capacity"] is None
    assert next(g for g in state["gpuTypes"] if g["id"] == "NVIDIA L40S")["available"] is None
    async with http.get(f"{emu.url}/") as resp:
        assert "EMULATOR" in (await resp.json())["note"]


async def test_rate_limited_graphql(http: aiohttp.ClientSession, emu: RunningEmulator) -> None:
    """RunPod documents 429s for REST v2 only; /graphql answers the same way here."""
    async with http.post(f"{emu.url}/emulator/faults", json={"rate_limit": {"operations": ["podStop"]}}) as resp:
        assert resp.status == 200
    assert (await gql(http, emu, "query { myself { id } }"))[0] == 200
    body = {"query": STOP, "variables": {"input": {"podId": "x"}}}
    async with http.post(f"{emu.url}/graphql", json=body, headers=AUTH) as resp:
        assert resp.status == 429 and resp.headers["Retry-After"] == "1"
        assert resp.content_type == "application/problem+json" and "RateLimit" not in resp.headers
        assert await resp.json(content_type=None) == {
            "title": "Too Many Requests",
            "status": 429,
            "detail": "rate limit exceeded for the minute window",
        }
    emu.emulator.config.rate_limit_per_minute = 2
    emu.emulator.reset()
    async with http.post(f"{emu.url}/graphql", json={"query": "{ myself { id } }"}, headers=AUTH) as resp:
        assert resp.headers["RateLimit-Policy"] == '"minute";q=2;w=60'
        assert resp.headers["RateLimit"].startswith('"minute";r=1;t=')
    assert (await gql(http, emu, "query { myself { id } }"))[0] == 200
    assert (await gql(http, emu, "query { myself { id } }"))[0] == 429
    async with http.get(f"{emu.url}/emulator/state") as resp:
        state = await resp.json()
    assert state["calls"] == {"myself": 3} and state["rateLimited"] == 1
