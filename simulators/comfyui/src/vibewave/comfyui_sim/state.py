"""Queue and history, shaped like ComfyUI's execution.PromptQueue.

The pending queue is a heap ordered by (number, prompt_id), exposed raw (unsorted) by GET /queue as the
real server does. A prompt is "running" from the moment the worker pops it until its history entry is
written; history is in memory only, oldest entry dropped past the cap.
"""

from __future__ import annotations

import asyncio
import copy
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class QueueItem:
    number: float | int
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs: list[str]
    sensitive: dict[str, Any]

    def as_list(self, with_sensitive: bool = False) -> list[Any]:
        """The 5-element tuple of /queue and history; the sensitive keys only if asked (0.3.64's /queue)."""
        extra_data = {**self.extra_data, **self.sensitive} if with_sensitive and self.sensitive else self.extra_data
        return [self.number, self.prompt_id, self.prompt, extra_data, self.outputs]


class PromptQueue:
    def __init__(self, on_change: Callable[[], None], history_size: int) -> None:
        self._heap: list[tuple[float | int, str, int, QueueItem]] = []
        self._seq = itertools.count()
        self._wakeup = asyncio.Event()
        self.running: dict[str, QueueItem] = {}
        self.history: dict[str, dict[str, Any]] = {}
        self.history_size = history_size
        self.on_change = on_change

    def put(self, item: QueueItem) -> None:
        heapq.heappush(self._heap, (item.number, item.prompt_id, next(self._seq), item))
        self._wakeup.set()
        self.on_change()

    async def get(self) -> QueueItem:
        while not self._heap:
            self._wakeup.clear()
            await self._wakeup.wait()
        item = heapq.heappop(self._heap)[3]
        self.running[item.prompt_id] = item
        self.on_change()
        return item

    def remaining(self) -> int:
        return len(self._heap) + len(self.running)

    def pending(self) -> list[QueueItem]:
        return [entry[3] for entry in self._heap]

    def delete(self, prompt_id: str, double_status_on_last: bool = False) -> bool:
        """Remove a pending prompt. `double_status_on_last`: 0.3.64 empties the heap with wipe_queue() when it
        removes the last item, which reports the change once more (two status frames)."""
        for index, entry in enumerate(self._heap):
            if entry[1] == prompt_id:
                if double_status_on_last and len(self._heap) == 1:
                    self.wipe()
                else:
                    self._heap.pop(index)
                    heapq.heapify(self._heap)
                self.on_change()
                return True
        return False

    def wipe(self) -> None:
        self._heap = []
        self.on_change()

    def task_done(self, prompt_id: str, result: dict[str, Any], status: dict[str, Any]) -> None:
        item = self.running.pop(prompt_id)
        if len(self.history) > self.history_size:
            self.history.pop(next(iter(self.history)))
        entry: dict[str, Any] = {"prompt": item.as_list(), "outputs": {}, "status": status}
        entry.update(result)
        self.history[prompt_id] = entry
        self.on_change()

    def get_history(self, max_items: int | None = None, offset: int = -1) -> dict[str, Any]:
        if offset < 0 and max_items is not None:
            offset = len(self.history) - max_items
        out: dict[str, Any] = {}
        for i, key in enumerate(self.history):
            if i >= offset:
                out[key] = self.history[key]
                if max_items is not None and len(out) >= max_items:
                    break
        return out

    def history_item(self, prompt_id: str) -> dict[str, Any]:
        if prompt_id in self.history:
            return {prompt_id: copy.deepcopy(self.history[prompt_id])}
        return {}
