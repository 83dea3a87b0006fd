"""Queue positions, ETAs and usage as the api's index keeps them: positions per GPU class in priority
then age order, ETAs from measured runs (or the catalogue) and the pods serving the class, GPU-seconds
and cost totals per tenant and workflow that follow every change — and stay cheap for 10,000 waiting."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from vibewave.api.estimates import DEFAULT_BOOT_S
from vibewave.api.index import RequestIndex
from vibewave.contracts.events import PodRecord, PodStatus, RequestRecord
from vibewave.contracts.models import Priority, RequestStatus, RequestTimings
from vibewave.runtime.broker import encode

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 1, tzinfo=UTC)
S = RequestStatus


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def req(n: int, status: RequestStatus = S.PENDING, **changes: object) -> RequestRecord:
    base = RequestRecord(
        id=f"req-{n:016x}", workflow_name="wf", inputs={}, status=status, created_at=at(n), updated_at=at(n),
        preset="fast",
    )  # fmt: skip
    return msgspec.structs.replace(base, **changes)


def pod(n: int, status: PodStatus = PodStatus.READY, **changes: object) -> PodRecord:
    base = PodRecord(id=f"pod-{n}", name=f"p{n}", provider="runpod", status=status, created_at=T0, updated_at=T0)
    return msgspec.structs.replace(base, **changes)


def completed(n: int, run_s: float, **changes: object) -> RequestRecord:
    timings = RequestTimings(queued_ms=0, boot_wait_ms=0, run_ms=round(run_s * 1000) - 100, upload_ms=100,
                             total_ms=round(run_s * 1000))  # fmt: skip
    return req(n, S.COMPLETED, timings=timings, gpu_seconds=run_s, **changes)


def put(index: RequestIndex, *records: RequestRecord) -> None:
    for record in records:
        index.apply(record.id, encode(record))


def eta(index: RequestIndex, record: RequestRecord, now: float, fallback: float | None = 10.0) -> float | None:
    current = index.records[record.id]
    return index.estimates.eta(current, now, index.active_pods(), index.records, lambda _: fallback)


def test_positions_follow_priority_then_age_within_a_gpu_class():
    index = RequestIndex()
    put(index, req(1), req(2), req(3, priority=Priority.HIGH), req(4, priority=Priority.LOW), req(5))
    put(index, req(6, min_gpu_memory_gb=48), req(7, S.RUNNING))
    positions = {r.id[-1]: index.estimates.position(r) for r in index.records.values()}
    assert positions == {"3": 1, "1": 2, "2": 3, "5": 4, "4": 5, "6": 1, "7": None}
    put(index, req(3, S.ASSIGNED, priority=Priority.HIGH))  # placed: the others move up
    assert index.estimates.position(index.records[req(1).id]) == 1
    assert index.estimates.position(index.records[req(4).id]) == 4
    index.remove(req(1).id)
    assert index.estimates.position(index.records[req(2).id]) == 1


def test_the_eta_of_a_waiting_request_counts_the_work_ahead_over_the_pods():
    index = RequestIndex()
    index.apply_pod("pod-1", encode(pod(1)))
    now = at(100).timestamp()
    running = req(0, S.RUNNING, started_at=at(96))  # expected 10 s (the fallback), 4 s in: 6 s left
    put(index, running, req(1), req(2), req(3))
    assert eta(index, running, now) == 6.0
    assert [eta(index, req(n), now) for n in (1, 2, 3)] == [16.0, 26.0, 36.0]
    index.apply_pod("pod-2", encode(pod(2)))  # two pods share the work ahead
    assert [eta(index, req(n), now) for n in (1, 2, 3)] == [10.0, 18.0, 23.0]
    put(index, completed(90, 4.0))  # measured: 4 s per run of (wf, fast) replaces the catalogue's
    assert eta(index, req(3), now) == 4 + (0 + 2 * 4) / 2  # the running one is 4 s in: due now


def test_an_eta_falls_as_the_queue_drains():
    index = RequestIndex()
    index.apply_pod("pod-1", encode(pod(1)))
    put(index, *(req(n) for n in range(1, 6)))
    last, seen = req(5), []
    for n in range(1, 5):
        put(index, req(n, S.RUNNING, started_at=at(10 * n)))
        seen.append(eta(index, last, at(10 * n + 1).timestamp()))
        put(index, completed(n, 10.0))
    assert seen == sorted(seen, reverse=True) and len(set(seen)) == len(seen)


def test_with_no_ready_pod_the_eta_adds_a_boot():
    index = RequestIndex()
    put(index, req(1))
    now = at(100).timestamp()
    assert eta(index, req(1), now) == DEFAULT_BOOT_S + 10
    index.apply_pod("pod-1", encode(pod(1, started_at=at(0), ready_at=at(30))))  # a boot took 30 s
    index.apply_pod("pod-1", encode(pod(1, PodStatus.STOPPED, started_at=at(0), ready_at=at(30))))
    assert eta(index, req(1), now) == 30 + 10
    index.apply_pod("pod-2", encode(pod(2, PodStatus.STARTING, started_at=at(90))))  # booting for 10 s
    assert eta(index, req(1), now) == 20 + 10
    assert eta(index, req(1), now, fallback=None) == 20 + 30  # no catalogue time: the default run


def test_stats_add_up_per_tenant_and_workflow_and_follow_every_change():
    index = RequestIndex()
    put(index, completed(1, 4.0, tenant="a", cost=0.01), completed(2, 6.0, tenant="b", cost=0.02))
    put(index, req(3, S.FAILED, tenant="a", gpu_seconds=1.0, cost=0.005), req(4, tenant="a"))
    put(index, completed(5, 2.0, tenant="a", workflow_name="other", cost=0.001))
    everyone, a = index.estimates.usage[None], index.estimates.usage["a"]
    assert everyone.gpu_seconds == pytest.approx(13.0) and everyone.cost == pytest.approx(0.036)
    assert a.gpu_seconds == pytest.approx(7.0) and a.cost == pytest.approx(0.016)
    wf = a.workflows["wf"].stats()
    assert (wf.total, wf.completed, wf.failed, wf.mean_run_seconds) == (3, 1, 1, 4.0)
    assert wf.gpu_seconds == pytest.approx(5.0) and wf.cost == pytest.approx(0.015)
    assert everyone.workflows["wf"].stats().mean_run_seconds == 5.0
    put(index, completed(4, 8.0, tenant="a", cost=0.04))  # the waiting one finishes
    assert a.workflows["wf"].stats().mean_run_seconds == 6.0 and a.cost == pytest.approx(0.056)
    for n in (1, 3, 4, 5):
        index.remove(req(n).id)
    assert "a" not in index.estimates.usage
    assert index.estimates.usage[None].gpu_seconds == pytest.approx(6.0)


def test_positions_and_etas_stay_cheap_for_ten_thousand_waiting():
    index = RequestIndex()
    index.apply_pod("pod-1", encode(pod(1)))
    many = [req(n, priority=(Priority.HIGH, Priority.NORMAL, Priority.LOW)[n % 3]) for n in range(10_000)]
    put(index, *many)
    started = time.perf_counter()
    for record in many[::100]:
        assert eta(index, record, at(20_000).timestamp()) is not None
    per_read = (time.perf_counter() - started) / 100
    assert per_read < 0.002, f"{per_read * 1000:.2f} ms per read"
    positions = sorted(index.estimates.position(r) or 0 for r in index.records.values())
    assert positions == list(range(1, 10_001))
