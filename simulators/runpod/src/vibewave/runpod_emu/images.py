"""The images the emulator knows, and what their containers run when the pod has no start command.

A pod's start command (GraphQL `dockerArgs`, REST v2 `args`) replaces an image's CMD, as Docker does with a
split command; an image with an ENTRYPOINT gets the start command as the entrypoint's arguments instead
(reference §1.4). What each image would run is emulated by a process on this machine:

* `runpod/pytorch:*` (CMD `/start.sh`, reference §1.1-§1.3): nginx on 3001/7861/8081/8001/9091, sshd if
  `PUBLIC_KEY`, JupyterLab on 8888 if `JUPYTER_PASSWORD`, then `sleep infinity`. None of those services is
  emulated and none of them uses 8188, so the container is a process that sleeps.
* `runpod/comfyui:*` (ENTRYPOINT `/start.sh`, reference §2.1): ComfyUI on 0.0.0.0:8188 without auth, installed
  below `/workspace/runpod-slim/ComfyUI`. Its start.sh ignores its arguments, so a start command changes
  nothing. Emulated by the ComfyUI simulator as the container's main process.
* `vibewave/pod:*` (our image, `deploy/pod/Dockerfile`): the bootstrap baked in, ComfyUI preinstalled.
* anything else: an image the emulator cannot run; its container sleeps and nothing serves 8188.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from enum import Enum


class Runs(Enum):
    """What an image's default process does in the emulator."""

    SLEEP = "sleep"
    COMFYUI = "comfyui"
    BOOTSTRAP = "bootstrap"


@dataclass(frozen=True)
class Image:
    pattern: str
    runs: Runs
    # The image's own CMD / ENTRYPOINT, as its Dockerfile declares them (shown in the pod's description).
    cmd: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    description: str = ""


UNKNOWN_IMAGE = Image(
    "*", Runs.SLEEP, description="image not in the emulator's catalogue: nothing serves 8188 (the container sleeps)"
)

IMAGES: tuple[Image, ...] = (
    Image(
        "runpod/pytorch:*",
        Runs.SLEEP,
        cmd=("/start.sh",),
        description="RunPod's PyTorch image: /start.sh starts nginx, sshd (PUBLIC_KEY) and JupyterLab "
        "(JUPYTER_PASSWORD), none of them on 8188, then sleeps; emulated by a process that sleeps, "
        "nothing serves 8188",
    ),
    Image(
        "runpod/comfyui:*",
        Runs.COMFYUI,
        entrypoint=("/start.sh",),
        description="RunPod's ComfyUI image: ComfyUI on 0.0.0.0:8188 without auth (emulated by the ComfyUI "
        "simulator); its ENTRYPOINT ignores a start command",
    ),
    Image(
        "vibewave/pod:*",
        Runs.BOOTSTRAP,
        cmd=("python3", "/opt/vibewave/bootstrap.pyz"),
        description="Vibewave's pod image: the bootstrap baked in, ComfyUI preinstalled (emulated by the "
        "ComfyUI simulator the bootstrap starts)",
    ),
)


def lookup(image_name: str) -> Image:
    """The catalogue entry of an image reference (`docker.io/` and a missing tag are normalised as Docker does)."""
    name = image_name.strip().removeprefix("docker.io/")
    if ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return next((image for image in IMAGES if fnmatch.fnmatchcase(name, image.pattern)), UNKNOWN_IMAGE)
