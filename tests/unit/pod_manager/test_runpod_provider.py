"""The RunPod client and provider against a fake transport: no network, every branch visible."""

from __future__ import annotations

import json
from typing import Any

import pytest

from vibewave.pod_manager.providers.base import (
    CapacityError,
    HostBusy,
    InsufficientBalance,
    PodNotFound,
    ProviderState,
    Unauthorized,
    Unavailable,
)
from vibewave.pod_manager.providers.runpod import RunPodPodDefaults, RunPodProvider
from vibewave.pod_manager.runpod_api import HttpGraphQLTransport, RunPodClient, _parse
from vibewave.pod_manager.settings import PodManagerSettings, Secret

pytestmark = pytest.mark.unit

CAPACITY = (
    "There are no longer any instances available with the requested specifications. Please refresh and try again."
)


class FakeTransport:
    """Answers per operation from a script; records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any] | None]] = []
        self.script: dict[str, list[Any]] = {}
        self.pods: dict[str, dict[str, Any]] = {}

    def on(self, operation: str, *answers: Any) -> None:
        self.script.setdefault(operation, []).extend(answers)

    async def execute(self, query: str, variables: dict[str, Any] | None, operation: str) -> dict[str, Any]:
        self.calls.append((operation, query, variables))
        if self.script.get(operation):
            answer = self.script[operation].pop(0)
            if isinstance(answer, Exception):
                raise answer
            if callable(answer):
                return answer(variables)
            return answer
        if operation == "Pod":
            return {"pod": self.pods.get(variables["input"]["podId"]) if variables else None}
        if operation == "Pods":
            return {"myself": {"pods": list(self.pods.values())}}
        raise AssertionError(f"unscripted {operation}")

    async def close(self) -> None:
        return None


def defaults(**kw: Any) -> RunPodPodDefaults:
    base = dict(
        gpu_types=("NVIDIA GeForce RTX 4090", "NVIDIA RTX A6000"),
        image="runpod/pytorch:2.1.0-py3.10-cuda11.8.0-devel-ubuntu22.04",
        container_disk_gb=50, min_memory_gb=24, ports="22/tcp,8080/http,8188/http,8888/http,11434/http",
        cloud_type="ALL", docker_args="", template_id=None,
        proxy_url_template="https://{pod_id}-{port}.proxy.runpod.net", comfyui_port=8188,
    )  # fmt: skip
    return RunPodPodDefaults(**(base | kw))


def pod(pod_id: str, status: str = "RUNNING", runtime: bool = True, name: str = "vibewave-x-1") -> dict[str, Any]:
    ports = [{"ip": "213.173.109.39", "isIpPublic": True, "privatePort": 22, "publicPort": 13007, "type": "tcp"}]
    return {"id": pod_id, "name": name, "desiredStatus": status, "costPerHr": 0.69,
            "runtime": {"ports": ports} if runtime else None, "machine": {"gpuDisplayName": "RTX 4090"}}  # fmt: skip


@pytest.fixture
def fake() -> FakeTransport:
    return FakeTransport()


@pytest.fixture
def provider(fake: FakeTransport) -> RunPodProvider:
    return RunPodProvider(RunPodClient(fake, query_retries=1), defaults())


async def test_create_uses_variables_and_the_api_documents_defaults(fake, provider):
    fake.on("CreatePod", lambda v: {"podFindAndDeployOnDemand": {"id": "abc123", "imageName": v["input"]["imageName"]}})
    fake.pods["abc123"] = pod("abc123", runtime=False, name='vibewave-wf-"quoted"')
    created = await provider.create('vibewave-wf-"quoted"', "wf")
    operation, query, variables = fake.calls[0]
    assert operation == "CreatePod" and "$input: PodFindAndDeployOnDemandInput!" in query
    assert '"quoted"' not in query and "RTX 4090" not in query, "values travel as variables, never in the text"
    spec = variables["input"]
    assert spec["gpuTypeId"] == "NVIDIA GeForce RTX 4090" and spec["gpuCount"] == 1
    assert spec["imageName"] == "runpod/pytorch:2.1.0-py3.10-cuda11.8.0-devel-ubuntu22.04"
    assert (spec["containerDiskInGb"], spec["minMemoryInGb"]) == (50, 24)
    assert spec["ports"] == "22/tcp,8080/http,8188/http,8888/http,11434/http"
    assert created.state == ProviderState.STARTING, "runtime null: the container is not up yet"
    assert created.comfyui_url == "https://abc123-8188.proxy.runpod.net"


async def test_capacity_error_falls_over_to_the_next_gpu_type(fake, provider):
    fake.on("CreatePod", CapacityError(CAPACITY), {"podFindAndDeployOnDemand": {"id": "p2"}})
    fake.pods["p2"] = pod("p2")
    created = await provider.create("vibewave-wf-1", "wf")
    gpus = [call[2]["input"]["gpuTypeId"] for call in fake.calls if call[0] == "CreatePod"]
    assert gpus == ["NVIDIA GeForce RTX 4090", "NVIDIA RTX A6000"]
    assert created.id == "p2" and created.state == ProviderState.RUNNING and created.ip == "213.173.109.39"


async def test_no_capacity_anywhere_is_a_capacity_error(fake, provider):
    fake.on("CreatePod", CapacityError(CAPACITY), CapacityError(CAPACITY))
    with pytest.raises(CapacityError, match="RTX 4090, NVIDIA RTX A6000"):
        await provider.create("vibewave-wf-1", "wf")


async def test_a_create_reported_failed_that_happened_is_adopted_not_repeated(fake, provider):
    fake.on("CreatePod", Unavailable("Something went wrong. Please try again later or contact support."))
    fake.pods["p9"] = pod("p9", name="vibewave-wf-1")
    created = await provider.create("vibewave-wf-1", "wf")
    assert created.id == "p9"
    assert [c[0] for c in fake.calls].count("CreatePod") == 1


async def test_stop_reported_failed_but_done_is_success_and_host_busy_is_precise(fake, provider):
    fake.pods["p1"] = pod("p1")

    def stopped(_: Any) -> dict[str, Any]:
        fake.pods["p1"] = pod("p1", status="EXITED", runtime=False)
        raise Unavailable("Something went wrong. Please try again later or contact support.")

    fake.on("StopPod", stopped)
    await provider.stop("p1")
    fake.on("ResumePod", HostBusy("There are not enough free GPUs on the host machine to start this pod."))
    with pytest.raises(HostBusy):
        await provider.start("p1")
    with pytest.raises(PodNotFound):
        await provider.stop("missing")


async def test_queries_are_retried_but_mutations_are_not(fake):
    client = RunPodClient(fake, query_retries=2)
    fake.on("Pods", Unavailable("502"), {"myself": {"pods": []}})
    assert await client.pods() == []
    fake.on("TerminatePod", Unavailable("timeout"))
    with pytest.raises(Unavailable):
        await client.terminate_pod("p1")
    assert [c[0] for c in fake.calls].count("TerminatePod") == 1


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (401, "Unauthorized", Unauthorized),
        (403, "error code: 1010", Unavailable),
        (502, "<html>Bad gateway</html>", Unavailable),
        (200, json.dumps({"errors": [{"message": CAPACITY}], "data": {"podFindAndDeployOnDemand": None}}),
         CapacityError),
        (200, json.dumps({"errors": [{"message": "Insufficient balance to deploy this pod."}]}), InsufficientBalance),
        (200, json.dumps({"errors": [{"message": "Something went wrong. Please try again later or contact support.",
                                      "extensions": {"code": "INTERNAL_SERVER_ERROR"}}]}), Unavailable),
    ],
)  # fmt: skip
def test_answers_map_to_precise_errors(status, body, error):
    with pytest.raises(error):
        _parse(status, body, "CreatePod")


def test_the_key_never_shows(monkeypatch):
    monkeypatch.setenv("RUNPOD_API_KEY", "rpa_SUPERSECRET")
    settings = PodManagerSettings.from_env()
    assert settings.provider == "runpod", "a key selects the runpod provider by default"
    assert "SUPERSECRET" not in repr(settings) and "SUPERSECRET" not in str(settings.runpod.api_key)
    transport = HttpGraphQLTransport("http://127.0.0.1:9", settings.runpod.api_key.reveal())
    assert "SUPERSECRET" not in repr(transport)
    assert Secret("x").reveal() == "x"
