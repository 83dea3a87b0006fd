import json
import logging

import pytest

from vibewave.contracts.workflows import load_catalog
from vibewave.pod.payload import START_COMMAND
from vibewave.pod_manager.boot import BootPlan, check_disk, fleet_models
from vibewave.runtime.pod_token import pod_token
from vibewave.runtime.process import ConfigurationError
from vibewave.runtime.settings import Secret

pytestmark = pytest.mark.unit

CATALOG = load_catalog()
QWEN = "comfyui_image_qwen"
WAN = "comfyui_video_wan22"


def test_the_fleet_fetches_the_workflows_files_once_and_optional_ones_only_when_asked():
    qwen = fleet_models(CATALOG, [QWEN], optional=False, overrides=None)
    assert "diffusion_models/qwen_image_distill_full_fp8_e4m3fn.safetensors" not in qwen.keys
    assert "loras/Qwen-Image-Lightning-4steps-V1.0.safetensors" in qwen.keys
    assert qwen.known_bytes == 31_768_063_166
    everything = fleet_models(CATALOG, None, optional=True, overrides=None)
    assert len(everything.keys) == len(set(everything.keys)) == 9
    with pytest.raises(ConfigurationError, match="unknown workflows"):
        fleet_models(CATALOG, ["comfyui_image_qwenn"], optional=False, overrides=None)


def test_a_models_file_replaces_sources_sizes_and_checksums(tmp_path):
    mirror = [{"folder": "vae", "file": "qwen_image_vae.safetensors", "url": "http://127.0.0.1:9/vae",
               "size": 1024, "sha256": "0" * 64}]  # fmt: skip
    (tmp_path / "models.json").write_text(json.dumps(mirror))
    models = fleet_models(CATALOG, [QWEN], optional=False, overrides=tmp_path / "models.json")
    vae = next(m for m in models.files if m.file == "qwen_image_vae.safetensors")
    assert (vae.url, vae.size, vae.sha256) == ("http://127.0.0.1:9/vae", 1024, "0" * 64)
    (tmp_path / "bad.json").write_text("[{]")
    with pytest.raises(ConfigurationError, match="POD_MODELS_FILE"):
        fleet_models(CATALOG, [QWEN], optional=False, overrides=tmp_path / "bad.json")


def test_models_that_cannot_fit_the_container_disk_are_a_start_up_error(caplog):
    qwen = fleet_models(CATALOG, [QWEN], optional=False, overrides=None)
    with caplog.at_level(logging.WARNING):
        check_disk(qwen, 50, None)
    assert "downloads 5 model files (31.8 GB and 1 of unpublished size)" in caplog.text
    both = fleet_models(CATALOG, [QWEN, WAN], optional=False, overrides=None)
    with pytest.raises(ConfigurationError, match="more than RUNPOD_CONTAINER_DISK_GB=50"):
        check_disk(both, 50, None)
    check_disk(both, 50, "vol123")  # a network volume holds them


def test_a_pod_boots_the_bootstrap_with_its_own_token_and_the_fleets_manifest():
    key = Secret("k" * 43)
    models = fleet_models(CATALOG, [QWEN], optional=False, overrides=None)
    plan = BootPlan(models, key, bootstrap=True)
    boot = plan.for_pod("vibewave-abc123")
    assert boot is not None and boot.start_command == START_COMMAND
    assert boot.env["COMFY_PROXY_TOKEN"] == pod_token(key.reveal(), "vibewave-abc123") == plan.token("vibewave-abc123")
    assert [f"{m['folder']}/{m['file']}" for m in json.loads(boot.env["VIBEWAVE_MODELS"])] == models.keys
    assert key.reveal() not in json.dumps(boot.env), "the key itself never reaches a pod"
    assert BootPlan(models, key, bootstrap=False).for_pod("vibewave-abc123") is None
