"""A pod on the provider that Vibewave did not create — here a local pod made straight through the
provider, as someone else would on the RunPod account — is read-only over the admin calls unless
POD_MANAGE_FOREIGN is on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client

from tests.integration.pod_manager.test_service import admin, nc, settings_for  # noqa: F401
from vibewave.contracts.events import PodOperation
from vibewave.pod_manager.providers import ProviderPod, ProviderState
from vibewave.pod_manager.service import PodManagerService

pytestmark = pytest.mark.integration

ACTIONS = (PodOperation.START, PodOperation.STOP, PodOperation.RESTART, PodOperation.TERMINATE)


async def started(nats_url: str, home: Path, *, manage_foreign: bool) -> PodManagerService:
    service = PodManagerService(settings_for(nats_url, home, manage_foreign=manage_foreign))
    await service.start()
    return service


@pytest.fixture
async def read_only(nats_url: str, vibewave_home: Path) -> AsyncIterator[PodManagerService]:
    service = await started(nats_url, vibewave_home, manage_foreign=False)
    try:
        yield service
    finally:
        await service.stop()


async def foreign_pod(manager: PodManagerService) -> ProviderPod:
    return await manager.provider.create("someone-elses-notebook")


async def test_a_pod_vibewave_did_not_create_is_listed_and_read_but_not_touched(read_only, nc):  # noqa: F811
    pod = await foreign_pod(read_only)
    try:
        listed = await admin(nc, PodOperation.LIST)
        assert [(p["id"], p["managed"]) for p in listed.data] == [(pod.id, False)]
        got = await admin(nc, PodOperation.GET, pod_id=pod.id)
        assert got.status == 200 and not got.data["managed"]
        for operation in ACTIONS:
            refused = await admin(nc, operation, pod_id=pod.id)
            assert refused.status == 403, (operation, refused)
            assert refused.error == (
                f"pod {pod.id} is not managed by Vibewave; set POD_MANAGE_FOREIGN=true to {operation} pods it did "
                "not create"
            )
        after = await read_only.provider.get(pod.id)
        assert after is not None and after.state == ProviderState.RUNNING, "the pod was left as it was"
        assert pod.id not in read_only.pods
        assert (await admin(nc, PodOperation.STOP, pod_id="local-nope")).status == 404, "unknown is still 404"
    finally:
        await read_only.provider.terminate(pod.id)


async def test_with_pod_manage_foreign_on_a_foreign_pod_can_be_stopped_and_terminated(
    nats_url: str,
    vibewave_home: Path,
    nc: Client,  # noqa: F811
):
    manager = await started(nats_url, vibewave_home, manage_foreign=True)
    pod = await foreign_pod(manager)
    try:
        stopped = await admin(nc, PodOperation.STOP, pod_id=pod.id)
        assert stopped.status == 200 and stopped.data["provider_state"] == "stopped"
        assert not stopped.data["managed"], "acting on it does not make it Vibewave's"
        gone = await admin(nc, PodOperation.TERMINATE, pod_id=pod.id)
        assert gone.status == 200 and gone.data["status"] == "terminated"
        assert await manager.provider.get(pod.id) is None
    finally:
        if await manager.provider.get(pod.id) is not None:
            await manager.provider.terminate(pod.id)
        await manager.stop()
