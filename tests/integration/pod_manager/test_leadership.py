"""Two pod-managers on one NATS: only the lease holder manages the fleet. The old leader, paused past its
lease and woken still believing it leads, cannot overwrite a pod record or the fleet status its successor
took over (revision fence), and its stop leaves the pods to the successor instead of shutting them down."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import msgspec
import nats.errors
import pytest
from nats.js.errors import KeyWrongLastSequenceError

from tests.integration.pod_manager.test_service import nc, settings_for  # noqa: F401
from tests.support.leaders import pause
from vibewave.contracts.events import (
    PodAdminReply,
    PodAdminRequest,
    PodOperation,
    PodRecord,
    PodStatus,
    pod_rpc_subject,
)
from vibewave.pod_manager.service import PodManagerService
from vibewave.runtime import broker as runtime
from vibewave.runtime.broker import decode, encode
from vibewave.runtime.lease import LEASE_TTL_S, LeaseLost

pytestmark = pytest.mark.integration


async def test_a_stale_pod_manager_cannot_overwrite_its_successors_state(nats_url, vibewave_home):
    old = PodManagerService(settings_for(nats_url, vibewave_home))
    new = PodManagerService(settings_for(nats_url, vibewave_home))
    await old.start()
    now = datetime.now(UTC)
    pod = PodRecord(
        id="pod-fence-1", name="vibewave-fence1", provider="local", origin=old.provider.origin,
        status=PodStatus.STOPPED, created_at=now, updated_at=now, stopped_at=now,
    )  # fmt: skip
    taking_over = asyncio.create_task(new.start())
    try:
        await old._save(pod, quiet=True)
        assert not taking_over.done()
        pause(old)
        assert old.lease is not None
        await asyncio.wait_for(taking_over, timeout=LEASE_TTL_S + 15)
        assert old.lease.held(), "it believes it still leads"

        with pytest.raises(KeyWrongLastSequenceError):
            await old._save(msgspec.structs.replace(pod, status=PodStatus.STARTING), quiet=True)
        with pytest.raises(KeyWrongLastSequenceError):
            await old._beat()
        with pytest.raises(LeaseLost):
            await old.lease.renew()
        with pytest.raises(LeaseLost):  # and now no provider call gets through
            await old.provider.create("vibewave-never", 0)
        assert new.lease is not None and new.lease.held()
        await new._beat()
    finally:
        taking_over.cancel()
        with contextlib.suppress(BaseException):
            await taking_over
        await old.stop()
        await new.stop()


async def test_pod_admin_calls_are_answered_by_the_leader_only(nats_url, vibewave_home, nc):  # noqa: F811
    """While the leader is gone and its lease not yet lapsed, a standby answers no admin call (no
    responders); once it has taken the lease, it answers them."""
    leader = PodManagerService(settings_for(nats_url, vibewave_home))
    standby = PodManagerService(settings_for(nats_url, vibewave_home))
    await leader.start()
    taking_over = asyncio.create_task(standby.start())
    call = PodAdminRequest()
    try:
        reply = await nc.request(pod_rpc_subject(PodOperation.LIST), encode(call), timeout=5)
        assert decode(reply.data, PodAdminReply).status == 200
        for task in leader._tasks:  # the leader hangs: no renewals, and it no longer serves its subscribers
            task.cancel()
        await runtime.stop_broker(leader.broker)
        await asyncio.sleep(0.3)  # let the standby's connection see the interest go away
        assert not taking_over.done()
        with pytest.raises(nats.errors.NoRespondersError):
            await nc.request(pod_rpc_subject(PodOperation.LIST), encode(call), timeout=5)
        await asyncio.wait_for(taking_over, timeout=LEASE_TTL_S + 15)
        reply = await nc.request(pod_rpc_subject(PodOperation.LIST), encode(call), timeout=5)
        assert decode(reply.data, PodAdminReply).status == 200
    finally:
        taking_over.cancel()
        with contextlib.suppress(BaseException):
            await taking_over
        await standby.stop()
        leader._connected = False  # its broker is stopped already
        await leader.stop()
