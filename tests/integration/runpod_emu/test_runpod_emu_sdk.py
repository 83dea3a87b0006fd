"""The official runpod 1.12.0 SDK against the emulator: shapes, lifecycle, billing, and every injected failure
surfacing as the exception the SDK raises against the real API (reference §1.3)."""

from __future__ import annotations

import re
import time
from types import ModuleType

import aiohttp
import pytest

from tests.integration.runpod_emu.helpers import BOOT_DELAY, call, wait_for
from vibewave.runpod_emu import RunningEmulator
from vibewave.runpod_emu.faults import (
    CAPACITY_MESSAGE,
    DEFAULT_INSUFFICIENT_BALANCE_MESSAGE,
    DISK_SPACE_MESSAGE,
    HOST_BUSY_MESSAGE,
    INTERNAL_ERROR_MESSAGE,
)

pytestmark = pytest.mark.integration

GPU = "NVIDIA GeForce RTX 4090"
SDK_POD_FIELDS = {
    "id", "containerDiskInGb", "costPerHr", "desiredStatus", "dockerArgs", "dockerId", "env", "gpuCount",
    "imageName", "lastStatusChange", "machineId", "memoryInGb", "name", "podType", "port", "ports",
    "uptimeSeconds", "vcpuCount", "volumeInGb", "volumeMountPath", "runtime", "machine",
}  # fmt: skip


async def set_faults(emu: RunningEmulator, faults: dict[str, object]) -> None:
    async with aiohttp.ClientSession() as http, http.post(f"{emu.url}/emulator/faults", json=faults) as resp:
        assert resp.status == 200, await resp.text()


async def test_catalogue_and_user(sdk: ModuleType) -> None:
    gpus = await call(sdk.get_gpus)
    ids = {g["id"] for g in gpus}
    assert {GPU, "NVIDIA RTX A6000", "NVIDIA GeForce RTX 3090", "NVIDIA L40S", "NVIDIA A100 80GB PCIe"} <= ids
    assert "unknown" in ids
    assert {"id": "NVIDIA A100 80GB PCIe", "displayName": "A100 80GB", "memoryInGb": 80} in gpus
    gpu = await call(sdk.get_gpu, "NVIDIA L40S", 2)
    assert gpu["displayName"] == "L40S" and gpu["memoryInGb"] == 48 and gpu["securePrice"] == 0.86
    assert gpu["lowestPrice"] == {"minimumBidPrice": 0.4, "uninterruptablePrice": 0.79}
    with pytest.raises(ValueError, match="No GPU found with the specified ID"):
        await call(sdk.get_gpu, "NVIDIA Imaginary")
    user = await call(sdk.get_user)
    assert user["id"].startswith("user_") and user["pubKey"] is None
    assert {"id": "agv6w2qcg7", "name": "vibewave-models", "size": 200, "dataCenterId": "EU-RO-1"} in user[
        "networkVolumes"
    ]
    updated = await call(sdk.update_user_settings, "ssh-ed25519 AAAA a\nssh-ed25519 BBBB b")
    assert updated["pubKey"] == "ssh-ed25519 AAAA a\nssh-ed25519 BBBB b"


async def test_pod_lifecycle(sdk: ModuleType) -> None:
    created = await call(
        sdk.create_pod, "worker", "vibewave/comfyui:0.33", GPU, ports="8888/http, 22/tcp", env={"MODE": "test"}
    )
    assert set(created) == {"id", "imageName", "env", "machineId", "machine"}
    pod_id = created["id"]
    assert re.fullmatch(r"[a-z0-9]{14}", pod_id) and re.fullmatch(r"[a-z0-9]{12}", created["machineId"])
    assert re.fullmatch(rf"{pod_id}-\d{{8}}", created["machine"]["podHostId"])
    assert created["env"] == ["MODE=test"]

    pod = await call(sdk.get_pod, pod_id)
    assert set(pod) == SDK_POD_FIELDS
    assert pod["desiredStatus"] == "RUNNING" and pod["runtime"] is None and pod["uptimeSeconds"] == 0
    assert pod["ports"] == "8888/http,22/tcp" and pod["costPerHr"] == 0.69 and pod["podType"] == "RESERVED"
    assert pod["machine"] == {"gpuDisplayName": "RTX 4090"} and pod["containerDiskInGb"] == 10
    assert pod["volumeMountPath"] == "/runpod-volume" and pod["lastStatusChange"].startswith("Rented by User: ")

    async def runtime() -> object:
        return (await call(sdk.get_pod, pod_id))["runtime"]

    started = time.monotonic()
    ports = (await wait_for(runtime))["ports"]
    assert time.monotonic() - started >= BOOT_DELAY * 0.5
    http, tcp = sorted(ports, key=lambda p: p["type"])
    assert http["ip"].startswith("100.65.") and http["isIpPublic"] is False and http["privatePort"] == 8888
    assert tcp["isIpPublic"] is True and tcp["privatePort"] == 22 and 10000 <= tcp["publicPort"] <= 60000
    assert any(p["id"] == pod_id for p in await call(sdk.get_pods))

    assert await call(sdk.stop_pod, pod_id) == {"id": pod_id, "desiredStatus": "EXITED"}
    stopped = await call(sdk.get_pod, pod_id)
    assert stopped["desiredStatus"] == "EXITED" and stopped["runtime"] is None
    assert stopped["lastStatusChange"].startswith("Exited by user: ")
    resumed = await call(sdk.resume_pod, pod_id, 1)
    assert resumed["desiredStatus"] == "RUNNING" and resumed["machineId"] == created["machineId"]
    assert (await call(sdk.get_pod, pod_id))["runtime"] is None
    new_ports = (await wait_for(runtime))["ports"]
    new_tcp = next(p for p in new_ports if p["type"] == "tcp")
    assert new_tcp["ip"] == tcp["ip"] and new_tcp["publicPort"] != tcp["publicPort"]

    assert await call(sdk.terminate_pod, pod_id) is None
    assert await call(sdk.get_pod, pod_id) is None
    assert all(p["id"] != pod_id for p in await call(sdk.get_pods))


async def test_cpu_pod_and_template(sdk: ModuleType) -> None:
    cpu = await call(sdk.create_pod, "cpu", "runpod/base:0.5.1-cpu", instance_id="cpu3c-2-4")
    pod = await call(sdk.get_pod, cpu["id"])
    assert pod["gpuCount"] == 0 and pod["vcpuCount"] == 2 and pod["memoryInGb"] == 4
    template = await call(sdk.create_template, "mine", "vibewave/comfyui:0.33", ports="8188/http", env={"A": "1"})
    assert template["name"] == "mine" and template["env"] == [{"key": "A", "value": "1"}]
    assert re.fullmatch(r"[a-z0-9]{10}", template["id"])


async def test_billing_and_zero_balance(sdk: ModuleType, emu: RunningEmulator) -> None:
    from runpod.api.graphql import run_graphql_query

    balance_query = "query { myself { clientBalance currentSpendPerHr } }"
    before = (await call(run_graphql_query, balance_query))["data"]["myself"]
    emu.emulator.config.billing_speed = 3600.0  # one billed hour per second
    pod = await call(sdk.create_pod, "bill", "img", GPU, network_volume_id="agv6w2qcg7", cloud_type="SECURE")
    doomed = await call(sdk.create_pod, "doomed", "img", GPU)
    spend = (await call(run_graphql_query, balance_query))["data"]["myself"]["currentSpendPerHr"]
    assert spend == pytest.approx(before["currentSpendPerHr"] + 2 * 0.69 + 10 * 0.10 / 730, rel=1e-3)

    async def balance() -> float:
        return float((await call(run_graphql_query, balance_query))["data"]["myself"]["clientBalance"])

    async def billed() -> bool:
        return await balance() < float(before["clientBalance"]) - 1.0

    await wait_for(billed)

    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{emu.url}/emulator/account", json={"clientBalance": 0.01}) as resp,
    ):
        assert resp.status == 200

    async def gone() -> bool:
        return await call(sdk.get_pod, doomed["id"]) is None

    await wait_for(gone, timeout=5)
    kept = await call(sdk.get_pod, pod["id"])
    assert kept["desiredStatus"] == "EXITED" and kept["lastStatusChange"].startswith("Exited by Runpod: ")
    assert await balance() == 0
    with pytest.raises(sdk.error.QueryError) as exc:
        await call(sdk.resume_pod, pod["id"], 1)
    assert exc.value.message == DEFAULT_INSUFFICIENT_BALANCE_MESSAGE


async def test_capacity_error_for_one_gpu_type_then_fall_over(sdk: ModuleType, emu: RunningEmulator) -> None:
    await set_faults(emu, {"capacity": {"gpu_types": [GPU], "times": 1}})
    with pytest.raises(sdk.error.QueryError) as exc:
        await call(sdk.create_pod, "w", "img", GPU)
    assert exc.value.message == CAPACITY_MESSAGE and "podFindAndDeployOnDemand" in exc.value.query
    fallback = await call(sdk.create_pod, "w", "img", "NVIDIA RTX A6000")
    assert (await call(sdk.get_pod, fallback["id"]))["machine"]["gpuDisplayName"] == "RTX A6000"
    assert await call(sdk.create_pod, "w", "img", GPU)  # the fault fired its one time


async def test_host_busy_on_resume(sdk: ModuleType, emu: RunningEmulator) -> None:
    pod = await call(sdk.create_pod, "w", "img", GPU)
    await call(sdk.stop_pod, pod["id"])
    await set_faults(emu, {"host_busy": {"pod_ids": [pod["id"]], "times": 1}})
    with pytest.raises(sdk.error.QueryError) as exc:
        await call(sdk.resume_pod, pod["id"], 1)
    assert exc.value.message == HOST_BUSY_MESSAGE
    assert (await call(sdk.get_pod, pod["id"]))["desiredStatus"] == "EXITED"
    assert (await call(sdk.resume_pod, pod["id"], 1))["desiredStatus"] == "RUNNING"


async def test_internal_error_before_and_after_the_action(sdk: ModuleType, emu: RunningEmulator) -> None:
    await set_faults(emu, {"internal_error": {"operations": ["podFindAndDeployOnDemand"], "times": 1}})
    with pytest.raises(sdk.error.QueryError) as exc:
        await call(sdk.create_pod, "w", "img", GPU)
    assert exc.value.message == INTERNAL_ERROR_MESSAGE
    assert await call(sdk.get_pods) == []

    await set_faults(emu, {"internal_error": {"operations": ["podResume"], "after_action": True, "times": 1}})
    pod = await call(sdk.create_pod, "w", "img", GPU)
    await call(sdk.stop_pod, pod["id"])
    with pytest.raises(sdk.error.QueryError) as exc:
        await call(sdk.resume_pod, pod["id"], 1)
    assert exc.value.message == INTERNAL_ERROR_MESSAGE
    assert (await call(sdk.get_pod, pod["id"]))["desiredStatus"] == "RUNNING"  # it did start


async def test_balance_and_disk_space_errors(sdk: ModuleType, emu: RunningEmulator) -> None:
    await set_faults(emu, {"insufficient_balance": {"times": 1, "message": "Insufficient funds (custom)."}})
    with pytest.raises(sdk.error.QueryError, match=re.escape("Insufficient funds (custom).")):
        await call(sdk.create_pod, "w", "img", GPU)
    emu.emulator.config.insufficient_balance_message = "Balance too low."
    emu.emulator.update_account({"clientBalance": 0.5})
    with pytest.raises(sdk.error.QueryError, match=re.escape("Balance too low.")):
        await call(sdk.create_pod, "w", "img", GPU)
    emu.emulator.update_account({"clientBalance": 50})
    await set_faults(emu, {"disk_space": True})
    with pytest.raises(sdk.error.QueryError) as exc:
        await call(sdk.create_pod, "w", "", GPU, template_id="vw7cmfy0ui")
    assert exc.value.message == DISK_SPACE_MESSAGE
    pod = await call(sdk.create_pod, "w", "", GPU, template_id="vw7cmfy0ui", container_disk_in_gb=40)
    assert pod["imageName"] == "vibewave/comfyui:0.33"


async def test_transport_failures(sdk: ModuleType, emu: RunningEmulator) -> None:
    import requests

    with pytest.raises(
        sdk.error.AuthenticationError, match=re.escape("Unauthorized request, please check your API key.")
    ):
        await call(sdk.get_pods, api_key="wrong-key")
    await set_faults(emu, {"http_502": 1})
    with pytest.raises(requests.exceptions.JSONDecodeError):
        await call(sdk.get_pods)
    await set_faults(emu, {"cloudflare_403": 1})
    with pytest.raises(requests.exceptions.JSONDecodeError):
        await call(sdk.get_gpus)
    assert await call(sdk.get_pods) == []

    from runpod.api.graphql import run_graphql_query

    with pytest.raises(sdk.error.QueryError) as exc:
        await call(run_graphql_query, 'mutation { podResume(input: { podId: "x", bogus: 1 }) { id } }')
    assert exc.value.message == 'Field "bogus" is not defined by type "PodResumeInput".'

    await set_faults(emu, {"latency": 0.3})
    started = time.monotonic()
    await call(sdk.get_pods)
    assert time.monotonic() - started >= 0.3


async def test_trailing_slash_base_url(sdk: ModuleType, emu: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNPOD_API_BASE_URL", emu.url + "/")  # the SDK then posts to //graphql
    assert await call(sdk.get_pods) == []
