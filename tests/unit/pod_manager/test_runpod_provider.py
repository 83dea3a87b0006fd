"""The RunPod client and provider against a fake transport: no network, every branch visible."""

from __future__ import annotations

import json
from typing import Any

import pytest

from vibewave.pod_manager.providers.base import (
    BadRequest,
    CapacityError,
    Conflict,
    HostBusy,
    InsufficientBalance,
    NoFittingGpu,
    PodNotFound,
    ProviderState,
    RateLimited,
    Unauthorized,
    Unavailable,
)
from vibewave.pod_manager.providers.runpod import RunPodPodDefaults, RunPodProvider
from vibewave.pod_manager.runpod_api import RunPodClient, RunPodHttp, _parse, problem_error, rate_limited
from vibewave.pod_manager.settings import PodManagerSettings, Secret
from vibewave.runpod_emu.catalogue import default_gpu_types
from vibewave.runtime.process import ConfigurationError

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

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any] | None:
        return await self.execute(path, body, f"{method} {path}")

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
    created = await provider.create('vibewave-wf-"quoted"')
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
    created = await provider.create("vibewave-wf-1")
    gpus = [call[2]["input"]["gpuTypeId"] for call in fake.calls if call[0] == "CreatePod"]
    assert gpus == ["NVIDIA GeForce RTX 4090", "NVIDIA RTX A6000"]
    assert created.id == "p2" and created.state == ProviderState.RUNNING and created.ip == "213.173.109.39"


async def test_no_capacity_anywhere_is_a_capacity_error(fake, provider):
    fake.on("CreatePod", CapacityError(CAPACITY), CapacityError(CAPACITY))
    with pytest.raises(CapacityError, match="RTX 4090, NVIDIA RTX A6000"):
        await provider.create("vibewave-wf-1")


async def test_a_create_reported_failed_that_happened_is_adopted_not_repeated(fake, provider):
    fake.on("CreatePod", Unavailable("Something went wrong. Please try again later or contact support."))
    fake.pods["p9"] = pod("p9", name="vibewave-wf-1")
    created = await provider.create("vibewave-wf-1")
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
    monkeypatch.delenv("VIBEWAVE_POD_TOKEN_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="VIBEWAVE_POD_TOKEN_KEY is not set"):
        PodManagerSettings.from_env()  # pods' ComfyUI would have no token
    monkeypatch.setenv("VIBEWAVE_POD_TOKEN_KEY", "TOKENKEYSECRET")
    settings = PodManagerSettings.from_env()
    assert settings.provider == "runpod", "a key selects the runpod provider by default"
    assert "SUPERSECRET" not in repr(settings) and "SUPERSECRET" not in str(settings.runpod.api_key)
    assert "TOKENKEYSECRET" not in repr(settings)
    transport = RunPodHttp("http://127.0.0.1:9", settings.runpod.api_key.reveal())
    assert "SUPERSECRET" not in repr(transport)
    assert Secret("x").reveal() == "x"


GPU_CATALOGUE = {
    "gpuTypes": [
        {"id": "NVIDIA GeForce RTX 4090", "displayName": "RTX 4090", "memoryInGb": 24},
        {"id": "NVIDIA RTX A6000", "displayName": "RTX A6000", "memoryInGb": 48},
        {"id": "NVIDIA A100 80GB PCIe", "displayName": "A100 80GB", "memoryInGb": 80},
    ]
}


async def test_unknown_gpu_ids_and_cloud_types_are_start_up_errors_naming_the_valid_ones(fake):
    typo = RunPodProvider(RunPodClient(fake), defaults(gpu_types=("NVIDIA GeForce RTX 4090x",)))
    fake.on("GpuTypes", GPU_CATALOGUE)
    with pytest.raises(
        ConfigurationError, match=r"'NVIDIA GeForce RTX 4090x'.*valid ids: NVIDIA A100 80GB PCIe, NVIDIA"
    ):
        await typo.validate()
    with pytest.raises(ConfigurationError, match="RUNPOD_CLOUD_TYPE='SECRET'"):
        await RunPodProvider(RunPodClient(fake), defaults(cloud_type="SECRET")).validate()
    fake.on("GpuTypes", Unauthorized("RunPod refused the API key (401)"))
    with pytest.raises(ConfigurationError, match="RUNPOD_API_KEY was refused"):
        await RunPodProvider(RunPodClient(fake), defaults()).validate()


async def test_a_workflow_needing_more_gpu_memory_only_tries_gpu_types_that_have_it(fake, provider):
    fake.on("GpuTypes", GPU_CATALOGUE)
    await provider.validate()
    fake.on("CreatePod", {"podFindAndDeployOnDemand": {"id": "big"}})
    fake.pods["big"] = {**pod("big"), "machine": {"gpuDisplayName": "RTX A6000", "gpuTypeId": "NVIDIA RTX A6000"}}
    created = await provider.create("vibewave-48g-1", 48)
    assert [c[2]["input"]["gpuTypeId"] for c in fake.calls if c[0] == "CreatePod"] == ["NVIDIA RTX A6000"]
    assert created.gpu_memory_gb == 48
    with pytest.raises(NoFittingGpu, match="no GPU type of RUNPOD_GPU_TYPES has 80 GB"):
        await provider.create("vibewave-80g-1", 80)


async def test_a_rate_limited_call_waits_retry_after_and_is_repeated_within_a_bound(fake, monkeypatch):
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr("vibewave.pod_manager.runpod_api.asyncio.sleep", sleep)
    client = RunPodClient(fake, max_rate_limit_wait_s=10)
    fake.on("TerminatePod", RateLimited("429", 2), RateLimited("429", 3), {"podTerminate": None})
    await client.terminate_pod("p1")
    assert slept == [2, 3] and [c[0] for c in fake.calls].count("TerminatePod") == 3
    fake.on("Pods", RateLimited("429", 6), RateLimited("429", 6))
    with pytest.raises(RateLimited):
        await client.pods()
    assert rate_limited("", "7").retry_after_s == 7 and rate_limited("", "soon").retry_after_s == 5


async def test_restart_is_runpods_in_place_restart(fake, provider):
    fake.pods["p1"] = pod("p1")
    fake.on("POST /pods/p1/action", lambda body: {"id": "p1", "status": "RUNNING"})
    await provider.restart("p1")
    assert [c for c in fake.calls if c[0].startswith("POST")] == [
        ("POST /pods/p1/action", "/pods/p1/action", {"action": "restart"})
    ]
    fake.on("POST /pods/p1/action", Conflict("RunPod refused restart for the pod's current state"))
    with pytest.raises(Conflict):
        await provider.restart("p1")


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (400, json.dumps({"title": "Bad Request", "status": 400, "detail": CAPACITY}), CapacityError),
        (400, json.dumps({"detail": "There are not enough free GPUs on the host machine to start this pod."}),
         HostBusy),
        (402, json.dumps({"title": "Payment Required", "status": 402, "detail": "balance"}), InsufficientBalance),
        (404, json.dumps({"title": "Not Found", "status": 404, "detail": "pod not found"}), PodNotFound),
        (409, json.dumps({"title": "Conflict", "status": 409, "detail": "not valid for EXITED"}), Conflict),
        (422, json.dumps({"detail": "Request validation failed.", "errors": ["$.action: …"]}), BadRequest),
        (502, "<html>Bad gateway</html>", Unavailable),
        (401, json.dumps({"title": "Unauthorized", "status": 401, "detail": "missing bearer token"}), Unauthorized),
    ],
)  # fmt: skip
def test_rest_problem_answers_map_to_precise_errors(status, body, error):
    assert isinstance(problem_error(status, body, "POST /v2/pods/p1/action"), error)


def _catalogue(provider: RunPodProvider) -> None:
    """The emulator's catalogue in GraphQL's shape (its prices are RunPod's list prices)."""
    for gpu in default_gpu_types():
        provider._learn({"id": gpu.id, "displayName": gpu.display_name, "memoryInGb": gpu.memory_in_gb,
                         "secureCloud": gpu.secure_cloud, "communityCloud": gpu.community_cloud,
                         "securePrice": gpu.secure_price, "communityPrice": gpu.community_price})  # fmt: skip


async def test_cheapest_choice_tries_the_fitting_types_by_price_and_the_spend_cap_bounds_the_price(fake):
    listed = ("NVIDIA GeForce RTX 4090", "NVIDIA RTX A6000", "NVIDIA L40S", "NVIDIA GeForce RTX 3090")
    cheapest = RunPodProvider(
        RunPodClient(fake), defaults(gpu_types=listed, cloud_type="SECURE", gpu_choice="cheapest")
    )
    _catalogue(cheapest)
    assert [gpu for gpu, _ in cheapest.candidates(0)] == [
        "NVIDIA GeForce RTX 3090", "NVIDIA RTX A6000", "NVIDIA GeForce RTX 4090", "NVIDIA L40S"
    ]  # fmt: skip
    assert [gpu for gpu, _ in cheapest.candidates(48)] == ["NVIDIA RTX A6000", "NVIDIA L40S"]
    assert cheapest.new_pod_price(0) == 0.43 and cheapest.new_pod_price(48) == 0.49
    preferred = RunPodProvider(RunPodClient(fake), defaults(gpu_types=listed, cloud_type="SECURE"))
    _catalogue(preferred)
    assert preferred.candidates(0)[0] == ("NVIDIA GeForce RTX 4090", "SECURE") and preferred.new_pod_price(0) == 0.69

    fake.on("CreatePod", CapacityError(CAPACITY), {"podFindAndDeployOnDemand": {"id": "p2"}})
    fake.pods["p2"] = pod("p2")
    await cheapest.create("vibewave-x-1", max_price=0.5)
    tried = [call[2]["input"]["gpuTypeId"] for call in fake.calls if call[0] == "CreatePod"]
    assert tried == ["NVIDIA GeForce RTX 3090", "NVIDIA RTX A6000"], "no capacity on the 3090: the next under $0.50"
    fake.calls.clear()
    fake.on("CreatePod", CapacityError(CAPACITY))
    with pytest.raises(CapacityError, match="over the spend cap"):
        await cheapest.create("vibewave-x-2", max_price=0.45)
    assert [c[2]["input"]["gpuTypeId"] for c in fake.calls if c[0] == "CreatePod"] == ["NVIDIA GeForce RTX 3090"]


def test_gpu_choice_and_fleet_policy_settings_are_checked(monkeypatch):
    monkeypatch.setenv("FLEET_POLICY", "economic")
    assert PodManagerSettings.from_env().runpod.gpu_choice == "cheapest", "economic picks the cheapest type"
    monkeypatch.setenv("RUNPOD_GPU_CHOICE", "preference")
    assert PodManagerSettings.from_env().runpod.gpu_choice == "preference"
    monkeypatch.setenv("FLEET_POLICY", "cheapskate")
    with pytest.raises(ConfigurationError, match="FLEET_POLICY"):
        PodManagerSettings.from_env()
    monkeypatch.setenv("FLEET_POLICY", "demand")
    monkeypatch.setenv("MAX_HOURLY_SPEND", "0")
    with pytest.raises(ConfigurationError, match="MAX_HOURLY_SPEND"):
        PodManagerSettings.from_env()
    monkeypatch.setenv("MAX_HOURLY_SPEND", "2.5")
    assert PodManagerSettings.from_env().max_hourly_spend == 2.5
    assert PodManagerSettings.from_env().fleet_wait_worth == 6.0
    for wrong in ("0", "-1", "nan", "inf", "lots"):
        monkeypatch.setenv("FLEET_WAIT_WORTH", wrong)
        with pytest.raises(ConfigurationError, match=r"FLEET_WAIT_WORTH|not a number"):
            PodManagerSettings.from_env()
    monkeypatch.setenv("FLEET_WAIT_WORTH", "12.5")
    assert PodManagerSettings.from_env().fleet_wait_worth == 12.5
