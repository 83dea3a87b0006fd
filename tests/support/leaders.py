"""Helpers for the leadership tests of the deciding services (scheduler, pod-manager)."""

from __future__ import annotations

import asyncio
from typing import Protocol

from vibewave.runtime.lease import Lease


class Leader(Protocol):
    lease: Lease | None
    _tasks: list[asyncio.Task[None]]


def pause(service: Leader) -> None:
    """As a process stopped by the OS would be: none of its tasks runs (no lease renewals, no passes),
    and its clock stands still — so when it "wakes" it still believes it holds the lease."""
    for task in service._tasks:
        task.cancel()
    assert service.lease is not None
    frozen = service.lease.clock()
    service.lease.clock = lambda: frozen
