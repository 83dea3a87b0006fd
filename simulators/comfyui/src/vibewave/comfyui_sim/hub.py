"""WebSocket clients and frame routing (PROTOCOL.md §3).

Each socket gets its own outbound queue and sender task, so frames keep their order per socket and a slow
client never stalls the worker. The sid registry reproduces ComfyUI's quirks on purpose: a second socket
with the same clientId replaces the first, and the first one's cleanup unregisters the second.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

log = logging.getLogger("vibewave.comfyui_sim")

PREVIEW_IMAGE = 1
TEXT = 3
PREVIEW_IMAGE_WITH_METADATA = 4


@dataclass
class Client:
    sid: str
    ws: web.WebSocketResponse
    outbox: asyncio.Queue[str | bytes | None] = field(default_factory=asyncio.Queue)
    flags: dict[str, Any] = field(default_factory=dict)

    async def pump(self) -> None:
        while True:
            frame = await self.outbox.get()
            if frame is None or self.ws.closed:
                return
            try:
                if isinstance(frame, bytes):
                    await self.ws.send_bytes(frame)
                else:
                    await self.ws.send_str(frame)
            except (ConnectionError, RuntimeError):
                return


class Hub:
    def __init__(self, features: dict[str, Any]) -> None:
        self.sockets: dict[str, Client] = {}
        self.features = features

    def send(self, event: str, data: dict[str, Any], sid: str | None = None) -> None:
        """Queue a JSON frame for one sid, or for everyone when sid is None."""
        text = json.dumps({"type": event, "data": data})
        for client in self._targets(sid):
            client.outbox.put_nowait(text)

    def send_preview(self, png: bytes, metadata: dict[str, Any], sid: str | None, with_metadata: bool) -> None:
        """A PNG preview: type 4 to sockets that negotiated preview metadata, type 1 to the others.

        Called twice per preview (metadata sockets before the `progress` frame, legacy ones after), as
        ComfyUI's progress handler and server hook do; a broadcast always uses type 1.
        """
        for client in self._targets(sid):
            modern = sid is not None and bool(client.flags.get("supports_preview_metadata"))
            if modern != with_metadata:
                continue
            if modern:
                meta = json.dumps(metadata).encode()
                client.outbox.put_nowait(struct.pack(">II", PREVIEW_IMAGE_WITH_METADATA, len(meta)) + meta + png)
            else:
                client.outbox.put_nowait(struct.pack(">II", PREVIEW_IMAGE, 2) + png)

    def send_text(self, node_id: str, text: str) -> None:
        """Binary TEXT frame; ComfyUI nodes send it with sid=None, i.e. to everyone."""
        node = node_id.encode()
        frame = struct.pack(">II", TEXT, len(node)) + node + text.encode()
        for client in self._targets(None):
            client.outbox.put_nowait(frame)

    def _targets(self, sid: str | None) -> list[Client]:
        if sid is None:
            return list(self.sockets.values())
        client = self.sockets.get(sid)
        return [client] if client is not None else []

    async def handle(
        self, request: web.Request, hello: Callable[[str], list[tuple[str, dict[str, Any]]]]
    ) -> web.WebSocketResponse:
        """Serve one socket until it closes; `hello(sid)` gives the first frames (status, reconnect executing)."""
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.query.get("clientId") or uuid.uuid4().hex
        client = Client(sid, ws)
        self.sockets[sid] = client
        pump = asyncio.create_task(client.pump())
        try:
            for event, data in hello(sid):
                client.outbox.put_nowait(json.dumps({"type": event, "data": data}))
            first_message = True
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    payload = json.loads(msg.data)
                except json.JSONDecodeError:
                    log.warning("Invalid JSON received from client %s: %s", sid, msg.data)
                    continue
                if first_message and isinstance(payload, dict) and payload.get("type") == "feature_flags":
                    data = payload.get("data", {})
                    client.flags = data if isinstance(data, dict) else {}
                    client.outbox.put_nowait(json.dumps({"type": "feature_flags", "data": self.features}))
                first_message = False
        finally:
            self.sockets.pop(sid, None)
            client.outbox.put_nowait(None)
            await pump
        return ws

    async def close_all(self) -> None:
        for client in list(self.sockets.values()):
            await client.ws.close()
