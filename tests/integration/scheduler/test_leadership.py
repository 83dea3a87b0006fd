"""Two schedulers on one NATS: one leads, the other stands by and takes over when the lease lapses; the
old leader, paused past its lease and woken still believing it leads, has its write refused by the
revision fence — the store keeps what the new leader wrote — and its next renewal tells it it lost."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import pytest

from tests.integration.scheduler.test_steps import nc, publish, settings, submitted  # noqa: F401
from tests.support.leaders import pause
from tests.support.requests import wait_for_record
from vibewave.contracts.events import REQUESTS_BUCKET, CancelRequested, RequestRecord
from vibewave.contracts.models import RequestStatus
from vibewave.runtime.broker import decode
from vibewave.runtime.lease import LEASE_TTL_S, LeaseLost
from vibewave.scheduler.service import SchedulerService, StaleMemory

pytestmark = pytest.mark.integration


async def test_a_stale_leaders_write_after_losing_the_lease_is_refused(nats_url, vibewave_home, nc):  # noqa: F811
    old = SchedulerService(settings(nats_url, vibewave_home))
    new = SchedulerService(settings(nats_url, vibewave_home))
    await old.start()
    taking_over = asyncio.create_task(new.start())
    try:
        await publish(nc, submitted("req-stale-1"), "req-stale-1.submitted")
        await wait_for_record(nats_url, "req-stale-1", {RequestStatus.PENDING}, timeout=10)
        assert not taking_over.done(), "the standby must wait while the leader renews"

        pause(old)
        await asyncio.wait_for(taking_over, timeout=LEASE_TTL_S + 10)
        assert new.lease is not None and old.lease is not None
        assert new.lease.epoch > old.lease.epoch
        kv = await nc.jetstream().key_value(REQUESTS_BUCKET.name)
        fenced = await kv.get("req-stale-1")

        # The old leader wakes, still believing it leads, and acts on the request it had in memory.
        assert old.lease.held()
        cancel = CancelRequested(request_id="req-stale-1", at=datetime.now(UTC))
        with pytest.raises(StaleMemory):
            await old._step(lambda: old._decide(cancel, 0))

        after = await kv.get("req-stale-1")
        assert after.revision == fenced.revision, "the store kept the new leader's record"
        assert decode(after.value or b"", RequestRecord).status == RequestStatus.PENDING
        with pytest.raises(LeaseLost):
            await old.lease.renew()
        assert old.lease.lost.is_set()

        # The new leader goes on deciding: the same cancel, from it, lands.
        await new._step(lambda: new._decide(cancel, 0))
        await wait_for_record(nats_url, "req-stale-1", {RequestStatus.CANCELLED}, timeout=10)
    finally:
        taking_over.cancel()
        with contextlib.suppress(BaseException):
            await taking_over
        await new.stop()
        await old.stop()


async def test_a_standby_takes_over_within_seconds_when_the_leader_stops(nats_url, vibewave_home, nc):  # noqa: F811
    """A clean stop releases the lease: the standby leads at once and serves the queue the leader left."""
    leader = SchedulerService(settings(nats_url, vibewave_home))
    standby = SchedulerService(settings(nats_url, vibewave_home))
    await leader.start()
    taking_over = asyncio.create_task(standby.start())
    try:
        await publish(nc, submitted("req-handover-1"), "req-handover-1.submitted")
        await wait_for_record(nats_url, "req-handover-1", {RequestStatus.PENDING}, timeout=10)
        await leader.stop()
        await asyncio.wait_for(taking_over, timeout=5)
        await publish(nc, submitted("req-handover-2"), "req-handover-2.submitted")
        await wait_for_record(nats_url, "req-handover-2", {RequestStatus.PENDING}, timeout=10)
    finally:
        taking_over.cancel()
        with contextlib.suppress(BaseException):
            await taking_over
        await standby.stop()
