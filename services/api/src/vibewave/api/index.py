"""The api's view of every request, kept current from a watch of KV `requests`.

Reads (status, queue, history, stats) come from here, not from a store scan per call; the scheduler stays
the only writer, and the watch brings each of its writes to every api instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from nats.js.kv import KeyValue

from vibewave.contracts.events import RequestRecord
from vibewave.contracts.runtime.bus import decode

log = logging.getLogger("vibewave.api.index")


Predicate = Callable[[RequestRecord], bool]


class RequestIndex:
    def __init__(self) -> None:
        self.records: dict[str, RequestRecord] = {}
        self.progress: dict[str, float] = {}  # last reported percent of running requests
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._waiters: dict[str, list[tuple[Predicate, asyncio.Future[RequestRecord]]]] = {}

    def get(self, request_id: str) -> RequestRecord | None:
        return self.records.get(request_id)

    def apply(self, key: str, value: bytes | None) -> None:
        if not value:
            self.records.pop(key, None)
            return
        record = decode(value, RequestRecord)
        self.records[key] = record
        if record.status.terminal:
            self.progress.pop(key, None)
        waiters = self._waiters.get(key)
        if waiters:
            for predicate, future in list(waiters):
                if not future.done() and predicate(record):
                    future.set_result(record)

    def note_progress(self, request_id: str, percent: float) -> None:
        record = self.records.get(request_id)
        if record is None or not record.status.terminal:
            self.progress[request_id] = percent

    async def wait(self, request_id: str, predicate: Predicate, timeout: float) -> RequestRecord | None:
        """The record once `predicate` holds for it, or None after `timeout` seconds."""
        current = self.records.get(request_id)
        if current is not None and predicate(current):
            return current
        future: asyncio.Future[RequestRecord] = asyncio.get_running_loop().create_future()
        entry = (predicate, future)
        self._waiters.setdefault(request_id, []).append(entry)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return None
        finally:
            waiters = self._waiters.get(request_id, [])
            if entry in waiters:
                waiters.remove(entry)
            if not waiters:
                self._waiters.pop(request_id, None)

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
