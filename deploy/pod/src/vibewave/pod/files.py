"""File plumbing shared by the bootstrap steps: locks between pods on one volume, atomic writes."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vibewave.pod import logs


class Stopped(Exception):
    """The pod is shutting down (SIGTERM): the step in progress gives up where it is."""


@contextlib.contextmanager
def flock(path: Path, what: str, stop: threading.Event | None = None) -> Iterator[None]:
    """Hold an exclusive `fcntl.flock` on `path` (another pod on the same volume may hold it: wait, say so once).

    The wait polls, so a SIGTERM (`stop`) still ends it. The lock goes with the file descriptor, so a pod
    that dies mid-install or mid-download frees it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited:
                    logs.say(f"another pod on this volume holds the lock for {what}; waiting for it")
                    waited = True
                if stop is not None and stop.wait(0.5):
                    raise Stopped from None
                if stop is None:
                    time.sleep(0.5)
        yield
    finally:
        os.close(fd)  # also releases the lock


def write_json(path: Path, document: Any) -> None:
    """Write-then-rename, so a reader (the proxy, another pod) never sees half a document."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    """The document at `path`, or None when there is none or it cannot be read."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
