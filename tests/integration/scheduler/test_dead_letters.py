"""A poison event on the scheduler's consumer lands in the dead letters after max_deliver, and the
scheduler goes on with the next request."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import msgspec
import nats
import pytest

from tests.integration.scheduler.test_steps import settings
from tests.support.requests import wait_for_record
from vibewave.contracts.events import (
    DEAD_LETTER_STREAM,
    SCHEDULER_CONSUMER,
    DeadLetter,
    RequestEvent,
    RequestSubmitted,
    dead_letter_subject,
    request_subject,
)
from vibewave.contracts.models import RequestStatus
from vibewave.runtime import broker as runtime
from vibewave.scheduler.service import SchedulerService

pytestmark = pytest.mark.integration


async def test_a_poison_event_is_dead_lettered_and_the_scheduler_goes_on(nats_url, vibewave_home):
    # The contract's limit, with short retry delays so the test takes a second, not half a minute
    quick = dataclasses.replace(SCHEDULER_CONSUMER, max_deliver=3, retry_delays_s=(0.05,))
    runtime.register_consumer(quick)
    scheduler = SchedulerService(settings(nats_url, vibewave_home))
    nc = await nats.connect(nats_url)
    try:
        await scheduler.start()
        js = nc.jetstream()
        poison = b'{"request_id": "req-poison", "workflow_name": 7}'
        await js.publish(request_subject("req-poison", RequestEvent.SUBMITTED), poison,
                         headers={"Nats-Msg-Id": "poison"})  # fmt: skip
        good = RequestSubmitted(request_id="req-good", workflow_name="comfyui_image_qwen", inputs={},
                                created_at=datetime.now(UTC))  # fmt: skip
        await js.publish(request_subject("req-good", RequestEvent.SUBMITTED), runtime.encode(good),
                         headers={"Nats-Msg-Id": "good"})  # fmt: skip
        await wait_for_record(nats_url, "req-good", {RequestStatus.PENDING}, timeout=10)
        letters = await js.subscribe(dead_letter_subject("scheduler"), stream=DEAD_LETTER_STREAM.name,
                                     ordered_consumer=True)  # fmt: skip
        letter = msgspec.json.decode((await letters.next_msg(timeout=15)).data, type=DeadLetter)
        assert (letter.subject, letter.consumer, letter.deliveries) == ("vw.req.req-poison.submitted", "scheduler", 3)
        assert letter.data == poison and "workflow_name" in letter.error
        after = msgspec.structs.replace(good, request_id="req-after")
        await js.publish(request_subject("req-after", RequestEvent.SUBMITTED), runtime.encode(after),
                         headers={"Nats-Msg-Id": "after"})  # fmt: skip
        await wait_for_record(nats_url, "req-after", {RequestStatus.PENDING}, timeout=10)
        info = await js.consumer_info("REQUESTS", "scheduler")
        assert (info.num_ack_pending, info.num_pending) == (0, 0), "the terminated poison left nothing outstanding"
    finally:
        runtime.register_consumer(SCHEDULER_CONSUMER)
        await scheduler.stop()
        await nc.close()
