"""Pod-manager on its FastStream broker, in process, against a real NATS and local simulator pods: the
demand signal, the pod-fault consumer, the admin request/reply, the heartbeat and the pod events, as
the scheduler and the api see them on the wire (raw nats-py, not the service's own code)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgspec
import nats
import pytest
from nats.aio.client import Client

from vibewave.contracts.events import (
    DEMAND_SUBJECT,
    FLEET_BUCKET,
    FLEET_STATUS_KEY,
    PODS_BUCKET,
    PODS_STREAM,
    AttemptFailed,
    Demand,
    FailureKind,
    FleetStatus,
    PodAdminReply,
    PodAdminRequest,
    PodEvent,
    PodNeed,
    PodOperation,
    PodRecord,
    PodStatus,
    RequestEvent,
    pod_rpc_subject,
    request_subject,
    utcnow,
)
from vibewave.pod_manager.providers.local import LocalProvider
from vibewave.pod_manager.service import PodManagerService
from vibewave.pod_manager.settings import PodManagerSettings
from vibewave.runtime.settings import CommonSettings

pytestmark = pytest.mark.integration


def settings_for(url: str, home: Path, **overrides: object) -> PodManagerSettings:
    common = CommonSettings(nats_url=url, home=home, log_level="INFO", debug=False, replicas=1)
    base = dataclasses.replace(
        PodManagerSettings.from_env(common),
        provider="local",
        max_pods=2,
        probe_interval_s=0.2,
        sync_interval_s=1.0,
        simulator_step_time_s=0.01,
        idle_timeout_s=300.0,
    )
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


@pytest.fixture
async def manager(nats_url: str, vibewave_home: Path) -> AsyncIterator[PodManagerService]:
    service = PodManagerService(settings_for(nats_url, vibewave_home))
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    try:
        yield client
    finally:
        await client.close()


async def admin(nc: Client, operation: PodOperation, payload: bytes | None = None, **fields: object) -> PodAdminReply:
    data = payload if payload is not None else msgspec.json.encode(PodAdminRequest(**fields))  # type: ignore[arg-type]
    msg = await nc.request(pod_rpc_subject(operation), data, timeout=15)
    return msgspec.json.decode(msg.data, type=PodAdminReply)


async def until(check: Callable[[], object], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_admin_calls_are_answered_over_request_reply(manager: PodManagerService, nc: Client):
    listed = await admin(nc, PodOperation.LIST)
    assert listed.status == 200 and listed.data == []
    created = await admin(nc, PodOperation.CREATE)
    assert created.status == 200, created.error
    pod_id = created.data["id"]
    assert created.data["managed"] and created.data["provider"] == "local"
    got = await admin(nc, PodOperation.GET, pod_id=pod_id)
    assert got.status == 200 and got.data["id"] == pod_id
    assert (await admin(nc, PodOperation.GET, pod_id="local-nope")).status == 404
    bad = await admin(nc, PodOperation.GET, payload=b"{not json")
    assert bad.status == 400 and "bad admin request" in (bad.error or "")
    health = await admin(nc, PodOperation.HEALTH)
    assert health.status == 200 and health.data["healthy"] and health.data["provider"] == "local"
    # A third pod is over MAX_PODS (2 here): refused with 409, whatever asked for it.
    assert (await admin(nc, PodOperation.CREATE)).status == 200
    refused = await admin(nc, PodOperation.CREATE)
    assert refused.status == 409 and "MAX_PODS" in (refused.error or "")
    # Calls answered side by side: a slow one does not hold up the others.
    replies = await asyncio.gather(*(admin(nc, op) for op in (PodOperation.LIST, PodOperation.HEALTH) * 3))
    assert all(r.status == 200 for r in replies)
    restarted = await admin(nc, PodOperation.RESTART, pod_id=pod_id)
    assert restarted.status == 200 and manager.pods[pod_id].status in (PodStatus.STARTING, PodStatus.READY)
    gone = await admin(nc, PodOperation.TERMINATE, pod_id=pod_id)
    assert gone.status == 200 and gone.data["status"] == "terminated"
    assert pod_id not in manager.pods


async def test_demand_brings_a_pod_a_fault_report_makes_it_suspect_and_events_tell_both(
    manager: PodManagerService, nc: Client
):
    js = nc.jetstream()
    stream = (await js.stream_info(PODS_STREAM.name)).config  # provisioned, not redeclared by the publisher
    assert stream.subjects == list(PODS_STREAM.subjects) and stream.max_age == PODS_STREAM.max_age_s
    events = await js.subscribe(f"{PODS_STREAM.subjects[0]}", stream=PODS_STREAM.name, ordered_consumer=True)
    demand = Demand(needs=[PodNeed(waiting=1)], at=utcnow())
    await nc.publish(DEMAND_SUBJECT, msgspec.json.encode(demand))
    await until(lambda: any(p.status == PodStatus.READY for p in manager.pods.values()))
    pod = next(p for p in manager.pods.values() if p.status == PodStatus.READY)
    assert pod.manager == manager.incarnation

    pods_kv = await js.key_value(PODS_BUCKET.name)
    stored = msgspec.json.decode((await pods_kv.get(pod.id)).value or b"", type=PodRecord)
    assert stored.status == PodStatus.READY
    seen: list[str] = []
    while PodStatus.READY not in seen:
        msg = await events.next_msg(timeout=10)
        event = msgspec.json.decode(msg.data, type=PodEvent)
        assert msg.subject == f"vw.pod.{event.pod.id}.{event.pod.status}"
        seen.append(event.pod.status)
    assert seen[0] == PodStatus.STARTING
    await events.unsubscribe()

    fleet_kv = await js.key_value(FLEET_BUCKET.name)
    beat = msgspec.json.decode((await fleet_kv.get(FLEET_STATUS_KEY)).value or b"", type=FleetStatus)
    assert beat.manager == manager.incarnation and beat.provider == "local" and beat.live_pods == 1

    # A workflow failure is no pod fault: the pod is left alone. A pod fault makes it suspect (the
    # report's stream sequence on the record), and the next probe it passes makes it ready again.
    for kind in (FailureKind.WORKFLOW, FailureKind.POD_FAULT):
        failed = AttemptFailed(request_id="req-1", pod_id=pod.id, attempt=1, kind=kind, error=f"{kind} here")
        ack = await js.publish(
            request_subject("req-1", RequestEvent.ATTEMPT_FAILED),
            msgspec.json.encode(failed),
            headers={"Nats-Msg-Id": f"req-1.{kind}"},
        )
    await until(lambda: manager.pods[pod.id].fault_seq == ack.seq)
    await until(lambda: manager.pods[pod.id].status == PodStatus.READY and manager.pods[pod.id].error is None)
    info = await js.consumer_info("REQUESTS", "pod-manager-faults")
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_a_stopped_pod_manager_terminates_its_local_pods(nats_url: str, vibewave_home: Path, nc: Client):
    service = PodManagerService(settings_for(nats_url, vibewave_home, min_warm_pods=1))
    await service.start()
    try:
        await until(lambda: any(p.status == PodStatus.READY for p in service.pods.values()))
        pod_id = next(iter(service.pods))
    finally:
        await service.stop()
    pods_kv = await nc.jetstream().key_value(PODS_BUCKET.name)
    stored = msgspec.json.decode((await pods_kv.get(pod_id)).value or b"", type=PodRecord)
    assert stored.status == PodStatus.TERMINATED
    beat = msgspec.json.decode(
        (await (await nc.jetstream().key_value(FLEET_BUCKET.name)).get(FLEET_STATUS_KEY)).value or b"",
        type=FleetStatus,
    )
    assert beat.stopping
    assert not (vibewave_home / "pods" / pod_id).exists(), "a terminated local pod's folder is removed"


# ------------------------------------------------------------------------------ local pods' outputs


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


async def test_local_pods_keep_outputs_only_for_the_keep_time(vibewave_home: Path):
    """Files older than LOCAL_OUTPUT_KEEP go (the executor stored them long before), newer ones stay; a
    folder an earlier pod-manager left goes once empty; a terminated pod's folder goes at once."""
    provider = LocalProvider(vibewave_home, command=None, step_time_s=0.01, output_keep_s=60.0)
    try:
        pod = await provider.create("vibewave-test")
        folder = vibewave_home / "pods" / pod.id
        old, fresh = folder / "vibewave_00001_.png", folder / "vibewave_00002_.png"
        nested = folder / "sub" / "vibewave_00003_.png"
        nested.parent.mkdir()
        for path in (old, fresh, nested):
            path.write_bytes(b"png")
        age(old, 120)
        age(nested, 120)
        stale = vibewave_home / "pods" / "local-earlier"  # a pod of a pod-manager that is gone
        stale.mkdir()
        (stale / "left.png").write_bytes(b"png")
        age(stale / "left.png", 600)

        assert await provider.sweep_outputs() == 3
        assert not old.exists() and not nested.exists() and not nested.parent.exists()
        assert fresh.exists() and folder.is_dir(), "a live pod keeps its folder and its recent files"
        assert not stale.exists()

        await provider.terminate(pod.id)
        assert not folder.exists()
    finally:
        await provider.close()


async def test_local_pods_outputs_are_swept_periodically(vibewave_home: Path):
    provider = LocalProvider(vibewave_home, command=None, step_time_s=0.01, output_keep_s=1.0)
    try:
        pod = await provider.create("vibewave-test")
        output = vibewave_home / "pods" / pod.id / "vibewave_00001_.png"
        output.write_bytes(b"png")
        await until(lambda: not output.exists(), timeout=10)
        assert output.parent.is_dir()
    finally:
        await provider.close()
