"""GraphQL execution without a server: SDK literals, variables, validation (400) vs domain errors (200)."""

from __future__ import annotations

from typing import Any

import pytest

from vibewave.runpod_emu import api
from vibewave.runpod_emu.config import EmuConfig
from vibewave.runpod_emu.faults import CAPACITY_MESSAGE, Faults
from vibewave.runpod_emu.state import World

pytestmark = pytest.mark.unit

# What runpod 1.12.0 sends for create_pod("t", "img", "NVIDIA RTX A4000", env={"A": "1"}, ports="8888/http, 22/tcp").
SDK_CREATE = """
mutation { podFindAndDeployOnDemand( input: { name: "t", imageName: "img", cloudType: ALL,
  startSsh: true, gpuTypeId: "NVIDIA RTX A4000", supportPublicIp: true, gpuCount: 1, volumeInGb: 0,
  minVcpuCount: 1, minMemoryInGb: 1, dataCenterId: null, dockerArgs: "", containerDiskInGb: 10,
  ports: "8888/http,22/tcp", volumeMountPath: "/runpod-volume", env: [{ key: "A", value: "1" }] } )
  { id imageName env machineId machine { podHostId } } }
"""


def world(**faults: Any) -> World:
    config = EmuConfig(faults=Faults(boot_delay=0))
    config.faults.update(faults)
    clock = iter(range(1000, 10**9))
    return World(config, clock=lambda: float(next(clock)))


def call(w: World, query: str, variables: dict[str, Any] | None = None, scoped: bool = False) -> api.Outcome:
    parsed = api.parse_request({"query": query, "variables": variables})
    if isinstance(parsed, api.Outcome):
        return parsed
    document, variables, name = parsed
    return api.run(w, document, variables, name, scoped)


def test_sdk_literal_create_and_selection_filtering() -> None:
    w = world()
    out = call(w, SDK_CREATE)
    assert out.status == 200
    pod = out.body["data"]["podFindAndDeployOnDemand"]
    assert set(pod) == {"id", "imageName", "env", "machineId", "machine"}
    assert pod["env"] == ["A=1"] and pod["machine"]["podHostId"].startswith(pod["id"] + "-")


def test_variables_create_and_pod_query() -> None:
    w = world()
    create = """mutation Create($input: PodFindAndDeployOnDemandInput!) {
        podFindAndDeployOnDemand(input: $input) { id desiredStatus costPerHr ports } }"""
    inp = {"name": "v", "imageName": "img", "gpuTypeId": "NVIDIA L40S", "cloudType": "SECURE", "ports": "8188/http"}
    out = call(w, create, {"input": inp})
    assert out.status == 200, out.body
    pod = out.body["data"]["podFindAndDeployOnDemand"]
    assert pod["desiredStatus"] == "RUNNING" and pod["costPerHr"] == 0.86 and pod["ports"] == "8188/http"
    query = "query Pod($input: PodFilter!) { pod(input: $input) { id runtime { uptimeInSeconds ports { ip } } } }"
    got = call(w, query, {"input": {"podId": pod["id"]}}).body["data"]["pod"]
    assert got["id"] == pod["id"] and got["runtime"]["ports"][0]["ip"].startswith("100.65.")
    assert call(w, query, {"input": {"podId": "nope"}}).body == {"data": {"pod": None}}


def test_validation_errors_are_http_400_with_graphql_js_quotes() -> None:
    w = world()
    out = call(w, 'mutation { podResume(input: { podId: "x", gpuCount: 1, bogus: 1 }) { id } }')
    assert out.status == 400
    assert out.body["errors"][0]["message"] == 'Field "bogus" is not defined by type "PodResumeInput".'
    out = call(w, "query { myself { id nope } }")
    assert out.status == 400 and out.body["errors"][0]["message"] == 'Cannot query field "nope" on type "User".'
    out = call(w, "query { myself { id ")
    assert out.status == 400 and out.body["errors"][0]["message"].startswith("Syntax Error")
    out = call(
        w,
        "mutation($input: PodFindAndDeployOnDemandInput!) { podFindAndDeployOnDemand(input: $input) { id } }",
        {"input": {"name": "x", "objectMounts": []}},
    )
    assert out.status == 400
    assert (
        'Field "objectMounts" is not defined by type "PodFindAndDeployOnDemandInput".'
        in (out.body["errors"][0]["message"])
    )
    assert api.parse_request({}) == api.bad_request(api.BAD_BODY_MESSAGE)


def test_domain_error_shape() -> None:
    w = world(capacity=True)
    out = call(w, SDK_CREATE)
    assert out.status == 200
    (error,) = out.body["errors"]
    assert error["message"] == CAPACITY_MESSAGE
    assert error["path"] == ["podFindAndDeployOnDemand"] and error["extensions"] == {"code": "RUNPOD"}
    assert error["locations"]
    assert out.body["data"] == {"podFindAndDeployOnDemand": None}
    assert list(out.body) == ["errors", "data"]


def test_internal_error_after_action_still_creates() -> None:
    w = world(internal_error={"operations": ["podFindAndDeployOnDemand"], "after_action": True, "times": 1})
    out = call(w, SDK_CREATE)
    assert out.body["errors"][0]["extensions"] == {"code": "INTERNAL_SERVER_ERROR"}
    assert len(w.pods) == 1
    assert call(w, SDK_CREATE).status == 200 and len(w.pods) == 2


def test_gpu_types_lowest_price_and_unknown_entry() -> None:
    w = world()
    everything = call(w, "query GpuTypes { gpuTypes { id displayName memoryInGb } }").body["data"]["gpuTypes"]
    assert {"id": "NVIDIA A100 80GB PCIe", "displayName": "A100 80GB", "memoryInGb": 80} in everything
    assert any(g["id"] == "unknown" for g in everything)
    query = """query { gpuTypes(input: {id: "NVIDIA RTX A6000"}) { id securePrice
        lowestPrice(input: {gpuCount: 2, secureCloud: true}) {
            uninterruptablePrice stockStatus availableGpuCounts } } }"""
    (gpu,) = call(w, query).body["data"]["gpuTypes"]
    assert gpu["securePrice"] == 0.49
    counts = [1, 2, 3, 4, 5, 6, 7, 8]
    assert gpu["lowestPrice"] == {"uninterruptablePrice": 0.49, "stockStatus": "High", "availableGpuCounts": counts}
    assert call(w, 'query { gpuTypes(input: {id: "nope"}) { id } }').body == {"data": {"gpuTypes": []}}


def test_myself_account_fields_and_pod_scoped_key() -> None:
    w = world()
    query = "query { myself { id email clientBalance currentSpendPerHr spendLimit underBalance pubKey pods { id } } }"
    me = call(w, query).body["data"]["myself"]
    assert me["clientBalance"] == pytest.approx(100.0, abs=0.01)
    assert me["spendLimit"] == 80 and me["underBalance"] is False
    assert me["pods"] == [] and me["currentSpendPerHr"] > 0
    out = call(w, query, scoped=True)
    assert out.status == 200 and out.body["errors"][0]["message"] == "Unauthorized"
    assert out.body["data"] == {"myself": None}


def test_terminate_returns_null_and_unknown_pod_errors() -> None:
    w = world()
    pod_id = call(w, SDK_CREATE).body["data"]["podFindAndDeployOnDemand"]["id"]
    assert call(w, f'mutation {{ podTerminate(input: {{ podId: "{pod_id}" }}) }}').body == {
        "data": {"podTerminate": None}
    }
    out = call(w, f'mutation {{ podStop(input: {{ podId: "{pod_id}" }}) {{ id desiredStatus }} }}')
    assert out.body["errors"][0]["message"] == "pod not found" and out.body["data"] == {"podStop": None}


def test_js_quotes_only_touch_names() -> None:
    assert api.js_quotes("Variable '$input' of type 'PodFilter' used in position expecting type 'PodFilter!'.") == (
        'Variable "$input" of type "PodFilter" used in position expecting type "PodFilter!".'
    )
    assert api.js_quotes("Cannot query field 'idd' on type 'Pod'. Did you mean 'id'?") == (
        'Cannot query field "idd" on type "Pod". Did you mean "id"?'
    )
