"""Wan image-to-video in the simulator: the clip starts from the input image itself (resized to the
video's size) and pans from it, so a client can check that its picture was used."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.media import decoded_frames, mean_difference, mp4_facts, strong_blocks
from vibewave.comfyui_sim import nodes
from vibewave.comfyui_sim.values import Clip, Model, Vae

pytestmark = pytest.mark.unit


class Context:
    """Just what the nodes on this path ask of their context."""

    def __init__(self, root: Path) -> None:
        self.node_id, self.class_type, self.prompt_id = "1", "Node", "p"
        self.prompt: dict[str, Any] = {}
        self.extra_data: dict[str, Any] = {}
        self.output_dir, self.temp_dir, self.input_dir = root / "output", root / "temp", root / "input"
        for folder in (self.output_dir, self.temp_dir, self.input_dir):
            folder.mkdir()

    async def sampler_step(self, step: int, total: int) -> None:
        return None

    def add_cost(self, seconds: float) -> None:
        return None

    async def run_blocking(self, fn: Callable[[], Any]) -> Any:
        return fn()


async def clip_from(ctx: Context, image_name: str | None, width: int, height: int, length: int) -> bytes:
    start = (await nodes.load_image(ctx, image_name))[0][0] if image_name else None
    (latent,), _ = await nodes.wan22_latent(ctx, Vae("wan2.2_vae"), width, height, length, 1, start)
    positive, negative = (await nodes.clip_text_encode(ctx, "a slow pan", Clip("umt5", "wan")))[0][0], None
    (sampled,), _ = await nodes.ksampler(ctx, Model("wan"), 7, 2, 5.0, "uni_pc", "simple", positive, negative, latent)
    (images,), _ = await nodes.vae_decode(ctx, sampled, Vae("wan2.2_vae"))
    (video,), _ = await nodes.create_video(ctx, images, 24.0)
    _, ui = await nodes.save_video(ctx, video, "video/sim", "auto", "auto")
    assert ui is not None
    item = ui["images"][0]
    return (ctx.output_dir / item["subfolder"] / item["filename"]).read_bytes()


def test_the_first_frame_is_the_input_image_resized(tmp_path: Path) -> None:
    ctx = Context(tmp_path)
    picture = strong_blocks(200, 150)  # another size and aspect than the video's: it is resized
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    (ctx.input_dir / "start.png").write_bytes(buffer.getvalue())
    data = asyncio.run(clip_from(ctx, "start.png", 320, 256, 17))
    facts = mp4_facts(data)
    assert (facts.codec, facts.width, facts.height, facts.frames) == ("avc1", 320, 256, 17)
    frames = decoded_frames(data)
    assert len(frames) == 17 and frames[0].size == (320, 256)
    assert mean_difference(frames[0], picture) < 6, "frame 0 is the input image"
    assert mean_difference(frames[-1], picture) > mean_difference(frames[0], picture), "the clip moves on from it"


def test_without_a_start_image_the_clip_is_the_generated_mosaic(tmp_path: Path) -> None:
    ctx = Context(tmp_path)
    data = asyncio.run(clip_from(ctx, None, 320, 256, 9))
    assert mean_difference(decoded_frames(data)[0], strong_blocks(320, 256)) > 30
