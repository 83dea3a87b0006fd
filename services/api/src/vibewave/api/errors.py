"""Every error leaves the api as JSON `{"detail": "..."}` (API document, "Error Handling")."""

from __future__ import annotations

import logging
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_400_BAD_REQUEST, HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import ExceptionHandlersMap

from vibewave.contracts.models import ErrorBody

log = logging.getLogger("vibewave.api.errors")

INVALID_INPUT = "Invalid workflow input parameters"


def _json(status: int, detail: str, headers: dict[str, str] | None = None) -> Response[ErrorBody]:
    return Response(ErrorBody(detail=detail), status_code=status, media_type=MediaType.JSON, headers=headers)


def validation_detail(exc: ValidationException) -> str:
    """Litestar's decode errors, said plainly: bad JSON, or which field is wrong and why."""
    reasons: list[str] = []
    extra: Any = exc.extra
    for item in extra if isinstance(extra, list) else []:
        if isinstance(item, dict):
            message = str(item.get("message", "")).strip()
            key = item.get("key")
            if message and key and f"`{key}`" not in message and key not in message:
                message = f"{key}: {message}"
            if message:
                reasons.append(message)
    if not reasons and exc.detail:
        reasons.append(str(exc.detail))
    text = "; ".join(reasons)
    if "JSON" in text or "malformed" in text.lower() or "decode" in text.lower():
        return f"Invalid JSON body: {text}"
    return f"{INVALID_INPUT}: {text}" if text else INVALID_INPUT


def on_validation(_: Request[Any, Any, Any], exc: ValidationException) -> Response[ErrorBody]:
    return _json(HTTP_400_BAD_REQUEST, validation_detail(exc))


def on_http(_: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorBody]:
    return _json(exc.status_code, str(exc.detail), exc.headers)


def on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _json(HTTP_500_INTERNAL_SERVER_ERROR, "Internal server error")


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    ValidationException: on_validation,
    HTTPException: on_http,
    Exception: on_unexpected,
}
