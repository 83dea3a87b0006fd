"""Keeping the index current: each bucket read whole once (`kv_snapshot`), then followed by a KV watch,
reopened after every NATS reconnect; and the retention backstop.

Why nats-py's watcher and not a FastStream `KvWatch` subscriber: this is the api's busiest input (every
change of every request: while 10,000 queued requests drain, several thousand per second), and a
`KvWatch` subscriber runs each entry through FastStream's whole consume path — acknowledgement, logging
and context middlewares, a JSON decode of the value, fast_depends — for a handler that only files the
entry in memory. py-spy (`make bench SCENARIO=deepqueue BENCH_PROFILE=…`) put that path at 53 % of the
api's CPU during the drain, of which the index's own work was 5 %, and status reads waited behind it.
A watch has no acknowledgements, retries or dead letters to manage, so nothing of FastStream's is
missing here.

Why a reopen: nats-py's KV watcher is an ordered push consumer, and after a NATS server restart it stays
silent for good (the server forgot its consumer; nothing tells the watcher), so a watch that is not
reopened would leave the index frozen. The broker's `on_reconnect` callback only sets an event (nats-py
awaits it inside its reconnect sequence, so it must not do the work itself); the follower then stops the
watches, reads each bucket again — reconciling: a key gone meanwhile, whose delete marker may have been
missed, leaves the index too — and starts the watches again. A watch replays each key's current value
first, so what changed between snapshot and watch is not lost; applying a value twice changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from faststream.nats import NatsBroker
from nats.js.kv import KeyValue

from vibewave.api.index import RequestIndex
from vibewave.contracts.events import FLEET_BUCKET, PODS_BUCKET, REQUESTS_BUCKET, BucketSpec
from vibewave.runtime.broker import bounded, jetstream, kv_deleted, kv_snapshot

log = logging.getLogger("vibewave.api.index")

Apply = Callable[[str, bytes | None], None]
RETRY_S = 0.5


def expiry_interval(retention_s: float) -> float:
    """How often the retention backstop runs: a quarter of the retention, within 0.25 s and a minute."""
    return min(max(retention_s / 4, 0.25), 60.0)


class IndexFollower:
    def __init__(
        self,
        broker: NatsBroker,
        index: RequestIndex,
        retention_s: float,
        *,
        before_load: Callable[[], object] | None = None,
    ) -> None:
        self.broker = broker
        self.index = index
        self.retention_s = retention_s
        self.load_s: float | None = None  # how long the first load took
        self._before_load = before_load  # a test hook: awaited (if awaitable) before each load
        self._reopen = asyncio.Event()
        self._watchers: list[KeyValue.KeyWatcher] = []
        self._watching: list[asyncio.Task[None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._follows: list[tuple[BucketSpec, Apply]] = [
            (REQUESTS_BUCKET, index.apply),
            (PODS_BUCKET, index.apply_pod),
            (FLEET_BUCKET, index.apply_fleet),
        ]

    async def reconnected(self) -> None:
        """The broker's `on_reconnect`: have the watches reopened (see the module's docstring)."""
        self._reopen.set()

    def start(self) -> None:
        """Load and follow in the background: the api serves (503 on index reads) meanwhile."""
        self._tasks = [
            asyncio.create_task(self._follow(), name="api:index-follow"),
            asyncio.create_task(self._expire(), name="api:index-expire"),
        ]

    async def stop(self, timeout: float = 2.0) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout)
        await self._stop_watches(timeout)

    async def _follow(self) -> None:
        while True:
            self._reopen.clear()
            try:
                await self._resync()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("loading the index failed (%s); retrying in %.1fs", exc, RETRY_S)
                await asyncio.sleep(RETRY_S)
                continue
            await self._reopen.wait()
            log.info("NATS reconnected: reloading the index and reopening its watches")

    async def _resync(self) -> None:
        await self._stop_watches()
        if self._before_load is not None:
            waited = self._before_load()
            if asyncio.iscoroutine(waited) or isinstance(waited, asyncio.Future):
                await waited
        started = time.perf_counter()
        js = jetstream(self.broker)
        snapshots = []
        for spec, _ in self._follows:
            kv = await self.broker.key_value(spec.name, declare=False)
            snapshots.append(await kv_snapshot(js, kv, spec.name))
        requests, pods, fleet = snapshots
        self.index.load(requests)
        self.index.load_pods(pods)
        self.index.load_fleet(fleet)
        elapsed = time.perf_counter() - started
        if not self.index.loaded.is_set():
            self.load_s = elapsed
            self.index.loaded.set()
        log.info(
            "index loaded: %d requests, %d pods in %.2fs",
            len(self.index.records), len(self.index.pods), elapsed,
        )  # fmt: skip
        await self._start_watches()

    async def _start_watches(self) -> None:
        for spec, apply in self._follows:
            kv = await self.broker.key_value(spec.name, declare=False)
            watcher = await kv.watch(">")
            self._watchers.append(watcher)
            self._watching.append(asyncio.create_task(_apply_each(watcher, apply), name=f"api:watch-{spec.name}"))

    async def _stop_watches(self, timeout: float = 2.0) -> None:
        watchers, tasks = self._watchers, self._watching
        self._watchers, self._watching = [], []
        for watcher in watchers:
            await bounded(watcher.stop(), timeout)  # type: ignore[no-untyped-call]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    async def _expire(self) -> None:
        """The retention backstop (see `RequestIndex.expire`), by this process's clock."""
        interval = expiry_interval(self.retention_s)
        while True:
            await asyncio.sleep(interval)
            if self.index.loaded.is_set():
                dropped = self.index.expire(time.time(), self.retention_s)
                if dropped:
                    log.info("dropped %d finished requests past the retention", dropped)


async def _apply_each(watcher: KeyValue.KeyWatcher, apply: Apply) -> None:
    """Every entry the watch delivers, filed in the index (a None is nats-py's end-of-current-values mark)."""
    async for entry in watcher:
        if entry is None:
            continue
        try:
            apply(entry.key, None if kv_deleted(entry.operation) else (entry.value or b""))
        except Exception:
            log.exception("index: entry %s of %s not applied", entry.key, entry.bucket)
