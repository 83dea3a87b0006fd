"""The token proxy: the pod's only public port, in front of a ComfyUI bound to 127.0.0.1.

ComfyUI has no authentication (its maintainers do not intend to add any), and RunPod's proxy URL is
public, so every request needs `Authorization: Bearer <token>` or `?token=<token>` (for clients that cannot
set headers on a WebSocket); the token is stripped before anything reaches ComfyUI. HTTP bodies stream
both ways; WebSocket upgrades (`/ws?clientId=...`) are bridged frame by frame. `Origin` is dropped, since
ComfyUI refuses a loopback Host with a foreign Origin (its CSRF check). `GET /vibewave/status` answers the
bootstrap's status document, so install and download progress are visible before ComfyUI is up.

Run by the bootstrap as `<ComfyUI's python> -m vibewave.pod.token_proxy` (aiohttp is a ComfyUI
requirement), configured by environment variables. No access log: a query string may hold the token.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import signal
import sys
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

PREFIX = "vibewave-proxy:"
STATUS_PATH = "/vibewave/status"
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
     "transfer-encoding", "upgrade"}
)  # fmt: skip
NOT_FORWARDED = HOP_BY_HOP | {"host", "origin", "authorization"}
NOT_FORWARDED_WS = NOT_FORWARDED | {
    "sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-accept", "content-length"
}  # fmt: skip
NOT_RETURNED = HOP_BY_HOP


def say(message: str) -> None:
    print(f"{PREFIX} {message}", flush=True)


@dataclass(frozen=True)
class ProxyConfig:
    token: str  # COMFY_PROXY_TOKEN
    host: str  # VIBEWAVE_LISTEN_HOST
    port: int  # VIBEWAVE_LISTEN_PORT
    upstream_port: int  # VIBEWAVE_COMFYUI_PORT
    status_file: Path | None  # VIBEWAVE_STATUS_FILE: the bootstrap's status document for this pod

    @classmethod
    def from_env(cls, env: Any = os.environ) -> ProxyConfig:
        token = env.get("COMFY_PROXY_TOKEN", "").strip()
        if not token:
            raise SystemExit(f"{PREFIX} COMFY_PROXY_TOKEN is not set: refusing to serve ComfyUI without a token")
        status = env.get("VIBEWAVE_STATUS_FILE")
        return cls(
            token=token,
            host=env.get("VIBEWAVE_LISTEN_HOST") or "0.0.0.0",
            port=int(env.get("VIBEWAVE_LISTEN_PORT") or 8188),
            upstream_port=int(env.get("VIBEWAVE_COMFYUI_PORT") or 18188),
            status_file=Path(status) if status else None,
        )


def _detail(status: int, detail: str, **headers: str) -> web.Response:
    return web.Response(
        status=status, text=json.dumps({"detail": detail}), content_type="application/json", headers=headers
    )


class TokenProxy:
    def __init__(self, config: ProxyConfig) -> None:
        self.config = config
        self.upstream = f"http://127.0.0.1:{config.upstream_port}"
        self._token = config.token.encode()
        self._session: aiohttp.ClientSession | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        app.cleanup_ctx.append(self._client)
        return app

    async def _client(self, app: web.Application) -> AsyncIterator[None]:
        self._session = aiohttp.ClientSession(
            auto_decompress=False,  # bytes pass through as ComfyUI encoded them, Content-Encoding and all
            cookie_jar=aiohttp.DummyCookieJar(),  # clients' cookies are theirs, not shared through the proxy
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
        )
        yield
        await self._session.close()

    def _matches(self, candidate: str) -> bool:
        return hmac.compare_digest(candidate.encode(), self._token)

    def authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "bearer" and self._matches(credentials.strip()):
            return True
        return any(self._matches(value) for value in request.query.getall("token", []))

    def status(self) -> dict[str, Any] | None:
        path = self.config.status_file
        if path is None:
            return None
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return document if isinstance(document, dict) else None

    def _not_up(self) -> web.Response:
        phase = (self.status() or {}).get("phase", "unknown")
        return _detail(502, f"ComfyUI is not up yet (phase {phase})")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if not self.authorized(request):
            return _detail(
                401,
                "missing or wrong token: send Authorization: Bearer <token> (or ?token=<token>)",
                **{"WWW-Authenticate": "Bearer"},
            )
        if request.path == STATUS_PATH:
            document = self.status()
            if document is None:
                return _detail(503, "no status document yet")
            return web.json_response(document)
        url = URL(self.upstream + without_token(request.raw_path), encoded=True)
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request, url)
        return await self._http(request, url)

    async def _http(self, request: web.Request, url: URL) -> web.StreamResponse:
        assert self._session is not None
        headers = _forwarded(request.headers, NOT_FORWARDED)
        try:
            upstream = await self._session.request(
                request.method,
                url,
                headers=headers,
                data=request.content if request.body_exists else None,
                allow_redirects=False,
            )
        except aiohttp.ClientConnectionError:
            return self._not_up()
        try:
            response = web.StreamResponse(
                status=upstream.status, reason=upstream.reason, headers=_forwarded(upstream.headers, NOT_RETURNED)
            )
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
        finally:
            upstream.release()

    async def _websocket(self, request: web.Request, url: URL) -> web.StreamResponse:
        assert self._session is not None
        try:
            upstream = await self._session.ws_connect(
                url, headers=_forwarded(request.headers, NOT_FORWARDED_WS), max_msg_size=0, autoping=True
            )
        except aiohttp.WSServerHandshakeError as e:
            return _detail(e.status or 502, f"ComfyUI refused the WebSocket: {e.message}")
        except aiohttp.ClientConnectionError:
            return self._not_up()
        # Pings keep an idle socket alive through RunPod's proxy (Cloudflare closes idle ones).
        client = web.WebSocketResponse(max_msg_size=0, autoping=True, heartbeat=30.0)
        await client.prepare(request)
        pumps = [
            asyncio.ensure_future(_pump(client, upstream)),
            asyncio.ensure_future(_pump(upstream, client)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            code = upstream.close_code if client.close_code is None else client.close_code
            await upstream.close(code=_close_code(client.close_code))
            await client.close(code=_close_code(code))
        return client


def _close_code(code: int | None) -> int:
    """Codes 1005/1006 mean "none given"/"dropped" and must not be sent; 1000 then."""
    return code if code is not None and 1000 <= code < 5000 and code not in (1005, 1006) else 1000


async def _pump(
    source: web.WebSocketResponse[bool] | aiohttp.ClientWebSocketResponse[bool],
    sink: web.WebSocketResponse[bool] | aiohttp.ClientWebSocketResponse[bool],
) -> None:
    async for message in source:
        if message.type == aiohttp.WSMsgType.TEXT:
            await sink.send_str(message.data)
        elif message.type == aiohttp.WSMsgType.BINARY:
            await sink.send_bytes(message.data)
        elif message.type == aiohttp.WSMsgType.ERROR:
            return


def _forwarded(headers: Any, dropped: frozenset[str] | set[str]) -> CIMultiDict[str]:
    """The headers minus `dropped` and whatever `Connection` names (hop-by-hop, per RFC 9110 §7.6.1)."""
    named = {h.strip().lower() for h in headers.get("Connection", "").split(",") if h.strip()}
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in dropped and k.lower() not in named)


def without_token(raw_path: str) -> str:
    """The raw path and query, minus every `token=` pair (the rest byte for byte as the client sent it)."""
    path, sep, query = raw_path.partition("?")
    if not sep:
        return raw_path
    kept = [pair for pair in query.split("&") if urllib.parse.unquote_plus(pair.split("=", 1)[0]) != "token"]
    return path + ("?" + "&".join(kept) if kept else "")


async def _watch_parent(parent: int) -> None:
    """The bootstrap is this process's parent; if it goes away, so does the proxy (no orphan on a port)."""
    while True:
        await asyncio.sleep(1.0)
        if os.getppid() != parent:
            say("the bootstrap is gone; stopping")
            os.kill(os.getpid(), signal.SIGTERM)
            return


async def _parent_watch(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.ensure_future(_watch_parent(os.getppid()))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def main() -> None:
    config = ProxyConfig.from_env()
    app = TokenProxy(config).app()
    app.cleanup_ctx.append(_parent_watch)
    say(
        f"listening on {config.host}:{config.port}, forwarding to ComfyUI on 127.0.0.1:{config.upstream_port} "
        f"(a token is required on every request); python {sys.version.split()[0]}, aiohttp {aiohttp.__version__}"
    )
    web.run_app(app, host=config.host, port=config.port, access_log=None, print=None, shutdown_timeout=5)


if __name__ == "__main__":
    main()
