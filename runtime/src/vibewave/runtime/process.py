"""The life of a service process: logging and tracing from settings, start, wait for a signal, stop.

A stop signal (SIGTERM, SIGINT or SIGHUP) at any moment — while the service starts, runs or stops — ends
the process quietly and within bounds: no KeyboardInterrupt or CancelledError traceback. A
`ConfigurationError` is not retried: the process exits with EX_CONFIG (78), which the devstack takes as
"do not restart me". A leader that lost its lease (`ended` set) stops and exits with EX_TEMPFAIL (75):
restarted, it comes back as a standby.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Protocol

from opentelemetry.sdk.trace import TracerProvider

from vibewave.runtime.heap import settle_after_start
from vibewave.runtime.logs import configure_logging
from vibewave.runtime.metrics import setup_metrics
from vibewave.runtime.ops import OpsServer, ServiceReadiness
from vibewave.runtime.settings import CommonSettings
from vibewave.runtime.telemetry import setup_tracing

EX_CONFIG = 78  # sysexits.h: a configuration error; restarting cannot help
EX_TEMPFAIL = 75  # sysexits.h: try again later — a leader that lost its lease, to be restarted as a standby
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
STOP_TIMEOUT = 12.0  # seconds a service has to stop; below the devstack's bounds (10 s, pod-manager 15 s)


class ConfigurationError(Exception):
    """A setting is missing or wrong: the service cannot run as configured, so it is not retried."""


class Service(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def start_with_retries(build: Callable[[], Service], stop: asyncio.Event, log: logging.Logger) -> Service | None:
    """Start a fresh service, again and again (backoff up to 10 s) until it starts or a stop is asked:
    NATS restarting while a service loads its state must not kill it. None if stopped first; a stop
    asked while `start()` runs cancels it. A `ConfigurationError` is raised at once, never retried."""
    delay = 0.5
    while not stop.is_set():
        service: Service | None = None
        try:
            service = build()
            if await _unless_stopped(service.start(), stop):
                return service
            log.info("stop asked while starting")
        except ConfigurationError:
            if service is not None:
                await _quietly_stop(service, log)
            raise
        except Exception as exc:
            log.warning("start failed (%s: %s); retrying in %.1fs", type(exc).__name__, exc, delay)
        if service is not None:
            await _quietly_stop(service, log)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, 10.0)
    return None


async def _unless_stopped(starting: Awaitable[None], stop: asyncio.Event) -> bool:
    """Run `starting` to its end unless `stop` is set first (then cancel it): True if it finished."""
    task = asyncio.ensure_future(starting)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if task.done():
        task.result()  # raises what start() raised
        return True
    task.cancel()
    await asyncio.wait({task}, timeout=STOP_TIMEOUT)  # bounded: a start may swallow its cancellation
    if task.done() and not task.cancelled():
        task.exception()  # retrieved: no "exception was never retrieved" at exit
    return False


async def _quietly_stop(service: Service, log: logging.Logger, timeout: float = STOP_TIMEOUT) -> bool:
    """`service.stop()` within `timeout`: True if it ended in time (a failure is logged in one line, the
    traceback only at DEBUG); False if it is still running, then it is left to itself — a stop that
    swallows its cancellation must not stretch the bound."""
    stopping = asyncio.ensure_future(service.stop())
    await asyncio.wait({stopping}, timeout=timeout)
    if not stopping.done():
        log.warning("did not stop within %.0fs; exiting anyway", timeout)
        return False
    try:
        stopping.result()
    except (Exception, asyncio.CancelledError) as exc:
        log.warning("stop failed (%s: %s)", type(exc).__name__, exc)
        log.debug("stop failure", exc_info=True)
    return True


def run_service(name: str, build: Callable[[CommonSettings, TracerProvider], Service]) -> None:
    """Run until SIGTERM, SIGINT or SIGHUP, then stop gracefully (drain consumers, close connections)
    within `STOP_TIMEOUT`. Exits with `EX_CONFIG` when building or starting raises `ConfigurationError`.

    With OPS_PORT, the ops server (`ops`: metrics and probes) listens before the service starts — alive
    while a start is retried, ready once it started — and closes after it stopped."""
    asked: list[int] = []

    def note(signum: int, _frame: FrameType | None) -> None:
        asked.append(signum)  # outside the event loop (before it runs, after it closed): remember, no traceback

    for sig in STOP_SIGNALS:
        signal.signal(sig, note)
    common = CommonSettings.from_env()
    configure_logging(name, common.log_level, common.log_dir)
    provider = setup_tracing(name)
    meters = setup_metrics(name)
    log = logging.getLogger(f"vibewave.{name.replace('-', '_')}")
    readiness = ServiceReadiness()

    def building() -> Service:
        service = build(common, provider)
        readiness.service, readiness.started = service, False
        return service

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, stop.set)
        if asked:
            stop.set()
        ops = await _start_ops(common, readiness)
        try:
            await serve(stop)
        finally:
            readiness.stopping = True
            if ops is not None:
                await ops.stop()

    async def serve(stop: asyncio.Event) -> None:
        service = await start_with_retries(building, stop, log)
        if service is None:
            return
        readiness.started = True
        settle_after_start()
        log.info("%s started", name, extra={"nats_url": common.nats_url, "nats_user": common.nats_user})
        ended: asyncio.Event | None = getattr(service, "ended", None)  # set by a leader that lost its lease
        waits = [asyncio.ensure_future(stop.wait()), *([asyncio.ensure_future(ended.wait())] if ended else [])]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for wait in waits:
            wait.cancel()
        demoted = ended is not None and ended.is_set() and not stop.is_set()
        readiness.stopping = True
        log.info("%s stopping%s", name, " (lost its lease)" if demoted else "")
        if not await _quietly_stop(service, log):
            logging.shutdown()
            os._exit(1)  # what is still stopping would hold up the loop's own cleanup as well
        if demoted:
            exit_code.append(EX_TEMPFAIL)

    code = 0
    exit_code: list[int] = []
    try:
        asyncio.run(main())
        code = exit_code[0] if exit_code else 0
    except ConfigurationError as exc:
        log.error("configuration error: %s", exc)
        code = EX_CONFIG
    finally:
        for sig in STOP_SIGNALS:  # asyncio restored the defaults when its loop closed
            signal.signal(sig, note)
        provider.shutdown()
        meters.shutdown()
        log.info("%s stopped", name)
    if code:
        sys.exit(code)


async def _start_ops(common: CommonSettings, readiness: ServiceReadiness) -> OpsServer | None:
    """The ops server on OPS_HOST:OPS_PORT (None without OPS_PORT); a port it cannot take is a
    configuration error: another process holds it, and a restart would meet it again."""
    if common.ops_port is None:
        return None
    ops = OpsServer(common.ops_host, common.ops_port, readiness)
    try:
        await ops.start()
    except OSError as exc:
        await ops.stop()
        raise ConfigurationError(f"OPS_PORT {common.ops_port} on {common.ops_host}: {exc.strerror or exc}") from exc
    return ops
