"""The emulator's model host on a real aiohttp server: stand-ins written from a real manifest, served whole
or by range, with its fault switches; and the pod bootstrap verifying what it serves."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from vibewave.contracts.workflows import load_catalog
from vibewave.pod.models import Fetcher, ModelLock, ModelSpec
from vibewave.runpod_emu.model_host import KIB, ModelHost

pytestmark = pytest.mark.unit

QWEN = [m.manifest_entry() for m in load_catalog()["comfyui_image_qwen"].models]
VAE = "vae/qwen_image_vae.safetensors"
LORA_4 = "loras/Qwen-Image-Lightning-4steps-V1.0.safetensors"  # no published size or sha256
BASE = "http://127.0.0.1:8700"


def env_with(manifest: Any) -> dict[str, str]:
    return {"VIBEWAVE_MODELS": manifest if isinstance(manifest, str) else json.dumps(manifest), "PUBLIC_KEY": "ssh-x"}


def models_of(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {f"{e['folder']}/{e['file']}": e for e in json.loads(env["VIBEWAVE_MODELS"])}


@pytest.fixture
def host(tmp_path: Path) -> ModelHost:
    return ModelHost.in_work_dir(tmp_path / "work")


@pytest.fixture
async def client(host: ModelHost) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application()
    host.add_routes(app)
    async with TestClient(TestServer(app, host="127.0.0.1")) as running:
        yield running


def test_the_manifest_points_every_entry_at_a_stand_in_with_its_real_checksum(tmp_path: Path, host: ModelHost) -> None:
    env = env_with(QWEN)

    rewritten = host.rewrite_manifest(env, BASE + "/")

    assert host.root == tmp_path / "work" / "model-host"
    assert rewritten["PUBLIC_KEY"] == "ssh-x" and set(rewritten) == set(env)
    assert json.loads(env["VIBEWAVE_MODELS"]) == QWEN  # the input is not changed
    models = models_of(rewritten)
    assert list(models) == [f"{e['folder']}/{e['file']}" for e in QWEN]
    for original in QWEN:
        key = f"{original['folder']}/{original['file']}"
        entry, served = models[key], (host.root / key).read_bytes()
        assert entry["url"] == f"{BASE}/model-host/{key}"
        assert set(entry) == {"folder", "file", "url", "size", "sha256"}
        if original["size"] is None:
            assert entry["size"] is None and len(served) == KIB
        else:
            assert entry["size"] == len(served) == max(KIB, int(original["size"] * 1e-6))
        if original["sha256"] is None:
            assert entry["sha256"] is None  # the bootstrap pins it instead
        else:
            assert entry["sha256"] == hashlib.sha256(served).hexdigest() != original["sha256"]
        ModelSpec.parse(entry)  # what the bootstrap accepts
    assert models["diffusion_models/qwen_image_fp8_e4m3fn.safetensors"]["size"] == 20_430  # 20.4 GB scaled
    assert models[VAE]["size"] == KIB  # 254 MB scaled is below the floor
    assert models[LORA_4]["sha256"] is None and models[LORA_4]["size"] is None


def test_stand_ins_are_written_once_and_are_the_same_on_every_host(tmp_path: Path, host: ModelHost) -> None:
    first = host.rewrite_manifest(env_with(QWEN), BASE)
    (host.root / LORA_4).write_bytes(b"an upstream change")

    again = host.rewrite_manifest(env_with(QWEN), BASE)
    other = ModelHost(tmp_path / "other").rewrite_manifest(env_with(QWEN), BASE)

    assert (host.root / LORA_4).read_bytes() == b"an upstream change"  # already written: left alone
    assert first == again == other


def test_the_scale_is_configurable(tmp_path: Path) -> None:
    host = ModelHost(tmp_path / "model-host", scale=1e-4)

    models = models_of(host.rewrite_manifest(env_with(QWEN), BASE))

    assert models[VAE]["size"] == 25_380 == (host.root / VAE).stat().st_size


@pytest.mark.parametrize(
    "manifest",
    [
        "not json",
        {"folder": "vae"},
        [{**QWEN[2], "url": "ftp://example.com/vae.safetensors"}],
        [{**QWEN[2], "file": "../escape.safetensors"}],
        [QWEN[0], {**QWEN[2], "size": "big"}],
    ],
)
def test_a_manifest_the_bootstrap_would_refuse_is_left_for_it_to_report(host: ModelHost, manifest: Any) -> None:
    env = env_with(manifest)

    assert host.rewrite_manifest(env, BASE) == env
    assert not host.root.exists()


def test_an_environment_without_a_manifest_is_left_alone(host: ModelHost) -> None:
    assert host.rewrite_manifest({"PUBLIC_KEY": "ssh-x"}, BASE) == {"PUBLIC_KEY": "ssh-x"}


async def test_a_file_is_served_whole_or_by_range(
    host: ModelHost, client: TestClient[web.Request, web.Application]
) -> None:
    host.rewrite_manifest(env_with(QWEN), BASE)
    data = (host.root / VAE).read_bytes()
    path = f"/model-host/{VAE}"

    whole = await client.get(path)
    assert (whole.status, await whole.read(), whole.headers["Accept-Ranges"]) == (200, data, "bytes")
    tail = await client.get(path, headers={"Range": "bytes=1000-"})
    assert (tail.status, tail.headers["Content-Range"], await tail.read()) == (206, "bytes 1000-1023/1024", data[1000:])
    head = await client.get(path, headers={"Range": "bytes=0-9"})
    assert (head.status, await head.read()) == (206, data[:10])
    past = await client.get(path, headers={"Range": "bytes=1024-"})
    assert (past.status, past.headers["Content-Range"]) == (416, "bytes */1024")
    meta = await client.head(path, headers={"Range": "bytes=24-"})
    assert (meta.status, meta.headers["Content-Length"], meta.headers["Content-Range"]) == (
        206,
        "1000",
        "bytes 24-1023/1024",
    )
    missing = await client.get("/model-host/vae/no-such-file.safetensors")
    assert missing.status == 404

    described = host.describe()["files"]
    assert described[VAE] == {"full": 1, "ranged": 3}  # HEAD is not counted
    assert described["vae/no-such-file.safetensors"] == {"full": 1, "ranged": 0}
    assert described[LORA_4] == {"full": 0, "ranged": 0}


async def test_a_corrupt_switch_spoils_the_next_download_only(
    host: ModelHost, client: TestClient[web.Request, web.Application]
) -> None:
    sha256 = models_of(host.rewrite_manifest(env_with(QWEN), BASE))[VAE]["sha256"]
    host.configure({"corrupt": {VAE: 1}})
    assert host.describe()["faults"]["corrupt"] == {VAE: 1}

    spoiled = await (await client.get(f"/model-host/{VAE}")).read()
    clean = await (await client.get(f"/model-host/{VAE}")).read()

    assert len(spoiled) == len(clean) == KIB
    assert hashlib.sha256(spoiled).hexdigest() != sha256 == hashlib.sha256(clean).hexdigest()
    assert host.describe()["faults"]["corrupt"] == {}
    assert host.describe()["files"][VAE] == {"full": 2, "ranged": 0}


async def test_fail_drop_and_ignore_range_switches(
    host: ModelHost, client: TestClient[web.Request, web.Application]
) -> None:
    host.rewrite_manifest(env_with(QWEN), BASE)
    data, path = (host.root / VAE).read_bytes(), f"/model-host/{VAE}"
    host.configure(
        {"fail": {VAE: {"status": 503, "times": 2}}, "drop": {LORA_4: {"at": 0.25}}, "ignore_range": {VAE: 1}}
    )
    assert host.describe()["faults"] == {
        "corrupt": {},
        "drop": {LORA_4: {"times": 1, "at": 0.25}},
        "ignore_range": {VAE: 1},
        "fail": {VAE: {"status": 503, "times": 2}},
        "hold": [],
        "held": [],
    }

    assert [(await client.get(path)).status for _ in range(2)] == [503, 503]
    ignored = await client.get(path, headers={"Range": "bytes=512-"})
    assert (ignored.status, await ignored.read()) == (200, data)
    with pytest.raises(aiohttp.ClientPayloadError):
        await (await client.get(f"/model-host/{LORA_4}")).read()
    assert (await client.get(f"/model-host/{LORA_4}")).status == 200


async def test_a_held_request_waits_until_released_and_reset_clears_everything(
    host: ModelHost, client: TestClient[web.Request, web.Application]
) -> None:
    host.rewrite_manifest(env_with(QWEN), BASE)
    host.hold(VAE)
    host.fail(LORA_4, times=5)
    assert host.describe()["faults"]["hold"] == [VAE]
    waiting = asyncio.ensure_future(client.get(f"/model-host/{VAE}"))
    for _ in range(100):
        await asyncio.sleep(0.01)
        if host.describe()["faults"]["held"]:
            break
    assert host.describe()["faults"]["held"] == [VAE] and host.describe()["faults"]["hold"] == []
    assert not waiting.done()

    host.reset()

    assert (await waiting).status == 200
    assert (await client.get(f"/model-host/{LORA_4}")).status == 200
    faults = host.describe()["faults"]
    assert faults == {"corrupt": {}, "drop": {}, "ignore_range": {}, "fail": {}, "hold": [], "held": []}
    assert host.describe()["files"][LORA_4] == {"full": 1, "ranged": 0}


@pytest.mark.parametrize(
    "update",
    [
        {"slow": {VAE: 1}},
        {"corrupt": [VAE]},
        {"corrupt": {VAE: -1}},
        {"fail": {VAE: {"status": 200}}},
        {"fail": {VAE: {"status": 503, "why": "x"}}},
        {"drop": {VAE: {"at": 1.5}}},
    ],
)
def test_a_bad_fault_update_changes_nothing(host: ModelHost, update: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        host.configure({"corrupt": {LORA_4: 3}, **update})
    assert host.describe()["faults"]["corrupt"] == {}


def test_zero_times_disarms_a_switch(host: ModelHost) -> None:
    host.corrupt(VAE, times=2)
    host.configure({"corrupt": {VAE: 0}, "fail": {LORA_4: 2}})
    assert host.describe()["faults"]["corrupt"] == {}
    assert host.describe()["faults"]["fail"] == {LORA_4: {"status": 500, "times": 2}}


async def test_the_bootstrap_fetches_and_verifies_the_rewritten_manifest(
    tmp_path: Path, host: ModelHost, client: TestClient[web.Request, web.Application]
) -> None:
    base = str(client.make_url("")).rstrip("/")
    models = json.loads(host.rewrite_manifest(env_with(QWEN), base)["VIBEWAVE_MODELS"])
    state = tmp_path / "workspace" / ".vibewave"
    fetcher = Fetcher(
        models_dir=tmp_path / "workspace" / "models",
        locks_dir=state / "locks",
        lock=ModelLock(state / "models.lock.json", state / "locks" / "models-lock.lock"),
        backoff=0.01,
    )
    host.corrupt(VAE)  # thrown away and fetched again

    paths = [await asyncio.to_thread(fetcher.ensure, ModelSpec.parse(e), lambda *_: None) for e in models]

    assert [p.read_bytes() for p in paths] == [(host.root / e["folder"] / e["file"]).read_bytes() for e in models]
    assert host.describe()["files"][VAE] == {"full": 2, "ranged": 0}
    lock = json.loads((state / "models.lock.json").read_text())
    assert lock[LORA_4]["pinned"] is True and lock[VAE]["pinned"] is False


def test_the_emulator_does_not_import_the_tests(tmp_path: Path) -> None:
    """The model host lives in the emulator package so the emulator process can serve it; the test server
    reuses it, never the other way round."""
    probe = "import sys, vibewave.runpod_emu.model_host; print([m for m in sys.modules if m.split('.')[0] == 'tests'])"
    out = subprocess.run([sys.executable, "-P", "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
