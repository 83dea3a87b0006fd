"""What answers in front of both APIs: Cloudflare's refusals, RFC 9457 problem bodies and the 429.

`/graphql` and `/v2/...` share them, so a client sees the same Cloudflare page and the same rate-limit answer
whichever API it calls (RunPod documents the 429 only for v2; `/graphql` uses the same shape here).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from vibewave.runpod_emu.faults import RATE_LIMIT_DETAIL
from vibewave.runpod_emu.ratelimit import Verdict
from vibewave.runpod_emu.service import Emulator

CLOUDFLARE_1010 = "error code: 1010"
BOT_USER_AGENTS = ("python-urllib", "python-requests", "curl/", "wget/", "go-http-client")
PROBLEM_JSON = "application/problem+json"
# `title` is the HTTP reason phrase, as Go's net/http words it (RunPod's recorded 422 says "Unprocessable Entity").
TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Request Entity Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
}


def cloudflare_refuses(emu: Emulator, request: web.Request) -> bool:
    """The `cloudflare_403` fault, or (with `--cloudflare-ua-check`) a bot-like User-Agent."""
    user_agent = request.headers.get("User-Agent", "")
    return emu.faults.fire("cloudflare_403") is not None or (
        emu.config.cloudflare_ua_check and (not user_agent or user_agent.lower().startswith(BOT_USER_AGENTS))
    )


def cloudflare_403() -> web.Response:
    return web.Response(status=403, text=CLOUDFLARE_1010)


def problem_body(status: int, detail: str, errors: list[str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"title": TITLES[status], "status": status, "detail": detail}
    if errors is not None:
        body["errors"] = errors
    return body


def problem(
    status: int, detail: str, errors: list[str] | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        problem_body(status, detail, errors), status=status, headers=headers, content_type=PROBLEM_JSON
    )


def too_many_requests(verdict: Verdict) -> web.Response:
    """429 with `Retry-After` in whole seconds and the spec's body, plus the RateLimit headers if a quota is set."""
    headers = {**verdict.headers, "Retry-After": str(verdict.retry_after or 0)}
    return problem(429, RATE_LIMIT_DETAIL, headers=headers)
