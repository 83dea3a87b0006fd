"""The probes of issue 16: `/health/live` says the process answers, `/health/ready` that it can do its job,
and neither follows `/health`, which judges the whole system (a liveness probe on it would restart a
healthy api during an executor outage)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.stack import Stack, free_port, wait_for
from vibewave.devstack.nats_server import EmbeddedNats

pytestmark = pytest.mark.e2e

SERVICES = ("api", "scheduler", "pod-manager", "executor")


@pytest.fixture
def own(tmp_path: Path) -> Iterator[tuple[Stack, EmbeddedNats]]:
    """A stack on a NATS of its own, on a fixed port: the test stops it and starts it again."""
    nats = EmbeddedNats(tmp_path / "nats", port=free_port())
    nats.start()
    (tmp_path / "home").mkdir()
    stack = Stack(nats.url, tmp_path / "home")
    try:
        stack.start()
        stack.wait_healthy(timeout=60)
        yield stack, nats
    finally:
        if not nats.running:
            nats.start()  # the services stop quickly with their NATS there
        stack.close()
        nats.stop()


def probe(stack: Stack, service: str, which: str) -> tuple[int | None, dict[str, object] | None]:
    try:
        response = httpx.get(f"{stack.ops_url(service)}/health/{which}", timeout=3)
    except httpx.TransportError:
        return None, None
    return response.status_code, response.json()


def test_ready_everywhere_and_live_while_the_executor_is_down(own: tuple[Stack, EmbeddedNats]) -> None:
    stack, _ = own
    for service in SERVICES:
        assert probe(stack, service, "ready") == (200, {"status": "ready", "detail": None}), service
        assert probe(stack, service, "live") == (200, {"status": "live", "detail": None}), service
    stack.stop("executor")
    wait_for(lambda: (h := stack.health()) is not None and h.status_code == 503, 20, "/health to miss the executor")
    assert "executor" in stack.health().json()["unhealthy"]  # type: ignore[union-attr]
    assert probe(stack, "api", "live")[0] == 200
    assert probe(stack, "api", "ready")[0] == 200, "the api itself can serve: reads and submissions queue"
    assert stack.client.get("/metrics").status_code == 200


def test_not_ready_while_nats_is_gone_and_ready_again_after(own: tuple[Stack, EmbeddedNats]) -> None:
    stack, nats = own
    nats.stop()
    for service in SERVICES:
        wait_for(lambda s=service: probe(stack, s, "ready")[0] == 503, 20, f"{service} not ready without NATS")
        _, body = probe(stack, service, "ready")
        assert body is not None and body["status"] == "not ready" and "NATS" in str(body["detail"]), (service, body)
        assert probe(stack, service, "live")[0] == 200, f"{service} is alive all the same"
    nats.start()
    for service in SERVICES:
        wait_for(lambda s=service: probe(stack, s, "ready")[0] == 200, 60, f"{service} ready once NATS is back")
