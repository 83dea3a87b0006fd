"""Asking a pod how it is: its ComfyUI (`/system_stats`), the model files ComfyUI lists, its bootstrap.

Ready means "ComfyUI answers and lists every file of the fleet's model set" — ComfyUI's own listing,
which our bootstrap fills only with verified files (it renames a download into place after its checksum).
The bootstrap's `/vibewave/status` says what a pod that is not ready yet is doing (installing,
downloading 37 %), so a long first boot is told apart from a pod where nothing runs at all.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import aiohttp

GB = 10**9


@dataclass(frozen=True)
class Probe:
    answers: bool  # ComfyUI answered /system_stats with 200
    listed: list[str] | None = None  # of the wanted `folder/file`s, those ComfyUI lists (None: not asked)
    missing: list[str] = field(default_factory=list)
    booting: bool = False  # the pod's bootstrap answered its status: something of ours runs there
    boot: str | None = None  # the bootstrap's own account, in a few words
    boot_failed: str | None = None  # the bootstrap gave up (e.g. a model's checksum never matched)
    refused: bool = False  # the pod's proxy refused our token (401/403)

    @property
    def ready(self) -> bool:
        return self.answers and not self.missing


async def probe_pod(session: aiohttp.ClientSession, url: str, token: str | None, wanted: list[str] | None) -> Probe:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    status, _ = await _get(session, f"{url}/system_stats", headers)
    answers = status == 200
    boot_status, boot = await _get(session, f"{url}/vibewave/status", headers) if token else (None, None)
    booting = boot_status == 200 and isinstance(boot, dict)
    summary, failed = describe_boot(boot) if booting and isinstance(boot, dict) else (None, None)
    if not answers or wanted is None:
        return Probe(
            answers=answers, booting=booting, boot=summary, boot_failed=failed,
            refused=status in (401, 403), missing=list(wanted or []) if not answers else [],
        )  # fmt: skip
    listed = await listed_models(session, url, headers, wanted)
    if listed is None:
        return Probe(answers=False, booting=booting, boot=summary, boot_failed=failed, missing=list(wanted))
    missing = [key for key in wanted if key not in listed]
    return Probe(answers=True, listed=listed, missing=missing, booting=booting, boot=summary, boot_failed=failed)


async def listed_models(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], wanted: list[str]
) -> list[str] | None:
    """Which wanted files ComfyUI lists (`GET /models/{folder}`; 404: a folder it does not have), or None
    when it stopped answering."""
    by_folder: dict[str, list[str]] = defaultdict(list)
    for key in wanted:
        folder, file = key.split("/", 1)
        by_folder[folder].append(file)
    answers = await asyncio.gather(*(_get(session, f"{url}/models/{folder}", headers) for folder in by_folder))
    listed: list[str] = []
    for (folder, files), (status, body) in zip(by_folder.items(), answers, strict=True):
        if status == 404:
            continue
        if status != 200 or not isinstance(body, list):
            return None
        names = {str(name) for name in body}
        listed += [f"{folder}/{file}" for file in files if file in names]
    return listed


def describe_boot(status: dict[str, Any]) -> tuple[str, str | None]:
    """(a few words on what the bootstrap does, why it gave up or None)."""
    phase = str(status.get("phase") or "unknown")
    error = status.get("error")
    models = [m for m in status.get("models") or [] if isinstance(m, dict)]
    if phase == "failed":
        return f"bootstrap failed: {error}", str(error or "the bootstrap failed")
    if phase == "downloading" and models:
        done = sum(int(m.get("bytes") or 0) for m in models)
        total = sum(int(m.get("size") or m.get("bytes") or 0) for m in models)
        present = sum(1 for m in models if m.get("state") == "present")
        share = f" ({100 * done / total:.0f} %)" if total else ""
        return f"downloading models: {present}/{len(models)} files, {done / GB:.1f} of {total / GB:.1f} GB{share}", None
    if phase == "installing":
        install = status.get("install") or {}
        return f"installing ComfyUI {str(install.get('comfyui_commit') or '')[:8]}".rstrip(), None
    return phase, None


async def _get(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> tuple[int | None, Any]:
    try:
        async with session.get(url, headers=headers) as response:
            if response.status != 200:
                return response.status, None
            try:
                return 200, await response.json(content_type=None)
            except ValueError:
                return None, None
    except (aiohttp.ClientError, TimeoutError):
        return None, None
