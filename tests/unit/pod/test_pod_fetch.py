"""The bootstrap's model fetcher against a real local file server: resume, verify, retry, give up, skip, pin."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import io
import json
import os
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.model_files import ModelFileServer, stand_in_bytes
from vibewave.pod.models import Fetcher, FetchError, HFRedirects, ModelLock, ModelSpec, authorize

pytestmark = pytest.mark.unit

VAE = {"folder": "vae", "file": "qwen_image_vae.safetensors", "size": 253_806_246, "sha256": "a7" * 32}
LORA_4 = {"folder": "loras", "file": "Qwen-Image-Lightning-4steps-V1.0.safetensors", "size": None, "sha256": None}
KEY = "vae/qwen_image_vae.safetensors"


class Events:
    """What the fetcher reported, as `(state, done, total)`: the progress callback a bootstrap passes."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, int | None]] = []

    def __call__(self, state: str, done: int, total: int | None) -> None:
        self.seen.append((state, done, total))

    @property
    def states(self) -> list[str]:
        return [state for state, _, _ in self.seen]


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ModelFileServer]:
    async with ModelFileServer(tmp_path / "served") as running:
        yield running


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return tmp_path / "workspace"


def fetcher(workspace: Path, **options: Any) -> Fetcher:
    state = workspace / ".vibewave"
    return Fetcher(
        models_dir=workspace / "models",
        locks_dir=state / "locks",
        lock=ModelLock(state / "models.lock.json", state / "locks" / "models-lock.lock"),
        backoff=0.01,
        **options,
    )


async def ensure(f: Fetcher, entry: dict[str, Any], events: Events | None = None) -> Path:
    return await asyncio.to_thread(f.ensure, ModelSpec.parse(entry), events if events is not None else Events())


def lock_of(workspace: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((workspace / ".vibewave" / "models.lock.json").read_text())
    return document


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_a_dropped_connection_is_resumed_with_a_range_request(server: ModelFileServer, workspace: Path) -> None:
    [entry] = server.stand_in_models([VAE], scale=1e-2)  # 2.5 MB: several chunks
    server.drop(KEY, at=0.4)
    events = Events()

    path = await ensure(fetcher(workspace), entry, events)

    assert sha256(path) == entry["sha256"]
    assert (server.requests(KEY).full, server.requests(KEY).ranged) == (1, 1)
    assert not path.with_name(path.name + ".part").exists()
    assert events.states[-2:] == ["verifying", "present"]
    assert lock_of(workspace)[KEY]["sha256"] == entry["sha256"]


async def test_a_part_left_by_an_earlier_boot_is_resumed_not_restarted(
    server: ModelFileServer, workspace: Path
) -> None:
    [entry] = server.stand_in_models([VAE], scale=1e-2)
    part = workspace / "models" / "vae" / "qwen_image_vae.safetensors.part"
    part.parent.mkdir(parents=True)
    part.write_bytes((server.root / KEY).read_bytes()[:1_000_000])

    path = await ensure(fetcher(workspace), entry)

    assert sha256(path) == entry["sha256"]
    assert (server.requests(KEY).full, server.requests(KEY).ranged) == (0, 1)


async def test_a_server_that_ignores_range_gets_a_fresh_start(server: ModelFileServer, workspace: Path) -> None:
    [entry] = server.stand_in_models([VAE], scale=1e-2)
    part = workspace / "models" / "vae" / "qwen_image_vae.safetensors.part"
    part.parent.mkdir(parents=True)
    part.write_bytes((server.root / KEY).read_bytes()[:1_000_000])
    server.ignore_range(KEY)

    path = await ensure(fetcher(workspace), entry)

    assert sha256(path) == entry["sha256"]  # the 200 body replaced the part instead of being appended to it
    assert path.stat().st_size == entry["size"]


async def test_a_checksum_mismatch_deletes_the_download_and_fetches_again(
    server: ModelFileServer, workspace: Path
) -> None:
    [entry] = server.stand_in_models([VAE])
    server.corrupt(KEY, times=1)

    path = await ensure(fetcher(workspace), entry)

    assert sha256(path) == entry["sha256"]
    assert server.requests(KEY).full == 2  # not resumed: the corrupted bytes were thrown away


async def test_a_file_that_never_verifies_fails_after_three_downloads(server: ModelFileServer, workspace: Path) -> None:
    [entry] = server.stand_in_models([VAE])
    server.corrupt(KEY, times=100)

    with pytest.raises(FetchError, match=r"does not match the manifest's .* gave up after 3 downloads"):
        await ensure(fetcher(workspace), entry)

    assert server.requests(KEY).total == 3
    assert list((workspace / "models" / "vae").iterdir()) == []  # neither the file nor a .part


async def test_a_server_that_keeps_failing_is_given_up_not_retried_for_ever(
    server: ModelFileServer, workspace: Path
) -> None:
    [entry] = server.stand_in_models([VAE])
    server.fail(KEY, status=503, times=100)

    with pytest.raises(FetchError, match=r"HTTP 503 .* gave up after 4 attempts in a row"):
        await ensure(fetcher(workspace, stalls=4), entry)

    assert server.requests(KEY).total == 4


async def test_a_missing_file_fails_at_once(server: ModelFileServer, workspace: Path) -> None:
    [entry] = server.stand_in_models([VAE])
    entry = {**entry, "url": server.url_for("vae/no-such-file.safetensors")}

    with pytest.raises(FetchError, match="answered HTTP 404"):
        await ensure(fetcher(workspace), entry)

    assert server.requests("vae/no-such-file.safetensors").total == 1


async def test_a_present_file_is_checked_cheaply_and_not_downloaded_again(
    server: ModelFileServer, workspace: Path
) -> None:
    [entry] = server.stand_in_models([VAE])
    await ensure(fetcher(workspace), entry)
    events = Events()

    await ensure(fetcher(workspace), entry, events)

    assert server.requests(KEY).total == 1
    assert events.states == ["present"]  # size and mtime against the lock: no sha256 read


async def test_a_present_file_the_lock_does_not_know_is_hashed_once(server: ModelFileServer, workspace: Path) -> None:
    [entry] = server.stand_in_models([VAE])
    placed = workspace / "models" / KEY
    placed.parent.mkdir(parents=True)
    placed.write_bytes((server.root / KEY).read_bytes())  # e.g. copied onto the volume by an operator
    first, second = Events(), Events()

    await ensure(fetcher(workspace), entry, first)
    await ensure(fetcher(workspace), entry, second)

    assert server.requests(KEY).total == 0
    assert "verifying" in first.states and first.states[-1] == "present"
    assert second.states == ["present"]
    assert lock_of(workspace)[KEY] == {
        "sha256": entry["sha256"],
        "size": entry["size"],
        "mtime_ns": placed.stat().st_mtime_ns,
        "pinned": False,
    }


async def test_a_present_file_of_the_wrong_size_is_fetched_again(server: ModelFileServer, workspace: Path) -> None:
    [entry] = server.stand_in_models([VAE])
    placed = workspace / "models" / KEY
    placed.parent.mkdir(parents=True)
    placed.write_bytes(b"truncated")

    path = await ensure(fetcher(workspace), entry)

    assert sha256(path) == entry["sha256"]
    assert server.requests(KEY).full == 1


async def test_a_file_without_a_published_checksum_is_pinned_on_first_download(
    server: ModelFileServer, workspace: Path
) -> None:
    [entry] = server.stand_in_models([LORA_4], keep_unknown=True)
    assert entry["sha256"] is None and entry["size"] is None
    key = "loras/Qwen-Image-Lightning-4steps-V1.0.safetensors"
    served = server.root / key
    original = served.read_bytes()

    path = await ensure(fetcher(workspace), entry)
    pin = lock_of(workspace)[key]
    assert pin["pinned"] is True and pin["sha256"] == hashlib.sha256(original).hexdigest()

    # Tampered on the volume (same size, other bytes): the pin catches it and the file is fetched again.
    path.write_bytes(bytes(b ^ 1 for b in original))
    await ensure(fetcher(workspace), entry)
    assert path.read_bytes() == original
    assert server.requests(key).full == 2

    # Upstream changed under an unpinned URL: the new bytes do not match the pin, so the pod refuses them.
    os.unlink(path)
    served.write_bytes(stand_in_bytes("another upload", len(original)))
    with pytest.raises(FetchError, match="pinned on this volume's first download"):
        await ensure(fetcher(workspace), entry)
    assert not path.exists()


async def test_the_hugging_face_token_goes_to_no_other_host(server: ModelFileServer, workspace: Path) -> None:
    [entry] = server.stand_in_models([VAE])

    await ensure(fetcher(workspace, hf_token="hf_secret"), entry)

    assert server.requests(KEY).authorization == [None]


@pytest.mark.parametrize("code", [302, 307, 308])
def test_a_redirect_keeps_the_token_on_hugging_face_and_drops_it_elsewhere(code: int) -> None:
    request = urllib.request.Request("https://huggingface.co/org/repo/resolve/abc/file.safetensors")
    request.add_header("Range", "bytes=10-")
    authorize(request, "hf_secret")
    handler = HFRedirects("hf_secret")

    def follow(url: str) -> urllib.request.Request | None:
        return handler.redirect_request(request, io.BytesIO(), code, "Found", http.client.HTTPMessage(), url)

    same_host = follow("https://huggingface.co/api/resolve-cache/models/org/repo/abc/file.safetensors")
    cdn = follow("https://cas-bridge.xethub.hf.co/xet-bridge-us/file?signature=x")

    assert same_host is not None and cdn is not None
    assert same_host.unredirected_hdrs.get("Authorization") == "Bearer hf_secret"
    assert "Authorization" not in cdn.unredirected_hdrs and not cdn.has_header("Authorization")
    assert cdn.get_header("Range") == "bytes=10-"  # the resume survives the redirect


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({**VAE, "folder": "unet"}, "folder 'unet' is not one of"),
        ({**VAE, "file": "../x.safetensors"}, "plain file name"),
        ({**VAE, "url": "file:///etc/passwd"}, "must be http"),
        ({**VAE, "url": "https://x", "sha256": "abc"}, "64 hex digits"),
        ({**VAE, "url": "https://x", "size": -1}, "byte count"),
    ],
)
def test_a_bad_manifest_entry_is_refused(entry: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        ModelSpec.parse({"url": "https://example.org/f", **entry})
