"""The Python 3.10 the default RunPod image runs the bootstrap with, when this machine has one."""

from __future__ import annotations

import functools
import glob
import os
import shutil
import subprocess


@functools.cache
def python310() -> str | None:
    """A working `python3.10` (on PATH, or a pyenv build), or None. pyenv's shim on PATH may exist and fail."""
    candidates = [
        shutil.which("python3.10"),
        *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.10*/bin/python3.10"))),
    ]
    for candidate in candidates:
        if not candidate:
            continue
        try:
            done = subprocess.run(
                [candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 10))"],
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0 and done.stdout.strip() == "True":
            return candidate
    return None
