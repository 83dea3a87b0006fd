"""`python -m vibewave.api`: the Litestar app under uvicorn."""

from __future__ import annotations

import uvicorn

from vibewave.api.app import create_app
from vibewave.api.settings import ApiSettings
from vibewave.runtime.heap import settle_after_start
from vibewave.runtime.logs import configure_logging
from vibewave.runtime.process import run_loop
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
        run_loop(server.serve())  # on uvloop: measured with `make bench SCENARIO=edge` (bench/README.md)
    finally:
        provider.shutdown()


if __name__ == "__main__":
    main()
