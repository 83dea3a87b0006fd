"""The life of a service process: logging and tracing from settings, start, wait for a signal, stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from typing import Protocol

from opentelemetry.sdk.trace import TracerProvider

from vibewave.contracts.runtime.logs import configure_logging
from vibewave.contracts.runtime.settings import CommonSettings
from vibewave.contracts.runtime.telemetry import setup_tracing


class Service(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def start_with_retries(build: Callable[[], Service], stop: asyncio.Event, log: logging.Logger) -> Service | None:
    """Start a fresh service, again and again (backoff up to 10 s) until it starts or a stop is asked:
    NATS restarting while a service loads its state must not kill it. None if stopped first."""
    delay = 0.5
    while not stop.is_set():
        service = build()
        try:
            await service.start()
            return service
        except Exception as exc:
            log.warning("start failed (%s: %s); retrying in %.1fs", type(exc).__name__, exc, delay)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(service.stop(), 10)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, 10.0)
    return None


def run_service(name: str, build: Callable[[CommonSettings, TracerProvider], Service]) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully (drain consumers, close connections)."""
    common = CommonSettings.from_env()
    configure_logging(name, common.log_level, common.log_dir)
    provider = setup_tracing(name)
    log = logging.getLogger(f"vibewave.{name.replace('-', '_')}")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        service = await start_with_retries(lambda: build(common, provider), stop, log)
        if service is None:
            return
        log.info("%s started", name, extra={"nats_url": common.nats_url})
        await stop.wait()
        log.info("%s stopping", name)
        await service.stop()

    try:
        asyncio.run(main())
    finally:
        provider.shutdown()
        log.info("%s stopped", name)
