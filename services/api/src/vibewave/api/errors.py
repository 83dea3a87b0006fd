"""Every error leaves the api as JSON `{"detail": "..."}` (API document, "Error Handling")."""

from __future__ import annotations

import logging
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_500_INTERNAL_SERVER_ERROR,
    HTTP_503_SERVICE_UNAVAILABLE,
)
from litestar.types import ExceptionHandlersMap

from vibewave.api.gateway import IndexLoading, Unavailable
from vibewave.contracts.models import ErrorBody
from vibewave.runtime.broker import TRANSIENT

log = logging.getLogger("vibewave.api.errors")

INVALID_INPUT = "Invalid workflow input parameters"


def _json(status: int, detail: str, headers: dict[str, str] | None = None) -> Response[ErrorBody]:
    return Response(ErrorBody(detail=detail), status_code=status, media_type=MediaType.JSON, headers=headers)


def validation_detail(exc: ValidationException) -> str:
    """Litestar's body validation errors, said plainly: which field is wrong and why."""
    reasons: list[str] = []
    extra: Any = exc.extra
    for item in extra if isinstance(extra, list) else []:
        if not isinstance(item, dict):
            continue
        message, key = str(item.get("message", "")).strip(), str(item.get("key") or "")
        if key == "data":
            reasons.append("a JSON object body is required" if message == "'data'" else f"body: {message}")
        elif message:
            reasons.append(message if not key or f"`{key}`" in message else f"{key}: {message}")
    if not reasons and exc.detail and not str(exc.detail).startswith("Validation failed for"):
        reasons.append(str(exc.detail))
    text = "; ".join(reasons)
    return f"{INVALID_INPUT}: {text}" if text else INVALID_INPUT


def on_validation(_: Request[Any, Any, Any], exc: ValidationException) -> Response[ErrorBody]:
    return _json(HTTP_400_BAD_REQUEST, validation_detail(exc))


def on_http(_: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorBody]:
    """Litestar's and ours alike, with their detail (an unreadable body's is worded in `body`)."""
    return _json(exc.status_code, str(exc.detail), exc.headers)


def on_index_loading(_: Request[Any, Any, Any], exc: IndexLoading) -> Response[ErrorBody]:
    """A read before the index has loaded: 503, never a partial answer (a request not yet loaded is
    not "pending", counts are not the few loaded so far)."""
    return _json(HTTP_503_SERVICE_UNAVAILABLE, str(exc), {"Retry-After": "1"})


def on_unavailable(_: Request[Any, Any, Any], exc: Unavailable) -> Response[ErrorBody]:
    return _json(HTTP_503_SERVICE_UNAVAILABLE, str(exc))


def on_nats_unavailable(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    """NATS away, or a stream of a cluster electing its leader: a retry (with the same Idempotency-Key
    for a create, so that it is recorded once whether or not this one was) succeeds shortly."""
    log.warning("NATS unavailable on %s %s: %s", request.method, request.url.path, type(exc).__name__)
    detail = (
        f"The message bus is unavailable right now ({type(exc).__name__}); retry shortly (a create with the "
        "same Idempotency-Key is recorded once)"
    )
    return _json(HTTP_503_SERVICE_UNAVAILABLE, detail, {"Retry-After": "1"})


def on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _json(HTTP_500_INTERNAL_SERVER_ERROR, "Internal server error")


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    ValidationException: on_validation,
    HTTPException: on_http,
    IndexLoading: on_index_loading,
    Unavailable: on_unavailable,
    **{transient: on_nats_unavailable for transient in TRANSIENT},
    Exception: on_unexpected,
}
