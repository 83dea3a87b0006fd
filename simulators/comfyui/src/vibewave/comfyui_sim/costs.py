"""How long ComfyUI spends in its model-free nodes on a CPU, so the simulator can take as long.

On the real server these nodes are torch / Pillow / PyAV work on the worker thread: an 8 x ImageBlur(31)
chain on 1536x1536 takes ~13 s and can only be interrupted between nodes. The simulator computes nothing of
the kind, so it waits instead: `node_cost(class_type, inputs)` is the time the real node would take and the
worker paces the node to it (README, "Node cost model").

Calibration (simulator README has the tables and how to repeat them): ComfyUI 0.3.64, torch 2.14.1, `--cpu`,
on this project's 2-core machine kind, per-node times read from the WebSocket frames (executing -> finished)
over sizes 512..2048, batches 1..16, every blur radius class, every ImageScale method and every saver
option. Pixel costs are in nanoseconds per pixel per image of the batch. Savers cost much more for detailed
pictures than for flat ones (PNG/WebP/H.264 compress a solid colour almost for free), so frames of kind
"solid" use the flat rate and every other frame the detailed rate (measured on noise + blur pictures).
ColorTransfer does not exist in 0.3.64: its rate comes from transcript 06 (0.33), divided by the factor
between that recording machine and this one on the blur chain (~3x).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vibewave.comfyui_sim.values import Images

NS = 1e-9

# ImageBlur: a k x k depthwise conv2d (k = 2r + 1) over the reflect-padded image (padding r, then k//2 again),
# plus the permute/pad/copy overhead per pixel.
BLUR_MAC_NS = 0.145
BLUR_PIXEL_NS = 8.0
EMPTY_IMAGE_NS = 4.0
INVERT_NS = 1.0
ADD_NOISE_NS = 12.0
COLOR_TRANSFER_NS = 150.0
LOAD_IMAGE_NS = 28.0
# ImageScale: (ns per input pixel, ns per output pixel) by upscale_method.
SCALE_NS: dict[str, tuple[float, float]] = {
    "nearest-exact": (0.0, 1.0),
    "bilinear": (0.0, 3.0),
    "area": (2.0, 7.0),
    "bicubic": (0.0, 13.0),
    "lanczos": (12.0, 12.0),
}
# Savers: (flat, detailed) ns per pixel of each saved frame.
SAVE_IMAGE_NS = (13.0, 140.0)  # PNG, compress_level 4
PREVIEW_IMAGE_NS = (10.0, 78.0)  # PNG, compress_level 1 (also SaveImageWebsocket)
APNG_NS = {0: (4.0, 45.0), 1: (4.0, 78.0)}
APNG_DEFAULT_NS = (4.0, 140.0)  # compress_level 2..9 measured alike
WEBP_LOSSLESS_NS = {"fastest": (4.0, 30.0), "default": (4.0, 300.0), "slowest": (4.0, 1200.0)}
WEBP_LOSSY_NS = {"fastest": (6.0, 29.0), "default": (6.0, 100.0), "slowest": (6.0, 180.0)}
H264_NS = (20.0, 70.0)


def _frames_cost(images: Any, rates: tuple[float, float]) -> float:
    """Seconds to encode every frame of `images` at (flat, detailed) ns per pixel."""
    if not isinstance(images, Images):
        return 0.0
    pixels = images.width * images.height
    flat, detailed = rates
    return sum(pixels * (flat if frame.kind == "solid" else detailed) for frame in images.frames) * NS


def _pixels(images: Any) -> int:
    """Pixels of the whole batch."""
    if not isinstance(images, Images):
        return 0
    return images.width * images.height * len(images.frames)


def blur_seconds(width: int, height: int, batch: int, radius: int) -> float:
    if radius <= 0:
        return 0.0
    kernel = 2 * radius + 1
    padded = (width + 4 * radius) * (height + 4 * radius)
    return batch * (padded * kernel * kernel * BLUR_MAC_NS + width * height * BLUR_PIXEL_NS) * NS


def _scale_seconds(image: Any, method: Any, width: Any, height: Any) -> float:
    if not isinstance(image, Images) or not isinstance(width, int) or not isinstance(height, int):
        return 0.0
    source: Images = image
    out_w: int = width
    out_h: int = height
    if out_w == 0 and out_h == 0:
        return 0.0
    if out_w == 0:
        out_w = max(1, round(source.width * out_h / source.height))
    if out_h == 0:
        out_h = max(1, round(source.height * out_w / source.width))
    per_in, per_out = SCALE_NS.get(str(method), (0.0, 3.0))
    return len(source.frames) * (source.width * source.height * per_in + out_w * out_h * per_out) * NS


def node_cost(class_type: str, inputs: Mapping[str, Any]) -> float:
    """Seconds the real node takes on the calibration CPU (0 for nodes outside the model)."""
    get = inputs.get
    if class_type == "EmptyImage":
        width, height, batch = get("width", 0), get("height", 0), get("batch_size", 1)
        if isinstance(width, int) and isinstance(height, int) and isinstance(batch, int):
            return width * height * batch * EMPTY_IMAGE_NS * NS
        return 0.0
    if class_type == "ImageBlur":
        image, radius = get("image"), get("blur_radius", 0)
        if isinstance(image, Images) and isinstance(radius, int):
            return blur_seconds(image.width, image.height, len(image.frames), radius)
        return 0.0
    if class_type == "ImageInvert":
        return _pixels(get("image")) * INVERT_NS * NS
    if class_type == "ImageAddNoise":
        return _pixels(get("image")) * ADD_NOISE_NS * NS
    if class_type == "ImageScale":
        return _scale_seconds(get("image"), get("upscale_method"), get("width"), get("height"))
    if class_type == "ColorTransfer":
        return _pixels(get("image_target")) * COLOR_TRANSFER_NS * NS
    if class_type == "SaveImage":
        return _frames_cost(get("images"), SAVE_IMAGE_NS)
    if class_type in ("PreviewImage", "SaveImageWebsocket"):
        return _frames_cost(get("images"), PREVIEW_IMAGE_NS)
    if class_type == "SaveAnimatedPNG":
        level = get("compress_level", 4)
        return _frames_cost(get("images"), APNG_NS.get(level, APNG_DEFAULT_NS) if isinstance(level, int) else (0, 0))
    if class_type == "SaveAnimatedWEBP":
        table = WEBP_LOSSLESS_NS if get("lossless", True) else WEBP_LOSSY_NS
        return _frames_cost(get("images"), table.get(str(get("method", "default")), table["default"]))
    if class_type == "SaveVideo":
        video = get("video")
        return _frames_cost(getattr(video, "images", None), H264_NS)
    return 0.0


def load_image_seconds(width: int, height: int) -> float:
    """LoadImage: decoding a PNG of this size (a detailed picture); added once the node has read the file."""
    return width * height * LOAD_IMAGE_NS * NS
