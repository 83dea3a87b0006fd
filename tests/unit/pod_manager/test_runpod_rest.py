"""The RunPod client and provider over REST v2 (and what both transports share: create inputs, secrets in
`details`, the balance that only GraphQL has) against a fake transport: no network, every branch visible."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.runpod_v2 import CAPACITY_DETAIL as CAPACITY
from tests.support.runpod_v2 import GPUS as REFERENCE_GPUS
from tests.support.runpod_v2 import V2_POD, V2_POD_CREATED, V2_POD_NOT_READY, V2_POD_STOPPED, VOLUMES
from vibewave.pod_manager.providers.base import (
    CapacityError,
    HostBusy,
    PodBoot,
    PodNotFound,
    ProviderState,
    Unavailable,
)
from vibewave.pod_manager.providers.runpod import RunPodPodDefaults, RunPodProvider, hide_env
from vibewave.pod_manager.runpod_api import ApiRetired, Forbidden, PodCreateSpec, RunPodClient
from vibewave.pod_manager.settings import RunPodSettings
from vibewave.runtime.process import ConfigurationError

pytestmark = pytest.mark.unit

# A start command as the bootstrap sends it: single quotes, double quotes, `$VARS`, a newline — byte for byte.
START = "bash -c 'set -e; echo \"$VW_POD_TOKEN\" > /tmp/t && exec python3 /boot.py --name='\\''x'\\'''\nexit 0"
BOOT = PodBoot(env={"VW_POD_TOKEN": "s3cr3t-token", "HF_HOME": "/workspace/hf"}, start_command=START)
A6000 = {
    "id": "NVIDIA RTX A6000", "name": "RTX A6000", "pool": "AMPERE_48", "manufacturer": "NVIDIA", "memory": 48,
    "secure": True, "community": False, "price": {"secure": 0.49, "community": 0},
    "maxCount": {"secure": 8, "community": 0},
}  # fmt: skip
GPUS = {"gpus": [*REFERENCE_GPUS["gpus"], A6000]}


class RestFake:
    """Answers REST calls per `METHOD path` from a script (or from `pods`); records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any] | None]] = []
        self.script: dict[str, list[Any]] = {}
        self.pods: dict[str, dict[str, Any]] = {}

    def on(self, call: str, *answers: Any) -> None:
        self.script.setdefault(call, []).extend(answers)

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any] | None:
        call = f"{method} {path}"
        self.calls.append((method, path, body))
        if self.script.get(call):
            answer = self.script[call].pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer(body) if callable(answer) else answer
        if call == "GET /pods":
            return {"pods": list(self.pods.values())}
        if call == "GET /catalog/gpus":
            return GPUS
        raise AssertionError(f"unscripted {call}")

    async def execute(self, query: str, variables: dict[str, Any] | None, operation: str) -> dict[str, Any]:
        self.calls.append(("GRAPHQL", operation, variables))
        answers = self.script.get(f"GRAPHQL {operation}")
        if not answers:
            raise AssertionError(f"unscripted GraphQL {operation}")
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[no-any-return]

    async def close(self) -> None:
        return None

    def creates(self) -> list[dict[str, Any]]:
        return [body or {} for method, path, body in self.calls if (method, path) == ("POST", "/pods")]


def defaults(**kw: Any) -> RunPodPodDefaults:
    base = dict(
        gpu_types=("NVIDIA GeForce RTX 4090", "NVIDIA RTX A6000"),
        image="runpod/pytorch:2.1.0-py3.10-cuda11.8.0-devel-ubuntu22.04",
        container_disk_gb=50, min_memory_gb=24, ports="22/tcp,8080/http,8188/http,8888/http,11434/http",
        cloud_type="ALL", docker_args="sleep infinity", template_id=None,
        proxy_url_template="https://{pod_id}-{port}.proxy.runpod.net", comfyui_port=8188,
        allowed_cuda_versions=("12.8", "12.9", "13.0"),
    )  # fmt: skip
    return RunPodPodDefaults(**(base | kw))


@pytest.fixture
def fake() -> RestFake:
    return RestFake()


def rest_provider(fake: RestFake, **kw: Any) -> RunPodProvider:
    return RunPodProvider(RunPodClient(fake, api="rest", query_retries=1), defaults(**kw))


def created(name: str, pod_id: str = "k3v9x2q7m1p0ab") -> Any:
    return lambda body: {**V2_POD_CREATED, "id": pod_id, "name": body["name"]}


async def test_rest_create_sends_one_json_body_with_every_input_and_reads_the_pod_it_answers(fake):
    provider = rest_provider(fake, network_volume_id="grvtso8ftn")
    fake.on("GET /network-volumes/grvtso8ftn", VOLUMES["networkVolumes"][0])
    await provider.validate()
    fake.on("POST /pods", created("vibewave-wf-'q'"))
    pod = await provider.create("vibewave-wf-'q'", 0, BOOT)
    (body,) = fake.creates()
    assert body == {
        "name": "vibewave-wf-'q'",
        "image": "runpod/pytorch:2.1.0-py3.10-cuda11.8.0-devel-ubuntu22.04",
        "gpu": {"id": "NVIDIA GeForce RTX 4090", "count": 1, "allowedCudaVersions": ["12.8", "12.9", "13.0"],
                "minRamPerGpu": 24},
        "disk": 50,
        "ports": ["22/tcp", "8080/http", "8188/http", "8888/http", "11434/http"],
        "startSsh": True,
        "cloud": "SECURE",
        "env": {"VW_POD_TOKEN": "s3cr3t-token", "HF_HOME": "/workspace/hf"},
        "args": START,
        "mounts": {"network": [{"volumeId": "grvtso8ftn", "path": "/workspace"}]},
        "dataCenterIds": ["EU-RO-1"],
    }  # fmt: skip
    assert body["args"].encode() == START.encode(), "the start command arrives byte for byte"
    assert pod.state == ProviderState.STARTING and pod.id == "k3v9x2q7m1p0ab"
    assert [c[1] for c in fake.calls].count("/pods/k3v9x2q7m1p0ab") == 0, "REST answers the Pod: no second read"


async def test_rest_create_without_boot_uses_the_default_command_and_no_env(fake):
    provider = rest_provider(fake, cloud_type="SECURE", allowed_cuda_versions=(), min_memory_gb=0)
    fake.on("POST /pods", created("vibewave-wf-1"))
    await provider.create("vibewave-wf-1")
    (body,) = fake.creates()
    assert body["args"] == "sleep infinity" and "env" not in body and "mounts" not in body
    assert body["gpu"] == {"id": "NVIDIA GeForce RTX 4090", "count": 1}, "no CUDA or RAM filter asked for"


async def test_cloud_all_tries_secure_then_community_where_the_catalogue_offers_each(fake):
    provider = rest_provider(fake)
    await provider.validate()
    fake.on("POST /pods", CapacityError(CAPACITY), CapacityError(CAPACITY), created("vibewave-wf-2", "p2"))
    pod = await provider.create("vibewave-wf-2")
    tried = [(b["gpu"]["id"], b.get("cloud")) for b in fake.creates()]
    assert tried == [
        ("NVIDIA GeForce RTX 4090", "SECURE"),
        ("NVIDIA GeForce RTX 4090", "COMMUNITY"),
        ("NVIDIA RTX A6000", "SECURE"),  # the catalogue: no A6000 in Community Cloud
    ]
    assert pod.id == "p2"


async def test_no_capacity_anywhere_names_every_candidate(fake):
    provider = rest_provider(fake)
    await provider.validate()
    fake.on("POST /pods", *[CapacityError(CAPACITY)] * 3)
    with pytest.raises(CapacityError, match=r"RTX 4090 in SECURE, NVIDIA GeForce RTX 4090 in COMMUNITY, NVIDIA RTX"):
        await provider.create("vibewave-wf-3")


async def test_a_network_volume_keeps_cloud_all_in_secure_cloud(fake):
    provider = rest_provider(fake, network_volume_id="grvtso8ftn")
    fake.on("GET /network-volumes/grvtso8ftn", VOLUMES["networkVolumes"][0])
    await provider.validate()
    fake.on("POST /pods", CapacityError(CAPACITY), CapacityError(CAPACITY))
    with pytest.raises(CapacityError):
        await provider.create("vibewave-wf-4")
    assert [b.get("cloud") for b in fake.creates()] == ["SECURE", "SECURE"]


async def test_a_forbidden_pool_moves_on_and_alone_is_raised(fake):
    provider = rest_provider(fake, cloud_type="SECURE")
    fake.on("POST /pods", Forbidden("RunPod denied POST /v2/pods (403): your account cannot access the pool"))
    fake.on("POST /pods", created("vibewave-wf-5", "p5"))
    assert (await provider.create("vibewave-wf-5")).id == "p5"
    fake.on("POST /pods", Forbidden("403 a"), Forbidden("403 b"))
    with pytest.raises(Forbidden, match="403 b"):
        await provider.create("vibewave-wf-6")


async def test_an_ambiguous_rest_create_is_adopted_by_name_not_repeated(fake):
    provider = rest_provider(fake, cloud_type="SECURE")
    fake.on("POST /pods", Unavailable("Something went wrong. Please try again later or contact support."))
    fake.pods["p7"] = {**V2_POD, "id": "p7", "name": "vibewave-wf-7"}
    pod = await provider.create("vibewave-wf-7")
    assert pod.id == "p7" and len(fake.creates()) == 1


async def test_graphql_create_input_carries_the_same_inputs(fake):
    provider = RunPodProvider(RunPodClient(fake, api="graphql"), defaults(network_volume_id="grvtso8ftn"))
    fake.on("GRAPHQL CreatePod", {"podFindAndDeployOnDemand": {"id": "g1"}})
    fake.on("GRAPHQL Pod", {"pod": {"id": "g1", "name": "vibewave-wf-8", "desiredStatus": "RUNNING"}})
    await provider.create("vibewave-wf-8", 0, BOOT)
    (variables,) = [c[2] for c in fake.calls if c[1] == "CreatePod"]
    assert variables == {
        "input": {
            "name": "vibewave-wf-8", "gpuTypeId": "NVIDIA GeForce RTX 4090", "gpuCount": 1, "cloudType": "SECURE",
            "imageName": "runpod/pytorch:2.1.0-py3.10-cuda11.8.0-devel-ubuntu22.04", "containerDiskInGb": 50,
            "minMemoryInGb": 24, "ports": "22/tcp,8080/http,8188/http,8888/http,11434/http", "volumeInGb": 0,
            "startSsh": True,
            "env": [{"key": "VW_POD_TOKEN", "value": "s3cr3t-token"}, {"key": "HF_HOME", "value": "/workspace/hf"}],
            "dockerArgs": START, "allowedCudaVersions": ["12.8", "12.9", "13.0"],
            "networkVolumeId": "grvtso8ftn", "volumeMountPath": "/workspace",
        }
    }  # fmt: skip


def test_the_neutral_spec_keeps_cloud_all_out_of_rest_and_in_graphql():
    spec = PodCreateSpec(
        name="n", image="i", gpu_type_id="g", cloud="ALL", container_disk_gb=20, ports=("8188/http",),
        template_id="vw7cmfy0ui",
    )  # fmt: skip
    assert "cloud" not in spec.rest_body() and spec.rest_body()["templateId"] == "vw7cmfy0ui"
    assert spec.graphql_input()["cloudType"] == "ALL" and spec.graphql_input()["templateId"] == "vw7cmfy0ui"


async def test_rest_pod_shapes_read_into_provider_pods(fake):
    provider = rest_provider(fake, gpu_types=("NVIDIA GeForce RTX 4090",))
    fake.on("GET /catalog/gpus", {"gpus": [*GPUS["gpus"], {"id": "NVIDIA RTX PRO 4500 Blackwell",
                                                            "name": "RTX PRO 4500", "memory": 32}]})  # fmt: skip
    await provider.validate()
    running = provider._view(V2_POD)
    assert running.state == ProviderState.RUNNING and running.ip == "213.173.104.74", "the TCP port's IP, not 100.65"
    assert (running.gpu_type, running.gpu_memory_gb, running.cost_per_hr) == ("RTX PRO 4500", 32, 0.72)
    assert running.comfyui_url == "https://5xpma5eg46tqjq-8188.proxy.runpod.net"
    assert running.details["runtime"]["ports"] == V2_POD["runtime"]["ports"]
    not_ready = provider._view(V2_POD_NOT_READY)
    assert not_ready.state == ProviderState.STARTING and not_ready.ip is None, "RUNNING without a runtime: starting"
    assert provider._view({**V2_POD, "status": "PROVISIONING", "runtime": {}}).state == ProviderState.STARTING
    assert provider._view({**V2_POD, "status": "STARTING", "runtime": None}).state == ProviderState.STARTING
    stopped = provider._view(V2_POD_STOPPED)
    assert stopped.state == ProviderState.STOPPED and stopped.cost_per_hr == 0.0 and stopped.ip is None
    assert provider._view({**V2_POD_STOPPED, "status": "ERROR"}).state == ProviderState.STOPPED, "startable again"
    assert provider._view({**V2_POD_STOPPED, "status": "TERMINATED"}).state == ProviderState.TERMINATED
    direct_only = {**V2_POD, "runtime": {**V2_POD["runtime"], "ports": []}}
    assert provider._view(direct_only).ip == "213.173.104.74", "else the direct SSH host"


def test_env_values_never_reach_details_in_either_shape():
    rest = hide_env({**V2_POD, "env": {"VW_POD_TOKEN": "s3cr3t", "PUBLIC_KEY": "ssh-ed25519 A"}})
    assert rest["env"] == {"VW_POD_TOKEN": "<hidden>", "PUBLIC_KEY": "<hidden>"}
    graphql = hide_env({"id": "g", "env": ["VW_POD_TOKEN=s3cr3t", "A=b=c"]})
    assert graphql["env"] == ["VW_POD_TOKEN=<hidden>", "A=<hidden>"]
    items = hide_env({"id": "g", "env": [{"key": "VW_POD_TOKEN", "value": "s3cr3t"}]})
    assert items["env"] == [{"key": "VW_POD_TOKEN", "value": "<hidden>"}]
    assert "s3cr3t" not in repr([rest, graphql, items])
    assert V2_POD["env"] == {"PUBLIC_KEY": "ssh-ed25519 SCRUBBED"}, "the pod itself is not changed"


async def test_provider_details_hide_env_on_every_read(fake):
    provider = rest_provider(fake)
    fake.pods["p1"] = {**V2_POD, "id": "p1", "env": {"VW_POD_TOKEN": "s3cr3t"}}
    fake.on("GET /pods/p1", fake.pods["p1"])
    for pod in [*(await provider.list()), await provider.get("p1")]:
        assert pod is not None and pod.details["env"] == {"VW_POD_TOKEN": "<hidden>"}


async def test_rest_lifecycle_calls_and_percent_encoded_ids(fake):
    provider = rest_provider(fake)
    odd = "a/b c?d"
    fake.on("GET /pods/a%2Fb%20c%3Fd", {**V2_POD, "id": odd}, {**V2_POD_STOPPED, "id": odd})
    fake.on("POST /pods/a%2Fb%20c%3Fd/action", {**V2_POD_STOPPED, "id": odd})
    await provider.stop(odd)
    fake.on("GET /pods/a%2Fb%20c%3Fd", {**V2_POD_STOPPED, "id": odd})
    fake.on("POST /pods/a%2Fb%20c%3Fd/action", HostBusy("There are not enough free GPUs on the host machine"))
    with pytest.raises(HostBusy):
        await provider.start(odd)
    fake.on("GET /pods/a%2Fb%20c%3Fd", {**V2_POD, "id": odd})
    fake.on("POST /pods/a%2Fb%20c%3Fd/action", {**V2_POD, "id": odd})
    await provider.restart(odd)
    fake.on("GET /pods/a%2Fb%20c%3Fd", {**V2_POD, "id": odd})
    fake.on("DELETE /pods/a%2Fb%20c%3Fd", None)
    await provider.terminate(odd)
    writes = [(m, p, b) for m, p, b in fake.calls if m != "GET"]
    assert writes == [
        ("POST", "/pods/a%2Fb%20c%3Fd/action", {"action": "stop"}),
        ("POST", "/pods/a%2Fb%20c%3Fd/action", {"action": "start"}),
        ("POST", "/pods/a%2Fb%20c%3Fd/action", {"action": "restart"}),
        ("DELETE", "/pods/a%2Fb%20c%3Fd", None),
    ]


async def test_rest_list_follows_the_cursor_while_there_is_a_next_page(fake):
    client = RunPodClient(fake, api="rest")
    fake.on("GET /pods", {"pods": [{"id": "a"}], "pagination": {"hasNextPage": True, "nextCursor": "c/1 2"}})
    fake.on("GET /pods?cursor=c%2F1+2", {"pods": [{"id": "b"}], "pagination": {"hasNextPage": False,
                                                                              "nextCursor": "c3"}})  # fmt: skip
    assert [p["id"] for p in await client.pods()] == ["a", "b"]
    fake.on("GET /pods", {"pods": [{"id": "a"}]})
    assert [p["id"] for p in await client.pods()] == ["a"], "no pagination key: the list is whole"
    fake.on("GET /pods", {"pods": [], "pagination": {"hasNextPage": True, "nextCursor": "x"}})
    fake.on("GET /pods?cursor=x", {"pods": [], "pagination": {"hasNextPage": True, "nextCursor": "x"}})
    with pytest.raises(Unavailable, match="no new cursor"):
        await client.pods()


async def test_rest_reads_are_retried_writes_are_not(fake):
    client = RunPodClient(fake, api="rest", query_retries=2)
    fake.on("GET /catalog/gpus", Unavailable("502"), Unavailable("503"))
    assert len(await client.gpu_types()) == 2
    fake.on("DELETE /pods/p1", Unavailable("timeout"))
    with pytest.raises(Unavailable):
        await client.terminate_pod("p1")
    assert [c for c in fake.calls if c[0] == "DELETE"] == [("DELETE", "/pods/p1", None)]


async def test_the_balance_is_graphql_in_both_modes_and_degrades_when_graphql_is_gone(fake):
    client = RunPodClient(fake, api="rest")
    fake.on("GRAPHQL Account", {"myself": {"id": "u", "clientBalance": 27.64, "currentSpendPerHr": 0.44}})
    assert (await client.account())["clientBalance"] == 27.64
    fake.on("GRAPHQL Account", ApiRetired("RunPod retired its GraphQL API (410 Gone): Account"))
    fake.pods = {"a": {**V2_POD, "id": "a"}, "b": {**V2_POD_STOPPED, "id": "b"}}
    degraded = await client.account()
    assert degraded["clientBalance"] is None and degraded["currentSpendPerHr"] == 0.72
    assert "410" in degraded["balanceUnavailable"]
    graphql_mode = RunPodClient(fake, api="graphql")
    fake.on("GRAPHQL Account", ApiRetired("410"))
    assert (await graphql_mode.account())["currentSpendPerHr"] == 0.72, "REST v2 answers the burn rate"


async def test_a_network_volume_that_is_not_the_accounts_is_a_start_up_error(fake):
    provider = rest_provider(fake, network_volume_id="nope")
    fake.on("GET /network-volumes/nope", PodNotFound("network volume not found"))
    fake.on("GET /network-volumes", VOLUMES)
    with pytest.raises(ConfigurationError, match=r"RUNPOD_NETWORK_VOLUME_ID='nope'.*grvtso8ftn"):
        await provider.validate()
    with pytest.raises(ConfigurationError, match="Secure Cloud"):
        await rest_provider(fake, network_volume_id="grvtso8ftn", cloud_type="COMMUNITY").validate()


def test_settings_choose_the_api_cuda_versions_and_volume(monkeypatch):
    monkeypatch.delenv("RUNPOD_API", raising=False)
    monkeypatch.delenv("RUNPOD_ALLOWED_CUDA_VERSIONS", raising=False)
    monkeypatch.delenv("RUNPOD_NETWORK_VOLUME_ID", raising=False)
    default = RunPodSettings.from_env()
    assert (default.api, default.allowed_cuda_versions, default.network_volume_id) == (
        "rest", ("12.8", "12.9", "13.0"), None
    )  # fmt: skip
    monkeypatch.setenv("RUNPOD_API", "GraphQL")
    monkeypatch.setenv("RUNPOD_ALLOWED_CUDA_VERSIONS", "any")
    monkeypatch.setenv("RUNPOD_NETWORK_VOLUME_ID", " agv6w2qcg7 ")
    chosen = RunPodSettings.from_env()
    assert (chosen.api, chosen.allowed_cuda_versions, chosen.network_volume_id) == ("graphql", (), "agv6w2qcg7")
    monkeypatch.setenv("RUNPOD_API", "v1")
    with pytest.raises(ConfigurationError, match="RUNPOD_API='v1'"):
        RunPodSettings.from_env()
    monkeypatch.setenv("RUNPOD_API", "rest")
    monkeypatch.setenv("RUNPOD_ALLOWED_CUDA_VERSIONS", "12.8,cu128")
    with pytest.raises(ConfigurationError, match="'cu128'"):
        RunPodSettings.from_env()
