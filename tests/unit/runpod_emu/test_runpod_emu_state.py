"""The emulated account on a stepped clock: lifecycle, ports, billing, zero balance, capacity and stock."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from vibewave.runpod_emu.catalogue import Seed
from vibewave.runpod_emu.config import EmuConfig
from vibewave.runpod_emu.faults import (
    CAPACITY_MESSAGE,
    DEFAULT_INSUFFICIENT_BALANCE_MESSAGE,
    DISK_SPACE_MESSAGE,
    HOST_BUSY_MESSAGE,
    INTERNAL_ERROR_MESSAGE,
    Faults,
)
from vibewave.runpod_emu.state import ApiError, World, js_date, parse_ports

pytestmark = pytest.mark.unit

GPU = "NVIDIA GeForce RTX 4090"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_world(boot_delay: float = 5.0, balance: float = 100.0, **faults: Any) -> tuple[World, Clock]:
    seed = Seed.default()
    seed.account["clientBalance"] = balance
    config = EmuConfig(seed=seed, faults=Faults(boot_delay=boot_delay), rng_seed=7)
    config.faults.update(faults)
    clock = Clock()
    return World(config, clock=clock, wall=lambda: datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)), clock


def gpu_input(**extra: Any) -> dict[str, Any]:
    base = {"name": "w", "imageName": "img", "gpuTypeId": GPU, "cloudType": "SECURE", "ports": "8188/http,22/tcp"}
    return base | extra


def test_lifecycle_runtime_null_then_ports_then_stop_resume_terminate() -> None:
    world, clock = make_world(boot_delay=5)
    pod = world.create_pod(gpu_input(), cpu=False)
    assert re.fullmatch(r"[a-z0-9]{14}", pod.id)
    assert re.fullmatch(r"[a-z0-9]{12}", pod.machine.id)
    assert re.fullmatch(rf"{pod.id}-\d{{8}}", pod.pod_host_id)
    assert pod.desired_status == "RUNNING" and pod.runtime_ports is None
    assert pod.last_status_change == "Rented by User: Wed Mar 04 2026 05:06:07 GMT+0000 (Coordinated Universal Time)"

    clock.now += 4.9
    world.advance()
    assert not pod.runtime_up
    clock.now += 0.2
    world.advance()
    assert pod.runtime_up and pod.uptime(clock.now) == 0
    assert [e.kind for e in world.drain_events()] == ["up"]
    http, tcp = pod.runtime_ports or []
    assert http["type"] == "http" and http["ip"].startswith("100.65.") and http["isIpPublic"] is False
    assert http["privatePort"] == 8188
    assert tcp["ip"] == pod.machine.public_ip and tcp["isIpPublic"] is True and tcp["privatePort"] == 22
    assert 10000 <= tcp["publicPort"] <= 60000
    clock.now += 30
    assert pod.uptime(clock.now) == 30

    machine = pod.machine
    world.stop_pod(pod.id)
    assert pod.desired_status == "EXITED" and pod.runtime_ports is None
    assert pod.last_status_change.startswith("Exited by user: ")
    world.resume_pod(pod.id, 1)
    assert pod.running and pod.runtime_ports is None and pod.machine is machine
    clock.now += 5
    world.advance()
    assert pod.runtime_ports is not None
    assert pod.runtime_ports[1]["publicPort"] != tcp["publicPort"]
    assert pod.runtime_ports[1]["ip"] == machine.public_ip
    assert [e.kind for e in world.drain_events()] == ["down", "up"]

    world.terminate_pod(pod.id)
    assert world.get_pod(pod.id) is None and world.list_pods() == []
    with pytest.raises(ApiError, match="pod not found"):
        world.stop_pod(pod.id)


def test_billing_running_then_storage_only_while_exited() -> None:
    world, clock = make_world(balance=50.0)
    volumes_per_hr = world.current_spend_per_hr()
    assert volumes_per_hr > 0  # the seeded network volumes cost storage
    pod = world.create_pod(gpu_input(containerDiskInGb=20, volumeInGb=100), cpu=False)
    assert pod.cost_per_hr == 0.69
    running = world.current_spend_per_hr()
    assert running == pytest.approx(volumes_per_hr + 0.69 + 120 * 0.10 / 730)
    clock.now += 3600
    world.advance()
    assert world.account.client_balance == pytest.approx(50.0 - running)
    world.stop_pod(pod.id)
    assert world.current_spend_per_hr() == pytest.approx(volumes_per_hr + 100 * 0.20 / 730)


def test_zero_balance_stops_volume_pods_and_terminates_the_rest() -> None:
    world, clock = make_world(balance=3.0)
    keep = world.create_pod(gpu_input(networkVolumeId="agv6w2qcg7"), cpu=False)
    lose = world.create_pod(gpu_input(), cpu=False)
    assert keep.machine.data_center_id == "EU-RO-1" and keep.volume_in_gb == 0
    clock.now += 3 * 3600
    world.advance()
    assert world.account.client_balance == 0
    assert world.pods.keys() == {keep.id}
    assert keep.desired_status == "EXITED" and keep.last_status_change.startswith("Exited by Runpod: ")
    assert lose.id not in world.pods


def test_create_needs_an_hour_of_credit() -> None:
    world, _ = make_world(balance=0.5)
    with pytest.raises(ApiError) as exc:
        world.create_pod(gpu_input(), cpu=False)
    assert exc.value.message == DEFAULT_INSUFFICIENT_BALANCE_MESSAGE
    world.account.client_balance = 0.8
    world.create_pod(gpu_input(), cpu=False)


def test_capacity_fault_for_one_gpu_type_and_preference_list_fallback() -> None:
    world, _ = make_world(capacity={"gpu_types": [GPU], "times": 2})
    with pytest.raises(ApiError, match=re.escape(CAPACITY_MESSAGE)):
        world.create_pod(gpu_input(), cpu=False)
    pod = world.create_pod(gpu_input(gpuTypeId="NVIDIA RTX A6000"), cpu=False)
    assert pod.gpu_type is not None and pod.gpu_type.id == "NVIDIA RTX A6000"
    listed = world.create_pod(gpu_input(gpuTypeId=None, gpuTypeIdList=[GPU, "NVIDIA L40S"]), cpu=False)
    assert listed.gpu_type is not None and listed.gpu_type.id == "NVIDIA L40S"
    with pytest.raises(ApiError, match="no longer any instances"):
        world.create_pod(gpu_input(), cpu=False)
    assert world.create_pod(gpu_input(), cpu=False).gpu_type is not None  # times used up


def test_unknown_gpu_cloud_mismatch_and_stock_give_capacity_error() -> None:
    world, _ = make_world()
    for bad in (
        gpu_input(gpuTypeId="NVIDIA Imaginary"),
        gpu_input(gpuTypeId="unknown"),
        gpu_input(gpuTypeId="NVIDIA L4", cloudType="COMMUNITY"),
        gpu_input(gpuCount=64),
        gpu_input(dataCenterId="XX-NOPE-1"),
    ):
        with pytest.raises(ApiError, match="no longer any instances"):
            world.create_pod(bad, cpu=False)
    gpu = world.gpu(GPU)
    assert gpu is not None
    gpu.available = 1
    pod = world.create_pod(gpu_input(), cpu=False)
    assert gpu.available == 0
    with pytest.raises(ApiError, match="no longer any instances"):
        world.create_pod(gpu_input(), cpu=False)
    world.stop_pod(pod.id)
    other = world.create_pod(gpu_input(), cpu=False)
    with pytest.raises(ApiError) as exc:
        world.resume_pod(pod.id, 1)
    assert exc.value.message == HOST_BUSY_MESSAGE
    world.terminate_pod(other.id)
    world.resume_pod(pod.id, 1)
    assert gpu.available == 0


def test_host_busy_and_disk_space_faults() -> None:
    world, _ = make_world(host_busy=1, disk_space=True)
    pod = world.create_pod(gpu_input(), cpu=False)
    world.stop_pod(pod.id)
    with pytest.raises(ApiError) as exc:
        world.resume_pod(pod.id, 1)
    assert exc.value.message == HOST_BUSY_MESSAGE and exc.value.extensions == {"code": "RUNPOD"}
    world.resume_pod(pod.id, 0)
    assert pod.gpu_count == 1  # resume with 0 GPUs still gets one (runpod-python #371)
    with pytest.raises(ApiError) as exc:
        world.create_pod({"name": "t", "templateId": "vw7cmfy0ui", "gpuTypeId": GPU}, cpu=False)
    assert exc.value.message == DISK_SPACE_MESSAGE
    from_template = world.create_pod(
        {"name": "t", "templateId": "vw7cmfy0ui", "gpuTypeId": GPU, "containerDiskInGb": 30}, cpu=False
    )
    assert from_template.image_name == "vibewave/comfyui:0.33"
    assert from_template.ports == "8188/http,22/tcp"
    assert from_template.env_map() == {"COMFYUI_PORT": "8188"}


def test_network_volume_needs_secure_cloud() -> None:
    world, _ = make_world()
    with pytest.raises(ApiError) as exc:
        world.create_pod(gpu_input(cloudType="ALL", networkVolumeId="agv6w2qcg7"), cpu=False)
    assert exc.value.message == INTERNAL_ERROR_MESSAGE
    assert exc.value.extensions == {"code": "INTERNAL_SERVER_ERROR"}
    with pytest.raises(ApiError, match="no longer any instances"):
        world.create_pod(gpu_input(networkVolumeId="agv6w2qcg7", dataCenterId="US-TX-3"), cpu=False)
    world.create_pod(gpu_input(networkVolumeId="agv6w2qcg7"), cpu=False)
    with pytest.raises(ApiError, match="in use"):
        world.delete_volume("agv6w2qcg7")


def test_cpu_pod_and_env_injection() -> None:
    world, _ = make_world()
    world.account.pub_key = "ssh-ed25519 AAAA me"
    inp = {"name": "c", "imageName": "runpod/base", "instanceId": "cpu3c-2-4", "templateId": "runpod-ubuntu"}
    pod = world.create_pod(inp | {"startSsh": True, "env": [{"key": "A", "value": "1"}]}, cpu=True)
    assert (pod.vcpu_count, pod.memory_in_gb, pod.gpu_count, pod.cpu_flavor_id) == (2, 4, 0, "cpu3c")
    assert pod.cost_per_hr == pytest.approx(0.06)
    assert pod.env_strings() == ["A=1", "PUBLIC_KEY=ssh-ed25519 AAAA me"]


def test_ports_parsing_and_symmetric_ports() -> None:
    assert parse_ports(" 8188/http, 22/tcp ,") == [(8188, "http"), (22, "tcp")]
    with pytest.raises(ApiError):
        parse_ports("8188/udp")
    world, _ = make_world(boot_delay=0)
    pod = world.create_pod(gpu_input(ports="70000/tcp"), cpu=False)
    world.advance()
    (port,) = pod.runtime_ports or []
    assert port["privatePort"] == port["publicPort"]


def test_templates_and_volumes() -> None:
    world, _ = make_world()
    tpl = world.save_template({"name": "mine", "imageName": "img", "dockerArgs": "", "ports": "8188/http"})
    assert re.fullmatch(r"[a-z0-9]{10}", tpl["id"])
    with pytest.raises(ApiError, match="already exists"):
        world.save_template({"name": "mine", "imageName": "img", "dockerArgs": ""})
    with pytest.raises(ApiError) as exc:
        world.save_template({"name": "other", "imageName": "img"})
    assert exc.value.message == INTERNAL_ERROR_MESSAGE
    world.delete_template("mine")
    volume = world.create_volume({"name": "v", "size": 10, "dataCenterId": "EU-SE-1"})
    assert re.fullmatch(r"[a-z0-9]{10}", volume["id"])
    world.delete_volume(volume["id"])
    with pytest.raises(ApiError):
        world.create_volume({"name": "v", "size": 10, "dataCenterId": "US"})


def test_js_date_format() -> None:
    assert js_date(datetime(2023, 8, 15, 10, 0, 0, tzinfo=UTC)) == (
        "Tue Aug 15 2023 10:00:00 GMT+0000 (Coordinated Universal Time)"
    )


def test_restart_in_place_keeps_machine_and_gpus_with_fresh_ports() -> None:
    world, clock = make_world(boot_delay=5)
    pod = world.create_pod(gpu_input(), cpu=False)
    clock.now += 5
    world.advance()
    world.drain_events()
    gpu = world.gpu(GPU)
    assert gpu is not None
    gpu.available = 0  # every other GPU of the type is rented: a restart must not care
    machine, first_ports = pod.machine, pod.runtime_ports or []
    world.restart_pod(pod.id)
    assert pod.runtime_ports is None and pod.machine is machine and pod.holds_gpus and gpu.available == 0
    assert pod.start_count == 2 and world.restarts == 1 and world.resumes == 0
    assert [e.kind for e in world.drain_events()] == ["restarting"]
    clock.now += 5
    world.advance()
    assert [e.kind for e in world.drain_events()] == ["up"]
    assert pod.runtime_ports is not None and pod.runtime_ports[1]["publicPort"] != first_ports[1]["publicPort"]
    world.stop_pod(pod.id)
    with pytest.raises(ApiError) as exc:
        world.restart_pod(pod.id)
    assert exc.value.status == 409 and exc.value.message == "action 'restart' is not valid for status EXITED"


def test_rest_status_and_actions_live_and_spec() -> None:
    world, clock = make_world(boot_delay=4)
    pod = world.create_pod(gpu_input(), cpu=False)
    assert world.status(pod) == "RUNNING" and world.actions(pod) == ["stop", "restart", "terminate"]
    world.config.rest_status_mode = "spec"
    assert world.status(pod) == "PROVISIONING" and world.actions(pod) == ["stop", "terminate"]
    clock.now += 2
    assert world.status(pod) == "STARTING"
    clock.now += 2
    world.advance()
    assert world.status(pod) == "RUNNING"
    world.restart_pod(pod.id)
    assert world.status(pod) == "STARTING"  # not PROVISIONING again: the pod has its machine
    world.stop_pod(pod.id)
    assert world.status(pod) == "EXITED" and world.actions(pod) == ["start", "terminate"]
    with pytest.raises(ApiError) as exc:
        world.check_action(pod, "stop")
    assert exc.value.status == 409


def test_counters_count_what_clients_did_and_reset_clears_them() -> None:
    world, clock = make_world(balance=3.0)
    kept = world.create_pod(gpu_input(networkVolumeId="agv6w2qcg7"), cpu=False)
    first = world.create_pod(gpu_input(), cpu=False)
    second = world.create_pod(gpu_input(), cpu=False)
    world.terminate_pod(second.id)
    world.stop_pod(kept.id)
    world.resume_pod(kept.id, None, operation="rest:podAction:start")
    world.resume_pod(kept.id, None)  # already running: not a resume
    clock.now += 3 * 3600
    world.advance()  # out of money: `first` is terminated by the platform
    assert world.pods_created == 3 and world.resumes == 1
    assert world.terminated_pod_ids == [second.id, first.id]
    world.admit("k", ["podResume", "myself"])
    world.admit("k", ["rest:getPod"])
    assert world.calls == {"podResume": 1, "myself": 1, "rest:getPod": 1}
    world.reset(world.config.seed)
    assert (world.pods_created, world.resumes, world.restarts, world.rate_limited) == (0, 0, 0, 0)
    assert world.terminated_pod_ids == [] and not world.calls


def test_rate_limit_fault_and_quota() -> None:
    world, clock = make_world(rate_limit={"operations": ["rest:createPod", "podStop"], "times": 2})
    assert world.admit("k", ["myself"]).allowed
    refused = world.admit("k", ["rest:createPod"])
    assert not refused.allowed and refused.retry_after == 1 and refused.headers == {}
    assert not world.admit("k", ["myself", "podStop"]).allowed  # any root field of the document matches
    assert world.admit("k", ["rest:createPod"]).allowed  # the fault's two times are used up
    assert world.calls["rest:createPod"] == 2 and world.rate_limited == 2
    world.faults.update({"rate_limit": {"retry_after": 7}})
    assert world.admit("k", ["anything"]).retry_after == 7

    world.config.rate_limit_per_minute = 2
    world.config.faults.update({"rate_limit": None})
    world.reset(world.config.seed)
    assert world.admit("a", ["myself"]).headers["RateLimit"] == '"minute";r=1;t=60'
    clock.now += 10
    second = world.admit("a", ["myself"])
    assert second.allowed and second.headers["RateLimit"] == '"minute";r=0;t=50'
    third = world.admit("a", ["myself"])
    assert not third.allowed and third.retry_after == 50 and world.rate_limited == 1
    assert world.admit("b", ["myself"]).allowed  # per API key
    clock.now += 50
    assert world.admit("a", ["myself"]).allowed
    assert world.calls["myself"] == 5


def test_error_statuses_for_rest_and_pod_extras() -> None:
    world, _ = make_world(balance=0.1)
    with pytest.raises(ApiError) as exc:
        world.create_pod(gpu_input(), cpu=False)
    assert exc.value.status == 402
    with pytest.raises(ApiError) as exc:
        world.stop_pod("nope")
    assert exc.value.status == 404
    world.account.client_balance = 100
    pod = world.create_pod(
        gpu_input(allowedCudaVersions=["12.4", "13.0"], containerRegistryAuthId="reg1", globalNetworking=True),
        cpu=False,
    )
    assert (pod.cuda_version, pod.registry, pod.global_networking) == ("13.0", "reg1", True)
    assert world.create_pod(gpu_input(allowedCudaVersions=["11.8"]), cpu=False).cuda_version == "12.8"
