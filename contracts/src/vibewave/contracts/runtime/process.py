"""The life of a service process: logging and tracing from settings, start, wait for a signal, stop."""

from __future__ import annotations

import asyncio
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


def run_service(name: str, build: Callable[[CommonSettings, TracerProvider], Service]) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully (drain consumers, close connections)."""
    common = CommonSettings.from_env()
    configure_logging(name, common.log_level, common.log_dir)
    provider = setup_tracing(name)
    log = logging.getLogger(f"vibewave.{name.replace('-', '_')}")

    async def main() -> None:
        service = build(common, provider)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await service.start()
        log.info("%s started", name, extra={"nats_url": common.nats_url})
        await stop.wait()
        log.info("%s stopping", name)
        await service.stop()

    try:
        asyncio.run(main())
    finally:
        provider.shutdown()
        log.info("%s stopped", name)
