"""Just enough of the ISO base media file format (MP4) to tell a playable video from a broken one, and
what a video shows (its frames decoded, compared with a picture)."""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import Any

import av
from PIL import Image

CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf", b"udta"}


@dataclass
class Box:
    kind: bytes
    payload: bytes
    children: list[Box]

    def find(self, *path: bytes) -> Box | None:
        node: Box | None = self
        for kind in path:
            node = next((c for c in node.children if c.kind == kind), None) if node else None
        return node


def parse_boxes(data: bytes) -> list[Box]:
    boxes, offset = [], 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        header = 8
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
            header = 16
        elif size == 0:
            size = len(data) - offset
        if size < header or offset + size > len(data):
            raise ValueError(f"box {kind!r} at {offset} overruns the file")
        payload = data[offset + header : offset + size]
        boxes.append(Box(kind, payload, parse_boxes(payload) if kind in CONTAINERS else []))
        offset += size
    if offset != len(data):
        raise ValueError("trailing bytes after the last box")
    return boxes


@dataclass
class VideoFacts:
    codec: str
    width: int
    height: int
    frames: int
    media_bytes: int


def mp4_facts(data: bytes) -> VideoFacts:
    """Codec, size and frame count of the first video track; raises if the file is not a sound MP4."""
    top = {b.kind: b for b in parse_boxes(data)}
    assert b"ftyp" in top and b"moov" in top and b"mdat" in top, f"missing boxes: {sorted(top)}"
    root = Box(b"root", b"", list(top.values()))
    stbl = root.find(b"moov", b"trak", b"mdia", b"minf", b"stbl")
    assert stbl is not None, "no sample table"
    stsd, stsz = stbl.find(b"stsd"), stbl.find(b"stsz")
    assert stsd is not None and stsz is not None
    entry = stsd.payload[8:]  # version/flags + entry count
    codec = entry[4:8].decode()
    width, height = struct.unpack(">HH", entry[32:36])
    _, uniform_size, frames = struct.unpack(">III", stsz.payload[:12])
    sizes = [uniform_size] * frames if uniform_size else list(struct.unpack(f">{frames}I", stsz.payload[12:]))
    assert sum(sizes) <= len(top[b"mdat"].payload), "samples point past the media data"
    return VideoFacts(codec, width, height, frames, len(top[b"mdat"].payload))


def decoded_frames(data: bytes) -> list[Any]:
    """Every frame of an MP4's video track, decoded by FFmpeg (PyAV), as RGB Pillow images."""
    with av.open(io.BytesIO(data)) as container:
        return [frame.to_image() for frame in container.decode(video=0)]


def strong_blocks(width: int, height: int) -> Any:
    """A distinctive picture: four saturated colour blocks, a white bar and a black square."""
    picture = Image.new("RGB", (width, height), (0, 0, 0))
    colours = [(230, 20, 20), (20, 200, 40), (30, 40, 220), (240, 220, 30)]
    for i, colour in enumerate(colours):
        x, y = (i % 2) * width // 2, (i // 2) * height // 2
        picture.paste(colour, (x, y, x + width // 2, y + height // 2))
    picture.paste((255, 255, 255), (0, height // 2 - height // 16, width, height // 2 + height // 16))
    picture.paste((0, 0, 0), (width // 3, height // 3, width // 3 + width // 8, height // 3 + height // 8))
    return picture


def mean_difference(a: Any, b: Any, size: tuple[int, int] = (32, 32)) -> float:
    """Mean absolute difference per RGB sample (0 to 255) of two pictures, both scaled down to `size` first
    (so YUV 4:2:0's halved chroma and the codec's rounding do not count)."""
    small_a = a.convert("RGB").resize(size, Image.Resampling.BOX).tobytes()
    small_b = b.convert("RGB").resize(size, Image.Resampling.BOX).tobytes()
    return sum(abs(x - y) for x, y in zip(small_a, small_b, strict=True)) / len(small_a)
