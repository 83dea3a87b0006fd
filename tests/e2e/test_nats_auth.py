"""The four services, each on its own NATS user with the permissions of `nats_auth`, serve requests as
without credentials: the server refuses none of what they do, and no log shows a password."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.chaos.harness import processes_of
from tests.support.stack import Stack
from vibewave.devstack import nats_auth
from vibewave.devstack.nats_server import EmbeddedNats

pytestmark = pytest.mark.e2e


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[Stack, EmbeddedNats, dict[str, str]]]:
    passwords = nats_auth.new_passwords(nats_auth.USERS)
    server = EmbeddedNats(tmp_path / "nats", authorization=nats_auth.authorization_block(passwords))
    server.start()
    home = tmp_path / "home"
    home.mkdir()
    stack = Stack(server.url, home, nats_passwords=passwords, MAX_PODS="1")
    try:
        stack.start()
        stack.wait_healthy(timeout=60)
        yield stack, server, passwords
    finally:
        stack.close()
        server.stop()


def test_a_request_is_served_with_a_nats_user_per_service(
    secured: tuple[Stack, EmbeddedNats, dict[str, str]],
) -> None:
    stack, server, passwords = secured
    health = stack.wait_healthy()
    assert health["status"] == "healthy" and all(s["healthy"] for s in health["services"]), health

    done = stack.wait_status(stack.generate("each on its own user"), {"completed", "failed"})
    assert done["status"] == "completed", done
    download = stack.client.get(f"/api/files/{done['result']['files'][0]}")
    assert download.status_code == 200 and download.content
    pods = stack.client.get("/api/runpod/pods")  # the api's admin call, answered by pod-manager
    assert pods.status_code == 200 and pods.json(), pods.text
    (pod,) = pods.json()
    slow = {"step_time": 0.1}  # a run of 5 s, cancelled while it runs: the executor hears the cancel
    httpx.post(f"{pod['comfyui_url']}/vibewave-sim/faults", json=slow).raise_for_status()
    running = stack.generate("cancelled", steps=50)
    stack.wait_status(running, {"running"})
    cancelled = stack.client.delete(f"/api/runpod/workflows/{running}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", cancelled.text
    httpx.post(f"{pod['comfyui_url']}/vibewave-sim/faults", json={"step_time": 0.01}).raise_for_status()
    synchronous = stack.client.post("/api/qwen/generate", json={"prompt": "waited for"}, timeout=60)
    assert synchronous.status_code == 200, synchronous.text

    local_pods = [pid for pid, command in processes_of(stack.home).items() if "vibewave.comfyui_sim" in command]
    assert local_pods, "a local pod runs"
    for pid in local_pods:  # a pod of pod-manager's is no NATS client: it gets no credentials
        assert b"NATS_PASSWORD=" not in Path(f"/proc/{pid}/environ").read_bytes()

    stack.close()
    violations = [line for line in server.log_path.read_text().splitlines() if "Violation" in line]
    assert not violations, "the services were refused what they do:\n" + "\n".join(violations[:20])
    logs = {path: path.read_text(errors="replace") for path in (*stack.home.glob("*.out"), *stack.home.rglob("*.log"))}
    assert any(path.name == "scheduler.log" for path in logs), sorted(logs)
    for path, text in logs.items():
        for user, password in passwords.items():
            assert password not in text, f"{user}'s NATS password is in {path}"
