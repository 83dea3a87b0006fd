"""Pictures and videos: deterministic, the requested size, fast, and well-formed."""

from __future__ import annotations

import struct
import time
import zlib

import pytest

from vibewave.comfyui_sim import render
from vibewave.comfyui_sim.render import Frame
from vibewave.comfyui_sim.video import encode_mp4

pytestmark = pytest.mark.unit


def idat(data: bytes) -> bytes:
    return b"".join(payload for kind, payload in render.read_chunks(data) if kind == b"IDAT")


def test_png_is_valid_and_sized() -> None:
    data = render.encode_png(1328, 1328, Frame.mosaic(render.content_key("neon street", 42)), {"prompt": "{}"})
    assert data.startswith(render.PNG_SIGNATURE)
    assert render.png_size(data) == (1328, 1328)
    kinds = [kind for kind, _ in render.read_chunks(data)]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"tEXt" in kinds
    raw = zlib.decompress(idat(data))
    assert len(raw) == 1328 * (1 + 1328 * 3)
    pos = len(render.PNG_SIGNATURE)
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        chunk = data[pos + 4 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(chunk) & 0xFFFFFFFF == crc
        pos += 12 + length


def test_same_prompt_and_seed_same_bytes_else_different() -> None:
    def png(text: str, seed: int) -> bytes:
        return render.encode_png(256, 192, Frame.mosaic(render.content_key(text, seed)), {"prompt": "x"})

    assert png("a cat", 1) == png("a cat", 1)
    assert idat(png("a cat", 1)) != idat(png("a cat", 2))
    assert idat(png("a cat", 1)) != idat(png("a dog", 1))


def test_1024_render_is_fast() -> None:
    started = time.perf_counter()
    render.encode_png(1024, 1024, Frame.mosaic(render.content_key("speed", 7)))
    assert time.perf_counter() - started < 0.5


def test_solid_colour_pixels() -> None:
    raw = zlib.decompress(idat(render.encode_png(4, 2, Frame.solid(0xFF8000))))
    assert raw == (b"\x00" + b"\xff\x80\x00" * 4) * 2
    assert Frame.solid(0xFF8000).derive("invert") == Frame.solid(0x007FFF)


def test_apng_has_all_frames() -> None:
    frames = [Frame.mosaic(b"k", shift=i * 2) for i in range(5)]
    data = render.encode_apng(64, 48, frames, 12.0)
    chunks = list(render.read_chunks(data))
    actl = next(payload for kind, payload in chunks if kind == b"acTL")
    assert struct.unpack(">II", actl) == (5, 0)
    assert sum(1 for kind, _ in chunks if kind == b"fcTL") == 5
    assert sum(1 for kind, _ in chunks if kind == b"fdAT") == 4


def boxes(data: bytes) -> list[tuple[bytes, bytes]]:
    out, pos = [], 0
    while pos < len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        out.append((kind, data[pos + 8 : pos + size]))
        pos += size
    return out


def test_mp4_layout() -> None:
    frames = [Frame.mosaic(b"video", shift=i * 4) for i in range(30)]
    data = encode_mp4(320, 240, frames, 24.0, {"prompt": "{}"})
    top = boxes(data)
    assert [kind for kind, _ in top] == [b"ftyp", b"moov", b"mdat"]
    moov = dict(boxes(top[1][1]))
    trak = dict(boxes(moov[b"trak"]))
    mdia = dict(boxes(trak[b"mdia"]))
    minf = dict(boxes(mdia[b"minf"]))
    stbl = dict(boxes(minf[b"stbl"]))
    assert struct.unpack(">II", stbl[b"stsz"][4:12]) == (0, 30)
    (offset,) = struct.unpack(">I", stbl[b"stco"][8:12])
    assert offset == len(data) - len(top[2][1])
    first_nal_len = struct.unpack(">I", data[offset : offset + 4])[0]
    assert data[offset + 4] == 0x65  # IDR slice
    assert data[offset + 4 + first_nal_len + 4] == 0x41  # then P slices
    assert b"avcC" in stbl[b"stsd"]
