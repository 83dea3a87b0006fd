"""`python -m vibewave.api`: the Litestar app under uvicorn."""

from __future__ import annotations

import asyncio
import logging
import sys

import uvicorn

try:
    import uvloop
except ImportError:  # uvicorn[standard] brings it everywhere but Windows
    uvloop = None  # type: ignore[assignment]

from vibewave.api.access import AccessLog
from vibewave.api.app import create_app
from vibewave.api.settings import ApiSettings, is_loopback
from vibewave.runtime.heap import settle_after_start
from vibewave.runtime.logs import configure_logging
from vibewave.runtime.metrics import HttpServerMetrics, setup_metrics
from vibewave.runtime.process import EX_CONFIG, ConfigurationError
from vibewave.runtime.telemetry import setup_tracing

log = logging.getLogger("vibewave.api")


def main() -> None:
    try:
        settings = ApiSettings.from_env()
    except ConfigurationError as exc:
        print(f"api: {exc}", file=sys.stderr, flush=True)
        sys.exit(EX_CONFIG)
    configure_logging("api", settings.common.log_level, settings.common.log_dir)
    if settings.auth:
        log.info("API keys required on %s:%d (health and docs are open)", settings.host, settings.port)
    elif is_loopback(settings.host):
        log.warning(
            "no API keys configured: the API is open to local callers only, on %s:%d (set VIBEWAVE_ADMIN_KEY "
            "to require keys and serve it to the network)", settings.host, settings.port,
        )  # fmt: skip
    else:
        log.warning("VIBEWAVE_AUTH=off: the API is open to anyone who can reach %s:%d", settings.host, settings.port)
    provider = setup_tracing("api")
    meters = setup_metrics("api")
    app = create_app(settings, provider)
    app.on_startup.append(settle_after_start)  # after the gateway's broker has started (see runtime.heap)
    config = uvicorn.Config(
        HttpServerMetrics(AccessLog(app)),  # both outermost: they see every request, refused ones too
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,  # ours: one JSON line per request (see `access`)
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    app.state.stopping = lambda: server.should_exit  # open event streams end as uvicorn begins to stop (`sse`)
    try:
        # uvloop: the event loop's own cost (socket writes, callbacks) is a large share of each request's
        # CPU here; measured with `make bench SCENARIO=edge` (see bench/README.md)
        if uvloop is not None:
            uvloop.run(server.serve())
        else:
            asyncio.run(server.serve())
    finally:
        provider.shutdown()
        meters.shutdown()


if __name__ == "__main__":
    main()
