"""The status document: what this pod is doing, for `GET /vibewave/status` (the proxy reads the file).

The phase is derived from the steps' state, not set by them: install and downloads run at the same time,
so the phase is the first unfinished step, `failed` as soon as one step fails, and `ready` when ComfyUI
answers. The file is per pod (`status-<pod id>.json`), since several pods may share the volume.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from vibewave.pod import logs
from vibewave.pod.files import write_json

MODEL_STATES = ("present", "downloading", "verifying", "failed")
WRITE_INTERVAL = 1.0  # seconds between progress-driven writes; state changes are written at once


class Status:
    def __init__(self, path: Path, *, workspace: Path, network_volume: bool, pod_id: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._written = 0.0
        self._installed = False
        self._downloaded = False
        self._error: str | None = None
        self._doc: dict[str, Any] = {
            "pod_id": pod_id,
            "install": {"skipped": False, "mode": None, "comfyui_commit": None},
            "models": [],
            "comfyui": {"up": False, "restarts": 0, "pid": None},
            "volume": {"path": str(workspace), "network_volume": network_volume},
        }

    @property
    def failed(self) -> bool:
        return self._error is not None

    def phase(self) -> str:
        if self._error is not None:
            return "failed"
        if not self._installed:
            return "installing"
        if not self._downloaded:
            return "downloading"
        return "ready" if self._doc["comfyui"]["up"] else "starting"

    def install(self, *, mode: str, commit: str, skipped: bool = False, done: bool = False) -> None:
        with self._lock:
            self._doc["install"] = {"skipped": skipped, "mode": mode, "comfyui_commit": commit}
            self._installed = self._installed or done
        self.write()

    def models(self, entries: list[dict[str, Any]]) -> None:
        """The files this pod needs, in manifest order: `{folder, file, size, bytes, state}` each."""
        with self._lock:
            self._doc["models"] = [dict(entry) for entry in entries]
            self._downloaded = not entries
        self.write()

    def model(self, key: str, *, state: str, done: int | None = None, size: int | None = None) -> None:
        """One file's progress; throttled unless its state changes."""
        assert state in MODEL_STATES, state
        changed = False
        with self._lock:
            for entry in self._doc["models"]:
                if f"{entry['folder']}/{entry['file']}" == key:
                    changed = entry["state"] != state
                    entry["state"] = state
                    if done is not None:
                        entry["bytes"] = done
                    if size is not None:
                        entry["size"] = size
            self._downloaded = all(entry["state"] == "present" for entry in self._doc["models"])
        self.write(force=changed)

    def comfyui(self, **fields: Any) -> None:
        """`up`, `restarts`, `pid`."""
        with self._lock:
            self._doc["comfyui"].update(fields)
        self.write()

    def fail(self, error: str) -> None:
        """The first failure wins: it is the one that explains the others."""
        with self._lock:
            if self._error is None:
                self._error = logs.scrub(error)
        self.write()

    def document(self) -> dict[str, Any]:
        with self._lock:
            return {**self._doc, "phase": self.phase(), "error": self._error, "updated_at": time.time()}

    def write(self, force: bool = True) -> None:
        now = time.monotonic()
        if not force and now - self._written < WRITE_INTERVAL:
            return
        self._written = now
        with self._write_lock:  # taken and written in one go: the file never goes back to an older document
            write_json(self.path, self.document())
