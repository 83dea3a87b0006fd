"""`/view?...&preview=webp;Q`: PNG in, WebP out, with zlib + struct only.

ComfyUI re-encodes the picture with Pillow (lossy VP8 at quality Q). The simulator has no image library, so
it writes a *lossless* WebP (VP8L, the "RIFF....WEBPVP8L" container): a valid WebP any decoder opens,
with one canonical Huffman code per channel and no transforms, LZ77 or colour cache. The quality argument
is accepted and ignored.
"""

from __future__ import annotations

import heapq
import itertools
import struct
import zlib
from collections import Counter

from vibewave.comfyui_sim.render import PNG_SIGNATURE, read_chunks

CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # PNG colour type -> samples per pixel (8-bit, non-interlaced)
MAX_CODE_LENGTH = 15


def decode_png_rgba(data: bytes) -> tuple[int, int, bytes]:
    """(width, height, RGBA bytes) of an 8-bit non-interlaced grey/RGB(A) PNG; ValueError otherwise."""
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG file")
    chunks = list(read_chunks(data))
    if not chunks or chunks[0][0] != b"IHDR":
        raise ValueError("PNG without IHDR")
    width, height, depth, color_type, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    if depth != 8 or color_type not in CHANNELS or interlace != 0:
        raise ValueError(f"unsupported PNG (depth {depth}, colour type {color_type}, interlace {interlace})")
    bpp = CHANNELS[color_type]
    raw = zlib.decompress(b"".join(payload for kind, payload in chunks if kind == b"IDAT"))
    stride = width * bpp
    previous = bytearray(stride)
    rows: list[bytes] = []
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        _unfilter(kind, line, previous, bpp)
        rows.append(bytes(line))
        previous = line
    pixels = b"".join(rows)
    if color_type == 6:
        return width, height, pixels
    out = bytearray(width * height * 4)
    if color_type == 2:
        out[0::4], out[1::4], out[2::4] = pixels[0::3], pixels[1::3], pixels[2::3]
        out[3::4] = b"\xff" * (width * height)
    elif color_type == 0:
        out[0::4] = out[1::4] = out[2::4] = pixels
        out[3::4] = b"\xff" * (width * height)
    else:
        out[0::4] = out[1::4] = out[2::4] = pixels[0::2]
        out[3::4] = pixels[1::2]
    return width, height, bytes(out)


def _unfilter(kind: int, line: bytearray, prev: bytearray, bpp: int) -> None:
    if kind == 0:
        return
    for i in range(len(line)):
        left = line[i - bpp] if i >= bpp else 0
        up = prev[i]
        if kind == 1:
            predictor = left
        elif kind == 2:
            predictor = up
        elif kind == 3:
            predictor = (left + up) // 2
        elif kind == 4:
            corner = prev[i - bpp] if i >= bpp else 0
            p = left + up - corner
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
            predictor = left if pa <= pb and pa <= pc else up if pb <= pc else corner
        else:
            raise ValueError(f"bad PNG filter type {kind}")
        line[i] = (line[i] + predictor) & 0xFF


class BitWriter:
    """LSB-first bit packing, as VP8L reads it."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.acc = 0
        self.count = 0

    def put(self, value: int, nbits: int) -> None:
        self.acc |= value << self.count
        self.count += nbits
        while self.count >= 8:
            self.out.append(self.acc & 0xFF)
            self.acc >>= 8
            self.count -= 8

    def finish(self) -> bytes:
        if self.count:
            self.out.append(self.acc & 0xFF)
        return bytes(self.out)


def _code_lengths(histogram: Counter[int], alphabet: int) -> list[int]:
    """Huffman code lengths (a complete code, at most 15 bits); a flat 8-bit code if that limit is hit."""
    tie = itertools.count()
    heap: list[tuple[int, int, list[int]]] = [(n, next(tie), [s]) for s, n in histogram.items()]
    heapq.heapify(heap)
    lengths = [0] * alphabet
    while len(heap) > 1:
        n1, _, s1 = heapq.heappop(heap)
        n2, _, s2 = heapq.heappop(heap)
        for s in s1 + s2:
            lengths[s] += 1
        heapq.heappush(heap, (n1 + n2, next(tie), s1 + s2))
    if max(lengths) > MAX_CODE_LENGTH:
        lengths = [8 if s < 256 else 0 for s in range(alphabet)]
    return lengths


def _canonical_codes(lengths: list[int]) -> list[int]:
    """Bit-reversed canonical codes (ready for LSB-first writing), as in DEFLATE."""
    codes = [0] * len(lengths)
    code = 0
    for length in range(1, MAX_CODE_LENGTH + 1):
        for symbol, n in enumerate(lengths):
            if n == length:
                codes[symbol] = int(f"{code:0{length}b}"[::-1], 2)
                code += 1
        code <<= 1
    return codes


def _write_code(writer: BitWriter, histogram: Counter[int], alphabet: int) -> tuple[list[int], list[int]]:
    """Write one prefix code; returns (lengths, codes) for the symbols."""
    if len(histogram) == 1:
        (symbol,) = histogram
        writer.put(1, 1)  # simple code
        writer.put(0, 1)  # one symbol
        if symbol < 2:
            writer.put(0, 1)
            writer.put(symbol, 1)
        else:
            writer.put(1, 1)
            writer.put(symbol, 8)
        return [0] * alphabet, [0] * alphabet
    lengths = _code_lengths(histogram, alphabet)
    writer.put(0, 1)  # normal code
    # Code-length code: a flat 4-bit code for the lengths 0..15 (no run-length symbols 16/17/18).
    writer.put(19 - 4, 4)
    order = (17, 18, 0, 1, 2, 3, 4, 5, 16, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
    for symbol in order:
        writer.put(4 if symbol < 16 else 0, 3)
    writer.put(0, 1)  # max_symbol = alphabet size
    length_codes = _canonical_codes([4] * 16 + [0, 0, 0])
    for length in lengths:
        writer.put(length_codes[length], 4)
    return lengths, _canonical_codes(lengths)


def encode_webp_lossless(width: int, height: int, rgba: bytes) -> bytes:
    """A VP8L WebP of the given RGBA pixels."""
    if not (0 < width <= 16384 and 0 < height <= 16384):
        raise ValueError(f"WebP cannot hold {width}x{height}")
    red, green, blue, alpha = rgba[0::4], rgba[1::4], rgba[2::4], rgba[3::4]
    writer = BitWriter()
    writer.put(0x2F, 8)
    writer.put(width - 1, 14)
    writer.put(height - 1, 14)
    writer.put(0 if alpha.count(255) == len(alpha) else 1, 1)
    writer.put(0, 3)  # version
    writer.put(0, 1)  # no transforms
    writer.put(0, 1)  # no colour cache
    writer.put(0, 1)  # no meta prefix codes
    tables = []
    for channel, alphabet in ((green, 256 + 24), (red, 256), (blue, 256), (alpha, 256)):
        tables.append(_write_code(writer, Counter(channel), alphabet))
    _write_code(writer, Counter({0: 1}), 40)  # distance code, unused
    if any(any(lengths) for lengths, _ in tables):
        (gl, gc), (rl, rc), (bl, bc), (al, ac) = tables
        put = writer.put
        for g, r, b, a in zip(green, red, blue, alpha, strict=True):
            put(
                gc[g] | rc[r] << gl[g] | bc[b] << (gl[g] + rl[r]) | ac[a] << (gl[g] + rl[r] + bl[b]),
                gl[g] + rl[r] + bl[b] + al[a],
            )
    payload = writer.finish()
    body = b"WEBP" + b"VP8L" + struct.pack("<I", len(payload)) + payload + b"\0" * (len(payload) % 2)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def png_to_webp(data: bytes) -> bytes:
    width, height, rgba = decode_png_rgba(data)
    return encode_webp_lossless(width, height, rgba)
