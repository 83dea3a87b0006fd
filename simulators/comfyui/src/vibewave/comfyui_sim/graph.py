"""Execution order and cache keys, following ComfyUI's comfy_execution/graph.py and caching.py.

The order matters to clients (frame order, `executed` lists): ComfyUI walks inputs with a stack, then
repeatedly picks a ready node preferring output nodes, then nodes feeding an output, then nodes two hops
from one (`ux_friendly_pick_node`). Recorded runs (e.g. "2" before "1" in scenario 06, VAELoader first in
the Qwen graph) come out the same here.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from vibewave.comfyui_sim.validation import is_link


class ExecutionList:
    def __init__(
        self, prompt: dict[str, Any], is_output: Callable[[str], bool], is_cached: Callable[[str], bool]
    ) -> None:
        self.prompt = prompt
        self.is_output = is_output
        self.is_cached = is_cached
        self.pending: dict[str, bool] = {}
        self.block_count: dict[str, int] = {}
        self.blocking: dict[str, dict[str, dict[int, bool]]] = {}

    def add_node(self, unique_id: str) -> None:
        stack = [unique_id]
        links: list[tuple[str, int, str]] = []
        while stack:
            node_id = stack.pop()
            if node_id in self.pending:
                continue
            self.pending[node_id] = True
            self.block_count[node_id] = 0
            self.blocking[node_id] = {}
            for value in self.prompt[node_id]["inputs"].values():
                if is_link(value):
                    from_id, socket = value
                    if not self.is_cached(from_id):
                        stack.append(from_id)
                    links.append((from_id, socket, node_id))
        for from_id, socket, to_id in links:
            self._add_strong_link(from_id, socket, to_id)

    def _add_strong_link(self, from_id: str, socket: int, to_id: str) -> None:
        if self.is_cached(from_id):
            return
        self.add_node(from_id)
        if to_id not in self.blocking[from_id]:
            self.blocking[from_id][to_id] = {}
            self.block_count[to_id] += 1
        self.blocking[from_id][to_id][socket] = True

    def is_empty(self) -> bool:
        return not self.pending

    def stage(self) -> str:
        ready = [n for n in self.pending if self.block_count[n] == 0]
        if not ready:
            raise RuntimeError("dependency cycle in prompt")
        for node_id in ready:
            if self.is_output(node_id):
                return node_id
        for node_id in ready:
            if any(self.is_output(b) for b in self.blocking[node_id]):
                return node_id
        for node_id in ready:
            for b in self.blocking[node_id]:
                if any(self.is_output(b1) for b1 in self.blocking[b]):
                    return node_id
        return ready[0]

    def complete(self, node_id: str) -> None:
        del self.pending[node_id]
        for blocked in self.blocking[node_id]:
            self.block_count[blocked] -= 1
        del self.blocking[node_id]


def signatures(
    prompt: dict[str, Any],
    changed: Callable[[str], str | None],
    with_id: Callable[[str], bool] = lambda class_type: False,
) -> dict[str, str]:
    """Cache key per node: class, IS_CHANGED token and inputs, with links replaced by the source's key.

    Classes that take their own node id (a hidden UNIQUE_ID input, e.g. GetImageSize) also key on it, as
    caching.include_unique_id_in_input does: the same graph under other ids runs them again (seen on 0.3.64).
    """
    out: dict[str, str] = {}

    def sig(node_id: str, trail: frozenset[str]) -> str:
        if node_id in out:
            return out[node_id]
        if node_id in trail:
            raise RuntimeError("dependency cycle in prompt")
        node = prompt[node_id]
        items: list[Any] = [node["class_type"], changed(node_id)]
        if with_id(node["class_type"]):
            items.append(["NODE_ID", node_id])
        for name in sorted(node["inputs"]):
            value = node["inputs"][name]
            if is_link(value) and value[0] in prompt:
                items.append([name, "LINK", sig(value[0], trail | {node_id}), value[1]])
            else:
                items.append([name, value])
        digest = hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()
        out[node_id] = digest
        return digest

    for node_id in prompt:
        sig(node_id, frozenset())
    return out


CacheEntry = tuple[tuple[Any, ...], dict[str, Any] | None]


class OutputCache:
    """Node outputs (and UI dicts) by signature, least recently used dropped first.

    Stands in for 0.33's RAM-pressure cache, which keeps results across prompts until memory runs low.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.entries: OrderedDict[str, CacheEntry] = OrderedDict()

    def get(self, key: str) -> CacheEntry | None:
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
        return entry

    def put(self, key: str, outputs: tuple[Any, ...], ui: dict[str, Any] | None) -> None:
        if self.capacity <= 0:
            return
        self.entries[key] = (outputs, ui)
        self.entries.move_to_end(key)
        while len(self.entries) > self.capacity:
            self.entries.popitem(last=False)

    def clear(self) -> None:
        self.entries.clear()

    def retain(self, keys: set[str]) -> None:
        """Drop every entry the coming prompt cannot use: 0.3.64's classic cache (clean_unused)."""
        for key in [k for k in self.entries if k not in keys]:
            del self.entries[key]
