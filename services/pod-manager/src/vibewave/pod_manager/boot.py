"""What a new RunPod pod boots: our bootstrap (`deploy/pod`), the fleet's model files, the pod's token.

The fleet's model set is the files of the workflows in POD_WORKFLOWS (optional files only with
POD_OPTIONAL_MODELS), as their folders' `models.json` declare them, with POD_MODELS_FILE replacing a
file's source, size and checksum (a private mirror; tests' scaled-down stand-ins). Every new pod fetches
exactly this set, so it is also what readiness checks against ComfyUI's own listing. Without a network
volume the set, ComfyUI and its Python packages must fit the container disk: a start-up check says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import msgspec

from vibewave.contracts.workflows import ModelFile, Workflow
from vibewave.pod.payload import START_COMMAND, pod_env
from vibewave.pod_manager.providers.base import PodBoot
from vibewave.runtime.pod_token import pod_token
from vibewave.runtime.process import ConfigurationError
from vibewave.runtime.settings import Secret

log = logging.getLogger("vibewave.pod_manager.boot")

INSTALL_BYTES = 12 * 10**9  # ComfyUI, a torch 2.8 + CUDA 12.8 venv and its packages, outputs: about 12 GB
GB = 10**9


@dataclass(frozen=True)
class ModelSet:
    files: tuple[ModelFile, ...]

    @property
    def keys(self) -> list[str]:
        return [m.key for m in self.files]

    @property
    def known_bytes(self) -> int:
        return sum(m.size or 0 for m in self.files)

    def describe(self) -> str:
        unknown = sum(1 for m in self.files if m.size is None)
        extra = f" and {unknown} of unpublished size" if unknown else ""
        return f"{len(self.files)} model files ({self.known_bytes / GB:.1f} GB{extra})"


def fleet_models(
    catalog: dict[str, Workflow], workflows: list[str] | None, *, optional: bool, overrides: Path | None
) -> ModelSet:
    """The files every new pod fetches. `workflows` None: every workflow of the catalogue."""
    names = list(catalog) if workflows is None else workflows
    unknown = [n for n in names if n not in catalog]
    if unknown:
        raise ConfigurationError(
            f"POD_WORKFLOWS names unknown workflows {unknown}; known: {', '.join(sorted(catalog))}"
        )
    replacements = _read_overrides(overrides) if overrides else {}
    chosen: dict[str, ModelFile] = {}
    for name in names:
        for model in catalog[name].models:
            if model.optional and not optional:
                continue
            chosen.setdefault(model.key, replacements.pop(model.key, model))
    for key in replacements:
        log.warning("POD_MODELS_FILE entry %s is not a file of POD_WORKFLOWS; ignored", key)
    return ModelSet(tuple(chosen.values()))


def _read_overrides(path: Path) -> dict[str, ModelFile]:
    try:
        entries = msgspec.json.decode(path.read_bytes(), type=list[ModelFile])
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ConfigurationError(f"POD_MODELS_FILE={path} is not a readable model list: {exc}") from None
    return {m.key: m for m in entries}


def check_disk(models: ModelSet, container_disk_gb: int, network_volume: str | None) -> None:
    """On the container disk the models, the install and outputs must fit; a volume has its own size."""
    if network_volume:
        log.info("pods mount network volume %s at /workspace: ComfyUI and the models (%s) are fetched once and "
                 "kept there across pods", network_volume, models.describe())  # fmt: skip
        return
    needed = models.known_bytes + INSTALL_BYTES
    if needed > container_disk_gb * GB:
        raise ConfigurationError(
            f"the fleet's models ({models.describe()}) and the ComfyUI install (~{INSTALL_BYTES // GB} GB) need "
            f"{needed / GB:.0f} GB, more than RUNPOD_CONTAINER_DISK_GB={container_disk_gb}: attach a network volume "
            "(RUNPOD_NETWORK_VOLUME_ID), raise the disk, or narrow POD_WORKFLOWS"
        )
    log.warning("no network volume (RUNPOD_NETWORK_VOLUME_ID): every new pod installs ComfyUI and downloads %s "
                "onto its container disk again, and a resumed pod too (RunPod wipes the container disk on stop)",
                models.describe())  # fmt: skip


class BootPlan:
    """The start command and environment a new pod is created with (None: the image boots itself)."""

    def __init__(self, models: ModelSet, token_key: Secret, *, bootstrap: bool) -> None:
        self.models = models
        self.token_key = token_key
        self.bootstrap = bootstrap
        self._manifest = [m.manifest_entry() for m in models.files]

    def for_pod(self, pod_name: str) -> PodBoot | None:
        if not self.bootstrap:
            return None
        token = pod_token(self.token_key.reveal(), pod_name)
        return PodBoot(env=pod_env(token, self._manifest), start_command=START_COMMAND)

    def token(self, pod_name: str) -> str | None:
        """The pod's ComfyUI token, for probes (None without a key: pods that ask for none)."""
        return pod_token(self.token_key.reveal(), pod_name) if self.token_key else None

    def describe(self) -> str:
        if not self.bootstrap:
            return "the image's own start (RUNPOD_BOOTSTRAP=off)"
        return f"Vibewave's bootstrap (deploy/pod: ComfyUI, token proxy, {self.models.describe()})"
