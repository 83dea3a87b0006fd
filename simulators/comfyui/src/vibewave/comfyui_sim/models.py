"""Model file lists per folder: what ComfyUI's `folder_paths.get_filename_list(folder)` answers.

Two sources. Without a models directory the simulator knows file names (`--models`) and a switch says whether
they are on disk (`--models-present`). With `--models-dir DIR` it lists what is really there, as ComfyUI
0.3.64's `folder_paths` does: a recursive walk of each folder's search paths (`DIR/unet` and
`DIR/diffusion_models` for `diffusion_models`, `DIR/text_encoders` and `DIR/clip` for `text_encoders`, …;
`.git` skipped, symlinks followed), relative paths, the folder's extension filter, sorted. The list is cached
per folder and re-read when the modification time of any walked directory changes or a missing search path
appears, so a file renamed into place shows up without a restart while the bytes of one being written do not
matter (ComfyUI checks names, not contents).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# folder_paths.supported_pt_extensions (ComfyUI 0.3.64).
SUPPORTED_PT_EXTENSIONS = frozenset({".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"})
# Folders whose filter is not the model extensions; an empty set lists every file.
FOLDER_EXTENSIONS: dict[str, frozenset[str]] = {
    "configs": frozenset({".yaml"}),
    "diffusers": frozenset({"folder"}),
    "classifiers": frozenset({""}),
}
# Folders ComfyUI searches in more than one directory below models/ (current name first, then the legacy one).
SEARCH_PATHS: dict[str, tuple[str, ...]] = {
    "diffusion_models": ("unet", "diffusion_models"),
    "text_encoders": ("text_encoders", "clip"),
    "controlnet": ("controlnet", "t2i_adapter"),
}
# Not below models/ upstream (base_path/custom_nodes); the simulator has no custom nodes.
NO_FILES = frozenset({"custom_nodes"})
EXCLUDED_DIRS = frozenset({".git"})


@dataclass
class _Listing:
    files: list[str]
    # Every directory walked (and every search path that did not exist, as None) with its mtime.
    mtimes: dict[str, int | None]


class ModelFiles:
    """The file list of each model folder, from the known names or from a directory."""

    def __init__(
        self, known: dict[str, list[str]], present: Callable[[], bool], models_dir: Path | None = None
    ) -> None:
        self.known = known
        self.present = present
        self.models_dir = models_dir
        self._cache: dict[str, _Listing] = {}

    def files(self, folder: str) -> list[str]:
        """The folder's files (a new list), as `GET /models/{folder}` answers them."""
        if self.models_dir is None:
            return sorted(self.known.get(folder, [])) if self.present() else []
        if folder in NO_FILES:
            return []
        cached = self._cache.get(folder)
        if cached is None or _changed(cached.mtimes):
            cached = self._cache[folder] = self._scan(folder)
        return list(cached.files)

    def _scan(self, folder: str) -> _Listing:
        assert self.models_dir is not None, "only called with a models directory"
        extensions = FOLDER_EXTENSIONS.get(folder, SUPPORTED_PT_EXTENSIONS)
        found: set[str] = set()
        mtimes: dict[str, int | None] = {}
        for name in SEARCH_PATHS.get(folder, (folder,)):
            root = str(self.models_dir / name)
            if not os.path.isdir(root):
                mtimes[root] = None
                continue
            for directory, subdirs, names in os.walk(root, followlinks=True):
                subdirs[:] = [d for d in subdirs if d not in EXCLUDED_DIRS]
                mtimes[directory] = _mtime(directory)
                for file_name in names:
                    if not extensions or os.path.splitext(file_name)[1].lower() in extensions:
                        found.add(os.path.relpath(os.path.join(directory, file_name), root))
        return _Listing(sorted(found), mtimes)


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _changed(mtimes: dict[str, int | None]) -> bool:
    return any(_mtime(path) != mtime for path, mtime in mtimes.items())
