"""The executor: runs each assignment on its pod's ComfyUI, stores the outputs, reports the outcome.

It never decides retries or placement: a failure is reported with its kind, and the scheduler decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from uuid import NAMESPACE_URL, uuid5

import aiohttp
import nats.js.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.kv import KeyValue
from opentelemetry import trace
from opentelemetry.trace import TracerProvider

from vibewave.contracts.events import (
    EXECUTOR_CONSUMER,
    OUTPUT_NAMES_BUCKET,
    OUTPUTS_STORE,
    REQ_PREFIX,
    REQUESTS_BUCKET,
    Assignment,
    AttemptFailed,
    AttemptSucceeded,
    FailureKind,
    RequestEvent,
    RequestProgress,
    RequestRecord,
    RequestStarted,
    request_subject,
    split_request_subject,
)
from vibewave.contracts.models import WorkflowResult
from vibewave.contracts.workflows import InvalidInput, Workflow, WorkflowCatalog
from vibewave.executor.comfyui import ComfyUIClient, ComfyUIError, OutputRef, Progress
from vibewave.executor.outputs import OutputStore, file_stem, suffix_of
from vibewave.executor.settings import ExecutorSettings
from vibewave.runtime.bus import Bus, decode
from vibewave.runtime.health import serve_liveness
from vibewave.runtime.logs import request_id_var

log = logging.getLogger("vibewave.executor")

RECENT_CANCELS = 10_000  # cancel requests remembered for assignments that have not started here yet


def prompt_id_for(request_id: str, attempt: int) -> str:
    """Stable per attempt, canonical UUID (ComfyUI 0.33 requires one): a redelivery finds its prompt."""
    return str(uuid5(NAMESPACE_URL, f"vibewave:{request_id}:{attempt}"))


class ExecutorService:
    def __init__(self, settings: ExecutorSettings, tracer_provider: TracerProvider | None = None) -> None:
        self.settings = settings
        self.tracer = trace.get_tracer("vibewave.executor", tracer_provider=tracer_provider)
        self.tracer_provider = tracer_provider
        self.catalog = WorkflowCatalog(settings.workflows_dir)
        self._bus: Bus | None = None
        self._session: aiohttp.ClientSession | None = None
        self._outputs: OutputStore | None = None
        self._requests: KeyValue | None = None
        self._cancel_sub: Subscription | None = None
        self._running: dict[str, asyncio.Event] = {}  # request id → its cancel switch
        self._recent_cancels: OrderedDict[str, None] = OrderedDict()

    @property
    def bus(self) -> Bus:
        assert self._bus is not None, "executor not started"
        return self._bus

    async def start(self) -> None:
        common = self.settings.common
        self._bus = await Bus.connect(common.nats_url, name="executor", tracer_provider=self.tracer_provider)
        await self.bus.provision(common.replicas)
        self._outputs = OutputStore(await self.bus.object_store(OUTPUTS_STORE), await self.bus.kv(OUTPUT_NAMES_BUCKET))
        self._requests = await self.bus.kv(REQUESTS_BUCKET)
        self._session = aiohttp.ClientSession()
        self._cancel_sub = await self.bus.nc.subscribe(
            f"{REQ_PREFIX}.*.{RequestEvent.CANCEL_REQUESTED}", cb=self._on_cancel_requested
        )
        consumer = EXECUTOR_CONSUMER
        self.bus.consume(consumer, self.handle, concurrency=self.settings.concurrency, replicas=common.replicas)
        await serve_liveness(self.bus.nc, "executor", "runs workflows on ComfyUI")

    async def stop(self) -> None:
        if self._cancel_sub is not None:
            with contextlib.suppress(Exception):
                await self._cancel_sub.unsubscribe()
        if self._bus is not None:
            await self._bus.close()
        if self._session is not None:
            await self._session.close()

    async def _on_cancel_requested(self, msg: Msg) -> None:
        """Every executor hears every cancel; the one running that request stops it."""
        request_id, _ = split_request_subject(msg.subject)
        switch = self._running.get(request_id)
        if switch is not None:
            log.info("cancel requested; stopping the prompt", extra={"request_id": request_id})
            switch.set()
            return
        self._recent_cancels[request_id] = None
        while len(self._recent_cancels) > RECENT_CANCELS:
            self._recent_cancels.popitem(last=False)

    async def _cancel_already_requested(self, request_id: str) -> bool:
        """Heard here before the assignment arrived, or recorded by the scheduler (e.g. while we restarted)."""
        if request_id in self._recent_cancels:
            return True
        assert self._requests is not None
        try:
            entry = await self._requests.get(request_id)
        except nats.js.errors.KeyNotFoundError:
            return False
        return bool(entry.value) and decode(entry.value or b"", RequestRecord).cancel_requested

    async def handle(self, msg: Msg) -> None:
        assignment = decode(msg.data, Assignment)
        token = request_id_var.set(assignment.request_id)
        try:
            with self.tracer.start_as_current_span(
                "execute workflow",
                attributes={
                    "vibewave.request_id": assignment.request_id,
                    "vibewave.workflow": assignment.workflow_name,
                    "vibewave.pod_id": assignment.pod_id,
                    "vibewave.attempt": assignment.attempt,
                },
            ):
                await self._execute(assignment)
        finally:
            request_id_var.reset(token)

    async def _execute(self, a: Assignment) -> None:
        workflow = self.catalog.get(a.workflow_name)
        if workflow is None:
            await self._fail(a, FailureKind.WORKFLOW, f"unknown workflow {a.workflow_name!r}")
            return
        try:
            graph = workflow.render(workflow.resolve_inputs(a.inputs))
        except InvalidInput as exc:
            await self._fail(a, FailureKind.WORKFLOW, f"invalid input {exc}")
            return
        assert self._session is not None and self._outputs is not None
        cancel = asyncio.Event()
        self._running[a.request_id] = cancel
        try:
            if await self._cancel_already_requested(a.request_id):
                cancel.set()
            await self._run(a, workflow, graph, cancel)
        finally:
            self._running.pop(a.request_id, None)
            self._recent_cancels.pop(a.request_id, None)

    async def _run(self, a: Assignment, workflow: Workflow, graph: dict[str, object], cancel: asyncio.Event) -> None:
        assert self._session is not None
        client = ComfyUIClient(a.comfyui_url, self._session, connect_timeout=self.settings.connect_timeout_s)
        prompt_id = prompt_id_for(a.request_id, a.attempt)
        reporter = _ProgressReporter(self, a, self.settings.progress_interval_s)

        async def started() -> None:
            await self.bus.publish(
                request_subject(a.request_id, RequestEvent.STARTED),
                RequestStarted(request_id=a.request_id, pod_id=a.pod_id, attempt=a.attempt, prompt_id=prompt_id),
                msg_id=f"{a.request_id}.started.{a.attempt}",
            )

        log.info("running on %s", a.comfyui_url, extra={"pod_id": a.pod_id, "prompt_id": prompt_id})
        try:
            refs = await client.run(
                graph,
                prompt_id,
                on_started=started,
                on_progress=reporter.report,
                timeout=a.execution_timeout_s or self.settings.execution_timeout_s,
                cancel=cancel,
            )
            files = await self._store(client, workflow, a, refs)
        except ComfyUIError as exc:
            await self._fail(a, exc.kind, str(exc))
            return
        result = WorkflowResult(success=True, files=files, request_id=a.request_id, pod_id=a.pod_id, pod_ip=a.pod_ip)
        await self.bus.publish(
            request_subject(a.request_id, RequestEvent.ATTEMPT_SUCCEEDED),
            AttemptSucceeded(request_id=a.request_id, pod_id=a.pod_id, attempt=a.attempt, result=result),
            msg_id=f"{a.request_id}.attempt_succeeded.{a.attempt}",
        )
        log.info("completed", extra={"files": files, "pod_id": a.pod_id})

    async def _store(
        self, client: ComfyUIClient, workflow: Workflow, a: Assignment, refs: list[OutputRef]
    ) -> list[str]:
        assert self._outputs is not None
        stem = file_stem(workflow.definition.file_prefix, a.inputs.get("seed"), a.request_id)
        files: list[str] = []
        for ref in refs:
            data, content_type = await client.download(ref)
            name = await self._outputs.claim_name(stem, suffix_of(ref.filename, content_type), a.request_id)
            await self._outputs.save(name, data, content_type)
            files.append(name)
        return files

    async def _fail(self, a: Assignment, kind: FailureKind, error: str) -> None:
        log.warning("attempt failed: %s", error, extra={"kind": kind, "pod_id": a.pod_id})
        await self.bus.publish(
            request_subject(a.request_id, RequestEvent.ATTEMPT_FAILED),
            AttemptFailed(request_id=a.request_id, pod_id=a.pod_id, attempt=a.attempt, kind=kind, error=error),
            msg_id=f"{a.request_id}.attempt_failed.{a.attempt}",
        )


class _ProgressReporter:
    """Turns ComfyUI's per-step frames into progress events, at most one per interval (plus the last)."""

    def __init__(self, service: ExecutorService, assignment: Assignment, interval: float) -> None:
        self.service = service
        self.assignment = assignment
        self.interval = interval
        self._last = 0.0
        self._sequence = 0

    async def report(self, progress: Progress) -> None:
        now = time.monotonic()
        if not progress.final and now - self._last < self.interval:
            return
        self._last = now
        self._sequence += 1
        a = self.assignment
        await self.service.bus.publish(
            request_subject(a.request_id, RequestEvent.PROGRESS),
            RequestProgress(
                request_id=a.request_id,
                node=progress.node,
                value=progress.value,
                max=progress.max,
                percent=progress.percent,
            ),
            msg_id=f"{a.request_id}.progress.{a.attempt}.{self._sequence}",
        )
