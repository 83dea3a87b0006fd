"""One JSON access line per HTTP request: method, route template, status, duration and the caller's
key id — never the key, never the concrete path (it holds request ids and file names; the template says
which route it was, and the request id is in the line's own field when the handler logs one)."""

from __future__ import annotations

import logging
import time

from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPScope, Message, Receive, Scope, Send

from vibewave.api.auth import Principal

log = logging.getLogger("vibewave.api.access")


class AccessLog:
    """Pure ASGI, outermost: it sees every request, also those no route matched (route `-`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        http: HTTPScope = scope
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            user = scope.get("user")
            log.info(
                "%s %s %d",
                http["method"],
                scope.get("path_template") or "-",
                status,
                extra={
                    "method": http["method"],
                    "route": scope.get("path_template") or "-",
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    "key_id": user.key_id if isinstance(user, Principal) else None,
                },
            )
