"""API keys end to end: the four services as processes, two api replicas, keys in NATS KV.

No key → 401; a `generate` key submits and reads its own tenant's requests and files, gets 404 for
another tenant's and 403 on pods and keys; a revoked key is refused at once by both replicas; limits
answer 429 with `Retry-After`; a non-loopback API_HOST without keys does not start.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import StackFactory
from tests.support.stack import Stack, free_port, wait_for
from vibewave.runtime.process import EX_CONFIG

pytestmark = pytest.mark.e2e

ADMIN_KEY = "adm-" + secrets.token_urlsafe(24)
BODY = {"prompt": "a lighthouse in a storm", "width": 512, "height": 512, "steps": 4}


@pytest.fixture(scope="module")
def keyed(start_stack: StackFactory) -> Stack:
    second = free_port()
    stack = start_stack(VIBEWAVE_ADMIN_KEY=ADMIN_KEY, service_env={"api@2": {"API_PORT": str(second)}})
    stack.start("api@2")
    stack.second_url = f"http://127.0.0.1:{second}"  # type: ignore[attr-defined]
    wait_for(lambda: _answers(f"http://127.0.0.1:{second}/health"), 60, "the second api")
    return stack


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.TransportError:
        return False


class Client:
    """One caller with one key."""

    def __init__(self, base_url: str, key: str | None) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=15)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.get(path, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.post(path, **kw)

    def delete(self, path: str) -> httpx.Response:
        return self.http.delete(path)

    def finished(self, request_id: str, timeout: float = 60) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            body: dict[str, Any] = self.get(f"/api/qwen/status/{request_id}").json()
            return body if body.get("status") in {"completed", "failed", "cancelled"} else None

        found: dict[str, Any] = wait_for(done, timeout, f"{request_id} to finish")
        return found


@pytest.fixture
def admin(keyed: Stack) -> Iterator[Client]:
    client = Client(keyed.base_url, ADMIN_KEY)
    yield client
    client.http.close()


def make_key(admin: Client, name: str, **spec: Any) -> dict[str, Any]:
    response = admin.post("/api/keys", json={"name": name, **spec})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    assert created["key"].startswith("vw_") and created["tenant"]
    return created


def test_without_a_key_everything_but_health_and_docs_is_401(keyed: Stack) -> None:
    anonymous = Client(keyed.base_url, None)
    for method, path in [
        ("POST", "/api/qwen/generate-async"),
        ("GET", "/api/qwen/status/req-0123456789abcdef"),
        ("GET", "/api/runpod/workflows/history"),
        ("GET", "/api/runpod/pods"),
        ("GET", "/api/keys"),
        ("GET", "/api/files/qwen_1_001.png"),
        ("GET", "/api/qwen/presets"),
    ]:
        response = anonymous.http.request(method, path, json=BODY if method == "POST" else None)
        assert response.status_code == 401, (method, path, response.text)
        assert "detail" in response.json() and response.headers["www-authenticate"].startswith("Bearer")
    wrong = Client(keyed.base_url, "vw_0123456789ab_" + "x" * 43)
    assert wrong.get("/api/qwen/presets").status_code == 401
    for open_path in ("/health", "/api/qwen/health", "/schema/openapi.json", "/docs", "/redoc"):
        assert anonymous.get(open_path).status_code in (200, 503), open_path  # health may say 503, never 401


def test_a_generate_key_sees_its_own_tenant_only(keyed: Stack, admin: Client) -> None:
    alice = Client(keyed.base_url, make_key(admin, "alice", scopes=["generate", "read"])["key"])
    bob = Client(keyed.base_url, make_key(admin, "bob", scopes=["generate"])["key"])

    accepted = alice.post("/api/qwen/generate-async", json=BODY)
    assert accepted.status_code == 202, accepted.text
    request_id = accepted.json()["request_id"]
    done = alice.finished(request_id)
    assert done["status"] == "completed", done
    assert done["result"]["pod_ip"] is None  # pod addresses are for admin keys only
    file_name = done["result"]["files"][0]

    assert alice.get(f"/api/files/{file_name}").status_code == 200
    assert bob.get(f"/api/files/{file_name}").status_code == 404
    assert bob.get(f"/api/qwen/status/{request_id}").status_code == 404
    assert bob.get(f"/api/runpod/workflows/status/{request_id}").status_code == 404
    assert bob.delete(f"/api/runpod/workflows/{request_id}").status_code == 404
    assert admin.get(f"/api/qwen/status/{request_id}").status_code == 200
    assert admin.get(f"/api/files/{file_name}").status_code == 200

    history = alice.get("/api/runpod/workflows/history").json()
    assert [r["id"] for r in history] == [request_id]
    assert alice.get("/api/runpod/stats").json()["total_requests"] == 1
    queue = alice.get("/api/runpod/workflows/queue/status").json()
    assert [r["id"] for r in queue["completed_requests"]] == [request_id]
    assert all(p["ip"] is None for p in queue["active_pods"])

    batch = bob.post("/api/qwen/batch-generate", json={"prompts": ["one", "two"], "width": 512, "height": 512})
    assert batch.status_code == 202, batch.text
    batch_id = batch.json()["batch_id"]
    assert bob.get(f"/api/qwen/status/{batch_id}").status_code == 200
    assert alice.get(f"/api/qwen/status/{batch_id}").status_code == 404
    # bob's key lacks `read`: overviews are 403, its own requests still readable
    assert bob.get("/api/runpod/workflows/history").status_code == 403

    for path in ("/api/runpod/pods", "/api/runpod/account", "/api/runpod/gpu-types", "/api/keys"):
        response = alice.get(path)
        assert response.status_code == 403, (path, response.text)
        assert "admin" in response.json()["detail"]
    assert alice.post("/api/runpod/pods", json={}).status_code == 403
    assert alice.post("/api/keys", json={"name": "mine"}).status_code == 403

    # the same Idempotency-Key in two tenants makes two requests (keys are per tenant)
    key = {"Idempotency-Key": "same-key-" + secrets.token_hex(4)}
    first = alice.post("/api/qwen/generate-async", json=BODY, headers=key).json()["request_id"]
    second = bob.post("/api/qwen/generate-async", json=BODY, headers=key).json()["request_id"]
    assert first != second


def test_a_revoked_key_is_refused_at_once_by_both_replicas(keyed: Stack, admin: Client) -> None:
    created = make_key(admin, "carol")
    first, second = Client(keyed.base_url, created["key"]), Client(keyed.second_url, created["key"])  # type: ignore[attr-defined]
    assert first.get("/api/qwen/presets").status_code == 200
    assert second.get("/api/qwen/presets").status_code == 200
    listed = admin.get("/api/keys").json()
    assert created["id"] in [k["id"] for k in listed] and all("key" not in k for k in listed)

    revoked = admin.delete(f"/api/keys/{created['id']}")
    assert revoked.status_code == 200, revoked.text
    assert second.get("/api/qwen/presets").status_code == 401  # the other replica, right after
    assert first.get("/api/qwen/presets").status_code == 401
    assert second.post("/api/qwen/generate-async", json=BODY).status_code == 401
    assert admin.delete(f"/api/keys/{created['id']}").status_code == 404

    def access_lines() -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in keyed.logs().splitlines() if '"vibewave.api.access"' in line]
        return [line for line in lines if line["route"] == "/api/qwen/presets"]

    def refused_and_allowed() -> list[dict[str, Any]] | None:
        lines = access_lines()
        ok = [line for line in lines if line["key_id"] == created["id"]]
        refused = [line for line in lines if line["status"] == 401]
        return lines if len(ok) >= 2 and refused else None

    lines = wait_for(refused_and_allowed, 10, "the access log lines of both replicas")
    assert {(line["method"], line["status"]) for line in lines if line["key_id"] == created["id"]} == {("GET", 200)}
    assert all(isinstance(line["duration_ms"], float) for line in lines)
    logs = keyed.logs()
    assert created["key"] not in logs and ADMIN_KEY not in logs


def test_the_rate_limit_answers_429_with_retry_after_then_accepts(keyed: Stack, admin: Client) -> None:
    dave = Client(keyed.second_url, make_key(admin, "dave", requests_per_minute=30)["key"])  # type: ignore[attr-defined]
    other_replica = Client(keyed.base_url, dave.http.headers["authorization"].split()[1])
    batch = {"prompts": [f"frame {i}" for i in range(15)], "width": 512, "height": 512}
    assert dave.post("/api/qwen/batch-generate", json=batch).status_code == 202
    assert other_replica.post("/api/qwen/batch-generate", json=batch).status_code == 202  # shared: 30 spent

    refused = other_replica.post("/api/qwen/generate-async", json=BODY)
    assert refused.status_code == 429, refused.text
    retry_after = int(refused.headers["retry-after"])
    assert 1 <= retry_after <= 2 and "per minute" in refused.json()["detail"]
    assert dave.post("/api/qwen/generate-async", json=BODY).status_code == 429  # the other replica agrees

    time.sleep(retry_after)  # what a client does with Retry-After
    assert dave.post("/api/qwen/generate-async", json=BODY).status_code == 202

    too_big = Client(keyed.base_url, make_key(admin, "erin", requests_per_minute=5)["key"])
    response = too_big.post("/api/qwen/batch-generate", json={**batch, "prompts": batch["prompts"][:6]})
    assert response.status_code == 400 and "per minute" in response.json()["detail"]


def test_a_non_loopback_host_without_keys_refuses_to_start(tmp_path: Any) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("VIBEWAVE_ADMIN_KEY", "VIBEWAVE_AUTH")}
    env.update(
        API_HOST="0.0.0.0", API_PORT=str(free_port()), VIBEWAVE_HOME=str(tmp_path), NATS_URL="nats://127.0.0.1:1"
    )
    done = subprocess.run([sys.executable, "-m", "vibewave.api"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == EX_CONFIG, done.stderr
    assert "API_HOST=0.0.0.0" in done.stderr and "VIBEWAVE_ADMIN_KEY" in done.stderr
    assert "VIBEWAVE_AUTH=off" in done.stderr
