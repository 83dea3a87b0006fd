"""The executor's input images: a URL is fetched within its limits (size, time, content type) and never
from a private address unless allowed; an upload comes from the file store; either is put on the pod's
ComfyUI (the simulator) and the graph names what ComfyUI stored. Each failure is a workflow error."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from PIL import Image

from vibewave.comfyui_sim.app import RunningSimulator, serve
from vibewave.comfyui_sim.config import Faults, SimConfig
from vibewave.contracts.events import FailureKind
from vibewave.contracts.workflows import load_catalog
from vibewave.executor.comfyui import ComfyUIClient
from vibewave.executor.inputs import FetchLimits, InputImageError, InputImages, fetch_image
from vibewave.runtime.storage import FileTooLarge, StoredObject

pytestmark = pytest.mark.integration

I2V = load_catalog()["comfyui_video_wan22_i2v"]
OPEN = FetchLimits(max_bytes=64 * 1024, timeout_s=1.0, allow_private=True)


def png(width: int = 16, height: int = 16) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
async def images() -> AsyncIterator[str]:
    """A web server on 127.0.0.1 with good and bad images."""

    async def stream_big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/png"})  # chunked: no length announced
        await response.prepare(request)
        for _ in range(100):
            await response.write(b"\x00" * 4096)
        return response

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(body=png(), content_type="image/png")

    def redirect(to: str):  # type: ignore[no-untyped-def]
        async def handler(request: web.Request) -> web.Response:
            raise web.HTTPFound(to)

        return handler

    app = web.Application()
    app.router.add_get("/ok.png", serving(png(), "image/png"))
    app.router.add_get("/big.png", serving(b"\x00" * (65 * 1024), "image/png"))
    app.router.add_get("/stream.png", stream_big)
    app.router.add_get("/page", serving(b"<html></html>", "text/html"))
    app.router.add_get("/slow.png", slow)
    app.router.add_get("/hop", redirect("/ok.png"))
    app.router.add_get("/loop", redirect("/loop"))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def serving(body: bytes, content_type: str):  # type: ignore[no-untyped-def]
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=content_type)

    return handler


async def test_an_image_url_is_fetched_following_redirects(images):
    assert await fetch_image(f"{images}/ok.png", "inputs.image", OPEN) == (png(), "image/png")
    assert await fetch_image(f"{images}/hop", "inputs.image", OPEN) == (png(), "image/png")


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/big.png", "is 66560 bytes, more than 65536"),
        ("/stream.png", "is more than 65536 bytes"),
        ("/page", "is text/html, not an image"),
        ("/slow.png", "took longer than 1s"),
        ("/missing.png", "answered 404"),
        ("/loop", "more than 3 redirects"),
    ],
)
async def test_a_fetch_outside_its_limits_is_a_workflow_error(images, path, reason):
    with pytest.raises(InputImageError) as info:
        await fetch_image(f"{images}{path}", "inputs.image", OPEN)
    assert reason in str(info.value) and str(info.value).startswith("inputs.image")
    assert info.value.kind == FailureKind.WORKFLOW


async def test_private_addresses_are_refused_unless_allowed(images):
    closed = FetchLimits(allow_private=False)
    port = images.rsplit(":", 1)[1]
    for url, reason in [
        (f"{images}/ok.png", "must be an https:// URL"),
        (f"https://127.0.0.1:{port}/ok.png", "private, loopback or link-local address (127.0.0.1)"),
        ("https://[::1]/x.png", "private, loopback or link-local"),
        ("https://169.254.169.254/latest/meta-data", "private, loopback or link-local"),
        ("https://localhost/x.png", "private, loopback or link-local"),
    ]:
        with pytest.raises(InputImageError) as info:
            await fetch_image(url, "inputs.image", closed)
        assert reason in str(info.value), (url, str(info.value))


class MemoryFiles:
    """A FileStore of a dict, for the uploads' side."""

    def __init__(self, files: dict[str, tuple[bytes, str]]) -> None:
        self.files = files

    async def save(self, name: str, data: bytes, content_type: str) -> None:
        self.files[name] = (data, content_type)

    async def open(self, name: str) -> StoredObject | None:
        raise NotImplementedError

    async def read(self, name: str, max_bytes: int) -> tuple[bytes, str] | None:
        found = self.files.get(name)
        if found is not None and len(found[0]) > max_bytes:
            raise FileTooLarge(f"{name} is {len(found[0])} bytes, more than {max_bytes}")
        return found

    def presign(self, name: str, expires_s: float | None = None) -> str | None:
        return None

    async def close(self) -> None:
        return None


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[RunningSimulator]:
    running = await serve(SimConfig(port=0, base_dir=tmp_path, models_present=True, faults=Faults(step_time=0.01)))
    yield running
    await running.close()


async def test_an_upload_and_a_url_are_put_on_the_pod_and_named_in_the_graph(sim, images, tmp_path):
    upload = "upload_0123456789abcdef.png"
    placer = InputImages(MemoryFiles({upload: (png(32, 32), "image/png")}), OPEN)
    async with aiohttp.ClientSession() as session:
        client = ComfyUIClient(sim.url, session)
        for value, size in ((upload, (32, 32)), (f"{images}/ok.png", (16, 16))):
            inputs = I2V.resolve_inputs({"prompt": "a pan", "image": value}, "preview")
            graph = await placer.place(client, I2V, inputs, I2V.render(inputs), "req-00000000000000ab")
            stored = graph["56"]["inputs"]["image"]
            assert stored == "vw_req-00000000000000ab_image.png"
            with Image.open(tmp_path / "input" / stored) as placed:
                assert placed.size == size


async def test_a_missing_or_oversized_upload_is_a_workflow_error(sim):
    big = "upload_00000000000000ff.png"
    placer = InputImages(MemoryFiles({big: (b"\x00" * (65 * 1024), "image/png")}), OPEN)
    async with aiohttp.ClientSession() as session:
        client = ComfyUIClient(sim.url, session)
        for name, reason in (("upload_0123456789abcdef.png", "is gone"), (big, "more than 65536")):
            inputs = I2V.resolve_inputs({"prompt": "a pan", "image": name})
            with pytest.raises(InputImageError) as info:
                await placer.place(client, I2V, inputs, I2V.render(inputs), "req-00000000000000ab")
            assert reason in str(info.value) and info.value.kind == FailureKind.WORKFLOW
