"""The WebP writer: container layout as a real 0.3.64 SaveAnimatedWEBP wrote it, and VP8L that decodes back.

`decode_vp8l` below is a minimal VP8L decoder for the subset the simulator writes (no transforms, no colour
cache, one prefix-code group); a real decoder (libwebp through Pillow) was also checked by hand, see README.
"""

from __future__ import annotations

import hashlib
import struct

import pytest

from vibewave.comfyui_sim import render, webp
from vibewave.comfyui_sim.render import Frame

pytestmark = pytest.mark.unit

ORDER = (17, 18, 0, 1, 2, 3, 4, 5, 16, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
DISTANCE_MAP = {1: (0, 1), 2: (1, 0)}  # the two neighbourhood codes the writer uses


class Bits:
    def __init__(self, data: bytes) -> None:
        self.value = int.from_bytes(data, "little")
        self.pos = 0

    def read(self, n: int) -> int:
        out = (self.value >> self.pos) & ((1 << n) - 1)
        self.pos += n
        return out


def read_code(bits: Bits, alphabet: int) -> dict[tuple[int, int], int]:
    """A prefix code as {(length, code read LSB-first): symbol}."""
    if bits.read(1):
        count = bits.read(1) + 1
        first = bits.read(8 if bits.read(1) else 1)
        symbols = [first] + ([bits.read(8)] if count == 2 else [])
        return {(0, 0): symbols[0]} if count == 1 else {(1, 0): symbols[0], (1, 1): symbols[1]}
    lengths_of_lengths = [0] * 19
    for i in range(bits.read(4) + 4):
        lengths_of_lengths[ORDER[i]] = bits.read(3)
    assert bits.read(1) == 0, "max_symbol not used by the writer"
    length_code = canonical(lengths_of_lengths)
    return canonical([decode(bits, length_code) for _ in range(alphabet)])


def canonical(lengths: list[int]) -> dict[tuple[int, int], int]:
    table, code = {}, 0
    for length in range(1, 16):
        for symbol, n in enumerate(lengths):
            if n == length:
                table[(length, int(f"{code:0{length}b}"[::-1], 2))] = symbol
                code += 1
        code <<= 1
    return table


def decode(bits: Bits, table: dict[tuple[int, int], int]) -> int:
    if (0, 0) in table:
        return table[(0, 0)]
    code = 0
    for length in range(1, 16):
        code |= bits.read(1) << (length - 1)
        if (length, code) in table:
            return table[(length, code)]
    raise AssertionError("invalid prefix code")


def prefix_value(bits: Bits, symbol: int) -> int:
    if symbol < 4:
        return symbol + 1
    extra = (symbol - 2) >> 1
    return ((2 + (symbol & 1)) << extra) + bits.read(extra) + 1


def decode_vp8l(data: bytes) -> tuple[int, int, list[tuple[int, int, int, int]]]:
    bits = Bits(data)
    assert bits.read(8) == 0x2F
    width, height = bits.read(14) + 1, bits.read(14) + 1
    bits.read(1 + 3)
    assert (bits.read(1), bits.read(1), bits.read(1)) == (0, 0, 0), "no transforms, cache or meta codes"
    green, red, blue, alpha, dist = (read_code(bits, n) for n in (280, 256, 256, 256, 40))
    pixels: list[tuple[int, int, int, int]] = []
    while len(pixels) < width * height:
        g = decode(bits, green)
        if g < 256:
            pixels.append((decode(bits, red), g, decode(bits, blue), decode(bits, alpha)))
            continue
        length = prefix_value(bits, g - 256)
        code = prefix_value(bits, decode(bits, dist))
        dx, dy = DISTANCE_MAP[code] if code in DISTANCE_MAP else (code - 120, 0)
        distance = max(1, dx + dy * width)
        for _ in range(length):
            pixels.append(pixels[-distance])
    return width, height, pixels


def rgb(width: int, height: int, frame: Frame) -> list[tuple[int, int, int, int]]:
    data = b"".join(render.rgb_rows(width, height, frame))
    return [(data[i], data[i + 1], data[i + 2], 255) for i in range(0, len(data), 3)]


def mosaic(seed: bytes, shift: int = 0) -> Frame:
    return Frame.mosaic(hashlib.sha256(seed).digest(), shift)


def test_vp8l_round_trip_of_mosaic_and_solid_frames() -> None:
    for width, height, frame in ((67, 45, mosaic(b"a")), (130, 33, mosaic(b"b", shift=9)), (40, 20, Frame.solid(7))):
        rows = webp.rgba_rows(render.rgb_rows(width, height, frame))
        assert decode_vp8l(webp.encode_vp8l(width, height, rows)) == (width, height, rgb(width, height, frame))


def test_runs_and_repeated_rows_keep_files_small() -> None:
    rows = webp.rgba_rows(render.rgb_rows(1536, 1536, mosaic(b"big")))
    assert len(webp.encode_vp8l(1536, 1536, rows)) < 20_000


def test_animated_container_like_upstream() -> None:
    frames = [mosaic(b"1"), mosaic(b"1"), mosaic(b"2"), Frame.solid(0x123456)]
    exif = webp.exif_ascii({0x0110: 'prompt:{"1": {}}', 0x0131: "vibewave-comfyui-simulator"})
    data = webp.encode_animated(96, 64, [(render.rgb_rows(96, 64, f), f) for f in frames], 125, exif)
    chunks = webp.read_chunks_webp(data)
    assert struct.unpack("<I", data[4:8])[0] == len(data) - 8
    assert [kind for kind, _ in chunks] == [b"VP8X", b"ANIM", b"ANMF", b"ANMF", b"ANMF", b"EXIF"]
    vp8x = chunks[0][1]
    assert vp8x[0] == 0x1A  # animation + EXIF + alpha, as 0.3.64 (Pillow/libwebp) wrote it
    assert int.from_bytes(vp8x[4:7], "little") + 1 == 96 and int.from_bytes(vp8x[7:10], "little") + 1 == 64
    assert chunks[1][1] == b"\0\0\0\0\0\0"  # background 0, loop forever
    durations, flags = [], []
    for (_, anmf), expected in zip(chunks[2:5], (frames[0], frames[2], frames[3]), strict=True):
        assert anmf[:6] == b"\0" * 6 and int.from_bytes(anmf[6:9], "little") + 1 == 96
        durations.append(int.from_bytes(anmf[12:15], "little"))
        flags.append(anmf[15])
        kind, size = anmf[16:20], struct.unpack("<I", anmf[20:24])[0]
        assert kind == b"VP8L"
        assert decode_vp8l(anmf[24 : 24 + size]) == (96, 64, rgb(96, 64, expected))
    assert durations == [250, 125, 125]  # two identical frames merged
    assert flags == [0x02, 0x00, 0x00]
    assert chunks[5][1].startswith(b"Exif\0\0MM\0*") and b'prompt:{"1": {}}\0' in chunks[5][1]


def test_identical_frames_make_a_still_image() -> None:
    frame = Frame.solid(0xFF8000)
    data = webp.encode_animated(32, 32, [(render.rgb_rows(32, 32, frame), frame)] * 4, 166, webp.exif_ascii({}))
    chunks = webp.read_chunks_webp(data)
    assert [kind for kind, _ in chunks] == [b"VP8X", b"VP8L", b"EXIF"]
    assert chunks[0][1][0] == 0x08


def test_exif_layout() -> None:
    payload = webp.exif_ascii({0x0131: "sim", 0x0110: "prompt:{}"})
    assert payload[:14] == b"Exif\0\0MM\0*\0\0\0\x08"
    assert struct.unpack(">H", payload[14:16])[0] == 2
    tags = [struct.unpack(">HHI", payload[16 + 12 * i : 24 + 12 * i]) for i in range(2)]
    assert tags == [(0x0110, 2, 10), (0x0131, 2, 4)]  # sorted; "sim\0" fits inline


def test_lossy_request_flags_and_key_frames_like_upstream() -> None:
    """A real 0.3.64 wrote 12 noisy frames with lossless=False as VP8X 0x0a (no alpha) and key frames (no
    blending) at frames 0, 5 and 10 (Pillow's kmax 5); lossless uses kmax 17."""
    frames = [mosaic(bytes([i])) for i in range(12)]
    rows = [(render.rgb_rows(16, 8, f), f) for f in frames]
    for lossless, flags, keys in ((False, 0x0A, [0, 5, 10]), (True, 0x1A, [0])):
        chunks = webp.read_chunks_webp(webp.encode_animated(16, 8, rows, 83, webp.exif_ascii({}), lossless))
        assert chunks[0][1][0] == flags
        anmf = [payload for kind, payload in chunks if kind == b"ANMF"]
        assert [i for i, payload in enumerate(anmf) if payload[15] == 0x02] == keys
