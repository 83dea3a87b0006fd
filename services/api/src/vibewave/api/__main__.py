"""`python -m vibewave.api`: the Litestar app under uvicorn."""

from __future__ import annotations

import asyncio

import uvicorn

try:
    import uvloop
except ImportError:  # uvicorn[standard] brings it everywhere but Windows
    uvloop = None  # type: ignore[assignment]

from vibewave.api.app import create_app
from vibewave.api.settings import ApiSettings
from vibewave.runtime.heap import settle_after_start
from vibewave.runtime.logs import configure_logging
from vibewave.runtime.telemetry import setup_tracing


def main() -> None:
    settings = ApiSettings.from_env()
    configure_logging("api", settings.common.log_level, settings.common.log_dir)
    provider = setup_tracing("api")
    app = create_app(settings, provider)
    app.on_startup.append(settle_after_start)  # after the gateway's broker has started (see runtime.heap)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=settings.common.debug,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    try:
        # uvloop: the event loop's own cost (socket writes, callbacks) is a large share of each request's
        # CPU here; measured with `make bench SCENARIO=edge` (see bench/README.md)
        if uvloop is not None:
            uvloop.run(server.serve())
        else:
            asyncio.run(server.serve())
    finally:
        provider.shutdown()


if __name__ == "__main__":
    main()
