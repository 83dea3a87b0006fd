"""RunPod's HTTP proxy, locally: `/proxy/{podId}-{port}/...` stands for `https://{podId}-{port}.proxy.runpod.net/...`.

Like the real proxy (reference §4): only ports declared `/http` are reachable, and of those the one the
container's service listens on (8188, mapped to the container's VIBEWAVE_LISTEN_PORT); 502 with an HTML page
while nothing listens (pod booting, stopped, the service not up yet or crashed, an image that serves nothing);
524 when the service takes longer than the Cloudflare limit to answer; WebSockets pass through (ComfyUI's
`/ws`). Requests go on unchanged apart from hop-by-hop headers: `Authorization` and the query string (a
`?token=`) reach the pod as sent, and checking them is the pod's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Mapping

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from vibewave.runpod_emu.service import EMULATOR_KEY, Emulator
from vibewave.runpod_emu.state import parse_ports

log = logging.getLogger("vibewave.runpod_emu")

TARGET = re.compile(r"([a-z0-9]+)-(\d{1,5})")
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
}
WS_HANDSHAKE = {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-accept"}

BAD_GATEWAY_HTML = """<html>
<head><title>502 Bad Gateway</title></head>
<body>
<center><h1>502 Bad Gateway</h1></center>
<hr><center>cloudflare</center>
</body>
</html>
"""

TIMEOUT_HTML = """<!DOCTYPE html>
<html>
<head><title>{host} | 524: A timeout occurred</title></head>
<body>
<h1>A timeout occurred <span>Error code 524</span></h1>
<p>The origin web server timed out responding to this request.</p>
</body>
</html>
"""


def bad_gateway() -> web.Response:
    return web.Response(status=502, text=BAD_GATEWAY_HTML, content_type="text/html")


def gateway_timeout(host: str) -> web.Response:
    return web.Response(status=524, text=TIMEOUT_HTML.format(host=host), content_type="text/html")


def _forward_headers(headers: Mapping[str, str], host: str, websocket: bool) -> CIMultiDict[str]:
    """Drop hop-by-hop headers; the service sees the proxy hostname as Host and https as the scheme, as on RunPod
    (which also keeps ComfyUI's loopback Host/Origin check out of the way)."""
    out: CIMultiDict[str] = CIMultiDict()
    for key, value in headers.items():
        lower = key.lower()
        if lower in HOP_BY_HOP or (websocket and (lower in WS_HANDSHAKE or lower == "sec-websocket-protocol")):
            continue
        out.add(key, value)
    out["Host"] = host
    out["X-Forwarded-Proto"] = "https"
    return out


def upstream(emulator: Emulator, pod_id: str, port: int) -> tuple[int, bool] | None:
    """Local port of the service behind `{pod_id}-{port}` and whether the pod is set to hang, or None when
    RunPod's proxy would answer 502."""
    emulator.sync()
    pod = emulator.world.pods.get(pod_id)
    if pod is None or not pod.runtime_up or (port, "http") not in parse_ports(pod.ports):
        return None
    local = emulator.fleet.mapped_port(pod_id, port)
    return None if local is None else (local, pod.never_ready == "hang")


async def _hang(emulator: Emulator, local: int, host: str) -> web.Response:
    """never_ready "hang": the service accepts connections and never answers, so Cloudflare gives up (524);
    a service that does not listen is a 502 as usual."""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", local)
    except OSError:
        return bad_gateway()
    writer.close()
    await asyncio.sleep(emulator.config.proxy_timeout)
    return gateway_timeout(host)


async def handle(request: web.Request) -> web.StreamResponse:
    emulator = request.app[EMULATOR_KEY]
    match = TARGET.fullmatch(request.match_info["target"])
    if match is None:
        return web.Response(status=404, text="404 page not found")
    pod_id, port = match.group(1), int(match.group(2))
    target = upstream(emulator, pod_id, port)
    if target is None:
        return bad_gateway()
    local, hang = target
    host = f"{pod_id}-{port}.proxy.runpod.net"
    if hang:
        return await _hang(emulator, local, host)
    # The raw path and query after /proxy/{target}, still percent-encoded: forwarded byte for byte.
    rest = re.sub(r"^/proxy/[^/?]*", "", request.raw_path)
    url = URL(f"http://127.0.0.1:{local}{rest if rest.startswith('/') else '/' + rest}", encoded=True)
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return await _websocket(request, emulator, url, host)
    return await _http(request, emulator, url, host)


async def _http(request: web.Request, emulator: Emulator, url: URL, host: str) -> web.StreamResponse:
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=emulator.config.proxy_timeout)
    body = await request.read() if request.can_read_body else None
    try:
        upstream = await emulator.http.request(
            request.method,
            url,
            headers=_forward_headers(request.headers, host, websocket=False),
            data=body,
            allow_redirects=False,
            timeout=timeout,
        )
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
        if isinstance(exc, aiohttp.ServerTimeoutError):
            return gateway_timeout(host)
        return bad_gateway()
    except TimeoutError:
        return gateway_timeout(host)
    async with upstream:
        headers = CIMultiDict((k, v) for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP)
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
        await response.prepare(request)
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, ConnectionResetError):
            async for chunk in upstream.content.iter_chunked(65536):
                await response.write(chunk)
        await response.write_eof()
        return response


async def _websocket(request: web.Request, emulator: Emulator, url: URL, host: str) -> web.StreamResponse:
    """Connect upstream first (502 if nothing listens), then relay frames both ways until either side closes."""
    protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    try:
        upstream = await emulator.http.ws_connect(
            url.with_scheme("ws"),
            headers=_forward_headers(request.headers, host, websocket=True),
            protocols=protocols,
            max_msg_size=0,
            timeout=aiohttp.ClientWSTimeout(ws_close=5),
        )
    except (aiohttp.ClientError, TimeoutError):
        return bad_gateway()
    client = web.WebSocketResponse(protocols=protocols, max_msg_size=0)
    await client.prepare(request)

    async def pump(
        source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
        sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    ) -> None:
        async for msg in source:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await sink.send_str(msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await sink.send_bytes(msg.data)
            else:
                break

    tasks = [asyncio.ensure_future(pump(upstream, client)), asyncio.ensure_future(pump(client, upstream))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await upstream.close()
        await client.close()
    return client
