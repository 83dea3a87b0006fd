"""A burst of 200 requests while the scheduler, then an executor, then pod-manager (whose local pods die
with it), then NATS itself are killed and restarted: afterwards every accepted request is terminal exactly
once, none is lost, none failed, none ran twice."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from uuid import NAMESPACE_URL, uuid5

import httpx
import pytest

from tests.e2e.conftest import StackFactory
from tests.support.requests import read_bucket
from tests.support.stack import Stack, submit_until_accepted, wait_for
from vibewave.contracts.events import PODS_BUCKET, REQUESTS_BUCKET, PodRecord, RequestRecord
from vibewave.devstack.nats_server import EmbeddedNats
from vibewave.runtime.broker import decode

pytestmark = pytest.mark.e2e

BURST = 200


@pytest.fixture(scope="module")
def chaos_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path_factory.mktemp("chaos-nats"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack(start_stack: StackFactory, chaos_nats: EmbeddedNats) -> Stack:
    return start_stack(chaos_nats, MAX_PODS="3", EXECUTOR_ACK_WAIT="3", SIM_STEP_TIME="0.02", POD_IDLE_TIMEOUT="600")


def _submit(base_url: str, index: int) -> str:
    body = {"prompt": f"chaos {index}", "seed": index, "width": 256, "height": 256}
    return submit_until_accepted(base_url, body, f"chaos-{index}", bound=90)


def test_burst_through_scheduler_executor_and_nats_restarts(stack: Stack, chaos_nats: EmbeddedNats):
    accepted: list[str] = []
    lock = threading.Lock()

    def submit(index: int) -> None:
        request_id = _submit(stack.base_url, index)
        with lock:
            accepted.append(request_id)

    def reached(count: int) -> bool:
        with lock:
            return len(accepted) >= count

    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(submit, i) for i in range(BURST)]
        wait_for(lambda: reached(40), 60, "40 accepted requests")
        stack.kill("scheduler")
        stack.start("scheduler")
        wait_for(lambda: reached(90), 60, "90 accepted requests")
        stack.kill("executor")
        stack.start("executor")
        wait_for(lambda: reached(115), 60, "115 accepted requests")
        stack.kill("pod-manager")
        stack.start("pod-manager")
        wait_for(lambda: reached(140), 60, "140 accepted requests")
        chaos_nats.restart()
        for future in futures:
            future.result()

    assert len(set(accepted)) == BURST, "one request per submission, even when the client retried"

    def all_terminal() -> list[RequestRecord] | None:
        records = [decode(v, RequestRecord) for v in asyncio.run(read_bucket(chaos_nats.url, REQUESTS_BUCKET.name))]
        mine = [r for r in records if r.id in set(accepted)]
        return mine if len(mine) == BURST and all(r.status.terminal for r in mine) else None

    try:
        records = wait_for(all_terminal, 180, "every request to end", interval=0.5)
    except AssertionError:
        stored = [decode(v, RequestRecord) for v in asyncio.run(read_bucket(chaos_nats.url, REQUESTS_BUCKET.name))]
        stuck = [(r.id, str(r.status), r.attempts, r.pod_id) for r in stored if not r.status.terminal]
        missing = set(accepted) - {r.id for r in stored}
        raise AssertionError(f"not ended: {len(stuck)} {stuck[:5]}; never recorded: {sorted(missing)[:5]}") from None
    states = Counter(str(r.status) for r in records)
    assert sum(states.values()) == BURST
    assert states == {"completed": BURST}, {r.id: r.error for r in records if r.status != "completed"}

    # No request ran twice to completion: count successful prompts per request across every pod's ComfyUI.
    pods = [decode(v, PodRecord) for v in asyncio.run(read_bucket(chaos_nats.url, PODS_BUCKET.name))]
    prompt_of = {str(uuid5(NAMESPACE_URL, f"vibewave:{r.id}:{a}")): r.id for r in records for a in range(1, 5)}
    runs: Counter[str] = Counter()
    for pod in pods:
        if pod.comfyui_url and pod.status == "ready":
            history = httpx.get(f"{pod.comfyui_url}/history", timeout=10).json()
            for prompt_id, entry in history.items():
                if entry["status"]["status_str"] == "success" and prompt_id in prompt_of:
                    runs[prompt_of[prompt_id]] += 1
    assert runs and max(runs.values()) == 1, [r for r, n in runs.items() if n > 1]

    stats = wait_for(
        lambda: (s := stack.client.get("/api/runpod/stats").json())["completed_requests"] >= BURST and s,
        30,
        "the api's index to catch up after the NATS restart",
    )
    assert stats["total_requests"] == BURST and stats["pending_requests"] == 0
