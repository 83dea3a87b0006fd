"""`--models-dir`: the model folders list the files really on disk, like ComfyUI 0.3.64's folder_paths, over
`GET /models`, `GET /models/{folder}`, `/object_info/<Loader>` and prompt validation, and follow the disk
without a restart."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from vibewave.comfyui_sim.app import RunningSimulator, serve
from vibewave.comfyui_sim.config import Faults, SimConfig
from vibewave.comfyui_sim.versions import MODEL_FOLDERS_033

pytestmark = pytest.mark.integration

GRAPHS = Path(__file__).parents[2] / "unit" / "comfyui_sim" / "graphs"
QWEN = {
    "diffusion_models": "qwen_image_fp8_e4m3fn.safetensors",
    "text_encoders": "qwen_2.5_vl_7b_fp8_scaled.safetensors",
    "vae": "qwen_image_vae.safetensors",
    "loras": "Qwen-Image-Lightning-4steps-V1.0.safetensors",
}


def put(models: Path, relative: str, content: bytes = b"weights") -> None:
    path = models / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)


@pytest.fixture
async def models(tmp_path: Path) -> Path:
    directory = tmp_path / "models"
    put(directory, f"diffusion_models/{QWEN['diffusion_models']}.part")  # still downloading
    put(directory, "unet/legacy_unet.safetensors")  # the legacy folder name is searched too
    put(directory, "text_encoders/sub/encoder.sft")
    put(directory, "vae/notes.txt")
    (directory / "loras").mkdir()
    return directory


@pytest.fixture
async def sim(tmp_path: Path, models: Path) -> AsyncIterator[RunningSimulator]:
    # models_present is ignored once a models directory says what is there.
    config = SimConfig(
        port=0,
        base_dir=tmp_path / "base",
        models_dir=models,
        models_present=True,
        faults=Faults(step_time=0.01, node_cost_scale=0),
    )
    running = await serve(config)
    yield running
    await running.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


async def get(http: aiohttp.ClientSession, sim: RunningSimulator, path: str) -> tuple[int, Any]:
    async with http.get(sim.url + path) as resp:
        return resp.status, (await resp.json()) if resp.content_type == "application/json" else await resp.read()


async def post_qwen(http: aiohttp.ClientSession, sim: RunningSimulator) -> tuple[int, Any]:
    prompt = json.loads((GRAPHS / "qwen_image_lightning4_api.json").read_text())
    prompt["58"]["inputs"].update(width=64, height=64)
    async with http.post(f"{sim.url}/prompt", json={"prompt": prompt}) as resp:
        return resp.status, await resp.json()


async def test_folders_list_what_is_on_disk(sim: RunningSimulator, http: aiohttp.ClientSession, models: Path) -> None:
    assert await get(http, sim, "/models") == (200, list(MODEL_FOLDERS_033))
    assert await get(http, sim, "/models/diffusion_models") == (200, ["legacy_unet.safetensors"])
    assert await get(http, sim, "/api/models/text_encoders") == (200, [os.path.join("sub", "encoder.sft")])
    assert await get(http, sim, "/models/vae") == (200, [])
    assert await get(http, sim, "/models/loras") == (200, [])
    for unknown in ("nope", "unet", "clip"):  # aliases are search paths, not folders
        assert await get(http, sim, f"/models/{unknown}") == (404, b"")
    status, info = await get(http, sim, "/object_info/VAELoader")
    assert status == 200 and info["VAELoader"]["input"]["required"]["vae_name"][0] == ["pixel_space"]

    status, rejected = await post_qwen(http, sim)
    assert status == 400 and rejected["error"]["type"] == "prompt_outputs_failed_validation"
    errors = [e for node in rejected["node_errors"].values() for e in node["errors"]]
    assert {e["type"] for e in errors} == {"value_not_in_list"} and len(errors) == 4


async def test_a_file_renamed_into_place_appears_without_a_restart(
    sim: RunningSimulator, http: aiohttp.ClientSession, models: Path
) -> None:
    assert await get(http, sim, "/models/diffusion_models") == (200, ["legacy_unet.safetensors"])
    part = models / "diffusion_models" / f"{QWEN['diffusion_models']}.part"
    await asyncio.to_thread(part.rename, part.with_suffix(""))
    for folder, name in QWEN.items():
        if folder != "diffusion_models":
            await asyncio.to_thread(put, models, f"{folder}/{name}")
    listed = ["legacy_unet.safetensors", QWEN["diffusion_models"]]  # sorted, as ComfyUI sorts
    assert await get(http, sim, "/models/diffusion_models") == (200, listed)
    _, info = await get(http, sim, "/object_info/UNETLoader")
    assert info["UNETLoader"]["input"]["required"]["unet_name"][0] == listed
    _, info = await get(http, sim, "/object_info/VAELoader")
    assert info["VAELoader"]["input"]["required"]["vae_name"][0] == [QWEN["vae"], "pixel_space"]

    status, accepted = await post_qwen(http, sim)
    assert status == 200, accepted
    prompt_id = accepted["prompt_id"]

    async def finished() -> Any:
        _, history = await get(http, sim, f"/history/{prompt_id}")
        return history.get(prompt_id)

    deadline = asyncio.get_running_loop().time() + 20
    while (entry := await finished()) is None:
        assert asyncio.get_running_loop().time() < deadline, "the prompt did not finish"
        await asyncio.sleep(0.05)
    assert entry["status"]["status_str"] == "success"

    await asyncio.to_thread((models / "loras" / QWEN["loras"]).unlink)
    assert await get(http, sim, "/models/loras") == (200, [])
    _, info = await get(http, sim, "/vibewave-sim/info")
    assert info["models_dir"] == str(models)
