"""The request lifecycle, one test per transition of `lifecycle.TRANSITIONS` (and what is refused)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from vibewave.contracts.events import (
    AttemptFailed,
    AttemptNote,
    AttemptSucceeded,
    FailureKind,
    PodRecord,
    PodStatus,
    RequestCancelled,
    RequestCompleted,
    RequestEvent,
    RequestFailed,
    RequestRecord,
    RequestStarted,
    RequestSubmitted,
)
from vibewave.contracts.models import RequestStatus, RequestTimings, WorkflowResult
from vibewave.scheduler import lifecycle
from vibewave.scheduler.lifecycle import TRANSITIONS, RetryPolicy, Trigger

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
POLICY = RetryPolicy(max_attempts=3, backoff_s=0.5)
S = RequestStatus


def record(status: RequestStatus = S.PENDING, **changes: object) -> RequestRecord:
    base = RequestRecord(
        id="req-1", workflow_name="wf", inputs={}, status=status, created_at=NOW, updated_at=NOW, attempts=1
    )
    return msgspec.structs.replace(base, **changes)


def failure(kind: FailureKind = FailureKind.POD_FAULT, attempt: int = 1) -> AttemptFailed:
    return AttemptFailed(request_id="req-1", pod_id="pod-1", attempt=attempt, kind=kind, error="boom")


def success(attempt: int = 1) -> AttemptSucceeded:
    result = WorkflowResult(success=True, files=["a.png"], request_id="req-1")
    return AttemptSucceeded(request_id="req-1", pod_id="pod-1", attempt=attempt, result=result)


def test_submitted_makes_a_pending_record_and_a_resubmission_changes_nothing():
    event = RequestSubmitted(request_id="req-1", workflow_name="wf", inputs={"p": 1}, created_at=NOW)
    first = lifecycle.submitted(None, event, "00-abc-def-01")
    assert first.record is not None and first.record.status == S.PENDING and first.record.attempts == 0
    assert first.record.traceparent == "00-abc-def-01" and first.announcement is None
    assert not lifecycle.submitted(first.record, event, None).changed


def test_placed_assigns_a_new_attempt_on_the_pod():
    decision = lifecycle.placed(record(S.PENDING, attempts=1, not_before=NOW), "pod-9", "10.0.0.9", NOW)
    assert decision.record is not None
    assert (decision.record.status, decision.record.pod_id, decision.record.attempts) == (S.ASSIGNED, "pod-9", 2)
    assert decision.record.not_before is None


def test_only_a_pending_request_can_be_placed():
    for status in (S.ASSIGNED, S.RUNNING, S.COMPLETED, S.FAILED, S.CANCELLED):
        assert not lifecycle.placed(record(status), "pod-9", None, NOW).changed


def test_started_runs_the_current_attempt_only():
    event = RequestStarted(request_id="req-1", pod_id="pod-1", attempt=1, prompt_id="p-1")
    decision = lifecycle.started(record(S.ASSIGNED), event, NOW)
    assert decision.record is not None and decision.record.status == S.RUNNING and decision.record.prompt_id == "p-1"
    assert not lifecycle.started(record(S.ASSIGNED, attempts=2), event, NOW).changed  # a late event of attempt 1
    assert not lifecycle.started(None, event, NOW).changed  # finished, or never known


@pytest.mark.parametrize("status", [S.ASSIGNED, S.RUNNING])
def test_succeeded_completes_and_announces_completed(status):
    decision = lifecycle.succeeded(record(status), success(), NOW)
    assert decision.record is not None and decision.record.status == S.COMPLETED
    assert decision.record.result is not None and decision.record.result.files == ["a.png"]
    assert decision.announcement is not None
    assert decision.announcement.subject_event == RequestEvent.COMPLETED
    assert isinstance(decision.announcement.message, RequestCompleted)
    assert decision.announcement.msg_id == "req-1.completed"


def test_a_success_of_an_old_attempt_or_a_finished_request_is_stale():
    assert not lifecycle.succeeded(record(S.RUNNING, attempts=2), success(attempt=1), NOW).changed
    assert not lifecycle.succeeded(record(S.FAILED), success(), NOW).changed


def test_a_pod_fault_with_attempts_left_is_retried_after_a_backoff():
    decision = lifecycle.attempt_failed(record(S.RUNNING, attempts=2, pod_id="pod-1"), failure(attempt=2), POLICY, NOW)
    assert decision.record is not None and decision.record.status == S.PENDING
    assert decision.record.pod_id is None and decision.announcement is None
    assert decision.retry_after == timedelta(seconds=1.0)  # 0.5 doubled once
    assert decision.record.not_before == NOW + timedelta(seconds=1.0)
    assert [n.pod_id for n in decision.record.attempt_log] == ["pod-1"]


def test_the_last_attempt_fails_with_every_attempts_reason():
    earlier = [AttemptNote(attempt=n, pod_id=f"pod-{n}", kind=FailureKind.POD_FAULT, error="lost")
               for n in (1, 2)]  # fmt: skip
    decision = lifecycle.attempt_failed(
        record(S.RUNNING, attempts=3, attempt_log=earlier), failure(attempt=3), POLICY, NOW
    )
    assert decision.record is not None and decision.record.status == S.FAILED
    assert decision.announcement is not None and isinstance(decision.announcement.message, RequestFailed)
    assert "failed after 3 attempts" in (decision.record.error or "")
    assert "#1 on pod pod-1: lost" in (decision.record.error or "")


def test_a_workflow_failure_is_not_retried():
    decision = lifecycle.attempt_failed(record(S.RUNNING), failure(FailureKind.WORKFLOW), POLICY, NOW)
    assert decision.record is not None and decision.record.status == S.FAILED and decision.record.error == "boom"


@pytest.mark.parametrize("cancel_flagged", [True, False])
def test_an_attempt_stopped_for_a_cancel_ends_cancelled(cancel_flagged):
    kind = FailureKind.POD_FAULT if cancel_flagged else FailureKind.CANCELLED
    decision = lifecycle.attempt_failed(record(S.RUNNING, cancel_requested=cancel_flagged), failure(kind), POLICY, NOW)
    assert decision.record is not None and decision.record.status == S.CANCELLED
    assert decision.announcement is not None and isinstance(decision.announcement.message, RequestCancelled)


def test_cancel_of_a_pending_request_cancels_it_at_once():
    decision = lifecycle.cancel_requested(record(S.PENDING), NOW)
    assert decision.record is not None and decision.record.status == S.CANCELLED
    assert decision.announcement is not None and decision.announcement.msg_id == "req-1.cancelled"


@pytest.mark.parametrize("status", [S.ASSIGNED, S.RUNNING])
def test_cancel_on_a_pod_flags_the_record_once(status):
    decision = lifecycle.cancel_requested(record(status), NOW)
    assert decision.record is not None and decision.record.status == status and decision.record.cancel_requested
    assert decision.announcement is None
    assert not lifecycle.cancel_requested(decision.record, NOW).changed


def test_cancel_of_a_finished_request_changes_nothing():
    for status in (S.COMPLETED, S.FAILED, S.CANCELLED):
        assert not lifecycle.cancel_requested(record(status), NOW).changed


def test_queue_timeout_fails_a_waiting_request_and_names_the_fleet():
    decision = lifecycle.queue_timeout(record(S.PENDING), 60, "no pods: quota", NOW)
    assert decision.record is not None and decision.record.status == S.FAILED
    assert decision.record.error == "timed out: waited longer than the queue TTL (60s); the fleet: no pods: quota"


@pytest.mark.parametrize("status", [S.ASSIGNED, S.RUNNING])
def test_run_timeout_fails_a_run_that_outlived_its_limit(status):
    late = record(status, execution_timeout_s=10.0, updated_at=NOW - timedelta(seconds=200))
    limit = lifecycle.run_overdue(late, 900.0, 120.0, NOW)
    assert limit == 130.0
    assert lifecycle.run_overdue(record(status, execution_timeout_s=10.0), 900.0, 120.0, NOW) is None
    decision = lifecycle.run_timeout(late, limit, NOW)
    assert decision.record is not None and decision.record.status == S.FAILED
    assert decision.record.error == "timed out: no outcome within 130s"


def test_no_capacity_fails_a_waiting_request_with_the_breakers_diagnosis():
    decision = lifecycle.no_capacity(record(S.PENDING), "2 pods never became ready", NOW)
    assert decision.record is not None and decision.record.status == S.FAILED
    assert decision.record.error == "no pod can be started for it: 2 pods never became ready"


def test_pod_lost_puts_an_assigned_request_back_in_the_queue():
    decision = lifecycle.pod_lost(record(S.ASSIGNED, pod_id="pod-1"), NOW)
    assert decision.record is not None and decision.record.status == S.PENDING and decision.record.pod_id is None
    assert not lifecycle.pod_lost(record(S.RUNNING), NOW).changed  # a running prompt is the executor's to report


def test_finished_requests_have_no_way_out():
    for status in (S.COMPLETED, S.FAILED, S.CANCELLED):
        assert not any(state == status for state, _ in TRANSITIONS)


def test_every_transition_of_the_table_has_its_decision():
    """A decision exists for each trigger, and the table names every (state, trigger) these tests cover."""
    covered = {
        (None, Trigger.SUBMITTED), (S.PENDING, Trigger.PLACED), (S.PENDING, Trigger.CANCEL_REQUESTED),
        (S.PENDING, Trigger.QUEUE_TIMEOUT), (S.PENDING, Trigger.NO_CAPACITY), (S.ASSIGNED, Trigger.STARTED),
        (S.ASSIGNED, Trigger.SUCCEEDED), (S.RUNNING, Trigger.SUCCEEDED), (S.ASSIGNED, Trigger.ATTEMPT_FAILED),
        (S.RUNNING, Trigger.ATTEMPT_FAILED), (S.ASSIGNED, Trigger.CANCEL_REQUESTED),
        (S.RUNNING, Trigger.CANCEL_REQUESTED), (S.ASSIGNED, Trigger.RUN_TIMEOUT), (S.RUNNING, Trigger.RUN_TIMEOUT),
        (S.ASSIGNED, Trigger.POD_LOST),
    }  # fmt: skip
    assert set(TRANSITIONS) == covered


def test_a_move_the_table_does_not_allow_is_refused():
    with pytest.raises(ValueError, match="cannot move"):
        lifecycle._move(record(S.COMPLETED), Trigger.PLACED, S.ASSIGNED, NOW)


# ------------------------------------------------------------------------------------- clock and bill


def pod(**changes: object) -> PodRecord:
    base = PodRecord(id="pod-1", name="p", provider="runpod", status=PodStatus.READY, created_at=NOW, updated_at=NOW)
    return msgspec.structs.replace(base, **changes)


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def test_placed_counts_the_part_of_the_wait_its_pod_spent_booting():
    waiting = record(S.PENDING, attempts=0)
    booted = pod(started_at=at(-5), ready_at=at(20))  # started before the request came, ready 20 s after
    placed = lifecycle.placed(waiting, "pod-1", None, at(30), booted).record
    assert placed is not None and placed.assigned_at == at(30) and placed.boot_wait_ms == 20_000
    started_later = pod(started_at=at(4), ready_at=at(20))  # created for it 4 s after it came
    assert lifecycle.boot_wait_ms(NOW, at(30), started_later) == 16_000
    assert lifecycle.boot_wait_ms(NOW, at(30), pod(started_at=at(-60), ready_at=at(-1))) == 0  # ready before
    unknown_pod = lifecycle.placed(waiting, "pod-1", None, at(30)).record
    assert unknown_pod is not None and unknown_pod.boot_wait_ms == 0


def test_a_completed_request_shows_where_its_time_went_and_what_it_cost():
    placed = lifecycle.placed(record(S.PENDING, attempts=0), "pod-1", None, at(30), pod(ready_at=at(20))).record
    assert placed is not None
    running = lifecycle.started(placed, RequestStarted(request_id="req-1", pod_id="pod-1", attempt=1,
                                                       prompt_id="p"), at(30.2)).record  # fmt: skip
    assert running is not None and running.started_at == at(30.2)
    event = msgspec.structs.replace(success(), run_ms=9_000, upload_ms=500)
    done = lifecycle.succeeded(running, event, at(40), cost_per_hr=0.72).record
    assert done is not None and done.finished_at == at(40)
    assert done.timings == RequestTimings(queued_ms=10_000, boot_wait_ms=20_000, run_ms=9_000, upload_ms=500,
                                          total_ms=40_000)  # fmt: skip
    assert done.gpu_seconds == pytest.approx(10.0) and done.cost == pytest.approx(10 * 0.72 / 3600)
    unpriced = lifecycle.succeeded(running, success(), at(40)).record  # no run_ms: placed → succeeded
    assert unpriced is not None and unpriced.cost == 0 and unpriced.timings is not None
    assert unpriced.timings.run_ms == 10_000 and unpriced.timings.upload_ms == 0


def test_every_attempt_is_billed_and_a_failed_run_shows_its_time():
    first = lifecycle.placed(record(S.PENDING, attempts=0), "pod-1", None, at(0)).record
    assert first is not None
    retried = lifecycle.attempt_failed(first, failure(attempt=1), POLICY, at(6), cost_per_hr=3600.0).record
    assert retried is not None and retried.status == S.PENDING and retried.timings is None
    assert retried.gpu_seconds == pytest.approx(6.0) and retried.cost == pytest.approx(6.0)
    second = lifecycle.placed(retried, "pod-2", None, at(10)).record
    assert second is not None
    failed = lifecycle.attempt_failed(second, failure(FailureKind.WORKFLOW, attempt=2), POLICY, at(14), 1800.0).record
    assert failed is not None and failed.status == S.FAILED and failed.finished_at == at(14)
    assert failed.gpu_seconds == pytest.approx(10.0) and failed.cost == pytest.approx(6.0 + 2.0)
    assert failed.timings == RequestTimings(queued_ms=10_000, boot_wait_ms=0, run_ms=4_000, upload_ms=0,
                                            total_ms=14_000)  # fmt: skip
    timed_out = lifecycle.run_timeout(second, 60, at(20), cost_per_hr=3600.0).record
    assert timed_out is not None and timed_out.gpu_seconds == pytest.approx(16.0)


def test_a_request_that_never_ran_has_an_end_but_no_timings():
    for decision in (
        lifecycle.cancel_requested(record(S.PENDING), at(5)),
        lifecycle.queue_timeout(record(S.PENDING), 5, None, at(5)),
        lifecycle.no_capacity(record(S.PENDING), "no GPU", at(5)),
    ):
        assert decision.record is not None and decision.record.finished_at == at(5)
        assert decision.record.timings is None and decision.record.gpu_seconds == 0
