"""A leader lease on NATS KV: of N replicas of a role, the one holding the lease decides; the others wait.

The lease is one key of KV `leases` (the role's name) written with a TTL. It is taken with a create that
only succeeds while the key does not exist, and renewed with a write that only succeeds while the key is
still at the revision of our last write — so two holders can never both succeed. If the holder stops
renewing (it died, hangs, or lost NATS), the key lapses with its TTL and a standby's create takes it.

The holder trusts its lease only until `TTL - margin` after it *sent* its last successful renewal: the
server cannot let the key lapse before the TTL counted from the moment it *stored* that write, so the
holder stops acting before anyone else can start. `epoch` — the revision the lease was taken at — grows
at every takeover; a new holder fences the state it takes over (see the services), so the writes of a
paused old holder that wakes are refused by revision checks and it learns that it lost the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from uuid import uuid4

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from vibewave.contracts.events import LEASES_BUCKET, LeaseRecord, utcnow
from vibewave.runtime.broker import decode, encode, kv_update

log = logging.getLogger("vibewave.runtime.lease")

LEASE_TTL_S = 3.0  # a dead holder's lease lapses within this; the standby takes over right after
RENEW_EVERY_S = 0.75
TRY_EVERY_S = 0.25  # how often a standby tries to take a lapsed lease
MARGIN = 0.25  # share of the TTL the holder keeps in hand (clock rates, a slow renewal)


class LeaseLost(Exception):
    """Another holder took the lease: this one must stop deciding at once."""


class LeaseLapsed(Exception):
    """Nobody holds the lease any more (its TTL ran out while NATS was away): it may be taken again."""


def holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid4().hex[:6]}"


class Lease:
    def __init__(
        self,
        js: JetStreamContext,
        kv: KeyValue,
        role: str,
        *,
        holder: str | None = None,
        ttl_s: float = LEASE_TTL_S,
        renew_every_s: float = RENEW_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.js, self.kv, self.role = js, kv, role
        self.holder = holder or holder_id()
        self.ttl_s, self.renew_every_s, self.clock = ttl_s, renew_every_s, clock
        self.epoch = 0  # the revision our lease was taken at; 0 while we hold none
        self._revision = 0  # of our last write of the key
        self._taken_at = utcnow()
        self._valid_until = 0.0  # monotonic: trusted until then
        self.lost = asyncio.Event()  # set when another holder took it
        self._released = False  # given up at a clean stop: a keeper still running renews no more

    def held(self) -> bool:
        """True while this process may decide: it holds the lease and its TTL cannot have lapsed."""
        return self.epoch > 0 and not self.lost.is_set() and self.clock() < self._valid_until

    def check(self) -> None:
        """Raise unless the lease is held (a decider calls this before each write that acts on the world)."""
        if not self.held():
            raise LeaseLost(f"not the {self.role} leader (lease lost or lapsed)")

    async def until_held(self, timeout: float) -> None:
        """Wait out a lapse (NATS away, the lease about to be taken again) instead of failing what is in
        hand; raises `LeaseLost` if it was lost, or is not held again within `timeout`."""
        deadline = time.monotonic() + timeout
        while not self.held():
            if self.lost.is_set() or time.monotonic() > deadline:
                raise LeaseLost(f"not the {self.role} leader (lease lost or lapsed)")
            await asyncio.sleep(0.05)

    async def current(self) -> LeaseRecord | None:
        """Who holds the lease now, as stored (None: nobody)."""
        stored = await self._stored()
        return stored[0] if stored is not None else None

    async def try_take(self) -> bool:
        """Take the lease if nobody holds it. True if we hold it now."""
        self._taken_at = utcnow()
        sent = self.clock()
        try:
            revision = await self._write(last=0, epoch=0)
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        self.epoch = revision  # the revision of the take is the epoch: stored in every renewal from now on
        self._revision = revision
        self._valid_until = sent + self.ttl_s * (1 - MARGIN)
        self.lost.clear()
        log.info("took the %s lease (epoch %d)", self.role, self.epoch)
        return True

    async def acquire(self) -> int:
        """Wait until this process holds the lease (a standby waits here); the epoch."""
        announced = False
        while True:
            with contextlib.suppress(Exception):  # NATS away or electing: try again
                if await self.try_take():
                    return self.epoch
                if not announced:
                    holder = await self.current()
                    log.info("standing by: the %s lease is held by %s", self.role, holder.holder if holder else "?")
                    announced = True
            await asyncio.sleep(TRY_EVERY_S)

    async def renew(self) -> None:
        """Extend the lease. Raises `LeaseLost` if another holder has it, `LeaseLapsed` if it lapsed
        (nobody holds it: take it again); NATS errors pass through."""
        sent = self.clock()
        try:
            self._revision = await self._write(last=self._revision, epoch=self.epoch)
        except nats.js.errors.KeyWrongLastSequenceError:
            stored = await self._stored()
            if stored is not None and stored[0].holder != self.holder:
                self._lose()
                raise LeaseLost(f"the {self.role} lease was taken by {stored[0].holder}") from None
            if stored is None or stored[1] == self._revision:  # gone, or its lapse not yet cleared up
                raise LeaseLapsed(f"the {self.role} lease lapsed") from None
            # Ours at another revision: a renewal whose reply was lost (NATS restarting) had landed.
            self._revision = await self._write(last=stored[1], epoch=self.epoch)
        self._valid_until = sent + self.ttl_s * (1 - MARGIN)

    async def keep(self, on_retaken: Callable[[int], None] | None = None) -> None:
        """Renew forever. If NATS is out for longer than the TTL the lease lapses; once NATS is back it is
        taken again if nobody else did (`on_retaken(epoch)`: whatever the holder knew may be stale), else
        `lost` is set and this returns."""
        while True:
            await asyncio.sleep(self.renew_every_s)
            if self._released:
                return
            try:
                try:
                    await self.renew()
                    continue
                except LeaseLapsed:
                    pass
                if await self.try_take():
                    log.warning("the %s lease lapsed while NATS was away; taken again (epoch %d)",
                                self.role, self.epoch)  # fmt: skip
                    if on_retaken is not None:
                        on_retaken(self.epoch)
                    continue
                stored = await self._stored()
                if stored is None or stored[0].holder == self.holder:
                    continue  # our lapsed key lingers (a restarted server drops it a moment later): retry
                self._lose()
                log.error("the %s lease lapsed and %s took it", self.role, stored[0].holder)
                return
            except LeaseLost as exc:
                log.error("%s", exc)
                return
            except Exception as exc:  # NATS away, a stream electing its leader (503), no responders, …
                log.warning("renewing the %s lease failed (%s: %s); retrying", self.role, type(exc).__name__, exc)

    async def release(self) -> None:
        """Give the lease up at a clean stop, so a standby takes over without waiting out the TTL."""
        self._released = True
        if self.epoch == 0 or self.lost.is_set():
            return
        self.epoch = 0
        with contextlib.suppress(Exception):
            stored = await self._stored()
            if stored is not None and stored[1] == self._revision:  # removed outright: the next create succeeds
                await self.js.purge_stream(f"KV_{LEASES_BUCKET.name}", subject=f"$KV.{LEASES_BUCKET.name}.{self.role}")

    async def _stored(self) -> tuple[LeaseRecord, int] | None:
        """The lease as stored, with its revision (None: nobody holds it)."""
        try:
            entry = await self.kv.get(self.role)
        except nats.js.errors.KeyNotFoundError:
            return None
        return (decode(entry.value, LeaseRecord), entry.revision or 0) if entry.value else None

    def _lose(self) -> None:
        self.epoch = 0
        self._valid_until = 0.0
        self.lost.set()

    async def _write(self, *, last: int, epoch: int) -> int:
        now = utcnow()
        record = LeaseRecord(
            role=self.role, holder=self.holder, epoch=epoch, taken_at=self._taken_at, renewed_at=now, ttl_s=self.ttl_s
        )
        return await kv_update(self.js, LEASES_BUCKET.name, self.role, encode(record), last=last, ttl=self.ttl_s)
