"""What pod-manager gives RunPod: one start command and a few environment variables.

No image of ours is hosted anywhere, so the bootstrap itself travels in the pod's environment: a zip
archive (`python3 archive.pyz` runs its `__main__.py`) of the bootstrap modules, base64 in
`VIBEWAVE_BOOTSTRAP`. The start command decodes it into a fresh temporary directory and runs it with the
image's `python3`. It uses single quotes only: runpod-python pastes `dockerArgs` into its GraphQL text
unescaped, where a double quote would end the string.

`python -m vibewave.pod.payload pyz OUT` writes the archive (for the Dockerfile); `... command` prints
the start command.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import sys
import zipfile
from pathlib import Path
from typing import Any

from vibewave.pod.config import PINNED_COMFYUI_REF
from vibewave.pod.models import ModelSpec

PINNED = PINNED_COMFYUI_REF

BOOTSTRAP_MODULES = (
    "__init__.py",
    "__main__.py",
    "bootstrap.py",
    "config.py",
    "files.py",
    "install.py",
    "logs.py",
    "models.py",
    "procs.py",
    "status.py",
    "supervise.py",
    "token_proxy.py",
)
"""The files of this package that run on the pod: standard library only (the proxy: plus aiohttp), Python 3.10."""
PACKAGE_DIR = Path(__file__).parent
ENV_BUDGET = 60_000
"""Bytes of environment (names and values) a pod may carry: RunPod refuses create bodies over 102,400."""

START_COMMAND = (
    "bash -c '"
    "set -e; "
    "if test ${#VIBEWAVE_BOOTSTRAP} -eq 0; then echo vibewave-bootstrap: VIBEWAVE_BOOTSTRAP is empty >&2; exit 64; fi; "
    "d=$(mktemp -d); "
    "printf %s $VIBEWAVE_BOOTSTRAP | base64 -d > $d/bootstrap.pyz; "
    "exec python3 $d/bootstrap.pyz"
    "'"
)
"""The pod's start command (RunPod `dockerArgs`, or the one string of REST `args`). Unquoted expansions are
safe here: base64 and `mktemp -d` paths hold no blanks or glob characters."""


@functools.lru_cache(maxsize=1)
def bootstrap_archive() -> bytes:
    """The bootstrap as a runnable zip, byte for byte the same for the same source files.

    Entries are sorted and carry a fixed date and mode; the directory entries are there because Python
    3.10's zipimport finds the `vibewave` namespace package only through one.
    """
    buffer = io.BytesIO()
    buffer.write(b"#!/usr/bin/env python3\n")
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for directory in ("vibewave/", "vibewave/pod/"):
            archive.writestr(_entry(directory, 0o40755), b"")
        entries = {"__main__.py": PACKAGE_DIR / "__main__.py"}
        entries.update({f"vibewave/pod/{name}": PACKAGE_DIR / name for name in BOOTSTRAP_MODULES})
        for name in sorted(entries):
            archive.writestr(_entry(name, 0o100644), entries[name].read_bytes())
    return buffer.getvalue()


def _entry(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.external_attr = mode << 16
    info.compress_type = zipfile.ZIP_STORED if name.endswith("/") else zipfile.ZIP_DEFLATED
    info.create_system = 3  # Unix, whatever builds it
    return info


def pod_env(token: str, models: list[dict[str, Any]], *, comfyui_ref: str = PINNED) -> dict[str, str]:
    """The variables pod-manager adds to a pod's `env`: the bootstrap, the proxy token, the model manifest.

    `models` entries are `{folder, file, url, size, sha256}` (checked here, so a bad manifest fails at
    pod-manager, not on the pod); `VIBEWAVE_COMFYUI_REF` is added only for a ComfyUI other than the pinned one.
    """
    if not token or token != token.strip():
        raise ValueError("the proxy token must be a non-empty string without surrounding blanks")
    for entry in models:
        ModelSpec.parse(entry)
    env = {
        "VIBEWAVE_BOOTSTRAP": base64.b64encode(bootstrap_archive()).decode("ascii"),
        "COMFY_PROXY_TOKEN": token,
        "VIBEWAVE_MODELS": json.dumps(models, separators=(",", ":")),
    }
    if comfyui_ref != PINNED:
        env["VIBEWAVE_COMFYUI_REF"] = comfyui_ref
    size = env_size(env)
    if size > ENV_BUDGET:
        raise ValueError(f"the pod environment would take {size} bytes, over the budget of {ENV_BUDGET}")
    return env


def env_size(env: dict[str, str]) -> int:
    return sum(len(k.encode()) + len(v.encode()) for k, v in env.items())


def main(argv: list[str]) -> int:
    if argv[:1] == ["pyz"] and len(argv) == 2:
        Path(argv[1]).write_bytes(bootstrap_archive())
        return 0
    if argv == ["command"]:
        print(START_COMMAND)
        return 0
    print("usage: python -m vibewave.pod.payload pyz OUT | command", file=sys.stderr)
    return 64


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
