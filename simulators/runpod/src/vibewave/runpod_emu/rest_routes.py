"""HTTP surface of REST v2: the `/v2/...` routes on the same origin as `/graphql`.

Per request, in the order RunPod's stack applies it: injected latency → Cloudflare (403 `error code: 1010`) →
body size (413) → Bearer key (401; `?api_key=` is not accepted on v2) → the call is counted and may be
rate-limited (429) → pod-scoped key (403) → load balancer (HTML 502) → the generic 500 → the operation. With
`after_action`, the 502 and 500 faults let the operation happen first. Every `/v2` answer carries an
`x-request-id`; authenticated ones carry the RateLimit headers when a quota is set; errors are problem+json,
including the router's own 404 (v1-style paths such as `/v2/networkvolumes`) and 405 with `Allow`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from vibewave.runpod_emu import edge, proxy
from vibewave.runpod_emu.faults import INTERNAL_ERROR_MESSAGE
from vibewave.runpod_emu.rest import POD_SCOPED_OPERATIONS, ROUTES, Call, Operation, Problem, RestApi, action_operation
from vibewave.runpod_emu.service import EMULATOR_KEY
from vibewave.runpod_emu.state import ApiError

log = logging.getLogger("vibewave.runpod_emu")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PREFIX = "/v2"
MAX_BODY_BYTES = 102400
NOT_FOUND = "resource not found"
METHOD_NOT_ALLOWED = "The requested method is not allowed for this path."
_NO_BODY = object()
_BAD_JSON = object()


def _bearer(request: web.Request, keys: list[str]) -> tuple[str | None, str]:
    """The API key, or None and the 401 detail. Only the header counts (reference-v2 §1.2)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None, "missing bearer token"
    if token.strip() not in keys:
        return None, "invalid bearer token"
    return token.strip(), ""


def _parse(raw: bytes) -> Any:
    if not raw:
        return _NO_BODY
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _BAD_JSON


def route_handler(operation_id: str, operation: Operation) -> Handler:
    """One aiohttp handler per route, wrapping the operation in the cross-cutting steps above."""

    async def handle(request: web.Request) -> web.StreamResponse:
        emu = request.app[EMULATOR_KEY]
        faults = emu.faults
        if faults.latency > 0:
            await asyncio.sleep(faults.latency)
        if edge.cloudflare_refuses(emu, request):
            return edge.cloudflare_403()
        raw = await request.read()
        if len(raw) > MAX_BODY_BYTES:
            return edge.problem(413, f"request body exceeds {MAX_BODY_BYTES} bytes")
        key, why = _bearer(request, [*emu.config.api_keys, *emu.config.pod_scoped_keys])
        if key is None:
            return edge.problem(401, why)
        body = _parse(raw)
        name = action_operation(body) if operation_id == "podAction" else f"rest:{operation_id}"
        emu.sync()
        verdict = emu.world.admit(key, [name])
        if not verdict.allowed:
            return edge.too_many_requests(verdict)
        headers = verdict.headers
        if key in emu.config.pod_scoped_keys and operation_id not in POD_SCOPED_OPERATIONS:
            return edge.problem(403, "access denied", headers=headers)
        if body is _BAD_JSON:
            return edge.problem(400, "request body is not valid JSON", headers=headers)
        bad_gateway = faults.fire("http_502", name)
        if bad_gateway is not None and not bad_gateway.after_action:
            return proxy.bad_gateway()
        internal = faults.fire("internal_error", name)
        if internal is not None and not internal.after_action:
            return edge.problem(500, INTERNAL_ERROR_MESSAGE, headers=headers)
        call = Call(request.match_info, request.query, None if body is _NO_BODY else body)
        try:
            reply = operation(RestApi(emu.world), call)
        except Problem as exc:
            return edge.problem(exc.status, exc.detail, exc.errors, headers=headers)
        except ApiError as exc:
            return edge.problem(exc.status, exc.message, headers=headers)
        finally:
            emu.sync()
        log.log(logging.DEBUG if request.method == "GET" else logging.INFO, "%s → HTTP %s", name, reply.status)
        if bad_gateway is not None:
            return proxy.bad_gateway()
        if internal is not None:
            return edge.problem(500, INTERNAL_ERROR_MESSAGE, headers=headers)
        if reply.body is None:
            return web.Response(status=reply.status, headers=headers)
        return web.json_response(reply.body, status=reply.status, headers=headers)

    return handle


@web.middleware
async def v2_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The router's 404/405 as problem bodies, and an `x-request-id` on every `/v2` answer."""
    if not request.path.startswith(PREFIX + "/") and request.path != PREFIX:
        return await handler(request)
    try:
        response = await handler(request)
    except web.HTTPMethodNotAllowed as exc:
        allow = ", ".join(sorted(exc.allowed_methods))
        response = edge.problem(405, METHOD_NOT_ALLOWED, headers={"Allow": allow})
    except web.HTTPNotFound:
        response = edge.problem(404, NOT_FOUND)
    response.headers["x-request-id"] = str(uuid.uuid4())
    return response


def add_routes(app: web.Application) -> None:
    for method, path, operation_id, operation in ROUTES:
        app.router.add_route(method, path, route_handler(operation_id, operation))
    app.middlewares.append(v2_errors)
