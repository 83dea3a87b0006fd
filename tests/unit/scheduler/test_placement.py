from datetime import UTC, datetime, timedelta

import pytest

from vibewave.contracts.events import PodRecord, PodStatus, RequestRecord
from vibewave.contracts.models import Priority, RequestStatus
from vibewave.scheduler.placement import Placer

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def fixed_clock() -> float:
    """Ten seconds after the first request: too soon for any aging."""
    return T0.timestamp() + 10


def request(n: int, priority: Priority = Priority.NORMAL, workflow: str = "wf") -> RequestRecord:
    return RequestRecord(
        id=f"r{n}",
        workflow_name=workflow,
        inputs={},
        status=RequestStatus.PENDING,
        priority=priority,
        created_at=T0 + timedelta(seconds=n),
        updated_at=T0,
    )


def pod(n: int, status: PodStatus = PodStatus.READY, workflow: str = "wf") -> PodRecord:
    return PodRecord(
        id=f"p{n}", name=f"p{n}", provider="local", workflow_name=workflow, status=status,
        comfyui_url="http://x", created_at=T0, updated_at=T0,
    )  # fmt: skip


def test_highest_priority_first_then_fifo():
    placer = Placer(clock=fixed_clock)
    for record in (request(1, Priority.LOW), request(2), request(3, Priority.HIGH), request(4)):
        placer.enqueue(record)
    order = []
    for n in range(4):
        placer.update_pod(pod(n))
        order += [p.request_id for p in placer.place()]
    assert order == ["r3", "r2", "r4", "r1"]


def test_a_pod_holds_one_request_until_released():
    placer = Placer(clock=fixed_clock)
    placer.enqueue(request(1))
    placer.enqueue(request(2))
    placer.update_pod(pod(1))
    assert [p.request_id for p in placer.place()] == ["r1"]
    assert placer.place() == []
    assert placer.release("r1") == "p1"
    assert [(p.request_id, p.pod.id) for p in placer.place()] == [("r2", "p1")]


def test_only_ready_pods_of_the_same_workflow_take_requests():
    placer = Placer(clock=fixed_clock)
    placer.enqueue(request(1, workflow="video"))
    placer.update_pod(pod(1, PodStatus.STARTING, workflow="video"))
    placer.update_pod(pod(2, workflow="image"))
    assert placer.place() == []
    placer.update_pod(pod(1, PodStatus.READY, workflow="video"))
    assert [(p.request_id, p.pod.id) for p in placer.place()] == [("r1", "p1")]


def test_demand_counts_waiting_and_running_per_workflow():
    placer = Placer(clock=fixed_clock)
    for n in range(3):
        placer.enqueue(request(n))
    placer.enqueue(request(9, workflow="video"))
    placer.update_pod(pod(1))
    placer.place()
    assert placer.demand() == {"wf": 3, "video": 1}
    assert placer.busy_pods() == ["p1"]


def test_retried_request_goes_first_and_enqueue_is_idempotent():
    placer = Placer(clock=fixed_clock)
    placer.enqueue(request(1))
    placer.enqueue(request(2))
    placer.enqueue(request(2))
    placer.enqueue(request(3), front=True)
    placer.update_pod(pod(1))
    assert [p.request_id for p in placer.place()] == ["r3"]
    assert placer.queued_count == 2


def test_restore_rebuilds_queue_and_occupancy():
    running = request(1)
    running.status, running.pod_id = RequestStatus.RUNNING, "p1"
    placer = Placer(clock=fixed_clock)
    placer.restore([request(3), running, request(2)])
    placer.update_pod(pod(1))
    placer.update_pod(pod(2))
    assert [(p.request_id, p.pod.id) for p in placer.place()] == [("r2", "p2")]


def test_low_priority_ages_past_newer_high_priority_requests():
    now = [T0.timestamp() + 100]
    placer = Placer(aging_s=30, clock=lambda: now[0])
    old_low = request(1, Priority.LOW)  # created at T0+1: has waited 99 s, three classes of aging
    fresh_high = request(99, Priority.HIGH)  # created at T0+99
    placer.enqueue(fresh_high)
    placer.enqueue(old_low)
    placer.update_pod(pod(1))
    assert [p.request_id for p in placer.place()] == ["r1"], "the long-waiting low request goes first"


def test_without_waiting_long_the_class_decides():
    now = [T0.timestamp() + 10]
    placer = Placer(aging_s=30, clock=lambda: now[0])
    placer.enqueue(request(1, Priority.LOW))
    placer.enqueue(request(5, Priority.HIGH))
    placer.update_pod(pod(1))
    assert [p.request_id for p in placer.place()] == ["r5"]


def test_expired_lists_requests_past_the_queue_ttl():
    now = [T0.timestamp() + 100]
    placer = Placer(clock=lambda: now[0])
    for n in (1, 2, 90):
        placer.enqueue(request(n))
    assert placer.expired(ttl_s=50) == ["r1", "r2"]
    placer.forget("r1")
    assert placer.expired(ttl_s=50) == ["r2"]
    assert placer.demand() == {"wf": 2}
