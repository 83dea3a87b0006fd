"""`/api/webhooks/deliveries`: what was sent to the callers' webhooks, and what was given up on (see `webhooks`)."""

from __future__ import annotations

from typing import Annotated, Any

import nats.errors
from litestar import Request, get
from litestar.datastructures import State
from litestar.exceptions import ServiceUnavailableException
from litestar.params import QueryParameter

from vibewave.api.auth import principal_of, requires
from vibewave.api.gateway import REQUEST_ID
from vibewave.api.routes import gateway_of
from vibewave.contracts.models import DeliveryStatus, Scope, WebhookDelivery


@get("/api/webhooks/deliveries", operation_id="webhookDeliveries", tags=["Webhooks"], guards=[requires(Scope.READ)])
async def webhook_deliveries(
    state: State,
    request: Request[Any, Any, Any],
    status: Annotated[DeliveryStatus | None, QueryParameter(description="Only deliveries in this state")] = None,
    request_id: Annotated[
        str | None, QueryParameter(pattern=REQUEST_ID.pattern, description="Only this request's")
    ] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=1000, description="At most this many, newest try first")] = 100,
) -> list[WebhookDelivery]:
    """Webhook deliveries of the key's tenant (every tenant's for admin keys): pending, delivered or dead."""
    try:
        return await gateway_of(state).webhooks.deliveries(principal_of(request), status, request_id, limit)
    except (nats.errors.Error, OSError) as exc:
        raise ServiceUnavailableException(detail=f"the deliveries cannot be read now ({type(exc).__name__}); retry",
                                          headers={"Retry-After": "1"}) from exc  # fmt: skip
