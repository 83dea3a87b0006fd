"""Helpers shared by the emulator's integration tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
BOOT_DELAY = 0.4


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """SDK functions block (requests): run them off the loop that serves the emulator."""
    return await asyncio.to_thread(fn, *args, **kwargs)


async def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


def graph(name: str) -> Path:
    return Path(__file__).parents[2] / "unit" / "comfyui_sim" / "graphs" / name
