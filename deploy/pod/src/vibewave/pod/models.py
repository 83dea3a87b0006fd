"""Model files onto the volume: fetched once, resumable, verified before ComfyUI can see them.

A file is written as `<file>.part` (ComfyUI lists only model extensions, so it never sees a partial file),
resumed with an HTTP `Range` from the length already there, checked against the manifest's size and
sha256, and only then renamed to its final name. `models.lock.json` keeps the sha256 of every verified
file, so a later boot checks a present file by size and mtime instead of reading 20 GB again, and it pins
the hash of a file the manifest has no checksum for (`sha256: null`): later downloads must match the pin.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from vibewave.pod import logs
from vibewave.pod.files import Stopped, flock, read_json, write_json

FOLDERS = ("checkpoints", "diffusion_models", "text_encoders", "vae", "loras")
"""ComfyUI `folder_paths` names; `extra_model_paths.yaml` maps each to `models/<folder>/` on the volume."""
CHUNK = 1 << 20
PROGRESS_INTERVAL = 5.0  # seconds between progress lines of one file (and one at 100 %)
USER_AGENT = "vibewave-pod-bootstrap/0.1 (urllib)"
HF_HOSTS = frozenset({"huggingface.co"})

Progress = Callable[[str, int, "int | None"], None]
"""`(state, bytes done, total or None)`; state is `downloading`, `verifying` or `present`."""


@dataclass(frozen=True)
class ModelSpec:
    folder: str
    file: str
    url: str
    size: int | None
    sha256: str | None

    @property
    def key(self) -> str:
        return f"{self.folder}/{self.file}"

    @classmethod
    def parse(cls, entry: object) -> ModelSpec:
        """One `VIBEWAVE_MODELS` entry, checked: a bad manifest fails the boot, not a download hours later."""
        if not isinstance(entry, Mapping):
            raise ValueError(f"each entry must be an object, not {entry!r}")
        folder, file, url = entry.get("folder"), entry.get("file"), entry.get("url")
        size, sha256 = entry.get("size"), entry.get("sha256")
        if folder not in FOLDERS:
            raise ValueError(f"folder {folder!r} is not one of {', '.join(FOLDERS)}")
        if not isinstance(file, str) or not file or "/" in file or file.startswith(".") or file.endswith(".part"):
            raise ValueError(f"file {file!r} must be a plain file name")
        if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"{file}: url {url!r} must be http(s)")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise ValueError(f"{file}: size {size!r} must be a byte count or null")
        if sha256 is not None and (not isinstance(sha256, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", sha256)):
            raise ValueError(f"{file}: sha256 {sha256!r} must be 64 hex digits or null")
        return cls(folder=folder, file=file, url=url, size=size, sha256=sha256.lower() if sha256 else None)


class FetchError(Exception):
    """A file could not be fetched and verified within its attempts: the pod reports it and stops trying."""


class _Interrupted(ConnectionError):
    """The transfer ended early; what arrived stays in `.part` and the next attempt resumes from there."""


class _Mismatch(Exception):
    """What arrived is not the file the manifest names (size or sha256): it is deleted, not resumed."""


class ModelLock:
    """`models.lock.json`: `{folder/file: {sha256, size, mtime_ns, pinned}}`, shared by the pods on a volume."""

    def __init__(self, path: Path, lock_path: Path) -> None:
        self.path = path
        self.lock_path = lock_path
        self._threads = threading.Lock()  # a flock is per open file: this pod's own downloads queue here

    def get(self, key: str) -> dict[str, Any] | None:
        document = read_json(self.path)
        entry = document.get(key) if isinstance(document, dict) else None
        return entry if isinstance(entry, dict) else None

    def record(self, key: str, *, sha256: str, size: int, mtime_ns: int, pinned: bool) -> None:
        """`pinned`: the hash was computed here because the manifest has none; later boots must match it."""
        with self._threads, flock(self.lock_path, "models.lock.json"):
            document = read_json(self.path)
            if not isinstance(document, dict):
                document = {}
            document[key] = {"sha256": sha256, "size": size, "mtime_ns": mtime_ns, "pinned": pinned}
            write_json(self.path, document)


class _Hasher:
    """The sha256 of exactly the bytes in `.part` so far, so a finished download needs no second read."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.digest = hashlib.sha256()
        self.count = 0

    def update(self, data: bytes) -> None:
        self.digest.update(data)
        self.count += len(data)


class _Meter:
    """A log line at most every PROGRESS_INTERVAL seconds, and one when the file is complete."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.last_line = time.monotonic()
        self.start: tuple[float, int] | None = None  # when and at which byte the first transfer began
        self.finished = False

    def begin(self, done: int) -> None:
        """The first transfer starts (at a resumed part's length): the rate counts what comes after."""
        if self.start is None:
            self.start = (time.monotonic(), done)

    def update(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        self.begin(done)
        assert self.start is not None
        complete = total is not None and done >= total
        if (complete and not self.finished) or (not complete and now - self.last_line >= PROGRESS_INTERVAL):
            self.finished = complete
            self.last_line = now
            rate = (done - self.start[1]) / max(now - self.start[0], 1e-3)
            share = f" ({100 * done / total:.0f} %)" if total else ""
            logs.say(
                f"{self.key}: {logs.human_bytes(done)} of {logs.human_bytes(total)}{share}, {logs.human_bytes(rate)}/s"
            )


class HFRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects (Hugging Face sends downloads to a CDN); the token goes to huggingface.co only."""

    def __init__(self, hf_token: str | None) -> None:
        self.hf_token = hf_token

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        # Python 3.10's handler knows 307 but not 308; for a GET they mean the same here.
        new = super().redirect_request(req, fp, 307 if code == 308 else code, msg, headers, newurl)
        if new is not None:
            authorize(new, self.hf_token)
        return new

    http_error_308 = urllib.request.HTTPRedirectHandler.http_error_302


def authorize(request: urllib.request.Request, hf_token: str | None) -> None:
    """`Authorization: Bearer $HF_TOKEN` on a request to huggingface.co, on no other host.

    Unredirected: urllib copies ordinary headers onto a redirect, so the CDN host would get it otherwise.
    """
    if hf_token and urllib.parse.urlsplit(request.full_url).hostname in HF_HOSTS:
        request.add_unredirected_header("Authorization", f"Bearer {hf_token}")


def hash_file(path: Path, progress: Progress | None = None, stop: threading.Event | None = None) -> str:
    digest = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with path.open("rb") as f:
        while chunk := f.read(4 * CHUNK):
            if stop is not None and stop.is_set():
                raise Stopped
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress("verifying", done, total)
    return digest.hexdigest()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """`bytes 100-199/1000` → (100, 1000); `bytes */1000` → (None, 1000); total None when `*`."""
    match = re.fullmatch(r"bytes (?:(\d+)-\d+|\*)/(\d+|\*)", (value or "").strip())
    if match is None:
        return None, None
    start, total = match.groups()
    return (int(start) if start else None), (int(total) if total and total != "*" else None)


def _describe(error: BaseException) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return f"{error.reason}"
    if isinstance(error, _Interrupted):
        return str(error)
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


@dataclass
class Fetcher:
    models_dir: Path
    locks_dir: Path
    lock: ModelLock
    hf_token: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    attempts: int = 3  # complete downloads that may fail verification before the file is given up
    stalls: int = 6  # attempts in a row that add no byte (server down, 5xx) before it is given up
    backoff: float = 2.0  # seconds, doubled per failure, at most 60
    timeout: float = 30.0  # every connect and every read

    def __post_init__(self) -> None:
        self._opener = urllib.request.build_opener(HFRedirects(self.hf_token))

    def ensure(self, spec: ModelSpec, progress: Progress) -> Path:
        """`models/<folder>/<file>`, verified; downloaded if missing. Raises FetchError or Stopped."""
        with flock(self.locks_dir / f"model-{spec.folder}-{spec.file}.lock", spec.key, self.stop):
            final = self.models_dir / spec.folder / spec.file
            if not self.present(spec, progress):
                self.download(spec, progress)
            return final

    def present(self, spec: ModelSpec, progress: Progress) -> bool:
        """Is the final file there and right? Cheap (size and mtime against the lock) when the lock knows it.

        A file that is there but wrong (another size, another hash) is deleted, so it is fetched again.
        """
        final = self.models_dir / spec.folder / spec.file
        try:
            st = final.stat()
        except FileNotFoundError:
            return False
        record = self.lock.get(spec.key)
        expected = spec.size if spec.size is not None else (record or {}).get("size")
        if expected is not None and st.st_size != expected:
            logs.say(f"{spec.key}: on the volume with {st.st_size} bytes, not {expected}: fetching it again")
            final.unlink()
            return False
        if (
            record is not None
            and record.get("size") == st.st_size
            and record.get("mtime_ns") == st.st_mtime_ns
            and (spec.sha256 is None or record.get("sha256") == spec.sha256)
        ):
            progress("present", st.st_size, st.st_size)
            return True
        logs.say(f"{spec.key}: on the volume, not yet verified here: checking its sha256")
        digest = hash_file(final, progress, self.stop)
        wanted = spec.sha256 or (record.get("sha256") if record and record.get("pinned") else None)
        if wanted is not None and digest != wanted:
            logs.say(f"{spec.key}: sha256 {digest} is not {wanted}: deleting it and fetching it again")
            final.unlink()
            return False
        self.lock.record(spec.key, sha256=digest, size=st.st_size, mtime_ns=st.st_mtime_ns, pinned=spec.sha256 is None)
        progress("present", st.st_size, st.st_size)
        logs.say(f"{spec.key}: present, sha256 {'verified' if wanted else 'pinned'}")
        return True

    def download(self, spec: ModelSpec, progress: Progress) -> None:
        final = self.models_dir / spec.folder / spec.file
        part = final.with_name(final.name + ".part")
        final.parent.mkdir(parents=True, exist_ok=True)
        hasher, meter = _Hasher(), _Meter(spec.key)
        failures = stalls = 0
        if _size(part):
            logs.say(f"{spec.key}: resuming the download at {logs.human_bytes(_size(part))}")
        else:
            logs.say(f"{spec.key}: downloading {logs.human_bytes(spec.size)} from {spec.url}")
        while True:
            if self.stop.is_set():
                raise Stopped
            before = _size(part)
            try:
                self._transfer(spec, part, hasher, meter, progress)
                problem = self._verify(spec, part, hasher, progress)
            except (_Interrupted, OSError, http.client.HTTPException) as e:
                stalls = 0 if _size(part) > before else stalls + 1
                if stalls >= self.stalls:
                    raise FetchError(f"{spec.key}: {_describe(e)}; gave up after {stalls} attempts in a row") from e
                delay = self._delay(max(stalls, 1))
                logs.say(
                    f"{spec.key}: transfer stopped at {logs.human_bytes(_size(part))} ({_describe(e)}); "
                    f"resuming in {delay:.0f} s"
                )
                self._sleep(delay)
                continue
            except _Mismatch as e:
                problem = str(e)
            if problem is None:
                with part.open("rb+") as f:  # on disk before its name says it is whole (a host crash)
                    os.fsync(f.fileno())
                os.replace(part, final)
                st = final.stat()
                self.lock.record(
                    spec.key, sha256=hasher.digest.hexdigest(), size=st.st_size, mtime_ns=st.st_mtime_ns,
                    pinned=spec.sha256 is None,
                )  # fmt: skip
                progress("present", st.st_size, st.st_size)
                logs.say(f"{spec.key}: verified and in place ({logs.human_bytes(st.st_size)})")
                return
            failures += 1
            part.unlink(missing_ok=True)
            hasher.reset()
            if failures >= self.attempts:
                raise FetchError(f"{spec.key}: {problem}; gave up after {failures} downloads")
            delay = self._delay(failures)
            logs.say(f"{spec.key}: {problem}; deleted the download, retrying in {delay:.0f} s")
            self._sleep(delay)

    def _transfer(self, spec: ModelSpec, part: Path, hasher: _Hasher, meter: _Meter, progress: Progress) -> None:
        """Bring `.part` to the whole file, from where it is (a `Range` request) or from zero."""
        have = _size(part)
        if spec.size is not None and have > spec.size:
            part.unlink()
            have = 0
        self._catch_up(part, hasher, progress)
        if have and have == spec.size:
            return  # complete from an earlier boot that stopped before verifying
        request = urllib.request.Request(spec.url, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
        if have:
            request.add_header("Range", f"bytes={have}-")
        authorize(request, self.hf_token)
        try:
            response = self._opener.open(request, timeout=self.timeout)
        except urllib.error.HTTPError as e:
            e.close()
            if e.code == 416 and have:
                if _content_range(e.headers.get("Content-Range"))[1] == have:
                    return  # the server says the part already holds the whole file
                part.unlink()
                hasher.reset()
                raise _Interrupted("the server cannot resume this part; starting over") from e
            if 400 <= e.code < 500 and e.code not in (408, 425, 429):
                raise FetchError(f"{spec.key}: {spec.url} answered HTTP {e.code} {e.reason}") from e
            raise
        with response:
            if response.status == 206:
                start, total = _content_range(response.headers.get("Content-Range"))
                if start != have:
                    part.unlink()
                    hasher.reset()
                    raise _Interrupted(f"the server resumed at byte {start}, not {have}; starting over")
                mode = "ab"
            else:
                if have:
                    logs.say(f"{spec.key}: the server ignored the Range request; starting over")
                have = 0
                hasher.reset()
                mode = "wb"
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
            if total is not None and spec.size is not None and total != spec.size:
                raise _Mismatch(f"the server has {total} bytes, the manifest says {spec.size}")
            progress("downloading", have, total if total is not None else spec.size)
            meter.begin(have)
            with part.open(mode) as out:
                while chunk := response.read(CHUNK):
                    if self.stop.is_set():
                        raise Stopped
                    out.write(chunk)
                    hasher.update(chunk)
                    have += len(chunk)
                    progress("downloading", have, total)
                    meter.update(have, total)
        if total is not None and have < total:
            raise _Interrupted(f"the connection closed at byte {have} of {total}")

    def _catch_up(self, part: Path, hasher: _Hasher, progress: Progress) -> None:
        """Make the running hash cover exactly what `.part` holds (a part left by an earlier boot, say)."""
        size = _size(part)
        if hasher.count == size:
            return
        if hasher.count > size:
            hasher.reset()
        with part.open("rb") as f:
            f.seek(hasher.count)
            while hasher.count < size and (chunk := f.read(min(4 * CHUNK, size - hasher.count))):
                if self.stop.is_set():
                    raise Stopped
                hasher.update(chunk)
                progress("verifying", hasher.count, size)

    def _verify(self, spec: ModelSpec, part: Path, hasher: _Hasher, progress: Progress) -> str | None:
        """None if `.part` is the file the manifest (or the pin) names, else what is wrong with it."""
        size = _size(part)
        if spec.size is not None and size != spec.size:
            return f"the download has {size} bytes, the manifest says {spec.size}"
        self._catch_up(part, hasher, progress)
        progress("verifying", size, size)
        digest = hasher.digest.hexdigest()
        if spec.sha256 is not None:
            return None if digest == spec.sha256 else f"sha256 {digest} does not match the manifest's {spec.sha256}"
        record = self.lock.get(spec.key)
        if record is not None and record.get("pinned") and record.get("sha256") != digest:
            return f"sha256 {digest} does not match {record.get('sha256')}, pinned on this volume's first download"
        return None

    def _delay(self, failures: int) -> float:
        return float(min(self.backoff * 2 ** (failures - 1), 60.0))

    def _sleep(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise Stopped
