"""Circuit breakers per GPU class: a paid loop that keeps failing the same way stops. No I/O.

Creating a pod costs money before it can serve anything. When pods of a class keep never becoming
ready (`attempts` in a row, same cause), or the provider refuses to create one, or no GPU type can serve
the class, its breaker opens: no pod of the class is created, and the scheduler fails the requests that
need it with the diagnosis instead of letting them wait out the queue TTL. After a cooldown (doubling
each time it opens again, up to a day) one more creation is allowed; a pod of the class becoming ready
closes the breaker. "No GPU type fits" never retries: only a change of settings can fix it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from vibewave.contracts.events import Breaker, utcnow

MAX_COOLDOWN_S = 24 * 3600.0
PERMANENT_CAUSES = ("no_gpu_type",)


@dataclass
class _ClassState:
    cause: str = ""
    failures: int = 0  # in a row, of `cause`
    breaker: Breaker | None = None  # set while open
    trial: bool = False  # the one creation allowed after the cooldown is under way
    cooldown_s: float = 0.0


class Breakers:
    def __init__(self, attempts: int, cooldown_s: float, clock: Callable[[], datetime] = utcnow) -> None:
        self.attempts = attempts
        self.cooldown_s = cooldown_s
        self.clock = clock
        self._classes: dict[int, _ClassState] = {}

    def _state(self, gpu_class: int) -> _ClassState:
        return self._classes.setdefault(gpu_class, _ClassState(cooldown_s=self.cooldown_s))

    def failures(self, gpu_class: int, cause: str) -> int:
        state = self._classes.get(gpu_class)
        return state.failures if state is not None and state.cause == cause else 0

    def failed(self, gpu_class: int, cause: str, diagnosis: str) -> Breaker | None:
        """A pod of the class failed with `cause`; returns the breaker if this opened it."""
        state = self._state(gpu_class)
        if state.cause != cause:
            state.cause, state.failures = cause, 0
        state.failures += 1
        if state.trial or state.failures >= self.attempts or cause in PERMANENT_CAUSES:
            return self._open(gpu_class, state, diagnosis)
        return None

    def refused(self, gpu_class: int, cause: str, diagnosis: str) -> Breaker:
        """The provider refused in a way retrying cannot fix soon (or no GPU type fits): open now."""
        state = self._state(gpu_class)
        state.cause, state.failures = cause, max(state.failures + 1, self.attempts)
        return self._open(gpu_class, state, diagnosis)

    def _open(self, gpu_class: int, state: _ClassState, diagnosis: str) -> Breaker:
        now = self.clock()
        if state.breaker is not None or state.trial:
            state.cooldown_s = min(state.cooldown_s * 2, MAX_COOLDOWN_S)
        permanent = state.cause in PERMANENT_CAUSES
        state.trial = False
        state.breaker = Breaker(
            min_gpu_memory_gb=gpu_class,
            cause=state.cause,
            diagnosis=diagnosis,
            attempts=state.failures,
            opened_at=now,
            retry_at=None if permanent else now + timedelta(seconds=state.cooldown_s),
        )
        return state.breaker

    def succeeded(self, gpu_class: int) -> None:
        """A pod of the class became ready: whatever failed before, creating works."""
        self._classes.pop(gpu_class, None)

    def may_create(self, gpu_class: int) -> bool:
        state = self._classes.get(gpu_class)
        if state is None or state.breaker is None:
            return True
        retry_at = state.breaker.retry_at
        return not state.trial and retry_at is not None and self.clock() >= retry_at

    def creating(self, gpu_class: int) -> None:
        """A creation of the class starts; after a cooldown it is the one trial."""
        state = self._classes.get(gpu_class)
        if state is not None and state.breaker is not None:
            state.trial = True

    def blocked(self) -> set[int]:
        return {gpu_class for gpu_class in self._classes if not self.may_create(gpu_class)}

    def open_breakers(self) -> list[Breaker]:
        """Every open breaker (those past `retry_at` are waiting for, or running, their one more try)."""
        found = [state.breaker for state in self._classes.values() if state.breaker is not None]
        return sorted(found, key=lambda b: b.min_gpu_memory_gb)

    def restore(self, breakers: list[Breaker]) -> None:
        """Breakers stored by an earlier run under the same settings stay open (a restart is no fix)."""
        for breaker in breakers:
            cooldown = (breaker.retry_at - breaker.opened_at).total_seconds() if breaker.retry_at else 0.0
            self._classes[breaker.min_gpu_memory_gb] = _ClassState(
                cause=breaker.cause,
                failures=breaker.attempts,
                breaker=breaker,
                cooldown_s=max(cooldown, self.cooldown_s),
            )
