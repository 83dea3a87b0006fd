"""The ops port of a service process: `/metrics`, `/health/live` and `/health/ready` over HTTP.

The services other than the api speak only NATS; an orchestrator and Prometheus speak HTTP. So each
one serves, on `OPS_HOST:OPS_PORT` (unset port: no server), what they ask:

- `GET /metrics`: the Prometheus exposition of the process's registry (see `metrics`);
- `GET /health/live`: 200 while the event loop answers — it is up before the service starts, so a
  service retrying its start (NATS away) is alive, not restarted in a loop;
- `GET /health/ready`: 200 when the service can do its job (started, its NATS connection connected;
  a standby of a leased service, connected, is as ready as it can be), else 503 saying why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import msgspec
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from vibewave.contracts.models import ProbeReport
from vibewave.runtime.metrics import registry as default_registry

log = logging.getLogger("vibewave.runtime.ops")

Readiness = Callable[[], str | None]  # None: ready; else why not
_encoder = msgspec.json.Encoder()


def probe_body(status: str, detail: str | None = None) -> bytes:
    return _encoder.encode(ProbeReport(status=status, detail=detail))


def nats_connected(broker: object) -> bool:
    """Whether a FastStream broker's NATS connection is up now (False before it connected)."""
    try:
        return bool(broker.connection.is_connected)  # type: ignore[attr-defined]
    except Exception:
        return False


class ServiceReadiness:
    """What `/health/ready` answers for a service run by `process.run_service`: it follows the service
    being built and started (a start is retried with a fresh service), then its NATS connection.

    A service may define `ready() -> str | None` to say more; otherwise its `broker` is checked, and a
    leased service (`lease`) still waiting for its lease is a connected standby: ready."""

    def __init__(self) -> None:
        self.service: object | None = None
        self.started = False
        self.stopping = False

    def __call__(self) -> str | None:
        service = self.service
        if self.stopping:
            return "stopping"
        if service is None:
            return "starting"
        custom = getattr(service, "ready", None)
        if callable(custom):
            reason: str | None = custom()
            return reason
        broker = getattr(service, "broker", None)
        if broker is not None and not nats_connected(broker):
            return "NATS is not connected" if self.started else "starting: NATS is not connected yet"
        if self.started:
            return None
        lease = getattr(service, "lease", None)
        held = getattr(lease, "held", None)
        if callable(held) and not held():
            return None  # a standby: connected, it takes over when the leader's lease lapses
        return "starting"


class OpsServer:
    """An aiohttp server on its own port (0: any free one, see `port` once started)."""

    def __init__(
        self, host: str, port: int, readiness: Readiness, *, registry: CollectorRegistry | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.readiness = readiness
        self.registry = registry or default_registry()
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/health/live", self._live)
        app.router.add_get("/health/ready", self._ready)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        """Listen; an OSError (the port is taken) is the caller's to report."""
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:
            server = site._server
            sockets = getattr(server, "sockets", None) or []
            self.port = sockets[0].getsockname()[1]
        log.info("ops port: %s/metrics, /health/live, /health/ready", self.url)

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _live(self, _request: web.Request) -> web.Response:
        return web.Response(body=probe_body("live"), content_type="application/json")

    async def _ready(self, _request: web.Request) -> web.Response:
        try:
            reason = self.readiness()
        except Exception as exc:
            reason = f"readiness check failed: {type(exc).__name__}"
        if reason is None:
            return web.Response(body=probe_body("ready"), content_type="application/json")
        return web.Response(body=probe_body("not ready", reason), status=503, content_type="application/json")
