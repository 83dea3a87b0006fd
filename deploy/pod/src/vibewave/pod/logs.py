"""One log line per event, prefixed so RunPod's pod log tells the bootstrap from ComfyUI's own output.

Every line also goes to the bootstrap's log file on the volume (kept after the pod is gone). Secrets
registered with `redact` are masked in every line, whatever code formatted it.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import TextIO

PREFIX = "vibewave-bootstrap:"

_lock = threading.Lock()
_secrets: list[str] = []
_file: TextIO | None = None


def redact(secret: str | None) -> None:
    """Mask `secret` in every later line (the proxy token, the Hugging Face token)."""
    if secret and secret not in _secrets:
        _secrets.append(secret)


def scrub(text: str) -> str:
    for secret in _secrets:
        text = text.replace(secret, "***")
    return text


def to_file(path: Path) -> None:
    """Also append every line to `path` (opened once, line-buffered)."""
    global _file
    path.parent.mkdir(parents=True, exist_ok=True)
    with _lock:
        _file = path.open("a", encoding="utf-8", buffering=1)


def say(message: str) -> None:
    line = f"{PREFIX} {scrub(message)}\n"
    with _lock:
        sys.stdout.write(line)
        sys.stdout.flush()
        if _file is not None:
            _file.write(line)


def echo(line: str, file: TextIO | None) -> None:
    """Mirror one line of a child's output (ComfyUI, pip, the proxy) to stdout and to its own log file."""
    line = scrub(line if line.endswith("\n") else line + "\n")
    with _lock:
        sys.stdout.write(line)
        sys.stdout.flush()
    if file is not None:
        file.write(line)
        file.flush()


def human_bytes(n: float | None) -> str:
    if n is None:
        return "unknown size"
    for scale, unit in ((1e9, "GB"), (1e6, "MB"), (1e3, "KB")):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"
