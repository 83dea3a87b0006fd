"""A real, playable H.264 (Constrained Baseline) MP4 written in pure Python.

No encoder is available without native libraries, so the stream uses the two cheapest legal macroblock
kinds: key frames are all I_PCM (raw YUV 4:2:0 samples, no transform) and the other frames are P frames
whose macroblocks all copy the previous picture with one motion vector and no residual. That is exactly
the pan the simulator's video frames make (`Frame.shift`), so the file animates like the APNG output,
stays small (one raw key frame per GOP), and any decoder can play it. The container puts `moov` before
`mdat`, like ComfyUI's `+faststart`. A picture frame (an input image's pixels) is converted with Pillow.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Sequence

from PIL import Image

from vibewave.comfyui_sim.render import GRID, SHADES, Frame, cell_bounds, rgb_rows

GOP_SECONDS = 2.0
_EMULATION = re.compile(b"\x00\x00(?=[\x00-\x03])")


class BitWriter:
    def __init__(self) -> None:
        self.bits: list[str] = []

    def u(self, n: int, value: int) -> None:
        if n:
            self.bits.append(format(value, f"0{n}b"))

    def ue(self, value: int) -> None:
        code = format(value + 1, "b")
        self.bits.append("0" * (len(code) - 1) + code)

    def se(self, value: int) -> None:
        self.ue(2 * value - 1 if value > 0 else -2 * value)

    def bit_length(self) -> int:
        return sum(len(b) for b in self.bits)

    def align_zero(self) -> None:
        pad = -self.bit_length() % 8
        self.bits.append("0" * pad)

    def trailing(self) -> None:
        self.bits.append("1")
        self.align_zero()

    def to_bytes(self) -> bytes:
        s = "".join(self.bits)
        assert len(s) % 8 == 0, "not byte aligned"
        return int(s, 2).to_bytes(len(s) // 8, "big") if s else b""


def _nal(header: int, rbsp: bytes) -> bytes:
    return bytes((header,)) + _EMULATION.sub(b"\x00\x00\x03", rbsp)


def _yuv(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    r, g, b = rgb
    y = 16 + (65481 * r + 128553 * g + 24966 * b) // 255000
    cb = 128 + (-37797 * r - 74203 * g + 112000 * b) // 255000
    cr = 128 + (112000 * r - 93786 * g - 18214 * b) // 255000
    return max(1, min(255, y)), max(1, min(255, cb)), max(1, min(255, cr))


# Pillow's YCbCr is full range (JPEG); H.264 without VUI is read as BT.601 limited range: rescale.
_LUMA = [16 + round(v * 219 / 255) for v in range(256)]
_CHROMA = [128 + round((v - 128) * 224 / 255) for v in range(256)]


def _picture_planes(width: int, height: int, frame: Frame) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """A picture frame's planes: BT.601 limited range, chroma averaged over 2x2 blocks."""
    rgb = Image.frombytes("RGB", (width, height), b"".join(rgb_rows(width, height, frame)))
    y, cb, cr = rgb.convert("YCbCr").split()
    cw, ch = width // 2, height // 2
    planes = (
        y.point(_LUMA),
        cb.resize((cw, ch), Image.Resampling.BOX).point(_CHROMA),
        cr.resize((cw, ch), Image.Resampling.BOX).point(_CHROMA),
    )
    out: tuple[list[bytes], list[bytes], list[bytes]] = ([], [], [])
    for plane, rows in zip(planes, out, strict=True):
        data, stride = plane.tobytes(), plane.width
        rows.extend(data[r * stride : (r + 1) * stride] for r in range(plane.height))
    return out


def yuv_planes(width: int, height: int, frame: Frame) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """Rows of the Y, Cb and Cr planes (4:2:0) of one frame, built from runs like render.scanlines."""
    cw, ch = width // 2, height // 2
    if frame.kind == "picture":
        return _picture_planes(width, height, frame)
    if frame.kind == "solid":
        c = frame.color
        y, cb, cr = _yuv(((c >> 16) & 0xFF, (c >> 8) & 0xFF, c & 0xFF))
        return [bytes((y,)) * width] * height, [bytes((cb,)) * cw] * ch, [bytes((cr,)) * cw] * ch
    palette = hashlib.shake_256(frame.key).digest(GRID * GRID * 3)
    xs, cxs = cell_bounds(width), [x // 2 for x in cell_bounds(width)]
    ys = cell_bounds(height)
    shift = (frame.shift % width) if width else 0
    planes: tuple[list[bytes], list[bytes], list[bytes]] = ([], [], [])
    cache: dict[tuple[int, int], tuple[bytes, bytes, bytes]] = {}
    for row in range(height):
        band = next(b for b in range(GRID) if ys[b] <= row < ys[b + 1])
        band_height = ys[band + 1] - ys[band]
        shade = (row - ys[band]) * SHADES // max(band_height, 1)
        rows = cache.get((band, shade))
        if rows is None:
            parts: tuple[list[bytes], list[bytes], list[bytes]] = ([], [], [])
            dim = 255 - shade * 12
            for col in range(GRID):
                i = (band * GRID + col) * 3
                rgb = (palette[i] * dim // 255, palette[i + 1] * dim // 255, palette[i + 2] * dim // 255)
                y, cb, cr = _yuv(rgb)
                parts[0].append(bytes((y,)) * (xs[col + 1] - xs[col]))
                parts[1].append(bytes((cb,)) * (cxs[col + 1] - cxs[col]))
                parts[2].append(bytes((cr,)) * (cxs[col + 1] - cxs[col]))
            joined = [b"".join(p) for p in parts]
            if shift:
                s = shift // 2
                joined[0] = joined[0][-shift:] + joined[0][:-shift]
                joined[1] = joined[1][-s:] + joined[1][:-s] if s else joined[1]
                joined[2] = joined[2][-s:] + joined[2][:-s] if s else joined[2]
            rows = (joined[0], joined[1], joined[2])
            cache[(band, shade)] = rows
        planes[0].append(rows[0])
        if row % 2 == 0 and row // 2 < ch:
            planes[1].append(rows[1])
            planes[2].append(rows[2])
    return planes


def _pad(rows: list[bytes], width: int, height: int) -> list[bytes]:
    """Extend rows to the macroblock grid by repeating the last column / row."""
    out = [r + r[-1:] * (width - len(r)) for r in rows]
    out.extend([out[-1]] * (height - len(out)))
    return out


class H264Stream:
    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.mbw, self.mbh = (width + 15) // 16, (height + 15) // 16
        self.level = 40 if self.mbw * self.mbh <= 8192 else 51
        self.idr_count = 0
        self.frame_num = 0

    def sps(self) -> bytes:
        w = BitWriter()
        w.u(8, 66)
        w.u(8, 0xC0)
        w.u(8, self.level)
        w.ue(0)  # seq_parameter_set_id
        w.ue(0)  # log2_max_frame_num_minus4
        w.ue(2)  # pic_order_cnt_type
        w.ue(1)  # max_num_ref_frames
        w.u(1, 0)
        w.ue(self.mbw - 1)
        w.ue(self.mbh - 1)
        w.u(1, 1)  # frame_mbs_only_flag
        w.u(1, 1)  # direct_8x8_inference_flag
        crop_right, crop_bottom = (self.mbw * 16 - self.width) // 2, (self.mbh * 16 - self.height) // 2
        if crop_right or crop_bottom:
            w.u(1, 1)
            w.ue(0)
            w.ue(crop_right)
            w.ue(0)
            w.ue(crop_bottom)
        else:
            w.u(1, 0)
        w.u(1, 0)  # vui_parameters_present_flag
        w.trailing()
        return _nal(0x67, w.to_bytes())

    def pps(self) -> bytes:
        w = BitWriter()
        w.ue(0)
        w.ue(0)
        w.u(1, 0)  # CAVLC
        w.u(1, 0)
        w.ue(0)  # num_slice_groups_minus1
        w.ue(0)
        w.ue(0)
        w.u(1, 0)
        w.u(2, 0)
        w.se(0)
        w.se(0)
        w.se(0)
        w.u(1, 1)  # deblocking_filter_control_present_flag
        w.u(1, 0)
        w.u(1, 0)
        w.trailing()
        return _nal(0x68, w.to_bytes())

    def idr(self, frame: Frame) -> bytes:
        ys, cbs, crs = yuv_planes(self.width, self.height, frame)
        ys = _pad(ys, self.mbw * 16, self.mbh * 16)
        cbs = _pad(cbs, self.mbw * 8, self.mbh * 8)
        crs = _pad(crs, self.mbw * 8, self.mbh * 8)
        w = BitWriter()
        w.ue(0)  # first_mb_in_slice
        w.ue(7)  # slice_type: I (all slices)
        w.ue(0)  # pic_parameter_set_id
        w.u(4, 0)  # frame_num
        w.ue(self.idr_count % 2)  # idr_pic_id: consecutive IDRs must differ
        w.u(1, 0)  # no_output_of_prior_pics_flag
        w.u(1, 0)  # long_term_reference_flag
        w.se(0)  # slice_qp_delta
        w.ue(1)  # disable_deblocking_filter_idc
        w.ue(25)  # first macroblock: I_PCM
        w.align_zero()
        head = w.to_bytes()
        mb_prefix = b"\x0d\x00"  # ue(25) + pcm_alignment_zero_bits, once byte aligned
        body: list[bytes] = [head]
        first = True
        for my in range(self.mbh):
            for mx in range(self.mbw):
                if not first:
                    body.append(mb_prefix)
                first = False
                x, cx = mx * 16, mx * 8
                body.extend(ys[my * 16 + r][x : x + 16] for r in range(16))
                body.extend(cbs[my * 8 + r][cx : cx + 8] for r in range(8))
                body.extend(crs[my * 8 + r][cx : cx + 8] for r in range(8))
        body.append(b"\x80")
        self.idr_count += 1
        self.frame_num = 1
        return _nal(0x65, b"".join(body))

    def pan(self, dx: int) -> bytes:
        """A P frame copying the previous picture moved right by dx pixels (mv = -dx, quarter-pel)."""
        w = BitWriter()
        w.ue(0)
        w.ue(5)  # slice_type: P (all slices)
        w.ue(0)
        w.u(4, self.frame_num % 16)
        w.u(1, 0)  # num_ref_idx_active_override_flag
        w.u(1, 0)  # ref_pic_list_modification_flag_l0
        w.u(1, 0)  # adaptive_ref_pic_marking_mode_flag
        w.se(0)
        w.ue(1)
        mv = -4 * dx
        # First macroblock carries the motion vector; every later one predicts it exactly (mvd 0).
        w.ue(0)  # mb_skip_run
        w.ue(0)  # mb_type P_L0_16x16
        w.se(mv)
        w.se(0)
        w.ue(0)  # coded_block_pattern 0
        w.bits.append("11111" * (self.mbw * self.mbh - 1))
        w.trailing()
        self.frame_num += 1
        return _nal(0x41, w.to_bytes())


def _box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I", 8 + len(body)) + kind + body


def _full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags), *payload)


MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


def _metadata_box(metadata: dict[str, str]) -> bytes:
    """udta/meta/ilst with free-form ('----') entries, the way ffmpeg stores custom tags."""
    items = []
    for key, value in metadata.items():
        mean = _full_box(b"mean", 0, 0, b"com.apple.iTunes")
        name = _full_box(b"name", 0, 0, key.encode())
        data = _box(b"data", struct.pack(">II", 1, 0), value.encode())
        items.append(_box(b"----", mean, name, data))
    hdlr = _full_box(b"hdlr", 0, 0, b"\x00" * 4, b"mdir", b"appl", b"\x00" * 8, b"\x00")
    meta = _full_box(b"meta", 0, 0, hdlr, _box(b"ilst", *items))
    return _box(b"udta", meta)


def encode_mp4(
    width: int, height: int, frames: Sequence[Frame], fps: float, metadata: dict[str, str] | None = None
) -> bytes:
    """MP4 (H.264) of the frames; width/height are rounded down to even numbers as yuv420p requires."""
    width, height = max(2, width // 2 * 2), max(2, height // 2 * 2)
    stream = H264Stream(width, height)
    gop = max(1, round(fps * GOP_SECONDS))
    samples: list[bytes] = []
    sync: list[int] = []
    previous: Frame | None = None
    for index, frame in enumerate(frames):
        pannable = (
            previous is not None
            and index % gop != 0
            and frame.kind == previous.kind
            and frame.key == previous.key
            and frame.color == previous.color
            and (frame.shift - previous.shift) % 2 == 0
        )
        if pannable and previous is not None:
            nal = stream.pan(frame.shift - previous.shift)
        else:
            nal = stream.idr(frame)
            sync.append(index + 1)
        samples.append(struct.pack(">I", len(nal)) + nal)
        previous = frame

    timescale = max(1, round(fps * 1000))
    delta = 1000
    media_duration = len(samples) * delta
    movie_duration = media_duration * 1000 // timescale
    sps, pps = stream.sps(), stream.pps()
    avcc = _box(
        b"avcC",
        bytes((1, 66, 0xC0, stream.level, 0xFF, 0xE1)),
        struct.pack(">H", len(sps)),
        sps,
        b"\x01",
        struct.pack(">H", len(pps)),
        pps,
    )
    compressor = b"vibewave-sim H.264"
    avc1 = _box(
        b"avc1",
        b"\x00" * 6,
        struct.pack(">H", 1),
        b"\x00" * 16,
        struct.pack(">HHIIIH", width, height, 0x480000, 0x480000, 0, 1),
        bytes((len(compressor),)) + compressor.ljust(31, b"\x00"),
        struct.pack(">Hh", 0x18, -1),
        avcc,
    )

    def moov(chunk_offset: int) -> bytes:
        stbl = _box(
            b"stbl",
            _full_box(b"stsd", 0, 0, struct.pack(">I", 1), avc1),
            _full_box(b"stts", 0, 0, struct.pack(">III", 1, len(samples), delta)),
            _full_box(b"stss", 0, 0, struct.pack(">I", len(sync)), *(struct.pack(">I", s) for s in sync)),
            _full_box(b"stsc", 0, 0, struct.pack(">IIII", 1, 1, len(samples), 1)),
            _full_box(
                b"stsz", 0, 0, struct.pack(">II", 0, len(samples)), *(struct.pack(">I", len(s)) for s in samples)
            ),
            _full_box(b"stco", 0, 0, struct.pack(">II", 1, chunk_offset)),
        )
        dinf = _box(b"dinf", _full_box(b"dref", 0, 0, struct.pack(">I", 1), _full_box(b"url ", 0, 1)))
        minf = _box(b"minf", _full_box(b"vmhd", 0, 1, b"\x00" * 8), dinf, stbl)
        mdia = _box(
            b"mdia",
            _full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, timescale, media_duration, 0x55C4, 0)),
            _full_box(b"hdlr", 0, 0, b"\x00" * 4, b"vide", b"\x00" * 12, b"VideoHandler\x00"),
            minf,
        )
        tkhd = _full_box(
            b"tkhd",
            0,
            3,
            struct.pack(">IIIII", 0, 0, 1, 0, movie_duration),
            b"\x00" * 8,
            struct.pack(">hhhh", 0, 0, 0, 0),
            MATRIX,
            struct.pack(">II", width << 16, height << 16),
        )
        mvhd = _full_box(
            b"mvhd",
            0,
            0,
            struct.pack(">IIII", 0, 0, 1000, movie_duration),
            struct.pack(">IH", 0x10000, 0x100),
            b"\x00" * 10,
            MATRIX,
            b"\x00" * 24,
            struct.pack(">I", 2),
        )
        extra = [_metadata_box(metadata)] if metadata else []
        return _box(b"moov", mvhd, _box(b"trak", tkhd, mdia), *extra)

    ftyp = _box(b"ftyp", b"isom", struct.pack(">I", 512), b"isom", b"iso2", b"avc1", b"mp41")
    head_len = len(ftyp) + len(moov(0)) + 8
    mdat = _box(b"mdat", *samples)
    return ftyp + moov(head_len) + mdat
