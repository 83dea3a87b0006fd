"""A stand-in executor for the deep-queue scenario: `python -m bench.fake_executor` (NATS_URL).

It consumes the dispatch work queue with the executor's own durable consumer (through the runtime's FastStream broker,
as the real executor does) and, for each assignment, publishes `started` and then `completed` at once —
no ComfyUI, no output files — so that draining measures the scheduler's placement, not a GPU.
"""

from __future__ import annotations

import asyncio
import signal

from faststream import AckPolicy
from faststream.nats import PullSub

from vibewave.contracts.events import (
    DISPATCH_PREFIX,
    DISPATCH_STREAM,
    EXECUTOR_CONSUMER,
    REQ_PREFIX,
    REQUESTS_STREAM,
    Assignment,
    AttemptSucceeded,
    RequestEvent,
    RequestStarted,
    request_subject,
)
from vibewave.contracts.models import WorkflowResult
from vibewave.executor.service import prompt_id_for
from vibewave.runtime import broker as runtime
from vibewave.runtime.settings import CommonSettings
from vibewave.runtime.telemetry import setup_tracing


async def main() -> None:
    common = CommonSettings.from_env()
    broker = runtime.new_broker("fake-executor", common, setup_tracing("fake-executor"))
    started = broker.publisher(f"{REQ_PREFIX}.*.started", stream=runtime.stream(REQUESTS_STREAM))
    succeeded = broker.publisher(f"{REQ_PREFIX}.*.attempt_succeeded", stream=runtime.stream(REQUESTS_STREAM))

    assignments = broker.subscriber(
        f"{DISPATCH_PREFIX}.>",
        stream=runtime.stream(DISPATCH_STREAM),
        durable=EXECUTOR_CONSUMER.durable,
        config=runtime.consumer_config(EXECUTOR_CONSUMER),
        pull_sub=PullSub(batch_size=64, timeout=5, batch=True),
        ack_policy=AckPolicy.MANUAL,
    )

    async def run(a: Assignment) -> None:
        await runtime.publish(
            started,
            RequestStarted(request_id=a.request_id, pod_id=a.pod_id, attempt=a.attempt,
                           prompt_id=prompt_id_for(a.request_id, a.attempt)),
            subject=request_subject(a.request_id, RequestEvent.STARTED),
            msg_id=f"{a.request_id}.started.{a.attempt}",
        )  # fmt: skip
        result = WorkflowResult(success=True, files=[f"bench_{a.request_id}.png"], request_id=a.request_id,
                                pod_id=a.pod_id, pod_ip=a.pod_ip)  # fmt: skip
        await runtime.publish(
            succeeded,
            AttemptSucceeded(request_id=a.request_id, pod_id=a.pod_id, attempt=a.attempt, result=result),
            subject=request_subject(a.request_id, RequestEvent.ATTEMPT_SUCCEEDED),
            msg_id=f"{a.request_id}.attempt_succeeded.{a.attempt}",
        )

    async def handle() -> None:
        """A fetched batch of assignments, run side by side, then acked."""
        batch = runtime.current_batch().raw_message
        await asyncio.gather(*(run(runtime.decode(raw.data, Assignment)) for raw in batch))
        await asyncio.gather(*(raw.ack() for raw in batch))

    assignments(handle)
    runtime.prompt_batches(assignments)

    await runtime.connect(broker)
    await runtime.provision(broker, common)
    await broker.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runtime.stop_broker(broker)


if __name__ == "__main__":
    asyncio.run(main())
