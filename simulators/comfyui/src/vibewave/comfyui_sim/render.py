"""Deterministic stand-in pictures, written as PNG / APNG with zlib + struct only.

A "generated" frame is a mosaic whose colours come from a hash of (positive prompt, seed), so the same
prompt and seed always give the same bytes and anything else gives a different picture; a video made
from an input image (Wan image-to-video) is a "picture": that image's own pixels. Rows are built
from repeated byte blocks (one `bytes * n` per mosaic cell), never per pixel, so 1328x1328 takes a few
tens of milliseconds.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
GRID = 16  # mosaic cells per axis
SHADES = 8  # brightness steps inside one cell row band


@dataclass(frozen=True)
class Frame:
    """What one image of a batch looks like: a solid colour, a mosaic seeded by `key`, or a picture (the
    RGB `pixels` of an input image at the batch's size; `key` is their digest)."""

    kind: str  # "solid" | "mosaic" | "picture"
    color: int = 0
    key: bytes = b""
    shift: int = 0  # horizontal roll in pixels, used to animate video frames
    pixels: bytes = field(default=b"", repr=False)

    @staticmethod
    def solid(color: int) -> Frame:
        return Frame("solid", color=color & 0xFFFFFF)

    @staticmethod
    def mosaic(key: bytes, shift: int = 0) -> Frame:
        return Frame("mosaic", key=key, shift=shift)

    @staticmethod
    def picture(pixels: bytes, shift: int = 0) -> Frame:
        return Frame("picture", key=hashlib.sha256(pixels).digest(), shift=shift, pixels=pixels)

    def derive(self, label: str) -> Frame:
        """A visibly different frame for a filter node (invert, blur, ...), still deterministic."""
        if self.kind == "solid":
            if label == "invert":
                return Frame.solid(self.color ^ 0xFFFFFF)
            return self
        return Frame("mosaic", key=hashlib.sha256(self.key + label.encode()).digest(), shift=self.shift)


def content_key(positive: str, seed: int) -> bytes:
    """The identity of a generated picture: positive prompt text + seed, nothing else."""
    return hashlib.sha256(f"{positive}\x00{seed}".encode()).digest()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _rgb(color: int) -> bytes:
    return bytes(((color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF))


def cell_bounds(total: int) -> list[int]:
    return [total * i // GRID for i in range(GRID + 1)]


def rgb_rows(width: int, height: int, frame: Frame) -> list[bytes]:
    """The RGB rows of one frame, top to bottom; equal rows are the same object (encoders reuse that)."""
    if frame.kind == "solid":
        return [_rgb(frame.color) * width] * height
    if frame.kind == "picture":
        return _rolled(frame.pixels, width, height, frame.shift)
    palette = hashlib.shake_256(frame.key).digest(GRID * GRID * 3)
    xs = cell_bounds(width)
    ys = cell_bounds(height)
    widths = [xs[i + 1] - xs[i] for i in range(GRID)]
    shift = frame.shift % width if width else 0
    cache: dict[tuple[int, int], bytes] = {}
    rows: list[bytes] = []
    for band in range(GRID):
        band_height = ys[band + 1] - ys[band]
        for y in range(band_height):
            shade = y * SHADES // max(band_height, 1)
            key = (band, shade)
            cached = cache.get(key)
            if cached is None:
                parts = []
                for col in range(GRID):
                    i = (band * GRID + col) * 3
                    r, g, b = palette[i], palette[i + 1], palette[i + 2]
                    dim = 255 - shade * 12
                    parts.append(bytes((r * dim // 255, g * dim // 255, b * dim // 255)) * widths[col])
                pixels = b"".join(parts)
                if shift:
                    pixels = pixels[-shift * 3 :] + pixels[: -shift * 3]
                cached = pixels
                cache[key] = cached
            rows.append(cached)
    return rows


def _rolled(pixels: bytes, width: int, height: int, shift: int) -> list[bytes]:
    """A picture's rows, each rolled right by `shift` pixels (wrapping, like the mosaic's pan)."""
    stride, cut = width * 3, (shift % width) * 3 if width else 0
    rows = [pixels[y * stride : (y + 1) * stride] for y in range(height)]
    return [row[-cut:] + row[:-cut] for row in rows] if cut else rows


def scanlines(width: int, height: int, frame: Frame) -> bytes:
    """Raw PNG image data (filter byte 0 + RGB row, for every row) of one frame."""
    filtered: dict[int, bytes] = {}
    out = []
    for row in rgb_rows(width, height, frame):
        line = filtered.get(id(row))
        if line is None:
            line = filtered[id(row)] = b"\x00" + row
        out.append(line)
    return b"".join(out)


def _ihdr(width: int, height: int) -> bytes:
    return _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))


def _text_chunks(text: dict[str, str] | None) -> bytes:
    out = b""
    for key, value in (text or {}).items():
        out += _chunk(b"tEXt", key.encode("latin-1") + b"\x00" + value.encode("latin-1", "replace"))
    return out


def encode_png(
    width: int, height: int, frame: Frame, text: dict[str, str] | None = None, compress_level: int = 4
) -> bytes:
    """A complete 8-bit RGB PNG."""
    data = zlib.compress(scanlines(width, height, frame), compress_level)
    return PNG_SIGNATURE + _ihdr(width, height) + _text_chunks(text) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def encode_apng(
    width: int,
    height: int,
    frames: Sequence[Frame],
    fps: float,
    text: dict[str, str] | None = None,
    compress_level: int = 4,
) -> bytes:
    """An animated PNG (looping forever) of all frames at `fps`."""
    delay_num, delay_den = _delay(fps)
    parts = [PNG_SIGNATURE, _ihdr(width, height), _chunk(b"acTL", struct.pack(">II", len(frames), 0))]
    parts.append(_text_chunks(text))
    seq = 0
    for index, frame in enumerate(frames):
        fctl = struct.pack(">IIIIIHHBB", seq, width, height, 0, 0, delay_num, delay_den, 0, 0)
        parts.append(_chunk(b"fcTL", fctl))
        seq += 1
        data = zlib.compress(scanlines(width, height, frame), compress_level)
        if index == 0:
            parts.append(_chunk(b"IDAT", data))
        else:
            parts.append(_chunk(b"fdAT", struct.pack(">I", seq) + data))
            seq += 1
    parts.append(_chunk(b"IEND", b""))
    return b"".join(parts)


def _delay(fps: float) -> tuple[int, int]:
    """Frame delay as the fraction APNG wants (u16/u16 seconds)."""
    if fps <= 0:
        return 1, 1
    den = 1000
    num = max(1, round(den / fps))
    while num > 0xFFFF:
        num //= 10
        den //= 10
    return num, max(den, 1)


def png_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG header, or None if `data` is not a PNG."""
    if len(data) < 24 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def read_chunks(data: bytes) -> Iterable[tuple[bytes, bytes]]:
    """(type, payload) of every chunk of a PNG; used by tests and /view's channel re-encoding."""
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        yield kind, data[pos + 8 : pos + 8 + length]
        pos += 12 + length


def encode_gray_png(width: int, height: int, value: int) -> bytes:
    """A flat 8-bit greyscale PNG (the alpha channel view of an opaque image)."""
    row = b"\x00" + bytes((value & 0xFF,)) * width
    data = zlib.compress(row * height, 4)
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    return PNG_SIGNATURE + ihdr + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")
