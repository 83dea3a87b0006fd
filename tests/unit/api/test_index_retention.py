"""The api's index holds only what is retained: expired keys leave every structure, the backstop drops
finished requests past the retention by the index's own clock, and memory returns to its baseline once
100,000 finished requests have come and expired."""

from __future__ import annotations

import gc
import time
import tracemalloc
from datetime import UTC, datetime, timedelta

import pytest

from vibewave.api.index import Ordered, RequestIndex
from vibewave.contracts.events import RequestRecord
from vibewave.contracts.models import RequestStatus, WorkflowResult
from vibewave.runtime.broker import encode

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 1, tzinfo=UTC)
MANY = 100_000
TOLERANCE = 64 * 1024  # bytes still allocated after every record has expired


def record(n: int, status: RequestStatus = RequestStatus.COMPLETED, finished_after_s: float = 3) -> RequestRecord:
    created = T0 + timedelta(seconds=n)
    return RequestRecord(
        id=f"req-{n:016x}", workflow_name="comfyui_image_qwen", inputs={"prompt": f"a prompt {n}", "seed": n},
        status=status, created_at=created, updated_at=created + timedelta(seconds=finished_after_s), attempts=1,
        pod_id=f"pod-{n % 4}",
        result=WorkflowResult(success=True, files=[f"qwen_{n}_001.png"]) if status == "completed" else None,
        error="boom" if status == "failed" else None,
    )  # fmt: skip


def statuses(n: int) -> RequestStatus:
    return (RequestStatus.COMPLETED, RequestStatus.FAILED, RequestStatus.CANCELLED)[n % 3]


def test_an_expired_request_leaves_every_structure():
    index = RequestIndex()
    running = record(1, RequestStatus.RUNNING)
    index.apply(running.id, encode(running))
    index.note_progress(running.id, 40.0)
    done = record(1, RequestStatus.COMPLETED)
    index.apply(done.id, encode(done))
    failed = record(2, RequestStatus.FAILED)
    index.apply(failed.id, encode(failed))
    assert index.count(RequestStatus.COMPLETED) == 1 and index.count(RequestStatus.RUNNING) == 0
    assert [r.id for r in index.newest(tuple(RequestStatus), 10)] == [failed.id, done.id]

    index.apply(done.id, None)  # its TTL expired: the watch sees a PURGE

    assert index.get(done.id) is None and done.id not in index.progress
    assert index.count(RequestStatus.COMPLETED) == 0 and done.id not in index.finished
    assert [r.id for r in index.newest(tuple(RequestStatus), 10)] == [failed.id]
    index.note_progress(done.id, 90.0)  # a late report of an expired request is not kept
    assert done.id not in index.progress


def test_a_replayed_value_changes_nothing_and_a_requeued_request_is_listed_once():
    index = RequestIndex()
    pending = record(1, RequestStatus.PENDING)
    for status in (RequestStatus.PENDING, RequestStatus.ASSIGNED, RequestStatus.PENDING, RequestStatus.PENDING):
        pending.status = status
        index.apply(pending.id, encode(pending))
    assert [r.id for r in index.newest((RequestStatus.PENDING,), 10)] == [pending.id]
    assert index.count(RequestStatus.PENDING) == 1 and index.count(RequestStatus.ASSIGNED) == 0


def test_the_backstop_drops_finished_requests_past_the_retention_by_its_own_clock():
    index = RequestIndex()
    for n in range(10):
        r = record(n, statuses(n))
        index.apply(r.id, encode(r))
    unfinished = record(0, RequestStatus.RUNNING)  # older than everything, still running: kept
    unfinished.id = "req-ffffffffffffffff"
    index.apply(unfinished.id, encode(unfinished))
    now = (T0 + timedelta(seconds=3 + 5)).timestamp()  # requests 0..4 finished more than 100 s ago

    assert index.expire(now + 100 - 0.5, retention_s=100) == 5

    assert sorted(index.records) == sorted([record(n).id for n in range(5, 10)] + [unfinished.id])
    assert sum(index.count(s) for s in RequestStatus) == 6
    assert index.expire(now + 100 - 0.5, retention_s=100) == 0


def test_ordered_keeps_order_through_removals_and_out_of_order_additions():
    ordered = Ordered()
    for n in (5, 1, 3, 2, 4):
        ordered.add(f"r{n}", float(n))
    for n in range(100, 400):
        ordered.add(f"r{n}", float(n))
    for n in range(100, 390):
        ordered.discard(f"r{n}")
    assert [k for _, k in ordered.newest(4)] == ["r399", "r398", "r397", "r396"]
    assert [k for _, k in ordered.oldest(3)] == ["r1", "r2", "r3"]
    assert len(ordered) == 15 and len(ordered._entries) <= 2 * 15 + 64


def test_memory_returns_to_the_baseline_after_100k_finished_requests_expire():
    values = [(f"req-{n:016x}", encode(record(n, statuses(n)))) for n in range(MANY)]
    index = RequestIndex()
    warm = record(MANY + 1)
    index.apply(warm.id, encode(warm))  # first-use allocations (decoder, caches) are not what is measured
    index.apply(warm.id, None)
    gc.collect()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        started = time.perf_counter()
        for key, value in values:
            index.apply(key, value)
        load_s = time.perf_counter() - started
        loaded = tracemalloc.get_traced_memory()[0]
        assert sum(index.count(s) for s in RequestStatus) == MANY
        assert len(index.newest((RequestStatus.COMPLETED,), 1000)) == 1000
        for key, _ in values:  # expiring oldest first, as their TTLs do
            index.apply(key, None)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    print(
        f"\nindex memory: baseline {baseline / 1e6:.2f} MB, with {MANY} finished requests "
        f"{loaded / 1e6:.1f} MB (+{(loaded - baseline) / 1e6:.1f} MB, applied in {load_s:.2f}s under tracemalloc), "
        f"after they expired {after / 1e6:.2f} MB (+{(after - baseline) / 1e3:.1f} kB)"
    )
    assert not index.records and sum(index.count(s) for s in RequestStatus) == 0
    assert loaded - baseline > 50 * 1024 * 1024, "the records were held meanwhile"
    assert after - baseline < TOLERANCE
