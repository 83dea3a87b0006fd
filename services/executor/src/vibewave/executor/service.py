"""The executor: runs each assignment on its pod's ComfyUI, stores the outputs, reports the outcome.

It never decides retries or placement: a failure is reported with its kind, and the scheduler decides.

Faults are named for what they are:
- an assignment the scheduler has moved on from (the request failed, was cancelled, or was reassigned to
  another attempt or pod) is *fenced*: acknowledged without sending anything to ComfyUI;
- a NATS outage never fails a run: `started` and `progress` are best effort (a short retry, then a log
  line), the outcome is retried until NATS is back (shutdown cancels it, and the unacknowledged
  assignment is then redelivered);
- a redelivered attempt finds its prompt on the pod (same prompt id) and follows or collects it, storing
  its files under the names a first collection claimed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TypeVar
from uuid import NAMESPACE_URL, uuid5

import aiohttp
import msgspec
import nats.js.errors
from faststream import AckPolicy
from faststream.nats import NatsMessage, PullSub
from faststream.nats.publisher.usecase import LogicPublisher
from nats.js.kv import KeyValue
from opentelemetry import trace
from opentelemetry.trace import TracerProvider

from vibewave.contracts.events import (
    DISPATCH_PREFIX,
    DISPATCH_STREAM,
    EXECUTOR_CONSUMER,
    OUTPUT_NAMES_BUCKET,
    REQ_PREFIX,
    REQUESTS_BUCKET,
    REQUESTS_STREAM,
    Assignment,
    AttemptFailed,
    AttemptSucceeded,
    ConsumerSpec,
    FailureKind,
    RequestEvent,
    RequestProgress,
    RequestRecord,
    RequestStarted,
    request_subject,
    split_request_subject,
)
from vibewave.contracts.models import RequestStatus, WorkflowResult
from vibewave.contracts.workflows import InvalidInput, Workflow, WorkflowCatalog
from vibewave.executor.comfyui import ComfyUIClient, ComfyUIError, OutputRef, Progress
from vibewave.executor.inputs import InputImages
from vibewave.executor.outputs import OutputStore, file_stem, suffix_of
from vibewave.executor.settings import ExecutorSettings
from vibewave.runtime import broker as runtime
from vibewave.runtime.health import serve_liveness
from vibewave.runtime.logs import request_id_var
from vibewave.runtime.pod_token import pod_token
from vibewave.runtime.storage import FileStore, open_file_store

log = logging.getLogger("vibewave.executor")

T = TypeVar("T")

RECENT_CANCELS = 10_000  # cancel requests remembered for assignments that have not started here yet
REPORT_RETRY_S = 2.0  # how long `started` and the last `progress` are retried before the run goes on without
RUNNABLE = (RequestStatus.ASSIGNED, RequestStatus.RUNNING)


def prompt_id_for(request_id: str, attempt: int) -> str:
    """Stable per attempt, canonical UUID (ComfyUI 0.33 requires one): a redelivery finds its prompt."""
    return str(uuid5(NAMESPACE_URL, f"vibewave:{request_id}:{attempt}"))


def fenced(record: RequestRecord | None, a: Assignment) -> str | None:
    """Why this assignment must not run, or None when it is the request's current attempt on this pod.

    The scheduler stores the record before it dispatches, so a record that does not name this attempt
    on this pod means the scheduler has moved on (failed it, cancelled it, or placed it again)."""
    if record is None:
        return "the request has no record"
    if record.status not in RUNNABLE:
        return f"request is {record.status}"
    if record.attempts != a.attempt:
        return f"reassigned to attempt {record.attempts} (this is attempt {a.attempt})"
    if record.pod_id != a.pod_id:
        return f"attempt {a.attempt} is on pod {record.pod_id}, not {a.pod_id}"
    return None


def executor_consumer(settings: ExecutorSettings) -> ConsumerSpec:
    """The contract's consumer, with the operator's ack wait (EXECUTOR_ACK_WAIT) when one is set."""
    spec = EXECUTOR_CONSUMER
    if settings.ack_wait_s is not None:
        spec = dataclasses.replace(EXECUTOR_CONSUMER, ack_wait_s=settings.ack_wait_s)
    runtime.register_consumer(spec)
    return spec


@dataclasses.dataclass
class _Spent:
    """Seconds one attempt spent storing its files: the rest of its run was ComfyUI's and the downloads'."""

    storing: float = 0.0


class _Run:
    """An attempt running in this process: a redelivery of it waits for it instead of running it again."""

    def __init__(self) -> None:
        self.done = asyncio.Event()
        self.failed: BaseException | None = None


class ExecutorService:
    def __init__(self, settings: ExecutorSettings, tracer_provider: TracerProvider | None = None) -> None:
        self.settings = settings
        self.tracer = trace.get_tracer("vibewave.executor", tracer_provider=tracer_provider)
        self.catalog = WorkflowCatalog(settings.workflows_dir)
        common = settings.common
        self.consumer = executor_consumer(settings)
        self.broker = runtime.new_broker("executor", common, tracer_provider)
        requests = runtime.stream(REQUESTS_STREAM)

        def publisher(event: RequestEvent, schema: type[msgspec.Struct], description: str) -> LogicPublisher:
            return self.broker.publisher(
                f"{REQ_PREFIX}.*.{event}",
                stream=requests,
                schema=schema,
                title=f"executor: {event}",
                description=description,
            )

        self._started = publisher(RequestEvent.STARTED, RequestStarted, "The prompt is queued in ComfyUI.")
        self._progress = publisher(RequestEvent.PROGRESS, RequestProgress, "Sampler progress of a running prompt.")
        self._failed = publisher(RequestEvent.ATTEMPT_FAILED, AttemptFailed, "One attempt failed, with its kind.")
        self._succeeded = publisher(
            RequestEvent.ATTEMPT_SUCCEEDED, AttemptSucceeded, "One attempt ran; its files are stored."
        )
        assignments = self.broker.subscriber(
            f"{DISPATCH_PREFIX}.>",
            stream=runtime.stream(DISPATCH_STREAM),
            durable=self.consumer.durable,
            config=runtime.consumer_config(self.consumer, common.replicas),
            pull_sub=PullSub(batch_size=1, timeout=1),
            max_workers=settings.concurrency,
            ack_policy=AckPolicy.NACK_ON_ERROR,
            title="executor: assignments",
            description="Runs each assignment on its pod's ComfyUI.",
        )
        assignments(self.handle)
        runtime.steady_pulls(assignments)
        self.broker.subscriber(
            f"{REQ_PREFIX}.*.{RequestEvent.CANCEL_REQUESTED}",
            no_reply=True,  # see runtime.broker.JETSTREAM_SUBJECT_LISTENER
            title="executor: cancels",
            description="Every executor hears every cancel; the one running that request stops it.",
        )(self._on_cancel_requested)
        self._session: aiohttp.ClientSession | None = None
        self._outputs: OutputStore | None = None
        self._files: FileStore = open_file_store(settings.storage, lambda: runtime.jetstream(self.broker))
        self._images = InputImages(self._files, tracer=self.tracer)  # an image input's file, put on the pod first
        self._kind = settings.storage.backend  # `nats` or `s3`, on each `store output` span
        self._requests: KeyValue | None = None
        self._running: dict[str, asyncio.Event] = {}  # request id → its cancel switch
        self._runs: dict[tuple[str, int], _Run] = {}  # (request id, attempt) → its run in this process
        self._recent_cancels: OrderedDict[str, None] = OrderedDict()

    async def start(self) -> None:
        common = self.settings.common
        await runtime.connect(self.broker)
        await runtime.provision(self.broker, common)
        js = runtime.jetstream(self.broker)
        await runtime.ensure_consumer(js, self.consumer, common.replicas)
        self._outputs = OutputStore(await js.key_value(OUTPUT_NAMES_BUCKET.name))
        self._requests = await js.key_value(REQUESTS_BUCKET.name)
        self._session = aiohttp.ClientSession()
        await runtime.serve(self.broker)
        await serve_liveness(self.broker.connection, "executor", "runs workflows on ComfyUI")

    async def stop(self) -> None:
        await runtime.stop_broker(self.broker)
        if self._session is not None:
            await self._session.close()
        await self._files.close()

    async def _on_cancel_requested(self) -> None:
        """Every executor hears every cancel; the one running that request stops it."""
        request_id, _ = split_request_subject(runtime.current_message().raw_message.subject)
        switch = self._running.get(request_id)
        if switch is not None:
            log.info("cancel requested; stopping the prompt", extra={"request_id": request_id})
            switch.set()
            return
        self._recent_cancels[request_id] = None
        while len(self._recent_cancels) > RECENT_CANCELS:
            self._recent_cancels.popitem(last=False)

    async def _record(self, request_id: str) -> RequestRecord | None:
        """The request's record as the scheduler stored it (a NATS error propagates: the assignment is
        then redelivered, never run unchecked)."""
        assert self._requests is not None
        try:
            entry = await self._requests.get(request_id)
        except nats.js.errors.KeyNotFoundError:
            return None
        return runtime.decode(entry.value, RequestRecord) if entry.value else None

    async def handle(self, assignment: Assignment) -> None:
        msg = runtime.current_message()
        token = request_id_var.set(assignment.request_id)
        key = (assignment.request_id, assignment.attempt)
        try:
            earlier = self._runs.get(key)
            if earlier is not None:
                log.info("attempt %d redelivered while it runs here; waiting for that run", assignment.attempt)
                await earlier.done.wait()
                if earlier.failed is not None:
                    raise RuntimeError(f"the run of attempt {assignment.attempt} failed: {earlier.failed!r}")
                return
            run = self._runs[key] = _Run()
            try:
                with self.tracer.start_as_current_span(
                    "execute workflow",
                    attributes={
                        "vibewave.request_id": assignment.request_id,
                        "vibewave.workflow": assignment.workflow_name,
                        "vibewave.pod_id": assignment.pod_id,
                        "vibewave.attempt": assignment.attempt,
                        "vibewave.delivery": _delivery(msg),
                    },
                ):
                    await self._execute(assignment)
            except BaseException as exc:
                run.failed = exc
                raise
            finally:
                run.done.set()
                self._runs.pop(key, None)
        finally:
            request_id_var.reset(token)

    async def _execute(self, a: Assignment) -> None:
        record = await self._record(a.request_id)
        reason = fenced(record, a)
        if reason is not None:
            log.info("fenced: %s; assignment acknowledged without running it", reason,
                     extra={"pod_id": a.pod_id, "attempt": a.attempt})  # fmt: skip
            return
        assert record is not None
        workflow = self.catalog.get(a.workflow_name)
        if workflow is None:
            await self._fail(a, FailureKind.WORKFLOW, f"unknown workflow {a.workflow_name!r}")
            return
        try:
            graph = workflow.render(workflow.resolve_inputs(a.inputs))
        except InvalidInput as exc:
            await self._fail(a, FailureKind.WORKFLOW, f"invalid input {exc}")
            return
        cancel = asyncio.Event()
        self._running[a.request_id] = cancel
        try:
            if record.cancel_requested or a.request_id in self._recent_cancels:
                cancel.set()
            await self._run(a, workflow, graph, cancel)
        finally:
            self._running.pop(a.request_id, None)
            self._recent_cancels.pop(a.request_id, None)

    async def _run(self, a: Assignment, workflow: Workflow, graph: dict[str, object], cancel: asyncio.Event) -> None:
        assert self._session is not None
        key = self.settings.pod_token_key
        token = pod_token(key.reveal(), a.pod_name) if key and a.pod_name else None
        timeout = self.settings.connect_timeout_s
        client = ComfyUIClient(a.comfyui_url, self._session, connect_timeout=timeout, token=token, tracer=self.tracer)
        prompt_id = prompt_id_for(a.request_id, a.attempt)
        reporter = _ProgressReporter(self, a, self.settings.progress_interval_s)
        began, spent = time.monotonic(), _Spent()

        async def started() -> None:
            await self._report(
                self._started,
                RequestStarted(request_id=a.request_id, pod_id=a.pod_id, attempt=a.attempt, prompt_id=prompt_id),
                subject=request_subject(a.request_id, RequestEvent.STARTED),
                msg_id=f"{a.request_id}.started.{a.attempt}",
            )

        log.info("running on %s", a.comfyui_url, extra={"pod_id": a.pod_id, "prompt_id": prompt_id})
        try:
            try:
                graph = await self._images.place(client, workflow, a.inputs, graph, a.request_id)
                refs = await client.run(
                    graph,
                    prompt_id,
                    on_started=started,
                    on_progress=reporter.report,
                    timeout=a.execution_timeout_s or self.settings.execution_timeout_s,
                    cancel=cancel,
                )
                files = await self._store(client, workflow, a, refs, spent)
                ran_s = time.monotonic() - began - spent.storing
            finally:
                await reporter.settle()  # the last progress goes out while the files are stored, before the outcome
        except ComfyUIError as exc:
            await self._fail(a, exc.kind, str(exc))
            return
        urls = [url for name in files if (url := self._files.presign(name))]
        result = WorkflowResult(
            success=True, files=files, urls=urls or msgspec.UNSET,
            request_id=a.request_id, pod_id=a.pod_id, pod_ip=a.pod_ip,
        )  # fmt: skip
        succeeded = AttemptSucceeded(
            request_id=a.request_id, pod_id=a.pod_id, attempt=a.attempt, result=result,
            run_ms=round(ran_s * 1000), upload_ms=round(spent.storing * 1000),
        )  # fmt: skip
        await runtime.publish(
            self._succeeded,
            succeeded,
            subject=request_subject(a.request_id, RequestEvent.ATTEMPT_SUCCEEDED),
            msg_id=f"{a.request_id}.attempt_succeeded.{a.attempt}",
            retry_for=None,  # the outcome must not be lost: retried until NATS is back
        )
        log.info("attempt succeeded", extra={"files": files, "pod_id": a.pod_id})

    async def _store(
        self,
        client: ComfyUIClient,
        workflow: Workflow,
        a: Assignment,
        refs: list[OutputRef],
        spent: _Spent | None = None,
    ) -> list[str]:
        """Download each output and store it under a claimed name. The claims are the request's own per
        output index: a redelivered attempt stores its files under the names the first collection took."""
        outputs = self._outputs
        assert outputs is not None
        stem = file_stem(workflow.definition.file_prefix, a.inputs.get("seed"), a.request_id)
        files: list[str] = []
        for index, ref in enumerate(refs):
            data, content_type = await client.download(ref)
            suffix = suffix_of(ref.filename, content_type)
            storing = time.monotonic()
            attributes: dict[str, str | int] = {"vibewave.file.bytes": len(data), "vibewave.store.kind": self._kind}
            with self.tracer.start_as_current_span("store output", attributes=attributes) as span:
                name = await _until_nats(partial(outputs.claim_name, stem, suffix, a.request_id, index), "claim a name")
                await _until_nats(partial(self._files.save, name, data, content_type), f"store {name}")
                span.set_attribute("vibewave.file.name", name)
            files.append(name)
            if spent is not None:
                spent.storing += time.monotonic() - storing
        return files

    async def _fail(self, a: Assignment, kind: FailureKind, error: str) -> None:
        log.warning("attempt failed: %s", error, extra={"kind": kind, "pod_id": a.pod_id})
        await runtime.publish(
            self._failed,
            AttemptFailed(request_id=a.request_id, pod_id=a.pod_id, attempt=a.attempt, kind=kind, error=error),
            subject=request_subject(a.request_id, RequestEvent.ATTEMPT_FAILED),
            msg_id=f"{a.request_id}.attempt_failed.{a.attempt}",
            retry_for=None,
        )

    async def _report(
        self, publisher: LogicPublisher, message: msgspec.Struct, *, subject: str, msg_id: str, quiet: bool = False
    ) -> bool:
        """A best-effort event (`started`, `progress`): retried briefly, then given up with a log line
        (none when `quiet`). It never fails the run: NATS being away says nothing about the prompt."""
        try:
            await runtime.publish(publisher, message, subject=subject, msg_id=msg_id, retry_for=REPORT_RETRY_S)
        except Exception as exc:
            if not quiet:
                log.warning("could not publish %s (%s: %s); the run goes on", subject, type(exc).__name__, exc)
            return False
        return True


async def _until_nats(step: Callable[[], Awaitable[T]], what: str) -> T:
    """A NATS write the attempt needs (an output name, a file), retried over an outage until it lands
    or the run is cancelled (shutdown). Safe to repeat: claims are idempotent, a put replaces."""
    delay = 0.2
    while True:
        try:
            return await step()
        except runtime.TRANSIENT as exc:
            log.warning("could not %s (%s); retrying in %.1fs", what, type(exc).__name__, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


def _delivery(msg: NatsMessage) -> int:
    try:
        return int(msg.raw_message.metadata.num_delivered or 1)
    except Exception:
        return 1


class _ProgressReporter:
    """Turns ComfyUI's per-step frames into progress events, at most one per interval (plus the last).

    Publishing never holds up the run: one event at a time is in flight, frames arriving meanwhile are
    skipped (a later one carries newer progress; the last one waits for its turn), and a failure is
    logged, not raised. The run settles the reporter before it reports its outcome."""

    def __init__(self, service: ExecutorService, assignment: Assignment, interval: float) -> None:
        self.service = service
        self.assignment = assignment
        self.interval = interval
        self._last = 0.0
        self._sequence = 0
        self._in_flight: asyncio.Task[None] | None = None
        self._failing = False

    async def report(self, progress: Progress) -> None:
        now = time.monotonic()
        if not progress.final and now - self._last < self.interval:
            return
        if not progress.final and self._in_flight is not None and not self._in_flight.done():
            return
        self._last = now
        self._sequence += 1
        a = self.assignment
        publish = self._publish(
            RequestProgress(
                request_id=a.request_id,
                node=progress.node,
                value=progress.value,
                max=progress.max,
                percent=progress.percent,
            ),
            msg_id=f"{a.request_id}.progress.{a.attempt}.{self._sequence}",
        )
        if progress.final:  # after the one in flight, so events keep their order
            await self.settle()
        self._in_flight = asyncio.create_task(publish)

    async def _publish(self, event: RequestProgress, *, msg_id: str) -> None:
        """One progress event; a run of failures (NATS away) is logged once, not once per event."""
        published = await self.service._report(
            self.service._progress,
            event,
            subject=request_subject(event.request_id, RequestEvent.PROGRESS),
            msg_id=msg_id,
            quiet=self._failing,
        )
        if published and self._failing:
            log.info("progress events are published again")
        self._failing = not published

    async def settle(self) -> None:
        """Wait for the event in flight (bounded by its own short retry)."""
        if self._in_flight is not None:
            await asyncio.gather(self._in_flight, return_exceptions=True)
            self._in_flight = None
