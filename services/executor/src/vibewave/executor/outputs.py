"""Where generated files go: the `outputs` object store, under unique readable names.

Names follow the API document's example (`qwen_<seed>_<nnn>.png`); the number is claimed atomically
in KV `output_names`, so two requests with the same seed never overwrite each other's files.
"""

from __future__ import annotations

import mimetypes
from pathlib import PurePosixPath

import nats.js.errors
from nats.js.api import ObjectMeta
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore


class OutputStore:
    def __init__(self, store: ObjectStore, names: KeyValue) -> None:
        self.store = store
        self.names = names

    async def claim_name(self, stem: str, suffix: str, request_id: str) -> str:
        number = 1
        while True:
            name = f"{stem}_{number:03d}{suffix}"
            try:
                await self.names.create(name, request_id.encode())
                return name
            except nats.js.errors.KeyWrongLastSequenceError:
                number += 1

    async def save(self, name: str, data: bytes, content_type: str) -> None:
        meta = ObjectMeta(name=name, description=content_type, headers={"Content-Type": [content_type]})
        await self.store.put(name, data, meta=meta)


def file_stem(prefix: str, seed: object, request_id: str) -> str:
    return f"{prefix}_{seed}" if isinstance(seed, int) else f"{prefix}_{request_id}"


def suffix_of(filename: str, content_type: str) -> str:
    suffix = PurePosixPath(filename).suffix.lower()
    return suffix or mimetypes.guess_extension(content_type) or ".bin"
