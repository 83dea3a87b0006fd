"""Per-key limits: requests per minute, shared by every api replica, and open requests at once.

The rate is a GCRA (generic cell rate algorithm: a token bucket kept as one timestamp). A key allowed R
requests per minute earns one every 60/R seconds and may spend up to a minute's worth at once; its state
is the "theoretical arrival time" of its next request, in KV `rate_limits`, updated with a
revision-checked write so that two replicas admitting the same key's requests at once cannot both spend
the same allowance (the loser re-reads and decides again). The entry expires when it no longer matters.

Open requests are counted from the index (every replica sees every request) plus those this replica
accepted that its index has not seen yet.
"""

from __future__ import annotations

import math
import time

import nats.errors
import nats.js.errors
from faststream.nats import NatsBroker

from vibewave.api.auth import Principal
from vibewave.api.index import RequestIndex
from vibewave.contracts.events import RATE_BUCKET
from vibewave.runtime.broker import jetstream, kv_update

WINDOW_S = 60.0
CAS_TRIES = 8
INFLIGHT_FORGET_S = 60.0  # an accepted request the index has not seen after this is no longer counted here


class LimitExceeded(Exception):
    """429: the key is over a limit; retry after `retry_after_s`."""

    def __init__(self, detail: str, retry_after_s: float) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s

    @property
    def retry_after(self) -> str:
        return str(max(1, math.ceil(self.retry_after_s)))


class OverBatchLimit(Exception):
    """A single call asks for more than the key may ever get at once: retrying cannot help (400)."""


class Limits:
    def __init__(self, broker: NatsBroker, index: RequestIndex) -> None:
        self.broker = broker
        self.index = index
        self._known: dict[str, tuple[float, int]] = {}  # key id → (arrival time, revision) last seen
        self._inflight: dict[str, dict[str, float]] = {}  # key id → accepted request id → when

    async def admit(self, principal: Principal, count: int) -> None:
        """Take `count` requests from the key's allowance, or raise LimitExceeded (nothing taken)."""
        key_id = principal.client_key
        if key_id is None:
            return
        if principal.max_open_requests is not None:
            open_now = self.open_requests(key_id)
            if count > principal.max_open_requests:
                raise OverBatchLimit(
                    f"{count} requests exceed this key's limit of {principal.max_open_requests} open requests"
                )
            if open_now + count > principal.max_open_requests:
                raise LimitExceeded(
                    f"This key has {open_now} unfinished requests; its limit is {principal.max_open_requests} at "
                    "once: retry when some have finished",
                    2.0,
                )
        if principal.requests_per_minute is not None:
            await self._take_rate(key_id, principal.requests_per_minute, count)

    async def _take_rate(self, key_id: str, per_minute: int, count: int) -> None:
        interval = WINDOW_S / per_minute
        if count * interval > WINDOW_S:
            raise OverBatchLimit(f"{count} requests exceed this key's limit of {per_minute} requests per minute")
        js = jetstream(self.broker)
        for _ in range(CAS_TRIES):
            now = time.time()
            arrival, revision = self._known.get(key_id) or await self._read(key_id)
            due = max(arrival, now) + count * interval
            if due - now > WINDOW_S + 1e-6:
                wait = due - now - WINDOW_S
                raise LimitExceeded(
                    f"Rate limit: this key may make {per_minute} requests per minute; retry in {math.ceil(wait)}s",
                    wait,
                )
            try:
                new_revision = await kv_update(
                    js, RATE_BUCKET.name, key_id, repr(due).encode(), last=revision, ttl=max(1.0, due - now) + 1.0
                )
            except nats.js.errors.KeyWrongLastSequenceError:
                self._known.pop(key_id, None)  # another replica (or an expiry) came first: read and decide again
                continue
            self._known[key_id] = (due, new_revision)
            return
        raise LimitExceeded("Rate limit: too many concurrent requests for this key; retry", 1.0)

    async def _read(self, key_id: str) -> tuple[float, int]:
        bucket = await self.broker.key_value(RATE_BUCKET.name, declare=False)
        try:
            entry = await bucket.get(key_id)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return 0.0, 0
        except nats.errors.Error:
            raise
        return float(entry.value or b"0"), int(entry.revision or 0)

    def accepted(self, principal: Principal, request_ids: list[str]) -> None:
        """Count these as open until the index has them (then it counts them)."""
        key_id = principal.client_key
        if key_id is None or principal.max_open_requests is None:
            return
        now = time.monotonic()
        self._inflight.setdefault(key_id, {}).update(dict.fromkeys(request_ids, now))

    def open_requests(self, key_id: str) -> int:
        inflight = self._inflight.get(key_id)
        if inflight:
            cutoff = time.monotonic() - INFLIGHT_FORGET_S
            for request_id in [r for r, at in inflight.items() if at < cutoff or r in self.index.records]:
                del inflight[request_id]
        return self.index.open_by_key.get(key_id, 0) + len(inflight or ())
