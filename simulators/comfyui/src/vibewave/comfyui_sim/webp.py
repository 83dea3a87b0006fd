"""WebP files with zlib + struct only: `/view?...&preview=webp;Q` and SaveAnimatedWEBP.

ComfyUI encodes with Pillow/libwebp (lossy VP8 for previews, VP8 or VP8L frames for animations). The
simulator has no image library, so it writes *lossless* VP8L bitstreams that any decoder opens: no
transforms and no colour cache, one canonical prefix code per channel, and LZ77 backward references for
what the simulator's pictures are made of, runs of one colour (distance: the pixel to the left) and repeated
rows (distance: the row above). That keeps a 1536x1536 mosaic at a few kilobytes and a few milliseconds.
Animated files use the extended container (VP8X + ANIM + one ANMF per frame + EXIF) with the flags,
blending bits and frame merging a real 0.3.64 wrote. Quality arguments are accepted and ignored.
"""

from __future__ import annotations

import heapq
import itertools
import re
import struct
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence

from vibewave.comfyui_sim.render import PNG_SIGNATURE, Frame, read_chunks

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
    """Huffman code lengths of a complete code, limited to 15 bits by flattening the counts if needed."""
    for shift in itertools.count():
        tie = itertools.count()
        heap: list[tuple[int, int, list[int]]] = [(max(1, n >> shift), next(tie), [s]) for s, n in histogram.items()]
        heapq.heapify(heap)
        lengths = [0] * alphabet
        while len(heap) > 1:
            n1, _, s1 = heapq.heappop(heap)
            n2, _, s2 = heapq.heappop(heap)
            for sym in s1 + s2:
                lengths[sym] += 1
            heapq.heappush(heap, (n1 + n2, next(tie), s1 + s2))
        if max(lengths) <= MAX_CODE_LENGTH:
            return lengths
    raise AssertionError("unreachable")


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


MAX_COPY = 4096
NUM_LENGTH_CODES = 24
NUM_DISTANCE_CODES = 40
ROW_ABOVE = 1  # distance codes of the 2-D neighbourhood map: (0, 1) is the pixel above,
LEFT = 2  # (1, 0) the pixel to the left
_RUN = re.compile(rb"(....)\1*", re.S)
# A token: a literal pixel (r, g, b, a) or a backward reference (length, distance code).
Literal = tuple[int, int, int, int]
Copy = tuple[int, int]


def _prefix(value: int) -> tuple[int, int, int]:
    """VP8L prefix coding of a length or distance code >= 1: (prefix symbol, extra bit count, extra bits)."""
    d = value - 1
    if d < 4:
        return d, 0, 0
    high = d.bit_length() - 1
    second = (d >> (high - 1)) & 1
    return 2 * high + second, high - 1, d & ((1 << (high - 1)) - 1)


def _copies(length: int, distance: int) -> list[Copy]:
    out = []
    while length > 0:
        n = min(length, MAX_COPY)
        out.append((n, distance))
        length -= n
    return out


def _tokens(rows: Sequence[bytes]) -> list[Literal | Copy]:
    """LZ77 tokens of an image given as RGBA rows: a repeated row is one copy from the row above, a run of
    one colour a literal plus a copy from the pixel to the left."""
    tokens: list[Literal | Copy] = []
    previous: bytes | None = None
    repeat = 0
    width = len(rows[0]) // 4 if rows else 0
    for row in rows:
        if previous is not None and (row is previous or row == previous):
            repeat += 1
            continue
        if repeat:
            tokens += _copies(repeat * width, ROW_ABOVE)
            repeat = 0
        for match in _RUN.finditer(row):
            r, g, b, a = match.group(1)
            tokens.append((r, g, b, a))
            run = (match.end() - match.start()) // 4
            if run > 1:
                tokens += _copies(run - 1, LEFT)
        previous = row
    if repeat:
        tokens += _copies(repeat * width, ROW_ABOVE)
    return tokens


def encode_vp8l(width: int, height: int, rows: Sequence[bytes]) -> bytes:
    """The VP8L bitstream (what goes into a `VP8L` chunk) of an image given as `height` RGBA rows."""
    if not (0 < width <= 16384 and 0 < height <= 16384):
        raise ValueError(f"WebP cannot hold {width}x{height}")
    tokens = _tokens(rows)
    green: Counter[int] = Counter()
    red: Counter[int] = Counter()
    blue: Counter[int] = Counter()
    alpha: Counter[int] = Counter()
    distance: Counter[int] = Counter()
    for token in tokens:
        if len(token) == 4:
            r, g, b, a = token
            green[g] += 1
            red[r] += 1
            blue[b] += 1
            alpha[a] += 1
        else:
            length, dist = token
            green[256 + _prefix(length)[0]] += 1
            distance[_prefix(dist)[0]] += 1
    writer = BitWriter()
    put = writer.put
    put(0x2F, 8)
    put(width - 1, 14)
    put(height - 1, 14)
    put(0 if set(alpha) <= {255} else 1, 1)
    put(0, 3)  # version
    put(0, 1)  # no transforms
    put(0, 1)  # no colour cache
    put(0, 1)  # no meta prefix codes
    gl, gc = _write_code(writer, green, 256 + NUM_LENGTH_CODES)
    rl, rc = _write_code(writer, red, 256)
    bl, bc = _write_code(writer, blue, 256)
    al, ac = _write_code(writer, alpha, 256)
    dl, dc = _write_code(writer, distance or Counter({0: 1}), NUM_DISTANCE_CODES)
    for token in tokens:
        if len(token) == 4:
            r, g, b, a = token
            shift_b, shift_a = gl[g] + rl[r], gl[g] + rl[r] + bl[b]
            put(gc[g] | rc[r] << gl[g] | bc[b] << shift_b | ac[a] << shift_a, shift_a + al[a])
        else:
            length, dist = token
            symbol, nbits, extra = _prefix(length)
            put(gc[256 + symbol], gl[256 + symbol])
            put(extra, nbits)
            symbol, nbits, extra = _prefix(dist)
            put(dc[symbol], dl[symbol])
            put(extra, nbits)
    return writer.finish()


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("<I", len(payload)) + payload + b"\0" * (len(payload) % 2)


def _riff(chunks: bytes) -> bytes:
    body = b"WEBP" + chunks
    return b"RIFF" + struct.pack("<I", len(body)) + body


def encode_webp_lossless(width: int, height: int, rgba: bytes) -> bytes:
    """A simple-format (RIFF + VP8L) WebP of the given RGBA pixels."""
    stride = width * 4
    rows = [rgba[y * stride : (y + 1) * stride] for y in range(height)]
    return _riff(_chunk(b"VP8L", encode_vp8l(width, height, rows)))


def png_to_webp(data: bytes) -> bytes:
    width, height, rgba = decode_png_rgba(data)
    return encode_webp_lossless(width, height, rgba)


def rgba_rows(rows: Sequence[bytes]) -> list[bytes]:
    """RGB rows to opaque RGBA rows, keeping equal rows one object."""
    converted: dict[int, bytes] = {}
    out = []
    for row in rows:
        line = converted.get(id(row))
        if line is None:
            pixels = len(row) // 3
            buffer = bytearray(pixels * 4)
            buffer[0::4], buffer[1::4], buffer[2::4] = row[0::3], row[1::3], row[2::3]
            buffer[3::4] = b"\xff" * pixels
            line = converted[id(row)] = bytes(buffer)
        out.append(line)
    return out


def exif_ascii(tags: Mapping[int, str]) -> bytes:
    """An `EXIF` chunk payload as Pillow writes it: "Exif\\0\\0", a big-endian TIFF header and one IFD of
    ASCII entries (sorted by tag, values NUL-terminated, stored after the IFD)."""
    entries = sorted(tags.items())
    ifd_size = 2 + 12 * len(entries) + 4
    offset = 8 + ifd_size
    ifd = struct.pack(">H", len(entries))
    values = b""
    for tag, text in entries:
        value = text.encode("utf-8") + b"\0"
        if len(value) <= 4:
            ifd += struct.pack(">HHI", tag, 2, len(value)) + value.ljust(4, b"\0")
            continue
        ifd += struct.pack(">HHII", tag, 2, len(value), offset + len(values))
        values += value
    ifd += struct.pack(">I", 0)
    return b"Exif\0\0" + b"MM\0*" + struct.pack(">I", 8) + ifd + values


VP8X_ANIMATION = 0x02
VP8X_EXIF = 0x08
VP8X_ALPHA = 0x10
ANMF_NO_BLEND = 0x02
KEY_FRAMES_LOSSLESS = 17
KEY_FRAMES_LOSSY = 5


def _u24(value: int) -> bytes:
    return struct.pack("<I", value)[:3]


def encode_animated(
    width: int,
    height: int,
    frames: Sequence[tuple[Sequence[bytes], Frame]],
    duration: int,
    exif: bytes,
    lossless: bool = True,
) -> bytes:
    """SaveAnimatedWEBP's file: frames given as (RGB rows, Frame). Consecutive identical frames become one
    frame of the summed duration (libwebp's anim encoder does the same); if one is left, a still image.

    What a real 0.3.64 (Pillow + libwebp) wrote for the same request: the alpha flag only for lossless
    files, and key frames (full frame, no blending) every 17 frames lossless / 5 lossy, Pillow's kmax."""
    groups: list[tuple[Sequence[bytes], int]] = []
    last: Frame | None = None
    for rows, frame in frames:
        if groups and frame == last:
            groups[-1] = (groups[-1][0], groups[-1][1] + 1)
        else:
            groups.append((rows, 1))
        last = frame
    canvas = _u24(width - 1) + _u24(height - 1)
    if len(groups) == 1:
        bitstream = encode_vp8l(width, height, rgba_rows(groups[0][0]))
        vp8x = _chunk(b"VP8X", bytes((VP8X_EXIF, 0, 0, 0)) + canvas)
        return _riff(vp8x + _chunk(b"VP8L", bitstream) + _chunk(b"EXIF", exif))
    flags = VP8X_EXIF | VP8X_ANIMATION | (VP8X_ALPHA if lossless else 0)
    key_interval = KEY_FRAMES_LOSSLESS if lossless else KEY_FRAMES_LOSSY
    parts = [
        _chunk(b"VP8X", bytes((flags, 0, 0, 0)) + canvas),
        _chunk(b"ANIM", struct.pack("<IH", 0, 0)),  # background colour, loop forever
    ]
    for index, (rows, count) in enumerate(groups):
        bitstream = _chunk(b"VP8L", encode_vp8l(width, height, rgba_rows(rows)))
        header = _u24(0) + _u24(0) + canvas + _u24(min(duration * count, 0xFFFFFF))
        blend = ANMF_NO_BLEND if index % key_interval == 0 else 0
        parts.append(_chunk(b"ANMF", header + bytes((blend,)) + bitstream))
    parts.append(_chunk(b"EXIF", exif))
    return _riff(b"".join(parts))


def read_chunks_webp(data: bytes) -> list[tuple[bytes, bytes]]:
    """(fourcc, payload) of the top-level chunks of a RIFF/WEBP file (used by tests)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise ValueError("not a WebP file")
    out = []
    pos = 12
    while pos + 8 <= len(data):
        kind = data[pos : pos + 4]
        (size,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        out.append((kind, data[pos + 8 : pos + 8 + size]))
        pos += 8 + size + (size & 1)
    return out
