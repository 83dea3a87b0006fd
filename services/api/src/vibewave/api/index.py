"""The api's view of every request, kept current from a watch of KV `requests`.

Reads (status, queue, history, stats) come from here, not from a store scan per call; the scheduler stays
the only writer, and the watch brings each of its writes to every api instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.js.kv import KeyValue

from vibewave.contracts.events import RequestRecord
from vibewave.contracts.runtime.bus import decode

log = logging.getLogger("vibewave.api.index")


class RequestIndex:
    def __init__(self) -> None:
        self.records: dict[str, RequestRecord] = {}
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def get(self, request_id: str) -> RequestRecord | None:
        return self.records.get(request_id)

    def apply(self, key: str, value: bytes | None) -> None:
        if value:
            self.records[key] = decode(value, RequestRecord)
        else:
            self.records.pop(key, None)

    def start(self, kv: KeyValue) -> None:
        self._task = asyncio.create_task(self._follow(kv), name="api:request-index")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _follow(self, kv: KeyValue) -> None:
        while True:
            try:
                watcher = await kv.watchall()
                async for entry in watcher:
                    if entry is None:
                        self.ready.set()
                        continue
                    deleted = entry.operation in ("DEL", "PURGE")
                    self.apply(entry.key, None if deleted else entry.value)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("request index watch interrupted (%s); resuming", exc)
                await asyncio.sleep(0.5)
