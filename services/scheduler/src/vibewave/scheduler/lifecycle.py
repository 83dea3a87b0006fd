"""The life of a request, in one place: what may happen to it in each state, and what follows.

    pending ──placed──▶ assigned ──started──▶ running
       │                   │                     │
       │                   ├──── succeeded ──────┼──▶ completed
       │                   ├── attempt failed ───┼──▶ pending (a pod fault, attempts left: retried after a backoff)
       │                   │                     ├──▶ failed    (any other failure, or the last attempt)
       │                   │                     └──▶ cancelled (the attempt stopped for a cancel)
       │                   ├──── run timeout ────┴──▶ failed    (no outcome within the timeout + grace)
       │                   └──── pod lost ──────────▶ pending   (its pod went away before it started)
       ├── cancel requested ─▶ cancelled
       ├── queue timeout ────▶ failed
       └── no capacity ──────▶ failed (a circuit breaker says no pod can be started for it)
    A cancel requested while assigned or running flags the record; the executor stops the prompt and
    reports the attempt failed as cancelled.

`TRANSITIONS` is that diagram as data; every decision below checks it, so an event that the table does
not allow in the record's state — a late event of an old attempt, anything about a finished request —
changes nothing. The decisions are pure: they take a record and return the next one and what to announce
once it is stored. The scheduler's service does the I/O around them.

They also keep the request's clock and bill, from the facts the service passes in (the pod a request is
placed on, the hourly price of the pod an attempt ran on): each attempt's pod time (placed → outcome) is
added to `gpu_seconds` and, times its pod's price, to `cost`; the end sets `finished_at` and — for a request
that ran — `timings` (see `RequestTimings`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

import msgspec

from vibewave.contracts.events import (
    AttemptFailed,
    AttemptNote,
    AttemptSucceeded,
    FailureKind,
    PodRecord,
    RequestCancelled,
    RequestCompleted,
    RequestEvent,
    RequestFailed,
    RequestRecord,
    RequestStarted,
    RequestSubmitted,
)
from vibewave.contracts.models import RequestStatus, RequestTimings

PENDING, ASSIGNED, RUNNING = RequestStatus.PENDING, RequestStatus.ASSIGNED, RequestStatus.RUNNING
COMPLETED, FAILED, CANCELLED = RequestStatus.COMPLETED, RequestStatus.FAILED, RequestStatus.CANCELLED


class Trigger(StrEnum):
    SUBMITTED = "submitted"
    PLACED = "placed"
    STARTED = "started"
    SUCCEEDED = "succeeded"
    ATTEMPT_FAILED = "attempt failed"
    CANCEL_REQUESTED = "cancel requested"
    QUEUE_TIMEOUT = "queue timeout"
    RUN_TIMEOUT = "run timeout"
    NO_CAPACITY = "no capacity"
    POD_LOST = "pod lost"


# (state, trigger) → the states it may lead to; None is "no record yet"
TRANSITIONS: dict[tuple[RequestStatus | None, Trigger], frozenset[RequestStatus]] = {
    (None, Trigger.SUBMITTED): frozenset({PENDING}),
    (PENDING, Trigger.PLACED): frozenset({ASSIGNED}),
    (PENDING, Trigger.CANCEL_REQUESTED): frozenset({CANCELLED}),
    (PENDING, Trigger.QUEUE_TIMEOUT): frozenset({FAILED}),
    (PENDING, Trigger.NO_CAPACITY): frozenset({FAILED}),
    (ASSIGNED, Trigger.STARTED): frozenset({RUNNING}),
    (ASSIGNED, Trigger.SUCCEEDED): frozenset({COMPLETED}),
    (RUNNING, Trigger.SUCCEEDED): frozenset({COMPLETED}),
    (ASSIGNED, Trigger.ATTEMPT_FAILED): frozenset({PENDING, FAILED, CANCELLED}),
    (RUNNING, Trigger.ATTEMPT_FAILED): frozenset({PENDING, FAILED, CANCELLED}),
    (ASSIGNED, Trigger.CANCEL_REQUESTED): frozenset({ASSIGNED}),
    (RUNNING, Trigger.CANCEL_REQUESTED): frozenset({RUNNING}),
    (ASSIGNED, Trigger.RUN_TIMEOUT): frozenset({FAILED}),
    (RUNNING, Trigger.RUN_TIMEOUT): frozenset({FAILED}),
    (ASSIGNED, Trigger.POD_LOST): frozenset({PENDING}),
}

# Events that name an attempt apply only to the record's current attempt.
ATTEMPT_TRIGGERS = frozenset({Trigger.STARTED, Trigger.SUCCEEDED, Trigger.ATTEMPT_FAILED})


class Announcement(msgspec.Struct, frozen=True):
    """A public event to publish once the record it announces is stored."""

    subject_event: RequestEvent
    message: msgspec.Struct
    msg_id: str


@dataclass(frozen=True)
class Decision:
    """The next record (None: nothing changes) and what to announce once it is stored. `retry_after`
    is set when the request goes back to the queue to wait out a backoff."""

    record: RequestRecord | None
    announcement: Announcement | None = None
    retry_after: timedelta | None = None
    note: str = field(default="")

    @property
    def changed(self) -> bool:
        return self.record is not None


UNCHANGED = Decision(None)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    backoff_s: float
    max_backoff_s: float = 10.0

    def delay(self, attempts: int) -> timedelta:
        """Before attempt `attempts + 1`: doubling from `backoff_s`, at most `max_backoff_s`."""
        return timedelta(seconds=min(self.backoff_s * 2 ** (attempts - 1), self.max_backoff_s))


def allowed(state: RequestStatus | None, trigger: Trigger) -> frozenset[RequestStatus]:
    return TRANSITIONS.get((state, trigger), frozenset())


def _move(
    record: RequestRecord, trigger: Trigger, to: RequestStatus, now: datetime, **changes: object
) -> RequestRecord:
    if to not in allowed(record.status, trigger):
        raise ValueError(f"{trigger} cannot move a {record.status} request to {to}")
    return msgspec.structs.replace(record, status=to, updated_at=now, **changes)


def applies(record: RequestRecord | None, trigger: Trigger, attempt: int | None = None) -> bool:
    """Whether `trigger` means anything for `record` now (else it is stale and ignored)."""
    if not allowed(record.status if record is not None else None, trigger):
        return False
    return attempt is None or (record is not None and record.attempts == attempt)


# -------------------------------------------------------------------------------------------- decisions


def submitted(existing: RequestRecord | None, event: RequestSubmitted, traceparent: str | None) -> Decision:
    """A new request is pending; a submission seen again (a redelivery) changes nothing."""
    if not applies(existing, Trigger.SUBMITTED):
        return Decision(None, note="duplicate submission")
    record = RequestRecord(
        id=event.request_id,
        workflow_name=event.workflow_name,
        inputs=event.inputs,
        status=PENDING,
        priority=event.priority,
        created_at=event.created_at,
        updated_at=event.created_at,
        batch_id=event.batch_id,
        execution_timeout_s=event.execution_timeout_s,
        traceparent=traceparent,
        min_gpu_memory_gb=event.min_gpu_memory_gb,
        models=event.models,
        tenant=event.tenant,
        key_id=event.key_id,
        share_weight=event.share_weight,
        preset=event.preset,
        webhook=event.webhook,
    )
    return Decision(record)


def placed(
    record: RequestRecord, pod_id: str, pod_ip: str | None, now: datetime, pod: PodRecord | None = None
) -> Decision:
    """Assigned to a pod (`pod`: its record, for the part of the wait it spent booting): a new attempt begins."""
    if not applies(record, Trigger.PLACED):
        return UNCHANGED
    assigned = _move(
        record,
        Trigger.PLACED,
        ASSIGNED,
        now,
        pod_id=pod_id,
        pod_ip=pod_ip,
        attempts=record.attempts + 1,
        not_before=None,
        assigned_at=now,
        started_at=None,
        boot_wait_ms=boot_wait_ms(record.created_at, now, pod),
    )
    return Decision(assigned)


def boot_wait_ms(created: datetime, assigned: datetime, pod: PodRecord | None) -> int:
    """Of a request's wait (created → assigned), the part its pod spent booting: from the later of its
    creation and the pod's (re)start until the pod was ready. 0 for a pod that was ready before it came."""
    if pod is None or pod.ready_at is None or pod.ready_at <= created:
        return 0
    booting_from = max(created, pod.started_at or created)
    return max(0, _ms(min(assigned, pod.ready_at) - booting_from))


def started(record: RequestRecord | None, event: RequestStarted, now: datetime) -> Decision:
    if record is None or not applies(record, Trigger.STARTED, event.attempt):
        return Decision(None, note="stale event")
    return Decision(_move(record, Trigger.STARTED, RUNNING, now, prompt_id=event.prompt_id, started_at=now))


def succeeded(
    record: RequestRecord | None, event: AttemptSucceeded, now: datetime, cost_per_hr: float | None = None
) -> Decision:
    """The attempt's files are stored: completed, announced to everyone. `cost_per_hr`: its pod's price."""
    if record is None or not applies(record, Trigger.SUCCEEDED, event.attempt):
        return Decision(None, note="stale event")
    billed = _billed(record, now, cost_per_hr)
    upload_ms = max(0, event.upload_ms or 0)
    run_ms = event.run_ms if event.run_ms is not None else _ms(now - (record.assigned_at or now)) - upload_ms
    completed = _move(
        billed, Trigger.SUCCEEDED, COMPLETED, now, result=event.result, not_before=None, finished_at=now,
        timings=_timings(record, now, max(0, run_ms), upload_ms),
    )  # fmt: skip
    announcement = Announcement(
        RequestEvent.COMPLETED,
        RequestCompleted(request_id=record.id, attempt=event.attempt, result=event.result),
        f"{record.id}.completed",
    )
    return Decision(completed, announcement)


def attempt_failed(
    record: RequestRecord | None,
    event: AttemptFailed,
    policy: RetryPolicy,
    now: datetime,
    cost_per_hr: float | None = None,
) -> Decision:
    """A pod fault with attempts left goes back to the queue after a backoff (on another pod); a cancel
    ends as cancelled; anything else — or the last attempt — fails the request with every attempt's reason.
    The attempt's pod time is billed at `cost_per_hr` whatever follows."""
    if record is None or not applies(record, Trigger.ATTEMPT_FAILED, event.attempt):
        return Decision(None, note="stale event")
    note = AttemptNote(attempt=event.attempt, pod_id=event.pod_id, kind=event.kind, error=event.error)
    noted = msgspec.structs.replace(_billed(record, now, cost_per_hr), attempt_log=[*record.attempt_log, note])
    if event.kind == FailureKind.CANCELLED or record.cancel_requested:
        return _cancelled(noted, Trigger.ATTEMPT_FAILED, now)
    if event.kind == FailureKind.POD_FAULT and record.attempts < policy.max_attempts:
        delay = policy.delay(record.attempts)
        retry = _move(noted, Trigger.ATTEMPT_FAILED, PENDING, now, pod_id=None, pod_ip=None, not_before=now + delay)
        return Decision(retry, retry_after=delay)
    return _failed(noted, Trigger.ATTEMPT_FAILED, event.kind, attempts_error(noted, event.error), now)


def cancel_requested(record: RequestRecord | None, now: datetime) -> Decision:
    """Pending: cancelled at once. On a pod: flagged; the executor running it stops it (it heard too)."""
    if record is None or not applies(record, Trigger.CANCEL_REQUESTED):
        return UNCHANGED
    if record.status == PENDING:
        return _cancelled(record, Trigger.CANCEL_REQUESTED, now)
    if record.cancel_requested:
        return UNCHANGED
    return Decision(_move(record, Trigger.CANCEL_REQUESTED, record.status, now, cancel_requested=True))


def queue_timeout(record: RequestRecord, ttl_s: float, fleet_note: str | None, now: datetime) -> Decision:
    error = f"timed out: waited longer than the queue TTL ({ttl_s:.0f}s)"
    if fleet_note:
        error += f"; the fleet: {fleet_note}"
    return _failed(record, Trigger.QUEUE_TIMEOUT, FailureKind.TIMEOUT, error, now)


def run_timeout(record: RequestRecord, limit_s: float, now: datetime, cost_per_hr: float | None = None) -> Decision:
    """No outcome within the execution timeout and the grace: its executor is gone (a live one
    interrupts the run and reports on its own). The pod time until now is billed."""
    error = f"timed out: no outcome within {limit_s:.0f}s"
    return _failed(_billed(record, now, cost_per_hr), Trigger.RUN_TIMEOUT, FailureKind.TIMEOUT, error, now)


def run_overdue(record: RequestRecord, default_timeout_s: float, grace_s: float, now: datetime) -> float | None:
    """The limit a run has outlived (its timeout plus the grace), or None while it is within it."""
    limit = (record.execution_timeout_s or default_timeout_s) + grace_s
    return limit if (now - record.updated_at).total_seconds() > limit else None


def no_capacity(record: RequestRecord, diagnosis: str, now: datetime) -> Decision:
    return _failed(
        record, Trigger.NO_CAPACITY, FailureKind.NO_CAPACITY, f"no pod can be started for it: {diagnosis}", now
    )


def pod_lost(record: RequestRecord, now: datetime, cost_per_hr: float | None = None) -> Decision:
    """Assigned to a pod that is gone before the run began: back to the queue, at its front (the time it
    held the pod is billed)."""
    if not applies(record, Trigger.POD_LOST):
        return UNCHANGED
    requeued = _move(_billed(record, now, cost_per_hr), Trigger.POD_LOST, PENDING, now, pod_id=None, pod_ip=None)
    return Decision(requeued)


def _failed(record: RequestRecord, trigger: Trigger, kind: FailureKind, error: str, now: datetime) -> Decision:
    if FAILED not in allowed(record.status, trigger):
        return UNCHANGED
    failed = _move(record, trigger, FAILED, now, error=error, not_before=None, **_ended(record, now))
    announcement = Announcement(
        RequestEvent.FAILED,
        RequestFailed(
            request_id=record.id, kind=kind, error=error, attempts=record.attempts, attempt_log=record.attempt_log
        ),
        f"{record.id}.failed",
    )
    return Decision(failed, announcement, note=error)


def _cancelled(record: RequestRecord, trigger: Trigger, now: datetime) -> Decision:
    cancelled = _move(
        record, trigger, CANCELLED, now, error="cancelled by request", not_before=None, **_ended(record, now)
    )
    announcement = Announcement(
        RequestEvent.CANCELLED, RequestCancelled(request_id=record.id, at=now), f"{record.id}.cancelled"
    )
    return Decision(cancelled, announcement)


def attempts_error(record: RequestRecord, last_error: str) -> str:
    """The final error: the last attempt's, or — when several attempts failed — each one's pod and reason."""
    if len(record.attempt_log) <= 1:
        return last_error
    parts = "; ".join(f"#{n.attempt} on pod {n.pod_id}: {n.error}" for n in record.attempt_log)
    return f"failed after {len(record.attempt_log)} attempts: {parts}"


# ------------------------------------------------------------------------------------- clock and bill


def _ms(delta: timedelta) -> int:
    return round(delta.total_seconds() * 1000)


def _billed(record: RequestRecord, now: datetime, cost_per_hr: float | None) -> RequestRecord:
    """The current attempt's pod time (placed → now) added to the request's: a pod without a known price
    (None) costs nothing."""
    if record.assigned_at is None or record.status not in (ASSIGNED, RUNNING):
        return record
    seconds = max(0.0, (now - record.assigned_at).total_seconds())
    return msgspec.structs.replace(
        record,
        gpu_seconds=record.gpu_seconds + seconds,
        cost=record.cost + seconds * (cost_per_hr or 0.0) / 3600,
    )


def _timings(record: RequestRecord, now: datetime, run_ms: int, upload_ms: int) -> RequestTimings:
    assigned = record.assigned_at or record.created_at
    return RequestTimings(
        queued_ms=max(0, _ms(assigned - record.created_at) - record.boot_wait_ms),
        boot_wait_ms=record.boot_wait_ms,
        run_ms=run_ms,
        upload_ms=upload_ms,
        total_ms=max(0, _ms(now - record.created_at)),
    )


def _ended(record: RequestRecord, now: datetime) -> dict[str, object]:
    """What a failed or cancelled end records: when, and — if it ended on a pod — where its time went
    (the run until now; nothing was stored)."""
    if record.status not in (ASSIGNED, RUNNING) or record.assigned_at is None:
        return {"finished_at": now}
    return {"finished_at": now, "timings": _timings(record, now, max(0, _ms(now - record.assigned_at)), 0)}
