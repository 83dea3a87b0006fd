"""A client of one ComfyUI server (HTTP + WebSocket), as `reference/comfyui/PROTOCOL.md` describes it.

The socket is opened with our client id before the prompt is posted, so no frame is missed; frames of
other prompts are ignored; the end of a run is `execution_success` / `execution_error` /
`execution_interrupted`, and the outputs are read from `/history/{prompt_id}`, which stays the
authority if the socket drops. A prompt id derived from the request and attempt makes a redelivered
assignment find its earlier prompt instead of running it twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import aiohttp

from vibewave.contracts.events import FailureKind

log = logging.getLogger("vibewave.executor.comfyui")

OUTPUT_KEYS = ("images", "gifs", "video", "videos", "audio", "animated_images")


class ComfyUIError(Exception):
    """A run did not produce outputs; `kind` tells the scheduler whether another pod could help."""

    kind = FailureKind.POD_FAULT


class PodFault(ComfyUIError):
    kind = FailureKind.POD_FAULT


class WorkflowError(ComfyUIError):
    kind = FailureKind.WORKFLOW


class ExecutionTimeout(ComfyUIError):
    kind = FailureKind.TIMEOUT


@dataclass(frozen=True)
class OutputRef:
    """One file a node produced, as `/history` lists it."""

    node_id: str
    filename: str
    subfolder: str
    type: str


@dataclass(frozen=True)
class Progress:
    node: str | None
    value: int
    max: int


ProgressCallback = Callable[[Progress], Awaitable[None]]
StartedCallback = Callable[[], Awaitable[None]]


class ComfyUIClient:
    def __init__(self, base_url: str, session: aiohttp.ClientSession, *, connect_timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=60)

    async def run(
        self,
        graph: dict[str, Any],
        prompt_id: str,
        *,
        on_started: StartedCallback,
        on_progress: ProgressCallback,
        timeout: float,
    ) -> list[OutputRef]:
        """Run `graph` as `prompt_id` to its end and return its outputs (raises ComfyUIError)."""
        try:
            async with asyncio.timeout(timeout):
                return await self._run(graph, prompt_id, on_started, on_progress)
        except TimeoutError:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                await self.interrupt(prompt_id)
            raise ExecutionTimeout(f"execution timed out after {timeout:.0f}s (prompt interrupted)") from None
        except (aiohttp.ClientConnectionError, aiohttp.ServerTimeoutError, ConnectionError) as exc:
            raise PodFault(f"ComfyUI unreachable at {self.base_url}: {exc}") from exc

    async def _run(
        self, graph: dict[str, Any], prompt_id: str, on_started: StartedCallback, on_progress: ProgressCallback
    ) -> list[OutputRef]:
        client_id = uuid4().hex
        async with self.session.ws_connect(
            f"{self.base_url}/ws", params={"clientId": client_id}, heartbeat=30, timeout=aiohttp.ClientWSTimeout()
        ) as ws:
            entry = await self.history(prompt_id)
            if entry:
                log.info("prompt %s already finished on this pod; collecting it", prompt_id)
                return self._outputs_of(entry)
            if await self._queued(prompt_id):
                log.info("prompt %s already queued on this pod; following it", prompt_id)
                await on_started()
            else:
                await self.submit(graph, client_id, prompt_id)
                await on_started()
                await self._follow(ws, prompt_id, on_progress)
        return self._outputs_of(await self._await_history(prompt_id))

    async def submit(self, graph: dict[str, Any], client_id: str, prompt_id: str) -> None:
        body = {"prompt": graph, "client_id": client_id, "prompt_id": prompt_id}
        async with self.session.post(f"{self.base_url}/prompt", json=body, timeout=self.timeout) as response:
            if response.status == 400:
                raise WorkflowError(describe_rejection(await response.json(content_type=None)))
            if response.status != 200:
                text = (await response.text())[:200]
                raise PodFault(f"ComfyUI answered {response.status} to POST /prompt: {text}")

    async def _follow(self, ws: aiohttp.ClientWebSocketResponse, prompt_id: str, on_progress: ProgressCallback) -> None:
        """Read frames until this prompt ends; return early (history decides) if the socket drops."""
        async for frame in ws:
            if frame.type != aiohttp.WSMsgType.TEXT:
                continue
            message = frame.json()
            kind, data = message.get("type"), message.get("data") or {}
            if data.get("prompt_id") != prompt_id:
                continue
            if kind == "progress":
                await on_progress(Progress(data.get("node"), int(data.get("value", 0)), int(data.get("max", 0))))
            elif kind in ("execution_success", "execution_error", "execution_interrupted"):
                return
        log.warning("ComfyUI socket closed before prompt %s ended; reading history", prompt_id)

    async def _await_history(self, prompt_id: str) -> dict[str, Any]:
        """The history entry, polled until it exists. A prompt in neither the queue nor the history was
        lost (ComfyUI restarted): that is a pod fault. The queue is read first because a prompt leaves it
        only after its history entry is written."""
        delay = 0.05
        while True:
            queued = await self._queued(prompt_id)
            entry = await self.history(prompt_id)
            if entry:
                return entry
            if not queued:
                raise PodFault(f"prompt {prompt_id} vanished from ComfyUI (restarted mid-run?)")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def history(self, prompt_id: str) -> dict[str, Any]:
        async with self.session.get(f"{self.base_url}/history/{prompt_id}", timeout=self.timeout) as response:
            if response.status != 200:
                raise PodFault(f"ComfyUI answered {response.status} to GET /history")
            body: dict[str, Any] = await response.json(content_type=None)
            entry: dict[str, Any] = body.get(prompt_id) or {}
            return entry

    async def _queued(self, prompt_id: str) -> bool:
        async with self.session.get(f"{self.base_url}/queue", timeout=self.timeout) as response:
            body = await response.json(content_type=None)
        items = [*body.get("queue_running", []), *body.get("queue_pending", [])]
        return any(len(item) > 1 and item[1] == prompt_id for item in items)

    async def interrupt(self, prompt_id: str) -> None:
        """Interrupt this prompt only (never a global interrupt)."""
        async with self.session.post(
            f"{self.base_url}/interrupt", json={"prompt_id": prompt_id}, timeout=self.timeout
        ) as response:
            await response.read()

    async def download(self, ref: OutputRef) -> tuple[bytes, str]:
        params = {"filename": ref.filename, "subfolder": ref.subfolder, "type": ref.type}
        async with self.session.get(f"{self.base_url}/view", params=params, timeout=self.timeout) as response:
            if response.status != 200:
                raise PodFault(f"ComfyUI answered {response.status} for output {ref.filename}")
            return await response.read(), response.content_type

    def _outputs_of(self, entry: dict[str, Any]) -> list[OutputRef]:
        status = entry.get("status") or {}
        messages = status.get("messages") or []
        last_kind, last_data = (messages[-1][0], messages[-1][1]) if messages else ("", {})
        if last_kind == "execution_error":
            raise WorkflowError(describe_execution_error(last_data))
        if last_kind == "execution_interrupted":
            raise PodFault(f"prompt interrupted on the pod at node {last_data.get('node_id')}")
        if status.get("status_str") not in (None, "success"):
            raise PodFault(f"ComfyUI reported status {status.get('status_str')!r}")
        refs: list[OutputRef] = []
        for node_id, ui in (entry.get("outputs") or {}).items():
            for key in OUTPUT_KEYS:
                for item in ui.get(key) or []:
                    if isinstance(item, dict) and "filename" in item and item.get("type", "output") == "output":
                        refs.append(
                            OutputRef(node_id, item["filename"], item.get("subfolder", ""), item.get("type", "output"))
                        )
        return refs


def describe_rejection(body: dict[str, Any]) -> str:
    """A 400 from `POST /prompt` in one line: the graph error, or each node's first reasons."""
    error = body.get("error") or {}
    parts: list[str] = []
    for node_id, node in (body.get("node_errors") or {}).items():
        for item in node.get("errors", []):
            detail = item.get("details") or item.get("message")
            parts.append(f"node {node_id} ({node.get('class_type')}): {item.get('message')}: {detail}")
    message = error.get("message", "workflow rejected") if isinstance(error, dict) else str(error)
    return f"ComfyUI rejected the workflow: {message}" + (f" [{'; '.join(parts)}]" if parts else "")


def describe_execution_error(data: dict[str, Any]) -> str:
    exception_type = str(data.get("exception_type", ""))
    message = str(data.get("exception_message", "")).strip().splitlines()
    first = message[0] if message else ""
    oom = "OutOfMemory" in exception_type or "out of memory" in first.lower()
    prefix = "out of memory" if oom else "execution error"
    return f"{prefix} in node {data.get('node_id')} ({data.get('node_type')}): {exception_type}: {first}"
