"""A client of one ComfyUI server (HTTP + WebSocket), as `reference/comfyui/PROTOCOL.md` describes it.

The socket is opened with our client id before the prompt is posted, so no frame is missed; frames of
other prompts are ignored; a run ends at `execution_success` / `execution_error` /
`execution_interrupted` (or the legacy `executing` with node null), and its outputs are read from
`/history/{prompt_id}`, which stays the authority whatever happens to the socket. A dropped socket is
reopened with the same client id (the server then resumes sending our frames); a server that stays
silent is checked through `/queue` and `/history`, and a prompt found in neither was lost with a
ComfyUI restart. A prompt id derived from the request and attempt makes a redelivered assignment find
its earlier prompt instead of running it twice.

Traces: each HTTP call is a CLIENT span `comfyui {METHOD} {path template}` (`comfyui GET /history/{prompt_id}`)
with the HTTP client attributes — explicit spans rather than the aiohttp instrumentation, because each
call site knows its path template (the instrumentation would have to guess it back from the URL) and the
pod token, sent as a header, then never goes near a span; `url.full` carries no query string. A run is a
`comfyui prompt` span, and from the WebSocket's frames each executed node a child `comfyui node {class_type}`
span (`NodeSpans`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

import aiohttp
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from vibewave.contracts.events import FailureKind
from vibewave.runtime.telemetry import client_span, responded

log = logging.getLogger("vibewave.executor.comfyui")

TERMINAL_FRAMES = ("execution_success", "execution_error", "execution_interrupted")
SILENCE_CHECK_S = 5.0
RECONNECTS = 3
MAX_PROGRESS_EVENTS = 100  # `progress` events kept on one node span (a 1000-step sampler would make 1000)

_tracer = trace.get_tracer("vibewave.executor.comfyui")


class ComfyUIError(Exception):
    """A run did not produce outputs; `kind` tells the scheduler whether another pod could help."""

    kind = FailureKind.POD_FAULT


class PodFault(ComfyUIError):
    kind = FailureKind.POD_FAULT


class WorkflowError(ComfyUIError):
    kind = FailureKind.WORKFLOW


class ExecutionTimeout(ComfyUIError):
    kind = FailureKind.TIMEOUT


class Cancelled(ComfyUIError):
    kind = FailureKind.CANCELLED


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
    percent: float
    final: bool = False


@dataclass
class ProgressTracker:
    """The whole graph's progress: finished nodes (run or cached) plus the running node's step fraction."""

    total: int
    done: set[str] = field(default_factory=set)
    node: str | None = None
    value: int = 0
    max: int = 0

    def cached(self, nodes: list[str]) -> None:
        self.done.update(nodes)

    def executing(self, node: str | None) -> None:
        if self.node is not None:
            self.done.add(self.node)
        self.node, self.value, self.max = node, 0, 0

    def step(self, node: str | None, value: int, maximum: int) -> None:
        self.node, self.value, self.max = node, value, maximum

    def snapshot(self, final: bool = False) -> Progress:
        fraction = self.value / self.max if self.max else 0.0
        percent = 100.0 if final else min(99.9, 100.0 * (len(self.done) + fraction) / max(self.total, 1))
        return Progress(self.node, self.value, self.max, round(percent, 1), final)


ProgressCallback = Callable[[Progress], Awaitable[None]]
StartedCallback = Callable[[], Awaitable[None]]


class _CallbackFailed(Exception):
    """A caller's callback raised: its error is the caller's (a NATS publish timing out is no ComfyUI
    timeout), so it is carried past the client's own error handling and re-raised as it was."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


def _isolated(callback: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    async def call(*args: Any) -> None:
        try:
            await callback(*args)
        except Exception as exc:
            raise _CallbackFailed(exc) from exc

    return call


class NodeSpans:
    """One `comfyui node {class_type}` span per node ComfyUI executes, children of the run's `comfyui prompt`
    span, built from the WebSocket's frames: `executing` opens a node's span (and ends the one before),
    `progress` adds an event to it (at most MAX_PROGRESS_EVENTS), `execution_error` marks it ERROR, the end
    of the run ends it. Cached nodes run nothing: they are listed on the prompt span, not spanned. Frames
    of a reconnected socket may repeat or miss a node; what was seen is what is spanned."""

    def __init__(self, tracer: trace.Tracer, prompt: Span, graph: dict[str, Any], prompt_id: str) -> None:
        self.tracer = tracer
        self.prompt = prompt
        self.parent = trace.set_span_in_context(prompt)
        self.graph = graph
        self.prompt_id = prompt_id
        self.recording = prompt.is_recording()
        self.node: str | None = None
        self.span: Span | None = None
        self.events = 0
        self.executed: list[str] = []
        self.cached: list[str] = []

    def frame(self, kind: object, data: dict[str, Any]) -> None:
        if not self.recording:
            return
        if kind == "executing":
            node = data.get("node")
            self._end()
            if node is not None:
                self._begin(str(node))
        elif kind == "progress":
            if self.span is not None and self.events < MAX_PROGRESS_EVENTS:
                self.events += 1
                value, maximum = data.get("value", 0), data.get("max", 0)
                self.span.add_event("progress", {"value": int(value), "max": int(maximum)})
        elif kind == "execution_cached":
            self.cached = [str(n) for n in data.get("nodes") or []]
            self.prompt.set_attribute("comfyui.cached_nodes", self.cached)
            self.prompt.set_attribute("comfyui.cached_count", len(self.cached))
        elif kind == "execution_start":
            self.prompt.add_event("execution_start")
        elif kind == "execution_error":
            node = str(data.get("node_id", self.node))
            if node != self.node:
                self._end()
                self._begin(node)
            error = str(data.get("exception_type") or "execution_error")
            if self.span is not None:
                self.span.set_attribute("error.type", error)
                message = str(data.get("exception_message") or "").strip().splitlines()
                self.span.set_status(Status(StatusCode.ERROR, f"{error}: {message[0] if message else ''}"[:200]))
            self._end()
        elif kind == "execution_interrupted":
            if self.span is not None:
                self.span.set_attribute("error.type", "interrupted")
                self.span.set_status(Status(StatusCode.ERROR, "interrupted"))
            self._end()
        elif kind == "execution_success":
            self._end()

    def _begin(self, node: str) -> None:
        spec = self.graph.get(node)
        class_type = str(spec.get("class_type")) if isinstance(spec, dict) and spec.get("class_type") else "unknown"
        self.node, self.events = node, 0
        self.executed.append(node)
        self.span = self.tracer.start_span(
            f"comfyui node {class_type}",
            context=self.parent,
            attributes={
                "comfyui.node.id": node,
                "comfyui.node.class_type": class_type,
                "comfyui.prompt_id": self.prompt_id,
            },
        )

    def _end(self) -> None:
        if self.span is not None:
            self.span.end()
        self.node, self.span = None, None

    def close(self) -> None:
        """At the run's end, whatever came last: a node still open ends here."""
        if self.recording:
            self._end()
            self.prompt.set_attribute("comfyui.executed_count", len(self.executed))


class ComfyUIClient:
    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        *,
        connect_timeout: float = 10.0,
        token: str | None = None,
        tracer: trace.Tracer | None = None,
    ) -> None:
        """`token`: the pod's ComfyUI token, presented on every call and on the WebSocket upgrade."""
        self.tracer = tracer or _tracer
        self.base_url = base_url.rstrip("/")
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=60)
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def __repr__(self) -> str:
        return f"ComfyUIClient({self.base_url!r})"

    async def run(
        self,
        graph: dict[str, Any],
        prompt_id: str,
        *,
        on_started: StartedCallback,
        on_progress: ProgressCallback,
        timeout: float,
        cancel: asyncio.Event | None = None,
    ) -> list[OutputRef]:
        """Run `graph` as `prompt_id` to its end and return its outputs (raises ComfyUIError).

        Setting `cancel` stops the prompt on the server: deleted from the queue if it waits there,
        interrupted (this prompt only) if it runs; the run then raises Cancelled.
        """
        cancel = cancel or asyncio.Event()
        if cancel.is_set():
            raise Cancelled("cancelled before it started")
        attributes: dict[str, str | int] = {"comfyui.prompt_id": prompt_id, "comfyui.node_count": len(graph)}
        with self.tracer.start_as_current_span(
            "comfyui prompt", attributes=attributes, record_exception=False, set_status_on_exception=False
        ) as span:
            nodes = NodeSpans(self.tracer, span, graph, prompt_id)
            try:
                return await self._guarded(graph, prompt_id, on_started, on_progress, timeout, cancel, nodes)
            except Exception as exc:
                if span.is_recording():
                    span.set_attribute("error.type", type(exc).__qualname__)
                    span.set_status(Status(StatusCode.ERROR, str(exc)[:200]))
                raise
            finally:
                nodes.close()

    async def _guarded(
        self,
        graph: dict[str, Any],
        prompt_id: str,
        on_started: StartedCallback,
        on_progress: ProgressCallback,
        timeout: float,
        cancel: asyncio.Event,
        nodes: NodeSpans,
    ) -> list[OutputRef]:
        """`_run` within its timeout, with every failure turned into the ComfyUIError it means."""
        try:
            async with asyncio.timeout(timeout) as scope:
                return await self._run(graph, prompt_id, _isolated(on_started), _isolated(on_progress), cancel, nodes)
        except _CallbackFailed as failed:  # the caller's own error (e.g. NATS), not ComfyUI's
            raise failed.error from None
        except (aiohttp.ClientError, ConnectionError) as exc:  # refused, reset, a 502 page, a silent socket
            raise PodFault(f"ComfyUI unreachable at {self.base_url}: {type(exc).__name__}: {exc}") from exc
        except ValueError as exc:  # an answer that is not ComfyUI's JSON (a proxy's HTML error page)
            raise PodFault(f"ComfyUI at {self.base_url} answered something that is not its JSON: {exc}") from exc
        except (KeyError, TypeError, AttributeError, IndexError) as exc:  # JSON, but not shaped as ComfyUI's
            raise PodFault(f"ComfyUI at {self.base_url} answered unexpectedly: {type(exc).__name__}: {exc}") from exc
        except TimeoutError:
            if not scope.expired():
                raise PodFault(f"ComfyUI at {self.base_url} stopped answering") from None
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError, ComfyUIError):
                await self.stop(prompt_id)
            raise ExecutionTimeout(f"execution timed out after {timeout:.0f}s (prompt interrupted)") from None

    async def _run(
        self,
        graph: dict[str, Any],
        prompt_id: str,
        on_started: StartedCallback,
        on_progress: ProgressCallback,
        cancel: asyncio.Event,
        nodes: NodeSpans | None = None,
    ) -> list[OutputRef]:
        client_id = uuid4().hex
        tracker = ProgressTracker(total=len(graph))
        ws, entry, queued = await self._open(client_id, prompt_id)
        try:
            if entry:
                log.info("prompt %s already finished on this pod; collecting it", prompt_id)
                return self._outputs_of(entry, cancel)
            if queued:
                log.info("prompt %s already queued on this pod; following it", prompt_id)
            else:
                await self.submit(graph, client_id, prompt_id)
            await on_started()
            follow = asyncio.create_task(self._follow(ws, client_id, prompt_id, tracker, on_progress, nodes))
            cancelled = asyncio.create_task(cancel.wait())
            try:
                await asyncio.wait({follow, cancelled}, return_when=asyncio.FIRST_COMPLETED)
                if cancel.is_set() and not follow.done() and await self.stop(prompt_id) == "deleted":
                    raise Cancelled("cancelled while queued in ComfyUI (deleted from its queue)")
                try:
                    ws = await follow
                except PodFault:
                    if cancel.is_set():
                        raise Cancelled("cancelled (the prompt is gone from ComfyUI)") from None
                    raise
            finally:
                for task in (follow, cancelled):
                    task.cancel()
                await asyncio.gather(follow, cancelled, return_exceptions=True)
        finally:
            await ws.close()
        refs = self._outputs_of(await self._await_history(prompt_id, cancel), cancel)
        await on_progress(tracker.snapshot(final=True))
        return refs

    async def _open(
        self, client_id: str, prompt_id: str
    ) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, Any], bool]:
        """The socket (open before the prompt is sent, so no frame of it is missed), and whether this
        prompt id already ran or waits here (a redelivered attempt). The three calls go out together:
        each is a round trip to the pod, on the path of every request."""
        connecting = asyncio.ensure_future(self._connect(client_id))
        try:
            entry, queued = await asyncio.gather(self.history(prompt_id), self._queued(prompt_id))
        except BaseException:
            connecting.cancel()
            with contextlib.suppress(BaseException):
                await (await connecting).close()
            raise
        return await connecting, entry, queued

    @contextlib.asynccontextmanager
    async def _call(
        self, method: str, template: str, path: str, **kwargs: Any
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """One HTTP call to the server, as a CLIENT span `comfyui {method} {template}` (see the module docstring)."""
        url = f"{self.base_url}{path}"
        with client_span(self.tracer, f"comfyui {method} {template}", method, url) as span:
            async with self.session.request(
                method, url, timeout=self.timeout, headers=self.headers, **kwargs
            ) as response:
                responded(span, response.status)
                yield response

    async def _connect(self, client_id: str) -> aiohttp.ClientWebSocketResponse:
        url = f"{self.base_url}/ws"
        with client_span(self.tracer, "comfyui GET /ws", "GET", url) as span:
            ws = await self.session.ws_connect(
                url,
                params={"clientId": client_id},
                heartbeat=30,
                timeout=aiohttp.ClientWSTimeout(),
                headers=self.headers,
            )
            responded(span, 101)
            return ws

    async def submit(self, graph: dict[str, Any], client_id: str, prompt_id: str) -> None:
        body = {"prompt": graph, "client_id": client_id, "prompt_id": prompt_id}
        async with self._call("POST", "/prompt", "/prompt", json=body) as response:
            if response.status == 400:
                try:
                    rejection = await response.json(content_type=None)
                except ValueError:
                    rejection = None
                if isinstance(rejection, dict):
                    raise WorkflowError(describe_rejection(rejection))
                raise PodFault(f"ComfyUI answered 400 to POST /prompt without its error: {str(rejection)[:200]}")
            if response.status != 200:
                text = (await response.text())[:200]
                raise PodFault(f"ComfyUI answered {response.status} to POST /prompt: {text}")

    async def _follow(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        client_id: str,
        prompt_id: str,
        tracker: ProgressTracker,
        on_progress: ProgressCallback,
        nodes: NodeSpans | None = None,
    ) -> aiohttp.ClientWebSocketResponse:
        """Read frames until this prompt ends; reconnect when the socket drops; check the server when it
        stays silent. Returns the socket in use at the end (the caller closes it)."""
        reconnects = 0
        while True:
            try:
                frame = await ws.receive(timeout=SILENCE_CHECK_S)
            except TimeoutError:
                if await self._finished(prompt_id):
                    return ws
                continue
            if frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                if reconnects >= RECONNECTS:
                    log.warning("ComfyUI socket lost for prompt %s; reading history", prompt_id)
                    return ws
                reconnects += 1
                log.warning("ComfyUI socket dropped during prompt %s; reconnecting", prompt_id)
                await ws.close()
                await asyncio.sleep(0.2 * reconnects)
                try:
                    ws = await self._connect(client_id)
                except aiohttp.ClientError:
                    continue
                if await self._finished(prompt_id):
                    return ws
                continue
            if frame.type != aiohttp.WSMsgType.TEXT:
                continue
            try:
                message = frame.json()
            except ValueError:
                continue  # not a frame of ComfyUI's: the history stays the authority
            if not isinstance(message, dict) or not isinstance(data := message.get("data") or {}, dict):
                continue
            kind = message.get("type")
            if data.get("prompt_id") != prompt_id:
                continue
            if nodes is not None:
                nodes.frame(kind, data)
            if kind == "execution_cached":
                tracker.cached([str(n) for n in data.get("nodes") or []])
            elif kind == "executing":
                if data.get("node") is None:
                    return ws
                tracker.executing(str(data["node"]))
                await on_progress(tracker.snapshot())
            elif kind == "progress":
                tracker.step(data.get("node"), int(data.get("value", 0)), int(data.get("max", 0)))
                await on_progress(tracker.snapshot())
            elif kind in TERMINAL_FRAMES:
                return ws

    async def _finished(self, prompt_id: str) -> bool:
        """Whether the prompt has ended (history written); raises if ComfyUI lost it."""
        queued = await self._queued(prompt_id)
        if await self.history(prompt_id):
            return True
        if not queued:
            raise PodFault(f"prompt {prompt_id} vanished from ComfyUI (restarted mid-run?)")
        return False

    async def _await_history(self, prompt_id: str, cancel: asyncio.Event) -> dict[str, Any]:
        """The history entry, polled until it exists. A prompt in neither the queue nor the history was
        lost (ComfyUI restarted) — or deleted from the queue by our own cancel. The history is read
        first (usually it is there: one round trip); when it is not, the queue is read before the
        history again, because a prompt leaves the queue only after its history entry is written."""
        delay = 0.05
        while True:
            try:
                if entry := await self.history(prompt_id):  # the common case: one round trip
                    return entry
                if await self._finished(prompt_id):
                    return await self.history(prompt_id)
            except PodFault:
                if cancel.is_set():
                    raise Cancelled("cancelled while queued in ComfyUI (deleted from its queue)") from None
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def history(self, prompt_id: str) -> dict[str, Any]:
        body = await self._get_json(f"/history/{prompt_id}", "/history/{prompt_id}")
        entry = body.get(prompt_id) or {}
        if not isinstance(entry, dict):
            raise PodFault(f"ComfyUI's history of {prompt_id} is not an object: {str(entry)[:200]}")
        return entry

    async def _queue(self) -> tuple[list[str], list[str]]:
        body = await self._get_json("/queue", "/queue")

        def ids(key: str) -> list[str]:
            items = body.get(key) or []
            if not isinstance(items, list):
                raise PodFault(f"ComfyUI's queue has a {key} that is not a list: {str(items)[:200]}")
            return [item[1] for item in items if isinstance(item, list) and len(item) > 1]

        return ids("queue_running"), ids("queue_pending")

    async def _get_json(self, path: str, template: str) -> dict[str, Any]:
        """A GET answered 200 with a JSON object, or a PodFault saying what came instead (a proxy's 502
        page, HTML, a body that is not JSON, an unexpected status). `template`: the path's, for its span."""
        async with self._call("GET", template, path) as response:
            text = await response.text(errors="replace")
            if response.status != 200:
                raise PodFault(f"ComfyUI answered {response.status} to GET {path}: {text[:200]}")
        try:
            body = json.loads(text)
        except ValueError:
            raise PodFault(f"ComfyUI answered GET {path} with something that is not JSON: {text[:200]}") from None
        if not isinstance(body, dict):
            raise PodFault(f"ComfyUI answered GET {path} with JSON that is not an object: {text[:200]}")
        return body

    async def _queued(self, prompt_id: str) -> bool:
        running, pending = await self._queue()
        return prompt_id in running or prompt_id in pending

    async def stop(self, prompt_id: str) -> str | None:
        """Stop this prompt only: delete it if it waits in the queue, interrupt it if it runs.

        Never a global interrupt, which would stop whatever another client runs on the same server.
        Returns what it did: "deleted", "interrupted", or None when the prompt was no longer there.
        """
        running, pending = await self._queue()
        if prompt_id in pending:
            await self._post_empty("/queue", {"delete": [prompt_id]})
            running, _ = await self._queue()
            if prompt_id not in running:
                return "deleted"
        if prompt_id in running:  # running, or started between our look at the queue and the delete
            await self._post_empty("/interrupt", {"prompt_id": prompt_id})
            return "interrupted"
        return None

    async def _post_empty(self, path: str, body: dict[str, Any]) -> None:
        async with self._call("POST", path, path, json=body) as response:
            await response.read()

    async def upload_image(self, filename: str, data: bytes, content_type: str) -> str:
        """Put an input image in the server's input folder (replacing one of that name); returns the name
        a LoadImage takes (`subfolder/name` when the server filed it in a subfolder)."""
        form = aiohttp.FormData()
        form.add_field("image", data, filename=filename, content_type=content_type)
        form.add_field("overwrite", "true")
        form.add_field("type", "input")
        try:
            async with self._call("POST", "/upload/image", "/upload/image", data=form) as response:
                text = await response.text(errors="replace")
                if response.status != 200:
                    raise PodFault(f"ComfyUI answered {response.status} to POST /upload/image: {text[:200]}")
            body = json.loads(text)
            name, subfolder = str(body["name"]), str(body.get("subfolder") or "")
        except (aiohttp.ClientError, ConnectionError, TimeoutError) as exc:
            raise PodFault(f"could not upload {filename} to {self.base_url}: {type(exc).__name__}: {exc}") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise PodFault(f"ComfyUI answered POST /upload/image unexpectedly: {type(exc).__name__}: {exc}") from exc
        return f"{subfolder}/{name}" if subfolder else name

    async def download(self, ref: OutputRef) -> tuple[bytes, str]:
        """An output file's bytes and type; anything but a 200 with a body is a PodFault."""
        params = {"filename": ref.filename, "subfolder": ref.subfolder, "type": ref.type}
        try:
            async with self._call("GET", "/view", "/view", params=params) as response:
                if response.status != 200:
                    raise PodFault(f"ComfyUI answered {response.status} for output {ref.filename}")
                return await response.read(), response.content_type
        except (aiohttp.ClientError, ConnectionError, TimeoutError) as exc:
            detail = f"{type(exc).__name__}: {exc}"
            raise PodFault(f"could not download {ref.filename} from {self.base_url}: {detail}") from exc

    def _outputs_of(self, entry: dict[str, Any], cancel: asyncio.Event) -> list[OutputRef]:
        status = entry.get("status") or {}
        messages = status.get("messages") or []
        last_kind, last_data = (messages[-1][0], messages[-1][1]) if messages else ("", {})
        if last_kind == "execution_error":
            raise WorkflowError(describe_execution_error(last_data))
        if last_kind == "execution_interrupted":
            if cancel.is_set():
                raise Cancelled(f"cancelled: prompt interrupted before node {last_data.get('node_id')}")
            raise PodFault(f"prompt interrupted on the pod before node {last_data.get('node_id')}")
        if status.get("status_str") not in (None, "success"):
            raise PodFault(f"ComfyUI reported status {status.get('status_str')!r}")
        return output_refs(entry.get("outputs") or {})


def output_refs(outputs: dict[str, Any]) -> list[OutputRef]:
    """Every saved file in a history entry's outputs, whatever key its node used (`images`, `gifs`,
    `video`, `audio`, …): items with a `filename` of type `output` (previews in `temp` are not results)."""
    refs: list[OutputRef] = []
    for node_id, ui in outputs.items():
        for value in ui.values() if isinstance(ui, dict) else ():
            for item in value if isinstance(value, list) else ():
                if isinstance(item, dict) and "filename" in item and item.get("type", "output") == "output":
                    refs.append(OutputRef(node_id, item["filename"], item.get("subfolder", ""), "output"))
    return refs


def describe_rejection(body: dict[str, Any]) -> str:
    """A 400 from `POST /prompt` in one line: the graph error, or each node's reasons."""
    error = body.get("error") or {}
    parts: list[str] = []
    for node_id, node in (body.get("node_errors") or {}).items():
        for item in node.get("errors", []):
            detail = item.get("details") or item.get("message")
            parts.append(f"node {node_id} ({node.get('class_type')}): {item.get('message')}: {detail}")
    message = error.get("message", "workflow rejected") if isinstance(error, dict) else str(error)
    return f"ComfyUI rejected the workflow: {message}" + (f" [{'; '.join(parts)}]" if parts else "")


def describe_execution_error(data: dict[str, Any]) -> str:
    """An `execution_error` in one line, naming the node, the exception type and its first line."""
    exception_type = str(data.get("exception_type", ""))
    message = str(data.get("exception_message", "")).strip().splitlines()
    first = message[0] if message else ""
    oom = "OutOfMemory" in exception_type or "out of memory" in first.lower()
    prefix = "out of memory" if oom else "execution error"
    return f"{prefix} in node {data.get('node_id')} ({data.get('node_type')}): {exception_type}: {first}"
