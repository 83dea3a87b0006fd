"""The cost model against what a real ComfyUI 0.3.64 took on this machine kind (simulator README tables)."""

from __future__ import annotations

import hashlib

import pytest

from vibewave.comfyui_sim.costs import blur_seconds, load_image_seconds, node_cost
from vibewave.comfyui_sim.render import Frame
from vibewave.comfyui_sim.values import Images, Video

pytestmark = pytest.mark.unit


def solid(width: int, height: int, batch: int = 1) -> Images:
    return Images(width, height, (Frame.solid(0x102030),) * batch)


def detailed(width: int, height: int, batch: int = 1) -> Images:
    frames = tuple(Frame.mosaic(hashlib.sha256(bytes([i])).digest()) for i in range(batch))
    return Images(width, height, frames)


@pytest.mark.parametrize(
    ("size", "radius", "measured"),
    [(1536, 31, 1.60), (1024, 31, 0.72), (512, 31, 0.196), (1024, 15, 0.178), (1536, 7, 0.104), (512, 7, 0.011)],
)
def test_blur_matches_the_measurements(size: int, radius: int, measured: float) -> None:
    modelled = node_cost("ImageBlur", {"image": solid(size, size), "blur_radius": radius, "sigma": 3.0})
    assert modelled == pytest.approx(measured, rel=0.3)


def test_eight_blur_chain_takes_about_thirteen_seconds() -> None:
    # Transcript 10's graph; the real 0.3.64 here took 12.9-13.6 s (~1.6 s per blur).
    assert 8 * blur_seconds(1536, 1536, 1, 31) == pytest.approx(13.0, rel=0.1)
    assert blur_seconds(512, 512, 4, 31) == pytest.approx(4 * blur_seconds(512, 512, 1, 31))


def test_savers_cost_more_for_detailed_pictures() -> None:
    flat = node_cost("SaveImage", {"images": solid(1536, 1536)})
    rich = node_cost("SaveImage", {"images": detailed(1536, 1536)})
    assert flat == pytest.approx(0.031, rel=0.3) and rich == pytest.approx(0.33, rel=0.3)
    webp = {"images": detailed(512, 512, 4), "lossless": True, "quality": 80}
    assert (
        node_cost("SaveAnimatedWEBP", {**webp, "method": "slowest"})
        > node_cost("SaveAnimatedWEBP", {**webp, "method": "default"})
        > node_cost("SaveAnimatedWEBP", {**webp, "method": "fastest"})
    )
    assert node_cost("SaveVideo", {"video": Video(detailed(512, 512, 16), 8.0)}) == pytest.approx(0.29, rel=0.3)


def test_scale_methods_and_other_nodes() -> None:
    image = solid(1536, 1536)
    costs = {
        m: node_cost("ImageScale", {"image": image, "upscale_method": m, "width": 768, "height": 768, "crop": "x"})
        for m in ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")
    }
    assert costs["nearest-exact"] < costs["bilinear"] < costs["bicubic"] < costs["lanczos"]
    assert node_cost("ImageScale", {"image": image, "upscale_method": "area", "width": 0, "height": 0}) == 0
    assert node_cost("EmptyImage", {"width": 2048, "height": 2048, "batch_size": 1}) == pytest.approx(0.017, rel=0.5)
    assert node_cost("KSampler", {"steps": 20}) == 0  # model nodes: --step-time / --node-time
    assert load_image_seconds(1024, 1024) == pytest.approx(0.029, rel=0.3)
