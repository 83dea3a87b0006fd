from datetime import UTC, datetime, timedelta

import pytest

from vibewave.contracts.events import PodRecord, PodStatus, RequestRecord
from vibewave.contracts.models import Priority, RequestStatus
from vibewave.scheduler.placement import Placer

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)


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
    placer = Placer()
    for record in (request(1, Priority.LOW), request(2), request(3, Priority.HIGH), request(4)):
        placer.enqueue(record)
    order = []
    for n in range(4):
        placer.update_pod(pod(n))
        order += [p.request_id for p in placer.place()]
    assert order == ["r3", "r2", "r4", "r1"]


def test_a_pod_holds_one_request_until_released():
    placer = Placer()
    placer.enqueue(request(1))
    placer.enqueue(request(2))
    placer.update_pod(pod(1))
    assert [p.request_id for p in placer.place()] == ["r1"]
    assert placer.place() == []
    assert placer.release("r1") == "p1"
    assert [(p.request_id, p.pod.id) for p in placer.place()] == [("r2", "p1")]


def test_only_ready_pods_of_the_same_workflow_take_requests():
    placer = Placer()
    placer.enqueue(request(1, workflow="video"))
    placer.update_pod(pod(1, PodStatus.STARTING, workflow="video"))
    placer.update_pod(pod(2, workflow="image"))
    assert placer.place() == []
    placer.update_pod(pod(1, PodStatus.READY, workflow="video"))
    assert [(p.request_id, p.pod.id) for p in placer.place()] == [("r1", "p1")]


def test_demand_counts_waiting_and_running_per_workflow():
    placer = Placer()
    for n in range(3):
        placer.enqueue(request(n))
    placer.enqueue(request(9, workflow="video"))
    placer.update_pod(pod(1))
    placer.place()
    assert placer.demand() == {"wf": 3, "video": 1}
    assert placer.busy_pods() == ["p1"]


def test_retried_request_goes_first_and_enqueue_is_idempotent():
    placer = Placer()
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
    placer = Placer()
    placer.restore([request(3), running, request(2)])
    placer.update_pod(pod(1))
    placer.update_pod(pod(2))
    assert [(p.request_id, p.pod.id) for p in placer.place()] == [("r2", "p2")]
