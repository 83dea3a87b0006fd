"""The Litestar application: routes, JSON errors, OpenAPI, OpenTelemetry, and the NATS gateway's life."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar._openapi.plugin import OpenAPIPlugin
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.plugins.opentelemetry import OpenTelemetryPlugin
from opentelemetry.trace import TracerProvider

from vibewave.api.auth import ApiKeyMiddleware
from vibewave.api.body import JsonBodiesOnly, JsonBodyRequest
from vibewave.api.docs import docs_assets, redoc, swagger_ui
from vibewave.api.errors import EXCEPTION_HANDLERS
from vibewave.api.gateway import Gateway
from vibewave.api.keys import KeysController
from vibewave.api.openapi import refine
from vibewave.api.routes import (
    QwenController,
    WorkflowsController,
    download_file,
    generate_image,
    generate_image_async,
    generate_multiple_images,
    health,
    health_live,
    health_ready,
    metrics,
    stats,
    upload_file,
)
from vibewave.api.runpod_routes import RunPodController
from vibewave.api.settings import ApiSettings
from vibewave.api.sse import request_events
from vibewave.api.tracing import RouteSpanName, TraceContextMiddleware, telemetry_config
from vibewave.api.webhook_routes import webhook_deliveries
from vibewave.runtime.telemetry import records_spans

MAX_BODY_BYTES = 1024 * 1024  # 413 beyond: the largest real body (a workflow's inputs) is a few hundred KB

DESCRIPTION = (
    "Generate images (and, next, video) from prompts with ComfyUI workflows on a self-managed GPU fleet. "
    "Requests are queued, placed on pods, and their results served from `/api/files/{name}`."
)


def create_app(
    settings: ApiSettings | None = None,
    tracer_provider: TracerProvider | None = None,
    *,
    before_load: Callable[[], object] | None = None,
) -> Litestar:
    """Build the app; nothing connects until the app starts (its lifespan: the gateway's broker is
    started and stopped with it). `before_load` (tests) is awaited before the index loads."""
    settings = settings or ApiSettings.from_env()
    gateway = Gateway(settings, tracer_provider, before_load=before_load)

    @asynccontextmanager
    async def connect_gateway(app: Litestar) -> AsyncIterator[None]:
        app.state.gateway = gateway
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    # spans recorded: the OpenTelemetry middleware; else only the trace context (see `tracing`)
    recording = records_spans(tracer_provider)
    plugins = [OpenTelemetryPlugin(telemetry_config(tracer_provider))] if recording else []
    tracing = RouteSpanName if recording else TraceContextMiddleware
    middleware = [DefineMiddleware(tracing)]
    middleware.append(DefineMiddleware(ApiKeyMiddleware, store=lambda: gateway.keys, enabled=settings.auth))
    app = Litestar(
        route_handlers=[
            QwenController,
            WorkflowsController,
            RunPodController,
            KeysController,
            webhook_deliveries,
            generate_image,
            generate_image_async,
            generate_multiple_images,
            stats,
            download_file,
            upload_file,
            request_events,
            health,
            health_live,
            health_ready,
            metrics,
            swagger_ui,
            redoc,
            docs_assets(),
        ],
        lifespan=[connect_gateway],
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=OpenAPIConfig(
            title="Vibewave API",
            version="0.1.0",
            description=DESCRIPTION,
            path="/schema",
            render_plugins=[JsonRenderPlugin()],
        ),
        plugins=plugins,
        middleware=[JsonBodiesOnly, *middleware],  # first: a non-JSON body is refused before anything reads it
        request_class=JsonBodyRequest,  # bodies decoded strictly, hostile ones a 400 (see `body`)
        request_max_body_size=MAX_BODY_BYTES,
        debug=settings.common.debug,
        logging_config=None,  # the process's JSON logging (configured in __main__) stays in charge
    )
    refine(app.plugins.get(OpenAPIPlugin).provide_openapi_schema(), gateway.catalog)
    return app
