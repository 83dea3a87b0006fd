"""Replay a recorded ComfyUI transcript against the simulator and compare what comes back.

A transcript (`transcripts/*.json` for 0.33.0, `transcripts/v0.3.64/*.json` for 0.3.64; format in
reference/comfyui/transcripts/README.md) is a time-ordered list
of HTTP exchanges, WebSocket frames per socket label, client-sent WebSocket messages and notes. The driver
walks that list in order:

* `note` "WebSocket 'X' connected to ws://.../ws?clientId=C" opens socket X with the same query (none if
  the recording had none); "WebSocket 'X' closed" closes it.
* `ws` (a frame the recording server sent) is an expectation. Before the driver does anything else (an HTTP
  request, sending or closing on a socket) it waits, with a bound, until every live socket has received
  the frames recorded so far. Frames are matched in order on a key (type plus node / state / value), in
  two streams per socket: broadcast `status` frames and everything else (see `Allowances.STATUS_INTERLEAVE`).
  This is how "interrupt after the 2nd blur starts" is reproduced without sleeping.
* `ws_sent` is sent on the socket; `http` is issued with recorded ids replaced by the live ones.

Live values that the server invents (prompt ids, the generated sid, random temp file names) are learned as
they appear and substituted into later requests. Every matched pair of frames and every HTTP exchange is
compared by `Comparator`: same keys recursively, same JSON types, and equal values except where a rule says
the value is volatile (timestamps), has its own semantics (`number`), or is order-free (sets).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

TRANSCRIPTS = Path(__file__).parent / "transcripts"
SYNC_TIMEOUT = 10.0
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
TEMP_NAME_RE = re.compile(r"^ComfyUI_temp_[a-z]{5}_\d{5}_\.png$")
CONNECT_RE = re.compile(r"^WebSocket '(?P<label>[^']+)' connected to ws://[^/]+(?P<path>/\S*)$")
CLOSED_RE = re.compile(r"^WebSocket '(?P<label>[^']+)' closed$")
FILE_FIELD_RE = re.compile(r"^<file (?P<name>.+), (?P<size>\d+) bytes, (?P<type>[^>]+)>$")
IGNORED_HEADERS = {"date", "server", "connection", "keep-alive", "transfer-encoding"}
NON_ANCHOR = {"status"}


def load(name: str, version: str = "0.33.0") -> dict[str, Any]:
    """The transcript whose file name starts with `name` + '_' (0.33.0 at the top, others in v<version>/)."""
    folder = TRANSCRIPTS if version == "0.33.0" else TRANSCRIPTS / f"v{version}"
    (path,) = sorted(folder.glob(f"{name}_*.json"))
    data: dict[str, Any] = json.loads(path.read_text())
    return data


# --- frames -------------------------------------------------------------------------------------


def decode_binary(data: bytes) -> dict[str, Any]:
    """The `decoded` header of a binary frame, shaped like the transcript's summary (PROTOCOL.md §3.6)."""
    event = struct.unpack(">I", data[:4])[0]
    out: dict[str, Any] = {"event_type": event}
    if event == 1:
        out["image_format"] = {1: "JPEG", 2: "PNG"}.get(struct.unpack(">I", data[4:8])[0], "?")
        out["image_magic_hex"] = data[8:16].hex()
    elif event == 3:
        length = struct.unpack(">I", data[4:8])[0]
        out["node_id"] = data[8 : 8 + length].decode()
        out["text"] = data[8 + length :].decode()
    elif event == 4:
        length = struct.unpack(">I", data[4:8])[0]
        out["metadata"] = json.loads(data[8 : 8 + length])
        out["image_magic_hex"] = data[8 + length : 16 + length].hex()
    return out


def recorded_frame(event: dict[str, Any]) -> dict[str, Any]:
    """A recorded `ws` event as {type, data} (binary frames as {type: 'binary:N', data: decoded header})."""
    if event["frame"] == "text":
        message: dict[str, Any] = event["message"]
        return message
    decoded = dict(event["decoded"])
    decoded.pop("event_name", None)
    for key in ("image_bytes_offset", "image_bytes_length", "metadata_length"):
        decoded.pop(key, None)
    return {"type": f"binary:{decoded['event_type']}", "data": decoded}


def live_frame(msg: aiohttp.WSMessage) -> dict[str, Any] | None:
    if msg.type == aiohttp.WSMsgType.TEXT:
        frame: dict[str, Any] = json.loads(msg.data)
        return frame
    if msg.type == aiohttp.WSMsgType.BINARY:
        decoded = decode_binary(msg.data)
        return {"type": f"binary:{decoded['event_type']}", "data": decoded}
    return None


def stream_of(frame: dict[str, Any]) -> str:
    return "status" if frame["type"] in NON_ANCHOR else "main"


def frame_key(frame: dict[str, Any], ids: Callable[[Any], Any]) -> Any:
    """What must be equal for a recorded and a live frame to be considered the same event."""
    kind, data = frame["type"], frame.get("data", {})
    if kind == "status":
        return (kind, data["status"]["exec_info"]["queue_remaining"], "sid" in data)
    if kind == "executing":
        return (kind, ids(data.get("node")), "prompt_id" in data)
    if kind == "progress_state":
        return (kind, tuple(sorted((ids(n), v["state"], float(v["value"])) for n, v in data["nodes"].items())))
    if kind == "progress":
        return (kind, ids(data["node"]), data["value"], data["max"])
    if kind == "executed":
        return (kind, ids(data["node"]))
    if kind.startswith("binary:"):
        return (kind, data.get("node_id"), (data.get("metadata") or {}).get("node_id"))
    return (kind,)


@dataclass
class LiveSocket:
    label: str
    ws: aiohttp.ClientWebSocketResponse
    frames: list[dict[str, Any]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            frame = live_frame(msg)
            if frame is not None:
                self.frames.append(frame)
                self.arrived.set()

    async def close(self) -> None:
        await self.ws.close()
        if self.reader is not None:
            with contextlib.suppress(Exception):
                await self.reader


@dataclass
class SocketTrack:
    """Recorded frames of one socket label and how far each stream is matched against the live frames."""

    recorded: list[dict[str, Any]] = field(default_factory=list)
    matched: list[tuple[dict[str, Any], int]] = field(default_factory=list)  # (recorded frame, live index)
    next_recorded: dict[str, int] = field(default_factory=lambda: {"status": 0, "main": 0})
    live_cursor: dict[str, int] = field(default_factory=lambda: {"status": 0, "main": 0})
    live: LiveSocket | None = None
    closed_live: list[dict[str, Any]] = field(default_factory=list)


# --- comparison ---------------------------------------------------------------------------------


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


@dataclass
class Rule:
    """What to do with the values under paths matching `pattern` (a regex over '/a/b/0' style paths)."""

    pattern: str
    action: str  # ignore | skip (type only) | type | number | set | prefix | filename | keys
    why: str = ""

    def matches(self, path: str) -> bool:
        return re.fullmatch(self.pattern, path) is not None


DEFAULT_RULES = [
    Rule(r".*/(timestamp|create_time|execution_start_time|execution_end_time)", "type", "wall-clock ms"),
    Rule(r".*/traceback", "skip", "Python frames of the recording server; only the type is compared"),
    Rule(r".*/(number|priority)", "number", "server counter, see Numbers"),
    Rule(r".*/(queue_running|queue_pending)/\d+/0", "number", "queue tuple [number, ...]"),
    Rule(r"(/body)?/<id>/prompt/0", "number", "history tuple [number, ...]"),
    Rule(r".*/current_outputs", "set", "built from a set (PROTOCOL.md §3.4)"),
    Rule(r"/data/executed", "set", "execution_error/interrupted `executed` comes from a set (PROTOCOL.md §3.4)"),
    Rule(r".*/messages/\d+/1/executed", "set", "same as the frame's executed list"),
    Rule(r".*/execution_error/executed", "set", "same as the frame's executed list"),
    Rule(r".*/filename", "filename", "random temp names are learned and mapped"),
    Rule(r".*/sid", "type", "generated sid (uuid4 hex) is learned and mapped"),
]


class Numbers:
    """`number` semantics: the live counter runs at a fixed offset from the recorded one within a scenario
    (the recording server had served other scenarios before); `front` numbers are negative counters;
    explicit numbers are echoed as given (floats)."""

    def __init__(self) -> None:
        self.offset: int | None = None

    def check(self, rec: Any, live: Any) -> str | None:
        if json_type(rec) != json_type(live):
            return f"type {json_type(rec)} != {json_type(live)}"
        if isinstance(rec, float) or rec is None:
            return None if rec == live else f"{live!r} != recorded {rec!r}"
        if (rec < 0) != (live < 0):
            return f"sign of {live} differs from recorded {rec}"
        offset = abs(live) - abs(rec)
        if self.offset is None:
            self.offset = offset
        return None if offset == self.offset else f"{live} is not recorded {rec} + offset {self.offset}"


class Ids:
    """Recorded -> live substitutions for server-made values (prompt ids, sid, temp file names)."""

    def __init__(self) -> None:
        self.map: dict[str, str] = {}

    def learn(self, recorded: str, live: str) -> None:
        if recorded != live:
            self.map[recorded] = live

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.map.get(value, value)
        if isinstance(value, list):
            return [self(v) for v in value]
        if isinstance(value, dict):
            return {self(k): self(v) for k, v in value.items()}
        return value

    def text(self, text: str) -> str:
        for old, new in self.map.items():
            text = text.replace(old, new)
        return text


def norm_path(parts: list[str]) -> str:
    return "/" + "/".join("<id>" if UUID_RE.match(p) else p for p in parts) if parts else ""


class Comparator:
    def __init__(self, rules: list[Rule], ids: Ids, numbers: Numbers) -> None:
        self.rules = rules
        self.ids = ids
        self.numbers = numbers
        self.errors: list[str] = []

    def rule(self, path: str) -> Rule | None:
        for rule in self.rules:
            if rule.matches(path):
                return rule
        return None

    def compare(self, where: str, rec: Any, live: Any, parts: list[str] | None = None) -> None:
        """Record differences between a recorded value (ids already mapped) and the live one."""
        parts = parts or []
        path = norm_path(parts)
        rule = self.rule(path)
        action = rule.action if rule else "equal"
        if action == "ignore":
            return
        if action == "skip":
            if json_type(rec) != json_type(live):
                self.errors.append(f"{where}{path}: type {json_type(live)} != recorded {json_type(rec)}")
            return
        if action == "number":
            problem = self.numbers.check(rec, live)
            if problem:
                self.errors.append(f"{where}{path}: number {problem}")
            return
        if (
            action == "filename"
            and isinstance(rec, str)
            and isinstance(live, str)
            and TEMP_NAME_RE.match(rec)
            and TEMP_NAME_RE.match(live)
        ):
            self.ids.learn(rec, live)
            return
        if json_type(rec) != json_type(live):
            self.errors.append(f"{where}{path}: type {json_type(live)} != recorded {json_type(rec)} ({live!r:.80})")
            return
        if isinstance(rec, dict):
            if set(rec) != set(live):
                missing, extra = sorted(set(rec) - set(live)), sorted(set(live) - set(rec))
                self.errors.append(f"{where}{path}: keys differ, missing {missing}, extra {extra}")
            if action == "keys":
                return
            for key in rec:
                if key in live:
                    self.compare(where, rec[key], live[key], [*parts, key])
            return
        if isinstance(rec, list):
            if action == "set":
                if sorted(map(json.dumps, rec)) != sorted(map(json.dumps, live)):
                    self.errors.append(f"{where}{path}: {live!r:.200} != recorded {rec!r:.200} (as sets)")
                return
            if len(rec) != len(live) and action != "prefix":
                self.errors.append(f"{where}{path}: {len(live)} items != recorded {len(rec)} ({live!r:.200})")
            for i, (r, v) in enumerate(zip(rec, live, strict=False)):
                self.compare(where, r, v, [*parts, str(i)])
            return
        if action == "type":
            return
        if rec != live:
            self.errors.append(f"{where}{path}: {live!r:.200} != recorded {rec!r:.200}")


# --- uploads ------------------------------------------------------------------------------------


def png_of_size(size: int, variant: int) -> bytes:
    """A valid 1x1 PNG of exactly `size` bytes (the transcript records only name and size of uploads)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    head = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
    body = chunk(b"IDAT", zlib.compress(bytes([0, variant * 40 % 256]), 9))
    end = chunk(b"IEND", b"")
    pad = size - len(head) - len(body) - len(end) - 12
    if pad < 0:
        raise ValueError(f"cannot build a PNG of {size} bytes")
    return head + body + chunk(b"vwPd", b"\0" * pad) + end


# --- the driver ---------------------------------------------------------------------------------


@dataclass
class Exchange:
    index: int
    label: str
    method: str
    path: str
    status: int
    headers: dict[str, str]
    body: bytes


Hook = Callable[["Replay", int, dict[str, Any]], Any]


@dataclass
class Options:
    """Per-scenario knobs; every non-default is an allowance and must say why in the test."""

    rules: list[Rule] = field(default_factory=list)
    stop_at_note: str | None = None  # replay (and compare) only the events before this note
    skip_notes: tuple[str, str] | None = None  # do not replay (or compare) from the first note to the second
    skip_http: dict[int, str] = field(default_factory=dict)  # event index -> why the exchange is not replayed
    body_length_exact: set[int] = field(default_factory=set)  # event indexes whose body length is deterministic
    before_event: dict[int, Hook] = field(default_factory=dict)
    check_frames: bool = True
    throttled_progress: bool = True  # live runs unthrottled; recorded 0.33 dropped some progress updates


class Replay:
    def __init__(self, url: str, session: aiohttp.ClientSession, transcript: dict[str, Any], options: Options) -> None:
        self.url = url
        self.session = session
        self.transcript = transcript
        self.options = options
        self.ids = Ids()
        self.numbers = Numbers()
        self.cmp = Comparator([*options.rules, *DEFAULT_RULES], self.ids, self.numbers)
        self.tracks: dict[str, SocketTrack] = {}
        self.exchanges: list[Exchange] = []
        self.upload_variants: dict[int, int] = {}

    @property
    def errors(self) -> list[str]:
        return self.cmp.errors

    def share_state(self, other: Replay) -> None:
        """Continue after a prerequisite replay on the same server: keep its ids and number offset."""
        self.ids.map.update(other.ids.map)
        self.numbers.offset = other.numbers.offset

    # --- frames ---

    def _pending(self, track: SocketTrack, stream: str) -> list[dict[str, Any]]:
        return [f for f in track.recorded if stream_of(f) == stream][track.next_recorded[stream] :]

    def _advance(self, label: str, track: SocketTrack) -> bool:
        """Match as many recorded frames as the live frames allow; True when nothing recorded is left."""
        live = track.live.frames if track.live else track.closed_live
        done = True
        for stream in ("status", "main"):
            for rec in self._pending(track, stream):
                key = frame_key(self.ids(rec), self.ids)
                i = track.live_cursor[stream]
                while i < len(live) and (stream_of(live[i]) != stream or frame_key(live[i], lambda x: x) != key):
                    i += 1
                if i >= len(live):
                    done = False
                    break
                self._compare_frame(label, rec, live[i])
                track.matched.append((rec, i))
                track.next_recorded[stream] += 1
                track.live_cursor[stream] = i + 1
        return done

    def _compare_frame(self, label: str, rec: dict[str, Any], live: dict[str, Any]) -> None:
        data = rec.get("data", {})
        if rec["type"] == "status" and "sid" in data and isinstance(live["data"].get("sid"), str):
            self.ids.learn(data["sid"], live["data"]["sid"])
        where = f"ws[{label}] {rec['type']}"
        if rec["type"].startswith("binary:"):
            rec_data = {k: v for k, v in data.items() if k != "metadata"}
            live_data = {k: v for k, v in live["data"].items() if k != "metadata"}
            self.cmp.compare(where, self.ids(rec_data), live_data, ["data"])
            if "metadata" in data:
                self.cmp.compare(where, self.ids(data["metadata"]), live["data"].get("metadata"), ["data", "metadata"])
            return
        self.cmp.compare(where, self.ids(rec), live, [])

    async def sync(self, labels: list[str] | None = None) -> None:
        """Wait until the live sockets have received what the recording had received by now."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SYNC_TIMEOUT
        for label in labels or list(self.tracks):
            track = self.tracks[label]
            while not self._advance(label, track):
                if track.live is None or loop.time() > deadline:
                    raise AssertionError(self._sync_failure(label, track))
                track.live.arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(track.live.arrived.wait(), max(0.01, deadline - loop.time()))

    def _sync_failure(self, label: str, track: SocketTrack) -> str:
        live = track.live.frames if track.live else track.closed_live
        waiting = {
            s: [frame_key(self.ids(f), self.ids) for f in self._pending(track, s)][:3] for s in track.next_recorded
        }
        got = [frame_key(f, lambda x: x) for f in live]
        earlier = "\n".join(self.errors)
        return (
            f"socket {label!r}: live frames never matched the recording.\nwaiting for {waiting}\nlive: {got}\n"
            f"differences so far:\n{earlier}"
        )

    def check_unmatched(self) -> None:
        """Live frames that match nothing recorded must be explained by an allowance."""
        for label, track in self.tracks.items():
            live = track.live.frames if track.live else track.closed_live
            used = {i for _, i in track.matched}
            for i, frame in enumerate(live):
                if i in used:
                    continue
                if self.options.throttled_progress and self._throttled(live, i):
                    continue
                self.errors.append(f"ws[{label}]: unexpected live frame #{i} {json.dumps(frame)[:300]}")

    @staticmethod
    def _throttled(live: list[dict[str, Any]], i: int) -> bool:
        """PROTOCOL.md §3.7: 0.33 drops progress updates closer than 100 ms / 0.5 %, except the first and the
        final one and updates carrying a preview. The simulator runs unthrottled here (throttling would make
        the frame count depend on timing), so it may send extra `progress` frames and their `progress_state`
        companions, but never extra first/final updates or preview-carrying ones."""
        frame = live[i]
        if frame["type"] == "progress":
            data = frame["data"]
            first = not any(
                f["type"] == "progress"
                and f["data"]["node"] == data["node"]
                and f["data"]["prompt_id"] == data["prompt_id"]
                for f in live[:i]
            )
            near = live[max(0, i - 1) : i + 2]
            return not first and data["value"] < data["max"] and not any(f["type"].startswith("binary") for f in near)
        if frame["type"] == "progress_state":
            following = [f for f in live[i + 1 :] if f["type"] != "status"][:1]
            return bool(following) and following[0]["type"] == "progress"
        return False

    # --- http ---

    def _request(self, index: int, req: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
        method, path = req["method"], self.ids.text(req["path"])
        kwargs: dict[str, Any] = {}
        if "json" in req:
            kwargs["json"] = self.ids(req["json"])
        if "raw_body" in req:
            kwargs["data"] = req["raw_body"].encode()
            kwargs["headers"] = {"Content-Type": "application/json"}
        if "headers" in req:
            kwargs.setdefault("headers", {}).update(req["headers"])
        if "multipart_fields" in req:
            form = aiohttp.FormData()
            for name, value in req["multipart_fields"].items():
                match = FILE_FIELD_RE.match(value)
                if match:
                    size = int(match["size"])
                    variant = self.upload_variants.setdefault(size, len(self.upload_variants) + 1)
                    form.add_field(name, png_of_size(size, variant), filename=match["name"], content_type=match["type"])
                else:
                    form.add_field(name, value)
            kwargs["data"] = form
        return method, path, kwargs

    async def http(self, index: int, event: dict[str, Any]) -> Exchange:
        req, rec = event["request"], event["response"]
        method, path, kwargs = self._request(index, req)
        async with self.session.request(method, self.url + path, **kwargs) as resp:
            body = await resp.read()
            exchange = Exchange(index, req.get("label", ""), method, path, resp.status, dict(resp.headers), body)
        self.exchanges.append(exchange)
        if method == "POST" and req["path"] in ("/prompt", "/api/prompt") and rec["status"] == exchange.status == 200:
            self.ids.learn(rec["body"]["prompt_id"], json.loads(body)["prompt_id"])
        self._compare_http(index, event, exchange)
        return exchange

    def _compare_http(self, index: int, event: dict[str, Any], live: Exchange) -> None:
        rec = event["response"]
        where = f"http#{index} {live.method} {event['request']['path'][:80]}"
        errors = self.cmp.errors
        if live.status != rec["status"]:
            errors.append(f"{where}: status {live.status} != recorded {rec['status']} ({live.body[:200]!r})")
            return
        rec_headers = {k.lower(): v for k, v in rec["headers"].items()}
        live_headers = {k.lower(): v for k, v in live.headers.items()}
        rec_ct = rec_headers.get("content-type", "").split(";")[0].strip() or None
        live_ct = live_headers.get("content-type", "").split(";")[0].strip() or None
        if rec_ct != live_ct:
            errors.append(f"{where}: content type {live_ct} != recorded {rec_ct}")
        names_rec = set(rec_headers) - IGNORED_HEADERS
        names_live = set(live_headers) - IGNORED_HEADERS
        if names_rec != names_live:
            errors.append(
                f"{where}: headers differ, missing {sorted(names_rec - names_live)}, "
                f"extra {sorted(names_live - names_rec)}"
            )
        for name in ("content-disposition", "x-content-type-options", "accept-ranges"):
            if name in rec_headers and self.ids.text(rec_headers[name]) != live_headers.get(name):
                errors.append(f"{where}: header {name} {live_headers.get(name)!r} != recorded {rec_headers[name]!r}")
        if "content-range" in rec_headers:
            prefix = rec_headers["content-range"].rsplit("/", 1)[0]
            if not live_headers.get("content-range", "").startswith(prefix + "/"):
                errors.append(f"{where}: content-range {live_headers.get('content-range')!r} != {prefix}/N")
        if "body" in rec:
            try:
                live_body = json.loads(live.body)
            except ValueError:
                errors.append(f"{where}: body is not JSON: {live.body[:200]!r}")
                return
            self.cmp.compare(where, self.ids(rec["body"]), live_body, ["body"])
        elif "body_text" in rec:
            if live.body.decode(errors="replace") != rec["body_text"]:
                errors.append(f"{where}: body {live.body[:200]!r} != recorded {rec['body_text']!r}")
        else:
            self._compare_binary(where, index, rec, live, rec_ct)

    def _compare_binary(self, where: str, index: int, rec: dict[str, Any], live: Exchange, ctype: str | None) -> None:
        errors = self.cmp.errors
        length = rec.get("body_length", 0)
        if (length == 0) != (len(live.body) == 0):
            errors.append(f"{where}: body length {len(live.body)} vs recorded {length}")
        if index in self.options.body_length_exact and len(live.body) != length:
            errors.append(f"{where}: body length {len(live.body)} != recorded {length}")
        if "body_top_level_keys_count" in rec:
            # A large JSON body recorded as a summary (GET /object_info): it must be a JSON object.
            if not isinstance(json.loads(live.body), dict):
                errors.append(f"{where}: body is not a JSON object")
            return
        first = bytes.fromhex(rec.get("body_first_bytes_hex", ""))
        # Compare the file signature only: the pixels/frames are the simulator's own.
        spans = {"image/png": [(0, 8)], "image/webp": [(0, 4), (8, 12)], "video/mp4": [(4, 8)]}
        for start, end in spans.get(ctype or "", [(0, 4)]) if first else []:
            if live.body[start:end] != first[start:end]:
                errors.append(
                    f"{where}: bytes {start}..{end} {live.body[start:end]!r} != recorded {first[start:end]!r}"
                )

    # --- the walk ---

    async def open_socket(self, label: str, path: str) -> None:
        ws = await self.session.ws_connect(self.url + self.ids.text(path))
        live = LiveSocket(label, ws)
        live.start()
        track = self.tracks.setdefault(label, SocketTrack())
        if track.live is not None or track.closed_live:
            # A label reused for a new connection: start a fresh track (not seen in the transcripts).
            raise AssertionError(f"socket label {label!r} reconnected")
        track.live = live

    async def close_socket(self, label: str) -> None:
        await self.sync()
        track = self.tracks[label]
        assert track.live is not None
        await track.live.close()
        track.closed_live = track.live.frames
        track.live = None

    async def run(self) -> None:
        events = self.transcript["events"]
        skipping = False
        for index, event in enumerate(events):
            kind = event["kind"]
            if kind == "note" and self.options.stop_at_note and self.options.stop_at_note in event["text"]:
                break
            if kind == "note" and self.options.skip_notes:
                if self.options.skip_notes[0] in event["text"]:
                    skipping = True
                elif self.options.skip_notes[1] in event["text"]:
                    skipping = False
            if skipping:
                continue
            hook = self.options.before_event.get(index)
            if hook is not None:
                await self.sync()
                result = hook(self, index, event)
                if asyncio.iscoroutine(result):
                    await result
            if kind == "ws":
                if self.options.check_frames:
                    self.tracks.setdefault(event["socket"], SocketTrack()).recorded.append(recorded_frame(event))
            elif kind == "ws_sent":
                await self.sync()
                track = self.tracks[event["socket"]]
                assert track.live is not None
                await track.live.ws.send_str(json.dumps(event["message"]))
            elif kind == "http":
                await self.sync()
                if index in self.options.skip_http:
                    continue
                await self.http(index, event)
            elif kind == "note":
                if m := CONNECT_RE.match(event["text"]):
                    await self.sync()
                    await self.open_socket(m["label"], m["path"])
                elif m := CLOSED_RE.match(event["text"]):
                    await self.close_socket(m["label"])
        await self.sync()

    async def finish(self, settle: float = 0.1) -> None:
        """After the walk: let trailing frames arrive, close what is open, then judge unmatched frames.

        Waits (bounded) until the live queue is empty, so frames that should NOT arrive (scenario 20) had
        their chance, then a short settle for frames still in flight."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SYNC_TIMEOUT
        while loop.time() < deadline:
            async with self.session.get(self.url + "/queue") as resp:
                queue = await resp.json()
            if not queue["queue_running"] and not queue["queue_pending"]:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(settle)
        for track in self.tracks.values():
            if track.live is not None:
                await track.live.close()
                track.closed_live = track.live.frames
                track.live = None
        if self.options.check_frames:
            self.check_unmatched()
