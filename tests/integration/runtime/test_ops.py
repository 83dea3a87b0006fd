"""The ops port of a real service process: alive while its start waits for NATS, ready once it started,
not ready while its NATS is gone; `/metrics` in Prometheus text throughout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.stack import free_port, parse_metrics, wait_for
from vibewave.devstack.nats_server import EmbeddedNats
from vibewave.runtime.ops import OpsServer

pytestmark = pytest.mark.integration


def get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=2)
    except httpx.TransportError:
        return None


def status(url: str) -> int | None:
    response = get(url)
    return response.status_code if response is not None else None


@pytest.fixture
def executor(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """An executor whose NATS (on a port of its own) is not up yet: (its ops URL, the NATS port)."""
    nats_port, ops_port = free_port(), free_port()
    env = {
        **os.environ,
        "NATS_URL": f"nats://127.0.0.1:{nats_port}",
        "VIBEWAVE_HOME": str(tmp_path / "home"),
        "OPS_PORT": str(ops_port),
    }
    with (tmp_path / "executor.out").open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "vibewave.executor"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield f"http://127.0.0.1:{ops_port}", nats_port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_live_while_starting_ready_once_started_and_not_while_nats_is_gone(
    executor: tuple[str, int], tmp_path: Path
) -> None:
    url, nats_port = executor
    wait_for(lambda: status(f"{url}/health/live") == 200, 20, "liveness while the start waits for NATS")
    assert get(f"{url}/health/live").json() == {"status": "live", "detail": None}  # type: ignore[union-attr]
    not_ready = get(f"{url}/health/ready")
    assert not_ready is not None and not_ready.status_code == 503
    assert not_ready.json()["status"] == "not ready" and "starting" in not_ready.json()["detail"]
    scrape = get(f"{url}/metrics")
    assert scrape is not None and scrape.status_code == 200
    assert scrape.headers["content-type"].startswith("text/plain; version=")
    assert "process_cpu_seconds_total" in {s.name for s in parse_metrics(scrape.text)}

    nats = EmbeddedNats(tmp_path / "nats", port=nats_port)
    nats.start()
    try:
        wait_for(lambda: status(f"{url}/health/ready") == 200, 30, "readiness once NATS is up and it started")
        assert get(f"{url}/health/ready").json()["status"] == "ready"  # type: ignore[union-attr]
    finally:
        nats.stop()
    wait_for(lambda: status(f"{url}/health/ready") == 503, 15, "not ready while its NATS is gone")
    assert get(f"{url}/health/ready").json()["detail"] == "NATS is not connected"  # type: ignore[union-attr]
    assert status(f"{url}/health/live") == 200


async def test_a_readiness_check_that_fails_is_a_503_not_a_crash() -> None:
    def broken() -> str | None:
        raise RuntimeError("boom")

    server = OpsServer("127.0.0.1", 0, broken)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as client:
            ready = await client.get("/health/ready")
            assert ready.status_code == 503
            assert ready.json() == {"status": "not ready", "detail": "readiness check failed: RuntimeError"}
            assert (await client.get("/health/live")).status_code == 200
    finally:
        await server.stop()
