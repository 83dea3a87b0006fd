"""Fair share of pods across tenants within a priority class (start-time fair queuing by weight)."""

from collections import Counter

import msgspec
import pytest

from tests.unit.scheduler.test_placement import fixed_clock, placed, pod, request
from vibewave.contracts.events import PodStatus, RequestRecord
from vibewave.contracts.models import Priority
from vibewave.scheduler.placement import Placer

pytestmark = pytest.mark.unit


def of(
    tenant: str, n: int, weight: float = 1.0, priority: Priority = Priority.NORMAL, workflow: str = "wf", needs: int = 0
) -> RequestRecord:
    return msgspec.structs.replace(request(n, priority, workflow, needs), tenant=tenant, share_weight=weight)


def run_one_pod(placer: Placer, runs: int) -> list[str]:
    """Place and finish `runs` requests one after another on the single pod; their ids in order."""
    order = []
    for _ in range(runs):
        [(request_id, _)] = placed(placer)
        order.append(request_id)
        placer.release(request_id)
    return order


def test_a_single_request_of_another_tenant_waits_one_run_behind_a_burst():
    placer = Placer(clock=fixed_clock)
    for n in range(200):
        placer.enqueue(of("a", n))
    placer.update_pod(pod(1))
    assert placed(placer) == [("r0", "p1")]
    placer.enqueue(of("b", 500))
    assert placed(placer) == [], "the pod is busy"
    placer.release("r0")
    assert placed(placer) == [("r500", "p1")], "the next free slot goes to the tenant with nothing run yet"
    placer.release("r500")
    assert run_one_pod(placer, 3) == ["r1", "r2", "r3"]


def test_with_several_pods_the_newcomer_takes_the_first_one_freed():
    placer = Placer(clock=fixed_clock)
    for n in range(50):
        placer.enqueue(of("a", n))
    for n in range(3):
        placer.update_pod(pod(n))
    assert {r for r, _ in placed(placer)} == {"r0", "r1", "r2"}
    placer.enqueue(of("b", 500))
    placer.enqueue(of("b", 501))
    placer.release("r1")
    assert placed(placer) == [("r500", "p1")]
    placer.release("r0")
    assert placed(placer) == [("r3", "p0")], "even now (b was idle while a ran three): the older goes first"
    placer.release("r2")
    assert placed(placer) == [("r501", "p2")]


def test_weights_two_to_one_give_two_to_one_placements():
    placer = Placer(clock=fixed_clock)
    for n in range(0, 600, 2):
        placer.enqueue(of("heavy", n, weight=2.0))
        placer.enqueue(of("light", n + 1, weight=1.0))
    placer.update_pod(pod(1))
    order = run_one_pod(placer, 300)
    tenants = Counter("heavy" if int(r[1:]) % 2 == 0 else "light" for r in order)
    assert abs(tenants["heavy"] - 200) <= 1 and abs(tenants["light"] - 100) <= 1
    first = Counter("heavy" if int(r[1:]) % 2 == 0 else "light" for r in order[:30])
    assert abs(first["heavy"] - 20) <= 1, "the share holds over any stretch, not just on average"


def test_a_returning_idle_tenant_gets_no_burst_ahead():
    placer = Placer(clock=fixed_clock)
    for n in range(100):
        placer.enqueue(of("a", n))
    for n in range(500, 503):
        placer.enqueue(of("b", n))
    placer.update_pod(pod(1))
    run_one_pod(placer, 6)  # both busy: they alternate, and b has run all three
    run_one_pod(placer, 40)  # b idle: a has the pod to itself
    for n in range(600, 610):
        placer.enqueue(of("b", n))
    order = run_one_pod(placer, 8)
    assert order == ["r600", "r43", "r601", "r44", "r602", "r45", "r603", "r46"], "alternating, not b's ten first"


def test_a_tenant_waiting_for_a_pod_it_fits_banks_no_credit_either():
    placer = Placer(clock=fixed_clock)
    for n in range(50):
        placer.enqueue(of("a", n))
    for n in range(500, 510):
        placer.enqueue(of("b", n, workflow="wan14b", needs=48))
    placer.update_pod(pod(1, memory=24))
    assert run_one_pod(placer, 20) == [f"r{n}" for n in range(20)], "no pod fits b's requests"
    placer.update_pod(pod(1, PodStatus.TERMINATED))
    placer.update_pod(pod(2, memory=80))
    assert run_one_pod(placer, 4) == ["r500", "r20", "r501", "r21"]


def test_tenants_share_within_a_class_and_priority_still_comes_first():
    placer = Placer(clock=fixed_clock)
    for n in range(5):
        placer.enqueue(of("a", n, priority=Priority.HIGH))
    placer.enqueue(of("b", 50, priority=Priority.NORMAL))
    placer.enqueue(of("c", 60, priority=Priority.HIGH))
    placer.update_pod(pod(1))
    assert run_one_pod(placer, 7) == ["r0", "r60", "r1", "r2", "r3", "r4", "r50"]


def test_restored_requests_share_the_pods_by_tenant():
    placer = Placer(clock=fixed_clock)
    placer.restore([of("a", n) for n in range(5)] + [of("b", 9)])
    placer.update_pod(pod(1))
    assert run_one_pod(placer, 3) == ["r0", "r9", "r1"]


def test_requests_without_a_tenant_are_one_anonymous_tenant():
    placer = Placer(clock=fixed_clock)
    for n in range(5):
        placer.enqueue(request(n))
    placer.enqueue(of("b", 9))
    placer.update_pod(pod(1))
    assert run_one_pod(placer, 3) == ["r0", "r9", "r1"]
