"""REST v2 operations without a server: validation texts, create translation, v2 shapes, the catalog."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from vibewave.runpod_emu.config import EmuConfig
from vibewave.runpod_emu.faults import CAPACITY_MESSAGE, Faults
from vibewave.runpod_emu.rest import Call, Problem, Reply, RestApi, action_operation
from vibewave.runpod_emu.state import ApiError, World

pytestmark = pytest.mark.unit

GPU = "NVIDIA GeForce RTX 4090"
VOLUME_MOUNT = {"network": [{"volumeId": "agv6w2qcg7", "path": "/w"}]}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(**config: Any) -> tuple[RestApi, Clock]:
    clock = Clock()
    world = World(
        EmuConfig(faults=Faults(boot_delay=2), rng_seed=3, **config),
        clock=clock,
        wall=lambda: datetime(2026, 8, 20, 6, 16, 19, 436000, tzinfo=UTC),
    )
    return RestApi(world), clock


def create(api: RestApi, **body: Any) -> Reply:
    base: dict[str, Any] = {"name": "w", "image": "img", "gpu": {"id": GPU, "count": 1}, "ports": ["8188/http"]}
    return api.create_pod(Call({}, {}, base | body))


def problem(fn: Any, *args: Any, **kwargs: Any) -> Problem:
    """The refusal, whether the REST layer raised it or the world did (its errors carry their status)."""
    with pytest.raises((Problem, ApiError)) as exc:
        fn(*args, **kwargs)
    error = exc.value
    return error if isinstance(error, Problem) else Problem(error.status, error.message)


def test_create_validation_errors_word_like_runpod() -> None:
    api, _ = make()
    bad = {"name": "", "gpu": {"id": GPU, "count": 0, "bogus": 1}, "cloud": "ALL", "dataCenterId": "EU-RO-1"}
    err = problem(api.create_pod, Call({}, {}, bad | {"ports": ["8188"], "disk": "20", "env": {"A": 1}}))
    assert (err.status, err.detail) == (422, "Request validation failed.")
    assert err.errors == [
        "$: missing property 'image'",
        "$: additional properties 'dataCenterId' not allowed",
        "$.name: minLength: got 0, want 1",
        "$.disk: got string, want integer",
        "$.ports[0]: '8188' does not match pattern '^\\d+/(http|tcp)$'",
        "$.env.A: got number, want string",
        "$.cloud: value must be one of 'SECURE', 'COMMUNITY'",
        "$.gpu: additional properties 'bogus' not allowed",
        "$.gpu.count: minimum: got 0, want 1",
    ]
    err = problem(api.create_pod, Call({}, {}, {"templateId": "vw7cmfy0ui", "mounts": {"persistent": {"size": 5}}}))
    assert err.errors == [
        "$: missing property 'name'",
        "$.mounts.persistent: missing property 'path'",
        "$.mounts.persistent.size: minimum: got 5, want 10",
    ]
    cuda = {"id": GPU, "allowedCudaVersions": ["12"], "minCudaVersion": "x"}
    assert problem(create, api, gpu=cuda).errors == [
        "$.gpu.allowedCudaVersions[0]: '12' does not match pattern '^\\d+\\.\\d+$'",
        "$.gpu.minCudaVersion: 'x' does not match pattern '^\\d+\\.\\d+$'",
    ]
    assert problem(create, api, cpu={"id": "cpu3c", "vcpuCount": 1}).errors == [
        "$.cpu.vcpuCount: minimum: got 1, want 2"
    ]


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"cpu": {"id": "cpu3c", "vcpuCount": 2}}, 400, "exactly one of 'gpu' or 'cpu' must be set"),
        ({"gpu": None}, 422, "Request validation failed."),
        ({"mounts": {"persistent": {"size": 10, "path": "/w"}, "network": []}}, 400, "not both"),
        ({"gpu": {"id": GPU, "allowedCudaVersions": ["12.8"], "minCudaVersion": "12.4"}}, 400, "mutually exclusive"),
        ({"gpu": {"id": GPU, "allowedCudaVersions": ["11.8"]}}, 400, CAPACITY_MESSAGE),
        ({"gpu": {"id": GPU, "minCudaVersion": "13.1"}}, 400, CAPACITY_MESSAGE),
        ({"gpu": {"id": GPU, "minRamPerGpu": 512}}, 400, CAPACITY_MESSAGE),
        ({"gpu": {"id": "NVIDIA Imaginary", "count": 1}}, 400, CAPACITY_MESSAGE),
        ({"gpu": {"id": GPU, "count": 99}}, 400, CAPACITY_MESSAGE),
        ({"dataCenterIds": ["XX-NOPE-1"]}, 400, CAPACITY_MESSAGE),
        ({"cloud": "COMMUNITY", "dataCenterIds": ["EU-RO-1"]}, 400, CAPACITY_MESSAGE),
        ({"templateId": "nope"}, 404, "template not found"),
        ({"mounts": {"network": [{"volumeId": "nope", "path": "/w"}]}}, 400, "network volume 'nope' not found"),
        ({"mounts": VOLUME_MOUNT, "dataCenterIds": ["US-TX-3"]}, 400, "is in EU-RO-1, not in dataCenterIds"),
        ({"mounts": VOLUME_MOUNT, "cloud": "COMMUNITY"}, 400, "only available in SECURE cloud"),
    ],
)
def test_create_refusals(body: dict[str, Any], status: int, detail: str) -> None:
    api, _ = make()
    error = problem(create, api, **body)
    assert error.status == status and detail in error.detail


def test_omitted_gpu_count_quirk() -> None:
    api, _ = make()
    assert create(api, gpu={"id": GPU}).body["gpu"] == {"id": GPU, "count": 1}
    api.world.config.rest_omitted_gpu_count_capacity = True
    assert problem(create, api, gpu={"id": GPU}).detail == CAPACITY_MESSAGE
    assert create(api, gpu={"id": GPU, "count": 1}).status == 201


def test_cpu_create_and_cpu_rules() -> None:
    api, _ = make()
    body: dict[str, Any] = {"name": "c", "image": "img", "cpu": {"id": "cpu5g", "vcpuCount": 4}}
    pod = api.create_pod(Call({}, {}, body)).body
    assert pod["cpu"] == {"id": "cpu5g", "vcpuCount": 4, "memory": 16} and "gpu" not in pod
    assert pod["cost"] == pytest.approx(0.2)
    with pytest.raises(Problem, match="power of two"):
        api.create_pod(Call({}, {}, body | {"cpu": {"id": "cpu5g", "vcpuCount": 6}}))
    with pytest.raises(Problem, match="persistent mounts"):
        api.create_pod(Call({}, {}, body | {"mounts": {"persistent": {"size": 10, "path": "/w"}}}))
    assert problem(api.create_pod, Call({}, {}, body | {"cpu": {"id": "cpu9z", "vcpuCount": 2}})).status == 400


def test_pod_shape_through_the_lifecycle() -> None:
    api, clock = make()
    api.world.account.pub_key = "ssh-ed25519 AAAA fleet"
    reply = create(api, ports=["8000/http", "22/tcp"], disk=20, startSsh=True, dataCenterIds=["EU-RO-1"])
    assert reply.status == 201
    pod = reply.body
    assert re.fullmatch(r"[a-z0-9]{14}", pod["id"])
    username = pod["ssh"]["proxy"]["username"]
    assert re.fullmatch(rf"{pod['id']}-[0-9a-f]{{8}}", username)
    assert pod | {"id": None, "ssh": None} == {
        "id": None,
        "name": "w",
        "status": "RUNNING",
        "actions": ["stop", "restart", "terminate"],
        "image": "img",
        "args": "",
        "disk": 20,
        "ports": ["8000/http", "22/tcp"],
        "env": {"PUBLIC_KEY": "ssh-ed25519 AAAA fleet"},
        "registry": None,
        "mounts": {},
        "gpu": {"id": GPU, "count": 1},
        "cloud": "SECURE",
        "dataCenterId": "EU-RO-1",
        "cudaVersion": "12.8",
        "ssh": None,
        "template": None,
        "cost": 0.69,
        "locked": False,
        "globalNetworking": {"enabled": False},
        "runtime": None,
        "createdAt": "2026-08-20T06:16:19.436Z",
        "startedAt": "2026-08-20T06:16:19.436Z",
    }
    proxy = {"host": "ssh.runpod.io", "port": 22, "username": username, "command": f"ssh {username}@ssh.runpod.io"}
    assert pod["ssh"] == {"proxy": proxy, "direct": None}
    ref = Call({"id": pod["id"]}, {})
    clock.now += 2
    up = api.get_pod(ref).body
    http, tcp = up["runtime"]["ports"]
    assert http["type"] == "http" and http["private"] == 8000 and http["ip"].startswith("100.65.")
    assert set(tcp) == {"ip", "private", "public", "type"} and tcp["private"] == 22
    assert up["ssh"]["direct"] == {
        "host": tcp["ip"],
        "port": tcp["public"],
        "username": "root",
        "command": f"ssh root@{tcp['ip']} -p {tcp['public']}",
    }
    assert up["runtime"]["gpus"] == [{"util": 0, "memoryUtil": 0}] and up["runtime"]["uptime"] == 0

    restarted = api.pod_action(Call(ref.params, {}, {"action": "restart"})).body
    assert restarted["runtime"] is None and restarted["ssh"]["direct"] is None
    stopped = api.pod_action(Call(ref.params, {}, {"action": "stop"}))
    assert stopped.status == 200
    assert {k: stopped.body[k] for k in ("status", "actions", "cost", "runtime", "dataCenterId", "cudaVersion")} == {
        "status": "EXITED",
        "actions": ["start", "terminate"],
        "cost": 0.0,
        "runtime": None,
        "dataCenterId": "EU-RO-1",
        "cudaVersion": "12.8",
    }
    err = problem(api.pod_action, Call(ref.params, {}, {"action": "restart"}))
    assert (err.status, err.detail) == (409, "action 'restart' is not valid for status EXITED")
    assert api.pod_action(Call(ref.params, {}, {"action": "start"})).body["status"] == "RUNNING"
    assert api.pod_action(Call(ref.params, {}, {"action": "terminate"})) == Reply(204)
    assert problem(api.get_pod, ref).status == 404
    assert api.list_pods(Call({}, {})).body == {"pods": []}


def test_spec_mode_statuses_and_started_at() -> None:
    api, clock = make(rest_status_mode="spec")
    pod = create(api).body
    assert (pod["status"], pod["actions"], pod["startedAt"]) == ("PROVISIONING", ["stop", "terminate"], None)
    clock.now += 1
    assert api.get_pod(Call({"id": pod["id"]}, {})).body["status"] == "STARTING"
    clock.now += 1
    running = api.get_pod(Call({"id": pod["id"]}, {})).body
    assert running["status"] == "RUNNING" and running["startedAt"] == "2026-08-20T06:16:19.436Z"


def test_pod_action_body_rules_and_operation_names() -> None:
    api, _ = make()
    pod_id = create(api).body["id"]
    for body, errors in (
        ({"action": "reset"}, ["$.action: value must be one of 'start', 'stop', 'restart', 'terminate'"]),
        ({"action": "stop", "force": True}, ["$: additional properties 'force' not allowed"]),
        (None, ["$: got null, want object"]),
    ):
        err = problem(api.pod_action, Call({"id": pod_id}, {}, body))
        assert (err.status, err.errors) == (422, errors)
        assert action_operation(body) == "rest:podAction"
    assert action_operation({"action": "restart"}) == "rest:podAction:restart"
    assert problem(api.pod_action, Call({"id": pod_id}, {}, {"action": "start"})).status == 409
    assert problem(api.pod_action, Call({"id": "nope"}, {}, {"action": "stop"})).status == 404


def test_templates_apply_and_the_shapes_of_volumes_and_templates() -> None:
    api, _ = make()
    body: dict[str, Any] = {"name": "t", "templateId": "vw7cmfy0ui", "gpu": {"id": GPU, "count": 1}, "disk": 30}
    pod = api.create_pod(Call({}, {}, body | {"env": {"A": "1"}})).body
    assert pod["image"] == "vibewave/comfyui:0.33" and pod["ports"] == ["8188/http", "22/tcp"]
    assert pod["env"] == {"COMFYUI_PORT": "8188", "A": "1"} and pod["template"] is None and pod["disk"] == 30
    (template,) = api.list_templates(Call({}, {})).body["templates"]
    assert template == {
        "id": "vw7cmfy0ui",
        "name": "vibewave-comfyui",
        "image": "vibewave/comfyui:0.33",
        "args": "",
        "disk": 40,
        "mounts": {},
        "ports": ["8188/http", "22/tcp"],
        "env": {"COMFYUI_PORT": "8188"},
        "registry": None,
        "serverless": False,
        "public": False,
        "category": "NVIDIA",
        "startSsh": True,
        "startJupyter": False,
        "allowedCudaVersions": [],
    }
    mount = {"network": [{"volumeId": "grvtso8ftn", "path": "/workspace"}]}
    on_volume = create(api, mounts=mount).body
    assert on_volume["mounts"] == mount and on_volume["dataCenterId"] == "US-TX-3"
    volumes = api.list_network_volumes(Call({}, {})).body["networkVolumes"]
    assert {"id": "grvtso8ftn", "name": "vibewave-models-us", "size": 200, "dataCenter": "US-TX-3"} | {
        "type": "STANDARD"
    } in volumes
    made = api.create_network_volume(Call({}, {}, {"name": "v", "size": 4096, "dataCenter": "EU-SE-1"}))
    assert made.status == 201 and made.body["type"] == "STANDARD" and re.fullmatch(r"[a-z0-9]{10}", made.body["id"])
    assert api.get_network_volume(Call({"id": made.body["id"]}, {})).body == made.body
    assert problem(api.get_network_volume, Call({"id": "nope"}, {})).status == 404
    err = problem(api.create_network_volume, Call({}, {}, {"name": "v", "size": 10, "dataCenter": "US"}))
    assert err.status == 400 and "EU-RO-1" in err.detail
    err = problem(api.create_network_volume, Call({}, {}, {"name": "v", "size": 9, "dataCenterId": "EU-RO-1"}))
    assert err.errors == [
        "$: missing property 'dataCenter'",
        "$: additional properties 'dataCenterId' not allowed",
        "$.size: minimum: got 9, want 10",
    ]


def test_gpu_catalog_with_and_without_availability() -> None:
    api, _ = make()
    gpus = api.list_gpu_types(Call({}, {})).body["gpus"]
    assert "unknown" not in {g["id"] for g in gpus}
    rtx = next(g for g in gpus if g["id"] == GPU)
    assert rtx == {
        "id": GPU,
        "name": "RTX 4090",
        "pool": "ADA_24",
        "manufacturer": "NVIDIA",
        "memory": 24,
        "secure": True,
        "community": True,
        "price": {"secure": 0.69, "community": 0.34},
        "maxCount": {"secure": 8, "community": 8},
    }
    query = {"include": "AVAILABILITY", "product": "POD", "countryCodes": "RO,SE"}
    one = api.get_gpu_type(Call({"id": GPU}, query)).body
    assert one["availability"] == "HIGH"
    assert one["dataCenters"] == [
        {"id": "EU-RO-1", "name": "EU-RO-1", "availability": "HIGH"},
        {"id": "EU-SE-1", "name": "EU-SE-1", "availability": "HIGH"},
    ]
    assert {"version": "12.8", "available": True} in one["cudaVersions"]
    community = {"include": "AVAILABILITY", "product": "POD", "cloud": "COMMUNITY"}
    l4 = api.get_gpu_type(Call({"id": "NVIDIA L4"}, community))
    assert l4.body["availability"] == "NONE" and "dataCenters" not in l4.body
    gpu = api.world.gpu(GPU)
    assert gpu is not None
    gpu.available = 1
    two = api.get_gpu_type(Call({"id": GPU}, {"include": "AVAILABILITY", "product": "POD", "count": "2"})).body
    assert two["availability"] == "NONE" and not any(v["available"] for v in two["cudaVersions"])
    assert problem(api.get_gpu_type, Call({"id": "unknown"}, {})).status == 404
    for bad, status in (
        ({"product": "POD"}, 400),
        ({"include": "AVAILABILITY"}, 400),
        ({"include": "AVAILABILITY", "product": "POD", "cudaVersions": "12.8", "minCudaVersion": "12"}, 400),
        ({"include": "AVAILABILITY", "product": "VM"}, 422),
        ({"include": "AVAILABILITY", "product": "POD", "countryCodes": "fr"}, 422),
        ({"include": "AVAILABILITY", "product": "POD", "count": "0"}, 422),
    ):
        assert problem(api.list_gpu_types, Call({}, bad)).status == status, bad
