"""Fair share across tenants, end to end through the API: on a one-pod fleet, tenant A has 200 requests
queued when tenant B submits one; B's starts at most one run later (the run going when it arrived, plus
at most one placed at the same moment), not after A's 200."""

from __future__ import annotations

import secrets
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import StackFactory
from tests.support.events import request_events
from tests.support.stack import wait_for

pytestmark = pytest.mark.e2e

ADMIN_KEY = "adm-" + secrets.token_urlsafe(24)
SIZE = {"width": 256, "height": 256, "steps": 4}


def test_a_tenants_single_request_waits_at_most_one_run_behind_another_tenants_200(
    start_own_stack: StackFactory,
) -> None:
    stack = start_own_stack(VIBEWAVE_ADMIN_KEY=ADMIN_KEY, MAX_PODS="1", SIM_STEP_TIME="0.25")
    admin = httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=15)

    def client(name: str) -> httpx.Client:
        made = admin.post("/api/keys", json={"name": name, "requests_per_minute": 10_000})
        assert made.status_code == 201, made.text
        return httpx.Client(
            base_url=stack.base_url, headers={"Authorization": f"Bearer {made.json()['key']}"}, timeout=15
        )

    tenant_a, tenant_b = client("studio-a"), client("studio-b")
    a_ids: list[str] = []
    for call in range(13):  # 200 requests in batches of at most 16
        prompts = [f"a frame {call}-{i}" for i in range(16 if call < 12 else 8)]
        accepted = tenant_a.post("/api/qwen/batch-generate", json={"prompts": prompts, **SIZE})
        assert accepted.status_code == 202, accepted.text
        a_ids += accepted.json()["request_ids"]
    assert len(a_ids) == 200

    def a_running() -> bool:
        queue: dict[str, Any] = tenant_a.get("/api/runpod/workflows/queue/status", params={"limit": 1000}).json()
        return any(r["status"] in ("assigned", "running") for r in queue["pending_requests"])

    wait_for(a_running, 60, "one of tenant A's requests to run on the one pod")
    b_id = tenant_b.post("/api/qwen/generate-async", json={"prompt": "the only one", **SIZE}).json()["request_id"]

    def b_finished() -> bool:
        status: str = tenant_b.get(f"/api/qwen/status/{b_id}").json()["status"]
        return status in ("completed", "failed")

    wait_for(b_finished, 60, "tenant B's request to finish")
    events = request_events(stack.env["NATS_URL"])
    b_submitted, b_started = events[b_id]["submitted"][0], events[b_id]["started"][0]
    a_started_between = [
        request_id for request_id in a_ids
        if any(b_submitted < at < b_started for at in events.get(request_id, {}).get("started", []))
    ]  # fmt: skip
    a_waiting = sum(
        1 for request_id in a_ids if not any(at < b_started for at in events.get(request_id, {}).get("started", []))
    )
    print(f"B waited behind {len(a_started_between)} of A's runs; {a_waiting} of A's were still waiting")
    assert len(a_started_between) <= 1, f"{len(a_started_between)} of A's runs started before B's"
    assert a_waiting > 150, f"only {a_waiting} of A's were still waiting when B's started: the test proved nothing"
    assert tenant_b.get(f"/api/qwen/status/{b_id}").json()["status"] == "completed"
