"""A stand-in executor for the deep-queue scenario: `python -m bench.fake_executor` (NATS_URL).

It consumes the dispatch work queue with the executor's own durable consumer (through the project's Bus,
as the real executor does) and, for each assignment, publishes `started` and then `completed` at once —
no ComfyUI, no output files — so that draining measures the scheduler's placement, not a GPU.
"""

from __future__ import annotations

import asyncio
import os
import signal

from nats.aio.msg import Msg

from vibewave.contracts.events import (
    EXECUTOR_CONSUMER,
    Assignment,
    AttemptSucceeded,
    RequestEvent,
    RequestStarted,
    request_subject,
)
from vibewave.contracts.models import WorkflowResult
from vibewave.executor.service import prompt_id_for
from vibewave.runtime.bus import Bus, decode


async def main() -> None:
    bus = await Bus.connect(os.environ["NATS_URL"], name="fake-executor")
    await bus.provision()

    async def handle(msg: Msg) -> None:
        a = decode(msg.data, Assignment)
        await bus.publish(
            request_subject(a.request_id, RequestEvent.STARTED),
            RequestStarted(request_id=a.request_id, pod_id=a.pod_id, attempt=a.attempt,
                           prompt_id=prompt_id_for(a.request_id, a.attempt)),
            msg_id=f"{a.request_id}.started.{a.attempt}",
        )  # fmt: skip
        result = WorkflowResult(success=True, files=[f"bench_{a.request_id}.png"], request_id=a.request_id,
                                pod_id=a.pod_id, pod_ip=a.pod_ip)  # fmt: skip
        await bus.publish(
            request_subject(a.request_id, RequestEvent.ATTEMPT_SUCCEEDED),
            AttemptSucceeded(request_id=a.request_id, pod_id=a.pod_id, attempt=a.attempt, result=result),
            msg_id=f"{a.request_id}.attempt_succeeded.{a.attempt}",
        )

    bus.consume(EXECUTOR_CONSUMER, handle, concurrency=64)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await bus.close()


if __name__ == "__main__":
    asyncio.run(main())
