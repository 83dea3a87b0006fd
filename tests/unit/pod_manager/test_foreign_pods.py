"""Pod-manager's admin calls on pods Vibewave does not own: refused (403) unless POD_MANAGE_FOREIGN."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from vibewave.contracts.events import PodAdminRequest, PodOperation, PodRecord, PodStatus
from vibewave.pod_manager.admin import Admin
from vibewave.pod_manager.providers import ProviderPod, ProviderState
from vibewave.pod_manager.settings import PodManagerSettings

pytestmark = pytest.mark.unit

ACTIONS = (PodOperation.START, PodOperation.STOP, PodOperation.RESTART, PodOperation.TERMINATE)


class FakeManager:
    """What Admin reads of PodManagerService, with a provider that lists the pods given."""

    def __init__(self, settings: PodManagerSettings, *pods: ProviderPod) -> None:
        self.settings = settings
        self.pods: dict[str, PodRecord] = {}
        self.lock = asyncio.Lock()
        self.acted: list[tuple[str, str]] = []
        self.provider = self
        self.name = "runpod"
        self._found = {pod.id: pod for pod in pods}
        for operation in ACTIONS:
            setattr(self, f"admin_{operation}", self._recorder(operation))

    def _recorder(self, operation: str) -> Any:
        async def act(pod_id: str) -> None:
            self.acted.append((operation, pod_id))

        return act

    def is_ours(self, name: str) -> bool:
        return name.startswith(f"{self.settings.name_prefix}-")

    async def get(self, pod_id: str) -> ProviderPod | None:
        return self._found.get(pod_id)


def pod(pod_id: str, name: str) -> ProviderPod:
    return ProviderPod(id=pod_id, name=name, state=ProviderState.RUNNING)


def settings(monkeypatch: pytest.MonkeyPatch, value: str | None) -> PodManagerSettings:
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    if value is None:
        monkeypatch.delenv("POD_MANAGE_FOREIGN", raising=False)
    else:
        monkeypatch.setenv("POD_MANAGE_FOREIGN", value)
    return PodManagerSettings.from_env()


async def call(manager: FakeManager, operation: PodOperation, pod_id: str) -> Any:
    handler = getattr(Admin(manager), operation.value)  # type: ignore[arg-type]
    return await handler(PodAdminRequest(pod_id=pod_id))


def test_pod_manage_foreign_is_off_unless_set(monkeypatch):
    assert settings(monkeypatch, None).manage_foreign is False
    assert settings(monkeypatch, "true").manage_foreign is True
    assert settings(monkeypatch, "false").manage_foreign is False


async def test_actions_on_a_foreign_pod_are_refused_and_change_nothing(monkeypatch):
    manager = FakeManager(settings(monkeypatch, None), pod("x1", "jupyter-of-someone"))
    for operation in ACTIONS:
        reply = await call(manager, operation, "x1")
        assert reply.status == 403
        assert reply.error.startswith("pod x1 is not managed by Vibewave; set POD_MANAGE_FOREIGN=true to ")
        assert f" to {operation} " in reply.error
    assert manager.acted == []
    assert (await call(manager, PodOperation.GET, "x1")).status == 200, "reading it stays allowed"
    assert (await call(manager, PodOperation.STOP, "nope")).status == 404


async def test_our_pods_by_record_or_by_name_are_acted_on(monkeypatch):
    manager = FakeManager(settings(monkeypatch, None), pod("v1", "vibewave-3fa9c1"), pod("r1", "renamed"))
    now = datetime.now(UTC)
    manager.pods["r1"] = PodRecord(  # a pod Vibewave keeps a record of, whatever its name
        id="r1", name="renamed", provider="runpod", status=PodStatus.READY, created_at=now, updated_at=now
    )
    for pod_id in ("v1", "r1"):
        assert (await call(manager, PodOperation.STOP, pod_id)).status == 200
    assert manager.acted == [("stop", "v1"), ("stop", "r1")]


async def test_with_pod_manage_foreign_a_foreign_pod_is_acted_on(monkeypatch):
    manager = FakeManager(settings(monkeypatch, "true"), pod("x1", "jupyter-of-someone"))
    assert (await call(manager, PodOperation.TERMINATE, "x1")).status == 200
    assert manager.acted == [("terminate", "x1")]
