"""What a pod's container runs, where its /workspace is and what environment it gets, without starting it."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.unit.runpod_emu.test_runpod_emu_state import gpu_input, make_world
from vibewave.runpod_emu.container import ContainerFleet
from vibewave.runpod_emu.images import UNKNOWN_IMAGE, Runs, lookup
from vibewave.runpod_emu.state import Pod, World

pytestmark = pytest.mark.unit

PYTORCH = "runpod/pytorch:2.1.0-py3.10-cuda11.8.0-devel-ubuntu22.04"
START = """bash -c 'f=$(mktemp -d)/b.pyz; echo "$VIBEWAVE_BOOTSTRAP" | base64 -d > "$f"; exec python3 "$f"'"""


def fleet_and_pod(tmp_path: Path, **inp: Any) -> tuple[ContainerFleet, Pod, World]:
    world, _ = make_world(boot_delay=0)
    world.config.work_dir = tmp_path
    pod = world.create_pod(gpu_input(**inp), cpu=False)
    world.advance()
    return ContainerFleet(world.config, lambda pod_id, generation: True), pod, world


def test_image_catalogue() -> None:
    pytorch = lookup(PYTORCH)
    assert pytorch.runs is Runs.SLEEP and pytorch.cmd == ("/start.sh",) and "nothing serves 8188" in pytorch.description
    assert lookup("runpod/comfyui").runs is Runs.COMFYUI  # no tag means :latest
    assert lookup("docker.io/runpod/comfyui:cuda12.8").entrypoint == ("/start.sh",)
    assert lookup("vibewave/pod:0.1").runs is Runs.BOOTSTRAP
    for other in ("vibewave/comfyui:0.33", "runpod/pytorch-nightly:1", "img"):
        assert lookup(other) is UNKNOWN_IMAGE
    assert UNKNOWN_IMAGE.description.startswith("image not in the emulator's catalogue: nothing serves 8188")


def test_the_start_command_replaces_the_cmd_but_not_an_entrypoint(tmp_path: Path) -> None:
    fleet, pod, _ = fleet_and_pod(tmp_path, imageName=PYTORCH, dockerArgs=START)
    plan = fleet.plan(pod)
    assert plan.source == "start command" and plan.error is None
    assert plan.command == [
        "bash",
        "-c",
        """f=$(mktemp -d)/b.pyz; echo "$VIBEWAVE_BOOTSTRAP" | base64 -d > "$f"; exec python3 "$f\"""",
    ]
    pod.docker_args = ""
    assert (fleet.plan(pod).source, fleet.plan(pod).command) == ("image CMD", ["/start.sh"])
    pod.docker_args = "bash -c 'unbalanced"
    assert fleet.plan(pod).error == "the start command cannot be split: No closing quotation"
    pod.image_name, pod.docker_args = "runpod/comfyui:latest", "python3 serve.py"
    ignored = fleet.plan(pod)
    assert (ignored.source, ignored.command, ignored.image.runs) == (
        "image ENTRYPOINT",
        ["/start.sh", "python3", "serve.py"],
        Runs.COMFYUI,
    )


def test_storage_is_the_network_volume_the_volume_disk_or_the_container_disk(tmp_path: Path) -> None:
    fleet, pod, _ = fleet_and_pod(tmp_path, networkVolumeId="agv6w2qcg7")
    assert pod.machine.data_center_id == "EU-RO-1"  # the volume's data center
    assert fleet.storage(pod).workspace == tmp_path / "volumes" / "agv6w2qcg7"
    pod.volume_mount_path = "/runpod-volume"  # runpod-python's default: /workspace is then the container disk
    elsewhere = fleet.storage(pod)
    assert elsewhere.workspace == tmp_path / "pods" / pod.id / "disk" and "/runpod-volume" in elsewhere.kind
    fleet, pod, _ = fleet_and_pod(tmp_path, volumeInGb=20)
    assert fleet.storage(pod).workspace == tmp_path / "pods" / pod.id / "volume"
    fleet, pod, _ = fleet_and_pod(tmp_path)
    disk = fleet.storage(pod)
    assert disk.workspace == tmp_path / "pods" / pod.id / "disk" and disk.kind.startswith("container disk")


def test_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_HOST_SECRET", "x")
    monkeypatch.setenv("VIBEWAVE_SIM_NODE_TIME", "0.5")
    pod_env = [
        {"key": "COMFY_PROXY_TOKEN", "value": "t0k"},
        {"key": "VIBEWAVE_SIM_NODE_TIME", "value": "0.7"},
        {"key": "VIBEWAVE_LISTEN_PORT", "value": "1"},  # the emulator's mapping wins
    ]
    fleet, pod, _ = fleet_and_pod(tmp_path, imageName=PYTORCH, networkVolumeId="agv6w2qcg7", env=pod_env)
    env = fleet.environment(pod, fleet.plan(pod), {"VIBEWAVE_SIM_OOM_NODE": "VAEDecode"}, (40001, 40002))
    assert "SOME_HOST_SECRET" not in env
    assert env["COMFY_PROXY_TOKEN"] == "t0k" and env["VIBEWAVE_SIM_NODE_TIME"] == "0.7"
    assert env["VIBEWAVE_SIM_OOM_NODE"] == "VAEDecode" and env["VIBEWAVE_SIM_STEP_TIME"] == "0.05"
    assert "VIBEWAVE_SIM_MODELS_PRESENT" not in env  # only RunPod's ComfyUI image's emulation says so
    ssh = next(p for p in pod.runtime_ports or [] if p["privatePort"] == 22)
    assert {k: v for k, v in env.items() if k.startswith("RUNPOD_")} == {
        "RUNPOD_POD_ID": pod.id,
        "RUNPOD_DC_ID": "EU-RO-1",
        "RUNPOD_POD_HOSTNAME": pod.pod_host_id,
        "RUNPOD_GPU_COUNT": "1",
        "RUNPOD_CPU_COUNT": str(pod.vcpu_count),
        "RUNPOD_PUBLIC_IP": pod.machine.public_ip,
        "RUNPOD_VOLUME_ID": "agv6w2qcg7",
        "RUNPOD_TCP_PORT_22": str(ssh["publicPort"]),
    }
    pod_dir = tmp_path / "pods" / pod.id
    assert {k: v for k, v in env.items() if k.startswith("VIBEWAVE_") and not k.startswith("VIBEWAVE_SIM_")} == {
        "VIBEWAVE_WORKSPACE": str(tmp_path / "volumes" / "agv6w2qcg7"),
        "VIBEWAVE_COMFYUI_SIMULATOR": sys.executable,
        "VIBEWAVE_LISTEN_HOST": "127.0.0.1",
        "VIBEWAVE_LISTEN_PORT": "40001",
        "VIBEWAVE_COMFYUI_PORT": "40002",
    }
    assert env["PATH"] == f"{pod_dir / 'bin'}{os.pathsep}{os.environ['PATH']}"
    assert env["TMPDIR"] == str(pod_dir / "tmp")

    fleet, symmetric, _ = fleet_and_pod(tmp_path, ports="70000/tcp")
    (assigned,) = symmetric.runtime_ports or []
    env = fleet.environment(symmetric, fleet.plan(symmetric), {}, (1, 2))
    assert env["RUNPOD_TCP_PORT_70000"] == str(assigned["publicPort"])

    pod.image_name = "runpod/comfyui:latest"
    assert fleet.environment(pod, fleet.plan(pod), {}, (1, 2))["VIBEWAVE_SIM_MODELS_PRESENT"] == "1"
    pod.env.append(("VIBEWAVE_SIM_MODELS_PRESENT", "0"))
    assert fleet.environment(pod, fleet.plan(pod), {}, (1, 2))["VIBEWAVE_SIM_MODELS_PRESENT"] == "0"


def test_deleted_and_reset_volumes_are_reported_for_their_files() -> None:
    world, _ = make_world()
    volume = world.create_volume({"name": "v", "size": 10, "dataCenterId": "EU-SE-1"})
    world.delete_volume(volume["id"])
    assert world.drain_dropped_volumes() == [volume["id"]]
    world.reset(world.config.seed)
    assert sorted(world.drain_dropped_volumes()) == ["agv6w2qcg7", "grvtso8ftn"]
    assert world.drain_dropped_volumes() == []
