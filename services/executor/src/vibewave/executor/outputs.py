"""What generated files are called: unique readable names (the files go to the `FileStore`).

Names follow the API document's example (`qwen_<seed>_<nnn>.png`); the number is claimed atomically
in KV `output_names`, so two requests with the same seed never overwrite each other's files. A claim
names its holder — the request and the output's index in it — so a request that collects the same
outputs again (a redelivered attempt, a retry) gets back the names it already holds, never new ones.
"""

from __future__ import annotations

import mimetypes
from pathlib import PurePosixPath

import nats.js.errors
from nats.js.kv import KeyValue


def claim_holder(request_id: str, index: int) -> bytes:
    """The value of a name's claim: which request's which output holds it."""
    return f"{request_id}#{index}".encode()


class OutputStore:
    def __init__(self, names: KeyValue) -> None:
        self.names = names

    async def claim_name(self, stem: str, suffix: str, request_id: str, index: int = 0) -> str:
        """The first free `<stem>_<nnn><suffix>`, or the one this request's output `index` holds already."""
        holder = claim_holder(request_id, index)
        number = 1
        while True:
            name = f"{stem}_{number:03d}{suffix}"
            try:
                await self.names.create(name, holder)
                return name
            except nats.js.errors.KeyWrongLastSequenceError:
                if await self._holder(name) == holder:
                    return name
                number += 1

    async def _holder(self, name: str) -> bytes | None:
        try:
            return (await self.names.get(name)).value
        except nats.js.errors.KeyNotFoundError:
            return None


def file_stem(prefix: str, seed: object, request_id: str) -> str:
    return f"{prefix}_{seed}" if isinstance(seed, int) else f"{prefix}_{request_id}"


def suffix_of(filename: str, content_type: str) -> str:
    suffix = PurePosixPath(filename).suffix.lower()
    return suffix or mimetypes.guess_extension(content_type) or ".bin"
