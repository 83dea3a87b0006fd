"""The token proxy in front of a real upstream that shows what it received: auth, headers, bodies, WebSockets."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from tests.support.stack import free_port
from vibewave.pod.token_proxy import ProxyConfig, TokenProxy, without_token

pytestmark = pytest.mark.unit

TOKEN = "proxy-token-0123456789"
CLOSED = web.AppKey("closed", list[int | None])
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def echo(request: web.Request) -> web.StreamResponse:
    """What ComfyUI would have seen."""
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "path_qs": request.raw_path,
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "body_sha256": hashlib.sha256(body).hexdigest(),
        },
        headers={"X-Upstream": "yes", "Set-Cookie": "a=1"},
    )


async def chunks(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    for i in range(50):
        await response.write(f"chunk {i}\n".encode())
    await response.write_eof()
    return response


async def websocket(request: web.Request) -> web.StreamResponse:
    ws = web.WebSocketResponse(max_msg_size=0)
    await ws.prepare(request)
    await ws.send_str(json.dumps({"type": "status", "query": request.query_string}))
    async for message in ws:
        if message.type == aiohttp.WSMsgType.TEXT and message.data == "close-me":
            await ws.close(code=4001)
        elif message.type == aiohttp.WSMsgType.TEXT:
            await ws.send_str("echo " + message.data)
        elif message.type == aiohttp.WSMsgType.BINARY:
            await ws.send_bytes(message.data[::-1])
    request.app[CLOSED].append(ws.close_code)
    return ws


@dataclass
class Setup:
    proxy: str
    upstream: web.Application
    status_file: Path
    session: aiohttp.ClientSession


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    upstream = web.Application(client_max_size=100 * 1024 * 1024)  # ComfyUI's default --max-upload-size
    upstream[CLOSED] = []
    upstream.router.add_get("/ws", websocket)
    upstream.router.add_get("/chunks", chunks)
    upstream.router.add_route("*", "/{tail:.*}", echo)
    upstream_port = free_port()
    runner = web.AppRunner(upstream)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", upstream_port).start()
    status_file = tmp_path / "status.json"
    status_file.write_text(json.dumps({"phase": "downloading", "error": None}))
    config = ProxyConfig(token=TOKEN, host="127.0.0.1", port=0, upstream_port=upstream_port, status_file=status_file)
    server = TestServer(TokenProxy(config).app(), host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        yield Setup(str(server.make_url("")).rstrip("/"), upstream, status_file, session)
    await server.close()
    await runner.cleanup()


async def get_json(setup: Setup, path: str, **kwargs: Any) -> tuple[int, Any]:
    async with setup.session.get(setup.proxy + path, **kwargs) as response:
        return response.status, await response.json()


async def test_without_the_token_nothing_reaches_comfyui(setup: Setup) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": TOKEN},
        {"Authorization": f"Basic {TOKEN}"},
    ):
        async with setup.session.get(setup.proxy + "/prompt", headers=headers) as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"] == "Bearer"
            assert "token" in (await response.json())["detail"]
    assert (await get_json(setup, "/prompt?token=nope"))[0] == 401


async def test_the_token_and_browser_headers_stay_at_the_proxy(setup: Setup) -> None:
    headers = {
        **AUTH,
        "Origin": "https://app.example",
        "Connection": "keep-alive, X-Hop",
        "X-Hop": "dropped",
        "X-Kept": "kept",
        "Cookie": "session=1",
    }
    path = URL(f"{setup.proxy}/history?max_items=5&token={TOKEN}&x=%2Fa%20b", encoded=True)
    async with setup.session.get(path, headers=headers) as response:
        code, seen = response.status, await response.json()

    assert code == 200
    assert seen["path_qs"] == "/history?max_items=5&x=%2Fa%20b"  # the token is gone, the rest as sent
    assert "origin" not in seen["headers"] and "authorization" not in seen["headers"]
    assert "x-hop" not in seen["headers"]
    assert seen["headers"]["x-kept"] == "kept" and seen["headers"]["cookie"] == "session=1"
    assert seen["headers"]["host"].startswith("127.0.0.1:")


async def test_bodies_stream_both_ways(setup: Setup) -> None:
    body = os.urandom(5 * 1024 * 1024)
    async with setup.session.post(setup.proxy + "/upload/image", data=body, headers=AUTH) as response:
        seen = await response.json()
        assert response.headers["X-Upstream"] == "yes" and response.headers["Set-Cookie"] == "a=1"
    assert seen["method"] == "POST" and seen["body_sha256"] == hashlib.sha256(body).hexdigest()

    async with setup.session.get(setup.proxy + "/chunks", headers=AUTH) as response:
        assert response.status == 200
        assert (await response.text()).splitlines() == [f"chunk {i}" for i in range(50)]


async def test_the_status_route_answers_the_bootstraps_document(setup: Setup) -> None:
    assert await get_json(setup, "/vibewave/status", headers=AUTH) == (200, {"phase": "downloading", "error": None})
    assert (await get_json(setup, "/vibewave/status"))[0] == 401


async def test_comfyui_not_listening_answers_502_with_the_phase(setup: Setup, tmp_path: Path) -> None:
    config = ProxyConfig(
        token=TOKEN, host="127.0.0.1", port=0, upstream_port=free_port(), status_file=setup.status_file
    )
    server = TestServer(TokenProxy(config).app(), host="127.0.0.1")
    await server.start_server()
    try:
        async with setup.session.get(server.make_url("/system_stats"), headers=AUTH) as response:
            assert response.status == 502
            assert await response.json() == {"detail": "ComfyUI is not up yet (phase downloading)"}
    finally:
        await server.close()


async def test_websocket_frames_pass_both_ways_and_closes_travel(setup: Setup) -> None:
    async with setup.session.ws_connect(setup.proxy + f"/ws?clientId=c1&token={TOKEN}") as ws:
        hello = await ws.receive_json(timeout=5)
        assert hello == {"type": "status", "query": "clientId=c1"}
        await ws.send_str("hi")
        assert await ws.receive_str(timeout=5) == "echo hi"
        await ws.send_bytes(b"\x00\x01\x02" * 100_000)
        assert await ws.receive_bytes(timeout=5) == (b"\x00\x01\x02" * 100_000)[::-1]
        await ws.send_str("close-me")
        closing = await ws.receive(timeout=5)
        assert closing.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 4001

    async with setup.session.ws_connect(setup.proxy + "/ws?clientId=c2", headers=AUTH) as ws:
        await ws.receive_json(timeout=5)
        await ws.close(code=1000)
    await _eventually_closed(setup.upstream, 2)


async def _eventually_closed(upstream: web.Application, count: int) -> None:
    for _ in range(100):
        if len(upstream[CLOSED]) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the upstream saw {upstream[CLOSED]} closes, not {count}")


@pytest.mark.parametrize(
    ("raw", "forwarded"),
    [
        ("/ws", "/ws"),
        ("/ws?clientId=a", "/ws?clientId=a"),
        ("/ws?token=t", "/ws"),
        ("/ws?clientId=a&token=t", "/ws?clientId=a"),
        ("/view?token=t&filename=a%26b.png&token=u&type=output", "/view?filename=a%26b.png&type=output"),
        ("/x?tok%65n=t&tokens=1", "/x?tokens=1"),
    ],
)
def test_without_token_keeps_the_rest_of_the_query_as_sent(raw: str, forwarded: str) -> None:
    assert without_token(raw) == forwarded


def test_the_proxy_refuses_to_start_without_a_token() -> None:
    with pytest.raises(SystemExit, match="COMFY_PROXY_TOKEN is not set"):
        ProxyConfig.from_env({})
