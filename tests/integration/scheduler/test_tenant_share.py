"""Tenants share the pods, against a real NATS: with tenant A's 200 requests queued on a one-pod fleet,
tenant B's single request is assigned as soon as the run that was going when it arrived has finished."""

from __future__ import annotations

import asyncio

import msgspec
import nats
import pytest

from tests.integration.scheduler.test_steps import nc, publish, ready_pod, settings, submitted  # noqa: F401
from tests.support.requests import wait_for_record
from vibewave.contracts.events import (
    PODS_BUCKET,
    Assignment,
    AttemptSucceeded,
    RequestEvent,
    RequestSubmitted,
    dispatch_subject,
    request_subject,
)
from vibewave.contracts.models import RequestStatus, WorkflowResult
from vibewave.runtime.broker import decode, encode
from vibewave.scheduler.service import SchedulerService

pytestmark = pytest.mark.integration

POD = "pod-share-1"


def of(tenant: str, request_id: str) -> RequestSubmitted:
    return msgspec.structs.replace(submitted(request_id), tenant=tenant, key_id=f"key-{tenant}")


async def finish(client: nats.aio.client.Client, assignment: Assignment) -> None:
    """What the executor reports when a run has succeeded: the scheduler frees the pod."""
    result = WorkflowResult(success=True, request_id=assignment.request_id, pod_id=assignment.pod_id)
    event = AttemptSucceeded(request_id=assignment.request_id, pod_id=POD, attempt=assignment.attempt, result=result)
    await client.jetstream().publish(
        request_subject(assignment.request_id, RequestEvent.ATTEMPT_SUCCEEDED),
        encode(event),
        headers={"Nats-Msg-Id": f"{assignment.request_id}.succeeded.{assignment.attempt}"},
    )


async def test_one_request_of_tenant_b_goes_right_after_the_run_going_when_it_arrived(nats_url, vibewave_home, nc):  # noqa: F811
    await (await nc.jetstream().key_value(PODS_BUCKET.name)).put(POD, encode(ready_pod(POD)))
    dispatched: asyncio.Queue[Assignment] = asyncio.Queue()

    async def on_dispatch(msg: nats.aio.msg.Msg) -> None:
        await dispatched.put(decode(msg.data, Assignment))

    await nc.subscribe(dispatch_subject(POD), cb=on_dispatch)
    scheduler = SchedulerService(settings(nats_url, vibewave_home))
    await scheduler.start()
    try:
        a_ids = [f"req-a-{n:03d}" for n in range(200)]
        for request_id in a_ids:
            await publish(nc, of("a", request_id), f"{request_id}.submitted")
        first = await asyncio.wait_for(dispatched.get(), 10)
        assert first.request_id == a_ids[0]
        await wait_for_record(nats_url, a_ids[-1], {RequestStatus.PENDING}, timeout=10)  # all of A's are queued
        await publish(nc, of("b", "req-b-1"), "req-b-1.submitted")
        await wait_for_record(nats_url, "req-b-1", {RequestStatus.PENDING}, timeout=10)
        assert dispatched.empty(), "the one pod is still busy with A's first run"

        await finish(nc, first)
        second = await asyncio.wait_for(dispatched.get(), 10)
        assert second.request_id == "req-b-1", "B's request goes next, not after A's 199 others"
        record = await wait_for_record(nats_url, "req-b-1", {RequestStatus.ASSIGNED}, timeout=10)
        assert (record.pod_id, record.tenant, record.key_id) == (POD, "b", "key-b")

        await finish(nc, second)
        third = await asyncio.wait_for(dispatched.get(), 10)
        assert third.request_id == a_ids[1], "then A's queue goes on in order"
    finally:
        await scheduler.stop()
