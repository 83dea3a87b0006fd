"""What each supported node class does in the simulator.

Loaders and encoders only pass labelled values along; samplers spend `step_time` per step and report
progress like comfy.utils.ProgressBar; savers really write files (PNG, APNG, MP4) named the way ComfyUI
names them, so clients can download what history reports. Wan image-to-video starts its clip from the
input image itself (resized to the video's size), so a client can check that its picture was used.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from vibewave.comfyui_sim import costs, render, webp
from vibewave.comfyui_sim.render import Frame
from vibewave.comfyui_sim.values import Clip, Conditioning, Images, Latent, Mask, Model, Vae, Video
from vibewave.comfyui_sim.video import encode_mp4

NodeOutput = tuple[tuple[Any, ...], dict[str, Any] | None]
SIM_LABEL = "vibewave-comfyui-simulator"
# What the recording server (24 GB RAM, CPU) could allocate; larger EmptyImage requests fail like scenario 08.
ALLOC_LIMIT_BYTES = 24 * 1024**3


class NodeContext(Protocol):
    node_id: str
    class_type: str
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    output_dir: Path
    temp_dir: Path
    input_dir: Path

    async def progress(self, value: int, total: int, preview: bytes | None = None) -> None: ...

    def add_cost(self, seconds: float) -> None: ...

    async def pace(self, fraction: float = 1.0) -> None: ...

    async def sampler_step(self, step: int, total: int) -> None: ...

    async def send_text(self, text: str) -> None: ...

    async def run_blocking(self, fn: Callable[[], Any]) -> Any: ...


def save_image_path(prefix: str, output_dir: Path, width: int = 0, height: int = 0) -> tuple[Path, str, int, str]:
    """Port of folder_paths.get_save_image_path: (folder, file stem, next counter, subfolder)."""
    if "%" in prefix:
        now = time.localtime()
        for token, value in (
            ("%width%", str(width)),
            ("%height%", str(height)),
            ("%year%", str(now.tm_year)),
            ("%month%", str(now.tm_mon).zfill(2)),
            ("%day%", str(now.tm_mday).zfill(2)),
            ("%hour%", str(now.tm_hour).zfill(2)),
            ("%minute%", str(now.tm_min).zfill(2)),
            ("%second%", str(now.tm_sec).zfill(2)),
        ):
            prefix = prefix.replace(token, value)
    normalized = os.path.normpath(prefix)
    subfolder = os.path.dirname(normalized)
    filename = os.path.basename(normalized)
    folder = (output_dir / subfolder).resolve()
    if os.path.commonpath((str(output_dir), str(folder))) != str(output_dir):
        raise Exception(
            "**** ERROR: Saving image outside the output folder is not allowed."
            f"\n full_output_folder: {folder}\n         output_dir: {output_dir}"
        )
    counter = 1
    if folder.is_dir():
        stem_len = len(filename)
        best = 0
        for name in os.listdir(folder):
            head = name[: stem_len + 1]
            if os.path.normcase(head[:-1]) != os.path.normcase(filename) or head[-1:] != "_":
                continue
            try:
                digits = int(name[stem_len + 1 :].split("_")[0])
            except ValueError:
                digits = 0
            best = max(best, digits)
        counter = best + 1
    else:
        folder.mkdir(parents=True, exist_ok=True)
    return folder, filename, counter, subfolder


def _png_text(ctx: NodeContext) -> dict[str, str]:
    text = {"prompt": json.dumps(ctx.prompt)}
    extra = ctx.extra_data.get("extra_pnginfo")
    if isinstance(extra, dict):
        for key, value in extra.items():
            text[str(key)] = json.dumps(value)
    text["Software"] = SIM_LABEL
    return text


def _encoder(images: Images, frame: Frame, text: dict[str, str] | None, level: int) -> Callable[[], bytes]:
    def encode() -> bytes:
        return render.encode_png(images.width, images.height, frame, text, level)

    return encode


async def _save_pngs(
    ctx: NodeContext, images: Images, prefix: str, directory: Path, kind: str, level: int
) -> dict[str, Any]:
    folder, stem, counter, subfolder = save_image_path(prefix, directory, images.width, images.height)
    text = _png_text(ctx)
    results = []
    for batch_number, frame in enumerate(images.frames):
        name = f"{stem.replace('%batch_num%', str(batch_number))}_{counter:05}_.png"
        data = await ctx.run_blocking(_encoder(images, frame, text, level))
        (folder / name).write_bytes(data)
        results.append({"filename": name, "subfolder": subfolder, "type": kind})
        counter += 1
    return {"images": results}


# --- loaders and model patches -------------------------------------------------------------------


async def unet_loader(ctx: NodeContext, unet_name: str, weight_dtype: str = "default") -> NodeOutput:
    return (Model(unet_name),), None


async def clip_loader(ctx: NodeContext, clip_name: str, type: str, device: str = "default") -> NodeOutput:
    return (Clip(clip_name, type),), None


async def vae_loader(ctx: NodeContext, vae_name: str) -> NodeOutput:
    return (Vae(vae_name),), None


async def lora_model_only(ctx: NodeContext, model: Model, lora_name: str, strength_model: float) -> NodeOutput:
    return (Model(model.name, (*model.patches, f"lora:{lora_name}@{strength_model}")),), None


async def model_sampling(ctx: NodeContext, model: Model, shift: float, multiplier: float = 1000) -> NodeOutput:
    return (Model(model.name, (*model.patches, f"{ctx.class_type}:{shift}")),), None


async def clip_text_encode(ctx: NodeContext, text: str, clip: Clip) -> NodeOutput:
    return (Conditioning(text),), None


# --- latents and sampling ------------------------------------------------------------------------


async def empty_latent(ctx: NodeContext, width: int, height: int, batch_size: int = 1) -> NodeOutput:
    return (Latent(width // 8 * 8, height // 8 * 8, batch_size),), None


async def empty_hunyuan_video(
    ctx: NodeContext, width: int, height: int, length: int, batch_size: int = 1
) -> NodeOutput:
    frames = ((length - 1) // 4) * 4 + 1
    return (Latent(width // 16 * 16, height // 16 * 16, batch_size, frames),), None


async def wan22_latent(
    ctx: NodeContext,
    vae: Vae,
    width: int,
    height: int,
    length: int,
    batch_size: int = 1,
    start_image: Images | None = None,
) -> NodeOutput:
    frames = ((length - 1) // 4) * 4 + 1
    start = start_image.source if start_image is not None else None
    return (Latent(width // 32 * 32, height // 32 * 32, batch_size, frames, start=start),), None


async def _sample(ctx: NodeContext, latent: Latent, key: bytes, steps: int) -> Latent:
    for step in range(1, steps + 1):
        await ctx.sampler_step(step, steps)
    return Latent(latent.width, latent.height, latent.batch, latent.length, key, latent.start)


async def ksampler(
    ctx: NodeContext,
    model: Model,
    seed: int,
    steps: int,
    cfg: float,
    sampler_name: str,
    scheduler: str,
    positive: Conditioning,
    negative: Conditioning,
    latent_image: Latent,
    denoise: float = 1.0,
) -> NodeOutput:
    key = render.content_key(positive.text, seed)
    return (await _sample(ctx, latent_image, key, steps),), None


async def ksampler_advanced(
    ctx: NodeContext,
    model: Model,
    add_noise: str,
    noise_seed: int,
    steps: int,
    cfg: float,
    sampler_name: str,
    scheduler: str,
    positive: Conditioning,
    negative: Conditioning,
    latent_image: Latent,
    start_at_step: int,
    end_at_step: int,
    return_with_leftover_noise: str,
) -> NodeOutput:
    key = render.content_key(positive.text, noise_seed)
    if add_noise == "disable" and latent_image.key is not None:
        key = latent_image.key
    count = max(0, min(end_at_step, steps) - start_at_step)
    return (await _sample(ctx, latent_image, key, count),), None


def _resized_rgb(encoded: bytes, width: int, height: int) -> bytes:
    with Image.open(io.BytesIO(encoded)) as picture:
        return picture.convert("RGB").resize((width, height), Image.Resampling.BILINEAR).tobytes()


async def vae_decode(ctx: NodeContext, samples: Latent, vae: Vae) -> NodeOutput:
    key = samples.key or hashlib.sha256(b"unsampled-latent").digest()
    step = max(2, samples.width // 320 * 2)
    if samples.start is not None:  # image-to-video: the clip pans from the start image
        start, width, height = samples.start, samples.width, samples.height
        pixels = await ctx.run_blocking(lambda: _resized_rgb(start, width, height))
        clip = tuple(Frame.picture(pixels, shift=i * step) for i in range(samples.length))
        return (Images(samples.width, samples.height, clip * samples.batch),), None
    frames: list[Frame] = []
    for b in range(samples.batch):
        item_key = key if samples.batch == 1 else hashlib.sha256(key + b.to_bytes(4, "big")).digest()
        if samples.length == 1:
            frames.append(Frame.mosaic(item_key))
        else:
            frames.extend(Frame.mosaic(item_key, shift=i * step) for i in range(samples.length))
    return (Images(samples.width, samples.height, tuple(frames)),), None


async def vae_encode(ctx: NodeContext, pixels: Images, vae: Vae) -> NodeOutput:
    digest = hashlib.sha256(repr(pixels.frames).encode()).digest()
    return (Latent(pixels.width // 8 * 8, pixels.height // 8 * 8, len(pixels.frames), 1, digest),), None


# --- images --------------------------------------------------------------------------------------


async def empty_image(ctx: NodeContext, width: int, height: int, batch_size: int = 1, color: int = 0) -> NodeOutput:
    needed = batch_size * height * width * 4
    if needed > ALLOC_LIMIT_BYTES:
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
            f"you tried to allocate {needed} bytes. Error code 12 (Cannot allocate memory)"
        )
    return (Images(width, height, (Frame.solid(color),) * batch_size),), None


async def image_blur(ctx: NodeContext, image: Images, blur_radius: int, sigma: float) -> NodeOutput:
    return (image.map(f"blur:{blur_radius}:{sigma}"),), None


async def image_invert(ctx: NodeContext, image: Images) -> NodeOutput:
    return (image.map("invert"),), None


async def image_scale(
    ctx: NodeContext, image: Images, upscale_method: str, width: int, height: int, crop: str
) -> NodeOutput:
    if width == 0 and height == 0:
        return (image,), None
    if width == 0:
        width = max(1, round(image.width * height / image.height))
    if height == 0:
        height = max(1, round(image.height * width / image.width))
    return (Images(width, height, image.frames),), None


async def image_add_noise(ctx: NodeContext, image: Images, seed: int, strength: float) -> NodeOutput:
    if strength <= 0:
        return (image,), None
    # Noise makes even a flat picture detailed (which is what the savers' costs depend on).
    label = f"noise:{seed}:{strength}"
    frames = tuple(
        Frame.mosaic(hashlib.sha256(f"{frame}:{i}:{label}".encode()).digest(), frame.shift)
        for i, frame in enumerate(image.frames)
    )
    return (Images(image.width, image.height, frames),), None


async def color_transfer(ctx: NodeContext, image_target: Images, image_ref: Images, **options: Any) -> NodeOutput:
    total = len(image_target.frames)
    for i in range(1, total + 1):
        await ctx.pace(i / total)
        await ctx.progress(i, total)
    return (image_target.map(f"colortransfer:{image_ref.frames[:1]}"),), None


async def load_image(ctx: NodeContext, image: str) -> NodeOutput:
    name = image[: image.rindex(" [")] if image.endswith("]") and " [" in image else image
    data = (ctx.input_dir / name).read_bytes()
    width, height = render.png_size(data) or (512, 512)
    ctx.add_cost(costs.load_image_seconds(width, height))
    frame = Frame.mosaic(hashlib.sha256(data).digest())
    return (Images(width, height, (frame,), source=data), Mask(width, height, 1)), None


async def get_image_size(ctx: NodeContext, image: Images) -> NodeOutput:
    count = len(image.frames)
    await ctx.send_text(f"width: {image.width}, height: {image.height}\n batch size: {count}")
    return (image.width, image.height, count), None


async def preview_any(ctx: NodeContext, source: Any) -> NodeOutput:
    if isinstance(source, str):
        text = source
    elif isinstance(source, int | float | bool):
        text = str(source)
    else:
        try:
            text = json.dumps(source, indent=4)
        except TypeError:
            text = str(source)
    return (), {"text": [text]}


async def primitive(ctx: NodeContext, value: Any) -> NodeOutput:
    return (value,), None


# --- outputs -------------------------------------------------------------------------------------


async def save_image(ctx: NodeContext, images: Images, filename_prefix: str = "ComfyUI") -> NodeOutput:
    return (), await _save_pngs(ctx, images, filename_prefix, ctx.output_dir, "output", 4)


async def preview_image(ctx: NodeContext, images: Images) -> NodeOutput:
    suffix = "".join(random.choice("abcdefghijklmnopqrstupvxyz") for _ in range(5))
    return (), await _save_pngs(ctx, images, f"ComfyUI_temp_{suffix}", ctx.temp_dir, "temp", 1)


async def save_image_websocket(ctx: NodeContext, images: Images) -> NodeOutput:
    total = len(images.frames)
    for step, frame in enumerate(images.frames):
        data = await ctx.run_blocking(_encoder(images, frame, None, 1))
        await ctx.pace((step + 1) / total)
        await ctx.progress(step, total, data)
    return (), None


async def create_video(
    ctx: NodeContext, images: Images, fps: float, audio: Any = None, bit_depth: int = 8
) -> NodeOutput:
    return (Video(images, fps),), None


async def save_video(
    ctx: NodeContext, video: Video, filename_prefix: str, format: str, codec: str, **codec_options: Any
) -> NodeOutput:
    images = video.images
    folder, stem, counter, subfolder = save_image_path(filename_prefix, ctx.output_dir, images.width, images.height)
    name = f"{stem}_{counter:05}_.mp4"
    metadata = {"prompt": json.dumps(ctx.prompt), "comment": SIM_LABEL}
    data = await ctx.run_blocking(lambda: encode_mp4(images.width, images.height, images.frames, video.fps, metadata))
    (folder / name).write_bytes(data)
    return (), {"images": [{"filename": name, "subfolder": subfolder, "type": "output"}], "animated": [True]}


async def save_animated_png(
    ctx: NodeContext, images: Images, filename_prefix: str, fps: float, compress_level: int = 4
) -> NodeOutput:
    folder, stem, counter, subfolder = save_image_path(filename_prefix, ctx.output_dir, images.width, images.height)
    name = f"{stem}_{counter:05}_.png"
    text = _png_text(ctx)
    data = await ctx.run_blocking(
        lambda: render.encode_apng(images.width, images.height, images.frames, fps, text, compress_level)
    )
    (folder / name).write_bytes(data)
    animated = len(images.frames) > 1
    return (), {"images": [{"filename": name, "subfolder": subfolder, "type": "output"}], "animated": [animated]}


async def save_animated_webp(
    ctx: NodeContext,
    images: Images,
    filename_prefix: str,
    fps: float,
    lossless: bool = True,
    quality: int = 80,
    method: str = "default",
) -> NodeOutput:
    """comfy_extras.nodes_images.SaveAnimatedWEBP: one RIFF/WEBP file with every frame of the batch.

    Always lossless VP8L frames (no VP8 encoder here; `quality` and `method` only change the time it takes,
    `lossless` also the container flags and key-frame spacing). Identical consecutive frames are merged as
    libwebp does, down to a still image; `animated` is still true for any batch of more than one image, as
    upstream reports it."""
    folder, stem, counter, subfolder = save_image_path(filename_prefix, ctx.output_dir, images.width, images.height)
    name = f"{stem}_{counter:05}_.webp"
    exif = webp.exif_ascii({0x0110: f"prompt:{json.dumps(ctx.prompt)}", 0x0131: SIM_LABEL, **_exif_pnginfo(ctx)})
    duration = int(1000.0 / fps)
    width, height = images.width, images.height

    def encode() -> bytes:
        frames = [(render.rgb_rows(width, height, frame), frame) for frame in images.frames]
        return webp.encode_animated(width, height, frames, duration, exif, lossless)

    data = await ctx.run_blocking(encode)
    (folder / name).write_bytes(data)
    result = {"filename": name, "subfolder": subfolder, "type": "output"}
    return (), {"images": [result], "animated": [len(images.frames) != 1]}


def _exif_pnginfo(ctx: NodeContext) -> dict[int, str]:
    """extra_pnginfo entries as EXIF tags counting down from 0x010F (Make), as SaveAnimatedWEBP writes them."""
    extra = ctx.extra_data.get("extra_pnginfo")
    if not isinstance(extra, dict):
        return {}
    return {0x010F - i: f"{key}:{json.dumps(value)}" for i, (key, value) in enumerate(extra.items())}


NodeFunction = Callable[..., Awaitable[NodeOutput]]

NODE_FUNCTIONS: dict[str, NodeFunction] = {
    "UNETLoader": unet_loader,
    "CLIPLoader": clip_loader,
    "VAELoader": vae_loader,
    "LoraLoaderModelOnly": lora_model_only,
    "ModelSamplingAuraFlow": model_sampling,
    "ModelSamplingSD3": model_sampling,
    "CLIPTextEncode": clip_text_encode,
    "EmptySD3LatentImage": empty_latent,
    "EmptyLatentImage": empty_latent,
    "EmptyHunyuanLatentVideo": empty_hunyuan_video,
    "Wan22ImageToVideoLatent": wan22_latent,
    "KSampler": ksampler,
    "KSamplerAdvanced": ksampler_advanced,
    "VAEDecode": vae_decode,
    "VAEEncode": vae_encode,
    "SaveImage": save_image,
    "PreviewImage": preview_image,
    "SaveImageWebsocket": save_image_websocket,
    "EmptyImage": empty_image,
    "ImageBlur": image_blur,
    "ImageInvert": image_invert,
    "ImageScale": image_scale,
    "ImageAddNoise": image_add_noise,
    "ColorTransfer": color_transfer,
    "LoadImage": load_image,
    "GetImageSize": get_image_size,
    "PreviewAny": preview_any,
    "PrimitiveInt": primitive,
    "PrimitiveFloat": primitive,
    "PrimitiveBoolean": primitive,
    "PrimitiveString": primitive,
    "PrimitiveStringMultiline": primitive,
    "CreateVideo": create_video,
    "SaveVideo": save_video,
    "SaveAnimatedPNG": save_animated_png,
    "SaveAnimatedWEBP": save_animated_webp,
}

# Nodes whose IS_CHANGED makes them re-run every time (never served from cache).
ALWAYS_CHANGED = {"SaveImageWebsocket"}


def is_changed_token(class_type: str, inputs: dict[str, Any], input_dir: Path) -> str | None:
    """The part of a node's cache signature that ComfyUI gets from IS_CHANGED."""
    if class_type in ALWAYS_CHANGED:
        return f"{time.time_ns()}"
    if class_type == "LoadImage":
        name = str(inputs.get("image", ""))
        path = input_dir / (name[: name.rindex(" [")] if name.endswith("]") and " [" in name else name)
        try:
            return hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            return None
    return None
