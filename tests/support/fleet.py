"""A stand-in pod-manager heartbeat, for tests and benchmarks that write pod records themselves: the
scheduler places work only on pods verified by a pod-manager that beats (KV `fleet`)."""

from __future__ import annotations

from datetime import UTC, datetime

from nats.js.kv import KeyValue

from vibewave.contracts.events import FLEET_STATUS_KEY, FleetStatus
from vibewave.runtime.broker import encode

TEST_MANAGER = "test-pod-manager"


async def beat(fleet: KeyValue, manager: str = TEST_MANAGER, max_pods: int = 1000) -> None:
    """One heartbeat that stays fresh for hours (its interval is an hour)."""
    status = FleetStatus(
        manager=manager, provider="test", origin="test", heartbeat_at=datetime.now(UTC),
        heartbeat_interval_s=3600.0, max_pods=max_pods,
    )  # fmt: skip
    await fleet.put(FLEET_STATUS_KEY, encode(status))
