"""The demand the scheduler announces: how much work waits and runs per GPU class, kept as running sums."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from vibewave.contracts.events import PodNeed, PodRecord, PodStatus, RequestRecord
from vibewave.contracts.models import RequestStatus
from vibewave.contracts.workflows import load_catalog
from vibewave.runtime.settings import CommonSettings
from vibewave.scheduler.placement import Placer
from vibewave.scheduler.service import SchedulerService
from vibewave.scheduler.settings import SchedulerSettings

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MANAGER = "pm-1"
EXPECTED = {"image": 45.0, "video": 420.0}  # a workflow's expected run seconds; any other is unknown


def expected(record: RequestRecord) -> float:
    return EXPECTED.get(record.workflow_name, 0.0)


class Clock:
    def __init__(self, at: float) -> None:
        self.now = at

    def __call__(self) -> float:
        return self.now


def request(n: int, workflow: str = "image", needs: int = 0, traced: bool = False) -> RequestRecord:
    """Request `n`, created `n` seconds after T0."""
    return RequestRecord(
        id=f"r{n}", workflow_name=workflow, inputs={}, status=RequestStatus.PENDING,
        created_at=T0 + timedelta(seconds=n), updated_at=T0, min_gpu_memory_gb=needs,
        traceparent=f"00-{n:032x}-{n:016x}-01" if traced else None,
    )  # fmt: skip


def pod(n: int, memory: int | None = None) -> PodRecord:
    return PodRecord(
        id=f"p{n}", name=f"p{n}", provider="local", status=PodStatus.READY, manager=MANAGER, gpu_memory_gb=memory,
        comfyui_url="http://x", created_at=T0, updated_at=T0,
    )  # fmt: skip


def by_class(placer: Placer) -> dict[int, PodNeed]:
    return {need.min_gpu_memory_gb: need for need in placer.needs()}


def test_waiting_work_and_the_oldest_wait_per_gpu_class() -> None:
    clock = Clock(T0.timestamp() + 100)
    placer = Placer(clock=clock, expected_s=expected)
    for n, workflow, gpu_class in ((1, "image", 0), (2, "image", 0), (3, "custom", 0), (5, "video", 48)):
        placer.enqueue(request(n, workflow, gpu_class))
    needs = by_class(placer)
    assert needs[0] == PodNeed(min_gpu_memory_gb=0, waiting=3, oldest_wait_s=99.0, waiting_work_s=90.0), (
        "a workflow with no expected time counts 0"
    )
    assert needs[48] == PodNeed(min_gpu_memory_gb=48, waiting=1, oldest_wait_s=95.0, waiting_work_s=420.0)


def test_placing_and_forgetting_take_requests_out_of_the_sums() -> None:
    clock = Clock(T0.timestamp() + 100)
    placer = Placer(clock=clock, expected_s=expected)
    for n in range(1, 5):
        placer.enqueue(request(n))
    placer.forget("r2")
    placer.update_pod(pod(1))
    assert [p.request_id for p in placer.place(MANAGER)] == ["r1"]
    need = by_class(placer)[0]
    assert (need.waiting, need.running, need.waiting_work_s, need.oldest_wait_s) == (2, 1, 90.0, 97.0)
    placer.forget("r3")
    placer.forget("r4")
    placer.release("r1")
    assert placer.needs() == [], "a class with nothing waiting or running is not reported"
    placer.enqueue(request(6, "custom"))
    assert by_class(placer)[0].waiting_work_s == 0.0, "an emptied class starts again from exactly 0"


def test_running_work_runs_down_from_the_start_and_stops_at_zero() -> None:
    clock = Clock(T0.timestamp() + 100)
    placer = Placer(clock=clock, expected_s=expected)
    placer.enqueue(request(1))
    placer.enqueue(request(2, "video", needs=48))
    placer.update_pod(pod(1, memory=24))
    placer.update_pod(pod(2, memory=80))
    assert len(placer.place(MANAGER)) == 2
    assert {c: n.running_left_s for c, n in by_class(placer).items()} == {0: 45.0, 48: 420.0}, (
        "assigned, not started yet: all of it is left"
    )
    placer.started("r1", clock.now)
    placer.started("r2", clock.now - 20)
    clock.now += 30
    assert {c: n.running_left_s for c, n in by_class(placer).items()} == {0: 15.0, 48: 370.0}
    clock.now += 60
    assert by_class(placer)[0].running_left_s == 0.0, "an overdue run is expected to end any moment"
    placer.release("r2")
    assert 48 not in by_class(placer)


def test_a_retry_in_its_backoff_still_waits() -> None:
    clock = Clock(T0.timestamp() + 100)
    placer = Placer(clock=clock, expected_s=expected)
    placer.enqueue(request(50))
    retry = msgspec.structs.replace(request(1, traced=True), attempts=1, not_before=T0 + timedelta(seconds=110))
    placer.enqueue(retry, front=True)
    need = by_class(placer)[0]
    assert (need.waiting, need.waiting_work_s, need.oldest_wait_s) == (2, 90.0, 99.0)
    assert need.traceparents == (retry.traceparent,)
    placer.forget("r1")
    assert by_class(placer)[0].oldest_wait_s == 50.0


def test_the_oldest_waiting_requests_traces_per_class() -> None:
    placer = Placer(clock=Clock(T0.timestamp() + 100), expected_s=expected)
    for n in range(11, 21):
        placer.enqueue(msgspec.structs.replace(request(n, traced=True), tenant="a"))
    for n in range(1, 6):  # another tenant's queue holds the older ones
        placer.enqueue(msgspec.structs.replace(request(n, traced=n != 3), tenant="b"))
    placer.enqueue(request(30, "video", needs=48, traced=True))
    needs = by_class(placer)
    oldest = (1, 2, 4, 5, 11, 12, 13, 14)  # the eight oldest with a trace, across the queues
    assert needs[0].traceparents == tuple(request(n, traced=True).traceparent for n in oldest)
    assert needs[48].traceparents == (request(30, traced=True).traceparent,)


def test_restore_rebuilds_the_sums_and_the_runs_started_before() -> None:
    clock = Clock(T0.timestamp() + 100)
    placer = Placer(clock=clock, expected_s=expected)
    for n in range(1, 4):
        placer.enqueue(request(n))
    running = msgspec.structs.replace(
        request(5, "video"), status=RequestStatus.RUNNING, pod_id="p1", started_at=T0 + timedelta(seconds=80)
    )
    assigned = msgspec.structs.replace(request(6), status=RequestStatus.ASSIGNED, pod_id="p2", started_at=T0)
    placer.restore([request(2), running, assigned, request(9, "video")])
    need = by_class(placer)[0]
    assert (need.waiting, need.running, need.waiting_work_s, need.oldest_wait_s) == (2, 2, 465.0, 98.0)
    assert need.running_left_s == 400.0 + 45.0, "an assigned run's earlier start (another attempt's) is not counted"


def test_needs_read_running_sums_not_the_queue() -> None:
    """Demand is announced every 20 ms with queues of 10 000+: it comes from sums kept on enqueue and dequeue,
    and never estimates a waiting request again (how fast it is: bench deepqueue, not a timed assertion)."""
    estimated: list[str] = []

    def counting(record: RequestRecord) -> float:
        estimated.append(record.id)
        return expected(record)

    placer = Placer(clock=Clock(T0.timestamp() + 20_000), expected_s=counting)
    for n in range(10_000):
        record = request(n, "image" if n % 2 else "video", traced=True)
        placer.enqueue(msgspec.structs.replace(record, tenant=f"t{n % 5}"))
    for n in range(8):
        placer.update_pod(pod(n))
    placer.place(MANAGER)
    estimated.clear()
    need = by_class(placer)[0]
    assert estimated == [], "no waiting request is estimated again when demand is read"
    assert need.waiting == 9_992 and need.waiting_work_s == pytest.approx(4_996 * 45.0 + 4_996 * 420.0)


def test_the_scheduler_counts_catalogue_midpoints_divided_by_the_time_scale(tmp_path: Path) -> None:
    common = CommonSettings(nats_url="nats://127.0.0.1:1", home=tmp_path, log_level="INFO", debug=False, replicas=1)
    settings = SchedulerSettings.from_env(dataclasses.replace(common, time_scale=10.0))
    scheduler = SchedulerService(settings)
    qwen = load_catalog()["comfyui_image_qwen"].definition
    low, high = qwen.presets["quality"].expected_seconds or (0.0, 0.0)
    record = msgspec.structs.replace(request(1, "comfyui_image_qwen"), preset="quality")
    assert scheduler._expected_s(record) == pytest.approx((low + high) / 2 / 10)
    assert scheduler._expected_s(msgspec.structs.replace(record, preset=None)) > 0, "the default preset's"
    assert scheduler._expected_s(request(2, "no_such_workflow")) == 0.0
