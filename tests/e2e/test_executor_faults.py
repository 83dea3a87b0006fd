"""The executor's faults, named for what they are, with the real services as processes:

- an executor SIGKILLed mid-run: its assignment comes back (ack wait 3 s, kept alive while a run lasts)
  to the next executor, which follows the prompt already on the pod, and the request completes;
- NATS away for 30 s while 5 requests run: no run fails for it, and none is reported as timed out —
  the outcomes wait for NATS and every request completes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import StackFactory
from tests.support.dispatch import dispatch_state
from tests.support.stack import Stack, wait_for
from vibewave.devstack.nats_server import EmbeddedNats

pytestmark = pytest.mark.e2e

TERMINAL = {"completed", "failed", "cancelled"}
STEP_TIME = 0.5  # seconds per sampler step in the simulated ComfyUI: runs last long enough to be hit mid-way


@pytest.fixture(scope="module")
def fault_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path_factory.mktemp("executor-faults-nats"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack(start_stack: StackFactory, fault_nats: EmbeddedNats) -> Stack:
    return start_stack(fault_nats, MAX_PODS="5", SIM_STEP_TIME=str(STEP_TIME), POD_IDLE_TIMEOUT="600")


def test_a_killed_executors_assignment_runs_again_within_seconds_and_completes(stack: Stack):
    request_id = stack.generate("killed mid-run", seed=11, steps=16, width=256, height=256)  # ~8 s of sampling
    stack.record(request_id, {"running"}, timeout=90)
    time.sleep(2 * STEP_TIME)  # a step or two into the sampler: mid-run, not at its start
    assert dispatch_state(stack.env["NATS_URL"]).ack_pending == 1

    killed = time.monotonic()
    stack.kill("executor")
    stack.start("executor")

    def ran_again() -> bool:
        logs = stack.logs()
        return (
            dispatch_state(stack.env["NATS_URL"]).redelivered > 0
            or "already queued on this pod; following it" in logs
            or "already finished on this pod; collecting it" in logs
        )

    wait_for(ran_again, 5, "the killed executor's assignment to be delivered again", interval=0.1)
    redelivered_after = time.monotonic() - killed
    record = stack.record(request_id, TERMINAL, timeout=60)
    assert record.status == "completed", record.error
    assert record.attempts == 1, "the same attempt ran on, no retry was needed"
    assert record.result is not None and len(record.result.files) == 1
    print(f"SIGKILL → assignment redelivered to the new executor: {redelivered_after:.2f}s")


def test_nats_away_for_30s_while_5_requests_run_fails_none_of_them(stack: Stack, fault_nats: EmbeddedNats):
    ids = [stack.generate(f"outage {i}", seed=100 + i, steps=40, width=256, height=256) for i in range(5)]  # ~20 s
    for request_id in ids:
        stack.record(request_id, {"running", *TERMINAL}, timeout=120)
    assert dispatch_state(stack.env["NATS_URL"]).ack_pending == 5, "all five are mid-run"

    fault_nats.stop()
    time.sleep(30)  # the outage itself
    fault_nats.start()

    records = [stack.record(request_id, TERMINAL, timeout=120) for request_id in ids]
    problems = {r.id: (str(r.status), r.error, [n.error for n in r.attempt_log]) for r in records}
    assert all(r.status == "completed" for r in records), problems
    assert not any("timed out" in str(p) for p in problems.values()), problems
    assert "TimeoutError" not in "".join(line for line in stack.logs().splitlines() if "attempt failed" in line)
