"""The leader lease on a real NATS: one holder at a time, a standby takes a lapsed lease within about its
TTL at a higher epoch, and a holder that was paused past its TTL is refused when it renews."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client

from vibewave.contracts.events import LEASES_BUCKET
from vibewave.runtime.broker import ensure_kv
from vibewave.runtime.lease import Lease, LeaseLost

TTL_S = 1.0


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    yield client
    await client.close()


async def _lease(nc: Client, role: str, holder: str) -> Lease:
    js = nc.jetstream()
    kv = await ensure_kv(js, LEASES_BUCKET, 1, 3600)
    return Lease(js, kv, role, holder=holder, ttl_s=TTL_S, renew_every_s=0.2)


async def test_one_holder_a_standby_takes_over_when_it_lapses_at_a_higher_epoch(nc: Client) -> None:
    first, second = await _lease(nc, "role-a", "first"), await _lease(nc, "role-a", "second")
    assert await first.try_take()
    assert not await second.try_take()
    keeper = asyncio.create_task(first.keep())
    try:
        standby = asyncio.create_task(second.acquire())
        done, _ = await asyncio.wait({standby}, timeout=3 * TTL_S)
        assert not done, "the standby took a lease that was being renewed"
        assert first.held() and (await first.current()).holder == "first"  # type: ignore[union-attr]
        keeper.cancel()  # the holder dies: nobody renews
        began = time.monotonic()
        epoch = await asyncio.wait_for(standby, timeout=TTL_S + 5)
        took = time.monotonic() - began
    finally:
        keeper.cancel()
    assert second.held() and epoch > first.epoch > 0
    assert took < TTL_S + 3, took
    assert (await second.current()).holder == "second"  # type: ignore[union-attr]


async def test_a_holder_paused_past_its_ttl_is_refused_and_knows_it_lost(nc: Client) -> None:
    old, new = await _lease(nc, "role-b", "old"), await _lease(nc, "role-b", "new")
    assert await old.try_take()
    await asyncio.wait_for(new.acquire(), timeout=TTL_S + 5)  # `old` was paused: no renewals
    assert not old.held()  # its own clock already says so
    with pytest.raises(LeaseLost):
        await old.renew()  # and the store refuses it
    assert old.lost.is_set()
    with pytest.raises(LeaseLost):
        old.check()
    new.check()


async def test_a_clean_release_lets_the_standby_take_over_at_once(nc: Client) -> None:
    first, second = await _lease(nc, "role-c", "first"), await _lease(nc, "role-c", "second")
    assert await first.try_take()
    await first.release()
    assert not first.held()
    assert await second.try_take()
