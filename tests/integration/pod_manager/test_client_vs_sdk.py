"""Our RunPod client and the official `runpod` SDK (which sends its own query text) get the same answers
from the RunPod emulator — so the emulator speaks RunPod's dialect, not just ours."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from vibewave.pod_manager.providers.base import CapacityError, HostBusy, PodNotFound, ProviderState
from vibewave.pod_manager.providers.runpod import RunPodPodDefaults, RunPodProvider
from vibewave.pod_manager.runpod_api import RunPodClient, RunPodHttp
from vibewave.runpod_emu import EmuConfig, serve
from vibewave.runpod_emu.app import RunningEmulator

pytestmark = pytest.mark.integration

KEY = "rpa_client_vs_sdk"


@pytest.fixture
async def emulator(tmp_path) -> AsyncIterator[RunningEmulator]:  # type: ignore[no-untyped-def]
    running = await serve(EmuConfig(port=0, api_keys=[KEY], work_dir=tmp_path, comfyui=False))
    yield running
    await running.close()


@pytest.fixture
async def ours(emulator: RunningEmulator) -> AsyncIterator[RunPodClient]:
    client = RunPodClient(RunPodHttp(emulator.url, KEY))
    yield client
    await client.close()


@pytest.fixture
def sdk(emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> Any:
    import runpod

    monkeypatch.setenv("RUNPOD_API_BASE_URL", emulator.url.rstrip("/"))
    monkeypatch.setattr(runpod, "api_key", KEY)
    return runpod


def provider(client: RunPodClient, emulator: RunningEmulator) -> RunPodProvider:
    defaults = RunPodPodDefaults(
        gpu_types=("NVIDIA GeForce RTX 4090", "NVIDIA RTX A6000"),
        image="runpod/pytorch:2.1.0-py3.10-cuda11.8.0-devel-ubuntu22.04", container_disk_gb=50, min_memory_gb=24,
        ports="22/tcp,8080/http,8188/http,8888/http,11434/http", cloud_type="ALL", docker_args="", template_id=None,
        proxy_url_template=emulator.url.rstrip("/") + "/proxy/{pod_id}-{port}", comfyui_port=8188,
    )  # fmt: skip
    return RunPodProvider(client, defaults)


SAME_FIELDS = ("id", "name", "desiredStatus", "imageName", "gpuCount", "containerDiskInGb", "costPerHr", "ports")


def same(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    assert {k: ours.get(k) for k in SAME_FIELDS} == {k: theirs.get(k) for k in SAME_FIELDS}


async def test_pods_read_the_same_through_both_clients(emulator, ours, sdk):
    created = await provider(ours, emulator).create("vibewave-comfyui_image_qwen-abc123", "comfyui_image_qwen")
    by_sdk = await asyncio.to_thread(sdk.create_pod, "sdk-made", "runpod/base:0.5.1-cpu", "NVIDIA RTX A6000")
    ours_list = {p["id"]: p for p in await ours.pods()}
    sdk_list = {p["id"]: p for p in await asyncio.to_thread(sdk.get_pods)}
    assert set(ours_list) == set(sdk_list) == {created.id, by_sdk["id"]}
    for pod_id in ours_list:
        same(ours_list[pod_id], sdk_list[pod_id])
        same(await ours.pod(pod_id) or {}, await asyncio.to_thread(sdk.get_pod, pod_id))
    assert ours_list[created.id]["ports"] == "22/tcp,8080/http,8188/http,8888/http,11434/http"
    assert ours_list[created.id]["containerDiskInGb"] == 50


async def test_lifecycle_by_one_client_is_seen_by_the_other(emulator, ours, sdk):
    rp = provider(ours, emulator)
    pod = await rp.create("vibewave-wf-000001", "wf")
    await asyncio.to_thread(sdk.stop_pod, pod.id)
    assert (await rp.get(pod.id)).state == ProviderState.STOPPED  # type: ignore[union-attr]
    await rp.start(pod.id)
    assert (await asyncio.to_thread(sdk.get_pod, pod.id))["desiredStatus"] == "RUNNING"
    await rp.terminate(pod.id)
    assert await asyncio.to_thread(sdk.get_pod, pod.id) is None
    with pytest.raises(PodNotFound):
        await rp.stop(pod.id)


async def test_gpu_types_and_account_agree(ours, sdk):
    ours_gpus = {g["id"]: g for g in await ours.gpu_types()}
    sdk_gpus = {g["id"]: g for g in await asyncio.to_thread(sdk.get_gpus) if g["id"] != "unknown"}
    assert set(ours_gpus) == set(sdk_gpus) and "NVIDIA GeForce RTX 4090" in ours_gpus
    for gpu_id, gpu in sdk_gpus.items():
        assert (ours_gpus[gpu_id]["displayName"], ours_gpus[gpu_id]["memoryInGb"]) == (
            gpu["displayName"], gpu["memoryInGb"]
        )  # fmt: skip
    account = await ours.account()
    assert account["id"] == (await asyncio.to_thread(sdk.get_user))["id"]
    assert isinstance(account["clientBalance"], float | int)


async def test_documented_failures_reach_both_clients_alike(emulator, ours, sdk):
    from runpod.error import QueryError

    emulator.emulator.faults.update({"capacity": {"gpu_types": ["NVIDIA GeForce RTX 4090"], "times": 2}})
    with pytest.raises(QueryError, match="no longer any instances available"):
        await asyncio.to_thread(sdk.create_pod, "sdk", "img", "NVIDIA GeForce RTX 4090")
    created = await provider(ours, emulator).create("vibewave-wf-000002", "wf")
    assert (await ours.pod(created.id) or {})["machine"]["gpuDisplayName"] == "RTX A6000", "fell over"
    emulator.emulator.faults.update({"capacity": 1})
    with pytest.raises(CapacityError):
        await ours.create_pod({"name": "x", "gpuTypeId": "NVIDIA GeForce RTX 4090", "gpuCount": 1, "imageName": "i"})
    await asyncio.to_thread(sdk.stop_pod, created.id)
    emulator.emulator.faults.update({"host_busy": 1})
    with pytest.raises(HostBusy, match="not enough free GPUs"):
        await provider(ours, emulator).start(created.id)
