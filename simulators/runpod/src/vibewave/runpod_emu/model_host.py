"""A local model host: the emulator's stand-in for Hugging Face and the other hosts our pods download from.

Vibewave's pods run the bootstrap (`vibewave.pod`), which fetches every file in `VIBEWAVE_MODELS` and checks
its size and sha256. In the emulator there is no internet, and the real files are tens of GB, so the
emulator hosts the files itself: `rewrite_manifest` writes a small stand-in for each entry under
`<work dir>/model-host/` and points the pod's manifest at `/model-host/<folder>/<file>` on the emulator.
This is a stand-in, not a copy: each file is deterministic bytes derived from its `folder/file`, its size
is the real one scaled down (`max(1 KiB, size * scale)`, 1 KiB when the size is unknown), and its checksum
in the rewritten manifest is the stand-in's real sha256, so the bootstrap verifies exactly as it does on
RunPod. An entry without a published checksum keeps `sha256: null` (and a null size stays null), so the
bootstrap's pin-on-first-download path runs too.

It serves like a CDN: `Range` requests get 206 with a `Content-Range`, others the whole file. Per file it
counts requests (whole vs ranged), and faults can be armed for the next N requests of a file: corrupted
bytes, a connection dropped mid-file, a `Range` ignored (200), an error status, or a request held until
released.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import sys
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from vibewave.pod.models import ModelSpec

KIB = 1024
DEFAULT_SCALE = 1e-6
DIRECTORY = "model-host"  # under the emulator's work dir
PREFIX = "/model-host"  # the routes' path on the emulator
MODELS_VARIABLE = "VIBEWAVE_MODELS"
FAULT_KINDS = ("corrupt", "drop", "ignore_range", "fail")


@dataclass
class FileCounters:
    """GET requests for one file; HEAD requests are not counted."""

    full: int = 0  # requests without a Range header
    ranged: int = 0  # requests with one
    authorization: list[str | None] = field(default_factory=list)  # each request's header, None when absent

    @property
    def total(self) -> int:
        return self.full + self.ranged


@dataclass
class _Fault:
    times: int
    status: int = 500  # fail
    at: float = 0.5  # drop: the share of the response sent before the connection is cut


@dataclass(frozen=True)
class StandIn:
    size: int
    sha256: str


def stand_in_bytes(name: str, size: int) -> bytes:
    """`size` bytes that depend only on `name`: the same stand-in on every run, a different one per file."""
    seed = hashlib.sha256(name.encode()).digest()
    blocks: list[bytes] = []
    counter = 0
    while len(blocks) * 32 < size:
        blocks.append(hashlib.sha256(seed + counter.to_bytes(8, "big")).digest())
        counter += 1
    return b"".join(blocks)[:size]


def stand_in_size(size: int | None, scale: float) -> int:
    return KIB if size is None else max(KIB, int(size * scale))


def write_stand_in(directory: Path, folder: str, file: str, size: int | None, scale: float) -> StandIn:
    """Write `directory/<folder>/<file>`, the stand-in for a file of `size` bytes."""
    data = stand_in_bytes(f"{folder}/{file}", stand_in_size(size, scale))
    path = directory / folder / file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return StandIn(len(data), hashlib.sha256(data).hexdigest())


def file_url(base_url: str, folder: str, file: str) -> str:
    return f"{base_url.rstrip('/')}/{urllib.parse.quote(folder)}/{urllib.parse.quote(file)}"


def stand_in_models(
    manifest: list[dict[str, Any]],
    directory: Path,
    scale: float = DEFAULT_SCALE,
    *,
    base_url: str,
    keep_unknown: bool = False,
) -> list[dict[str, Any]]:
    """Write a stand-in for each entry and return the manifest that names them: url `base_url/<folder>/<file>`,
    the stand-ins' real size and sha256. `keep_unknown` keeps a null size or sha256 null, as the real
    manifest has it (the pin path)."""
    entries = []
    for entry in manifest:
        folder, file = entry["folder"], entry["file"]
        stand_in = write_stand_in(directory, folder, file, entry.get("size"), scale)
        entries.append(_named(entry, file_url(base_url, folder, file), stand_in, keep_unknown=keep_unknown))
    return entries


def _named(entry: dict[str, Any], url: str, stand_in: StandIn, *, keep_unknown: bool) -> dict[str, Any]:
    return {
        **entry,
        "url": url,
        "size": None if keep_unknown and entry.get("size") is None else stand_in.size,
        "sha256": None if keep_unknown and entry.get("sha256") is None else stand_in.sha256,
    }


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name}: 'times' must be a non-negative integer")
    return value


def _parse_fault(kind: str, key: str, value: Any) -> _Fault:
    """`corrupt`/`ignore_range`: a count; `drop`: a count or `{times, at}`; `fail`: a count or `{status, times}`."""
    name = f"{kind}[{key!r}]"
    if kind in ("corrupt", "ignore_range") or not isinstance(value, dict):
        return _Fault(_count(value, name))
    allowed = {"times", "at"} if kind == "drop" else {"times", "status"}
    unknown = set(value) - allowed
    if unknown:
        raise ValueError(f"{name}: unknown fields {sorted(unknown)}")
    fault = _Fault(_count(value.get("times", 1), name))
    if kind == "drop":
        at = value.get("at", fault.at)
        if isinstance(at, bool) or not isinstance(at, int | float) or not 0 <= at < 1:
            raise ValueError(f"{name}: 'at' must be a number in [0, 1)")
        fault.at = float(at)
    else:
        status = value.get("status", fault.status)
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise ValueError(f"{name}: 'status' must be an HTTP error status")
        fault.status = status
    return fault


class ModelHost:
    """Stand-in model files under `root`, served by `routes()` at `<prefix>/<folder>/<file>`."""

    def __init__(self, root: Path, *, scale: float = DEFAULT_SCALE, prefix: str = PREFIX) -> None:
        self.root = root
        self.scale = scale
        self.prefix = prefix.rstrip("/")
        self.counters: dict[str, FileCounters] = {}
        self._stand_ins: dict[str, StandIn] = {}
        self._faults: dict[str, dict[str, _Fault]] = {kind: {} for kind in FAULT_KINDS}
        self._gates: dict[str, asyncio.Event] = {}  # armed by `hold`, not yet reached by a request
        self._held: list[tuple[str, asyncio.Event]] = []  # requests waiting at their gate

    @classmethod
    def in_work_dir(cls, work_dir: Path, *, scale: float = DEFAULT_SCALE) -> ModelHost:
        return cls(work_dir / DIRECTORY, scale=scale)

    def routes(self) -> list[web.RouteDef]:
        """`GET` and `HEAD <prefix>/<folder>/<file>`."""
        return [web.get(f"{self.prefix}/{{key:.+}}", self.serve)]

    def add_routes(self, app: web.Application) -> None:
        app.router.add_routes(self.routes())

    def rewrite_manifest(self, env: dict[str, str], base_url: str) -> dict[str, str]:
        """`env` with `VIBEWAVE_MODELS` pointing at stand-ins on this host (reached at `base_url`), written
        now unless they already are. A manifest the bootstrap would refuse is left as it is, for the
        bootstrap to report."""
        raw = env.get(MODELS_VARIABLE)
        if raw is None:
            return dict(env)
        try:
            manifest = json.loads(raw)
            if not isinstance(manifest, list):
                return dict(env)
            specs = [ModelSpec.parse(entry) for entry in manifest]
        except ValueError:  # json.JSONDecodeError included
            return dict(env)
        here = base_url.rstrip("/") + self.prefix
        entries = [
            _named(entry, file_url(here, spec.folder, spec.file), self._stand_in(spec), keep_unknown=True)
            for entry, spec in zip(manifest, specs, strict=True)
        ]
        return {**env, MODELS_VARIABLE: json.dumps(entries)}

    def _stand_in(self, spec: ModelSpec) -> StandIn:
        known = self._stand_ins.get(spec.key)
        if known is None or known.size != stand_in_size(spec.size, self.scale):
            known = self._stand_ins[spec.key] = write_stand_in(self.root, spec.folder, spec.file, spec.size, self.scale)
        return known

    def requests(self, key: str) -> FileCounters:
        return self.counters.setdefault(key, FileCounters())

    def corrupt(self, key: str, times: int = 1) -> None:
        """The next `times` responses for `key` (`folder/file`) carry one flipped byte (a checksum mismatch)."""
        self._arm("corrupt", key, _Fault(times))

    def drop(self, key: str, times: int = 1, at: float = 0.5) -> None:
        """The next `times` responses for `key` stop after `at` of their bytes: the connection is cut."""
        self._arm("drop", key, _Fault(times, at=at))

    def ignore_range(self, key: str, times: int = 1) -> None:
        """The next `times` ranged requests for `key` get the whole file, 200, as some servers answer."""
        self._arm("ignore_range", key, _Fault(times))

    def fail(self, key: str, status: int = 500, times: int = 1) -> None:
        """The next `times` requests for `key` answer `status`."""
        self._arm("fail", key, _Fault(times, status=status))

    def hold(self, key: str) -> asyncio.Event:
        """The next request for `key` waits, before any byte of the answer, until the returned event is set:
        a test can look at a pod mid-download for as long as it needs."""
        gate = self._gates[key] = asyncio.Event()
        return gate

    def _arm(self, kind: str, key: str, fault: _Fault) -> None:
        """One pending fault per kind and file: arming again replaces it, zero times disarms it."""
        if fault.times > 0:
            self._faults[kind][key] = fault
        else:
            self._faults[kind].pop(key, None)

    def configure(self, update: dict[str, Any]) -> None:
        """Arm faults from a JSON body, e.g. `{"corrupt": {"vae/x.safetensors": 1}, "fail": {"vae/x.safetensors":
        {"status": 503, "times": 2}}, "drop": {"…": {"times": 1, "at": 0.4}}, "ignore_range": {"…": 1}}`.
        Everything is checked before anything changes; 0 disarms."""
        armed: list[tuple[str, str, _Fault]] = []
        for kind, faults in update.items():
            if kind not in FAULT_KINDS:
                raise ValueError(f"unknown fault {kind!r}; known: {', '.join(FAULT_KINDS)}")
            if not isinstance(faults, dict):
                raise ValueError(f"{kind}: an object of folder/file to fault")
            armed += [(kind, str(key), _parse_fault(kind, str(key), value)) for key, value in faults.items()]
        for kind, key, fault in armed:
            self._arm(kind, key, fault)

    def reset(self) -> None:
        """Disarm every fault, release held requests and zero the counters (the stand-ins stay)."""
        for faults in self._faults.values():
            faults.clear()
        for gate in [*self._gates.values(), *(gate for _, gate in self._held)]:
            gate.set()
        self._gates.clear()
        self.counters.clear()

    def describe(self) -> dict[str, Any]:
        """Requests per file and the armed faults, in `configure`'s shape; `hold` lists files whose next
        request will wait, `held` those with a request waiting now."""
        counters = {key: self.counters.get(key, FileCounters()) for key in sorted({*self._stand_ins, *self.counters})}
        faults: dict[str, Any] = {
            "corrupt": {key: f.times for key, f in self._faults["corrupt"].items()},
            "drop": {key: {"times": f.times, "at": f.at} for key, f in self._faults["drop"].items()},
            "ignore_range": {key: f.times for key, f in self._faults["ignore_range"].items()},
            "fail": {key: {"status": f.status, "times": f.times} for key, f in self._faults["fail"].items()},
            "hold": sorted(self._gates),
            "held": sorted(key for key, _ in self._held),
        }
        return {
            "files": {key: {"full": c.full, "ranged": c.ranged} for key, c in counters.items()},
            "faults": faults,
        }

    def _take(self, kind: str, key: str) -> _Fault | None:
        fault = self._faults[kind].get(key)
        if fault is None:
            return None
        fault.times -= 1
        if fault.times <= 0:
            del self._faults[kind][key]
        return fault

    def _locate(self, key: str) -> Path | None:
        target = (self.root / key).resolve()
        return target if self.root.resolve() in target.parents and target.is_file() else None

    async def serve(self, request: web.Request) -> web.StreamResponse:
        """One stand-in file, whole or the asked-for range."""
        key = request.match_info["key"]
        target = self._locate(key)
        ranged = "Range" in request.headers
        if request.method == "HEAD":
            return await self._head(request, target, ranged)
        counters = self.requests(key)
        if ranged:
            counters.ranged += 1
        else:
            counters.full += 1
        counters.authorization.append(request.headers.get("Authorization"))
        if target is None:
            return web.Response(status=404, text="not found")
        gate = self._gates.pop(key, None)
        if gate is not None:
            held = (key, gate)
            self._held.append(held)
            try:
                await gate.wait()
            finally:
                self._held.remove(held)
        fail = self._take("fail", key)
        if fail is not None:
            return web.Response(status=fail.status, text=f"fault: {fail.status}")
        data = await asyncio.to_thread(target.read_bytes)
        status, headers = 200, {"Accept-Ranges": "bytes"}
        span = _range(request) if ranged and self._take("ignore_range", key) is None else None
        if span is not None:
            start, end = span[0], min(span[1], len(data) - 1)
            if start >= len(data):
                return web.Response(status=416, headers={"Content-Range": f"bytes */{len(data)}"})
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            status, data = 206, data[start : end + 1]
        if self._take("corrupt", key) is not None and data:
            middle = len(data) // 2
            data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]
        drop = self._take("drop", key)
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = len(data)
        await response.prepare(request)
        if drop is not None:
            await response.write(data[: int(len(data) * drop.at)])
            assert request.transport is not None
            request.transport.close()  # mid-body: the client sees the connection end early
            return response
        await response.write(data)
        await response.write_eof()
        return response

    async def _head(self, request: web.Request, target: Path | None, ranged: bool) -> web.StreamResponse:
        """What a GET would answer, without the body, faults or counting."""
        if target is None:
            return web.Response(status=404)
        size = (await asyncio.to_thread(target.stat)).st_size
        headers = {"Accept-Ranges": "bytes"}
        span = _range(request) if ranged else None
        length, status = size, 200
        if span is not None:
            start, end = span[0], min(span[1], size - 1)
            if start >= size:
                return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            length, status = end - start + 1, 206
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = length
        await response.prepare(request)
        await response.write_eof()
        return response


def _range(request: web.Request) -> tuple[int, int] | None:
    """`(first, last)` byte of a `bytes=first-[last]` header (an open end is unbounded); None for any other
    form, which a server may ignore."""
    match = re.fullmatch(r"bytes=(\d+)-(\d*)", request.headers.get("Range", ""))
    if match is None:
        return None
    first, last = int(match[1]), int(match[2]) if match[2] else sys.maxsize
    return (first, last) if first <= last else None
