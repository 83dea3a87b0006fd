"""Fencing by attempt: the executor runs an assignment only if the request's stored record names this
attempt on this pod. One the scheduler has moved on from (failed, reassigned) is acknowledged without
anything reaching ComfyUI. Real NATS, the real executor in process, the ComfyUI simulator."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest
from nats.js import JetStreamContext

from vibewave.comfyui_sim.app import RunningSimulator, serve
from vibewave.comfyui_sim.config import Faults, SimConfig
from vibewave.contracts.events import (
    DISPATCH_STREAM,
    EXECUTOR_CONSUMER,
    REQUESTS_BUCKET,
    REQUESTS_STREAM,
    Assignment,
    AttemptSucceeded,
    RequestEvent,
    RequestRecord,
    dispatch_subject,
    request_subject,
    utcnow,
)
from vibewave.contracts.models import RequestStatus
from vibewave.executor.service import ExecutorService, prompt_id_for
from vibewave.executor.settings import ExecutorSettings
from vibewave.runtime import broker as runtime
from vibewave.runtime.settings import CommonSettings

pytestmark = pytest.mark.integration

POD = "pod-fence"
INPUTS: dict[str, Any] = {"prompt": "a fenced lake", "seed": 3, "steps": 2, "width": 256, "height": 256}


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[RunningSimulator]:
    running = await serve(SimConfig(port=0, base_dir=tmp_path, models_present=True, faults=Faults(step_time=0.01)))
    yield running
    await running.close()


@pytest.fixture
async def executor(nats_url: str, vibewave_home: Path) -> AsyncIterator[ExecutorService]:
    common = CommonSettings(nats_url=nats_url, home=vibewave_home, log_level="INFO", debug=False, replicas=1)
    service = ExecutorService(dataclasses.replace(ExecutorSettings.from_env(common), concurrency=2))
    await service.start()
    yield service
    await service.stop()


@pytest.fixture
async def js(nats_url: str) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(nats_url)
    yield nc.jetstream()
    await nc.close()


def record(request_id: str, status: RequestStatus, attempts: int) -> RequestRecord:
    now = utcnow()
    return RequestRecord(
        id=request_id, workflow_name="comfyui_image_qwen", inputs=INPUTS, status=status, created_at=now,
        updated_at=now, pod_id=POD, attempts=attempts,
    )  # fmt: skip


def assignment(request_id: str, attempt: int, sim: RunningSimulator) -> Assignment:
    return Assignment(
        request_id=request_id, attempt=attempt, workflow_name="comfyui_image_qwen", inputs=INPUTS, pod_id=POD,
        pod_ip="127.0.0.1", comfyui_url=sim.url,
    )  # fmt: skip


async def store_record(js: JetStreamContext, rec: RequestRecord) -> None:
    kv = await js.key_value(REQUESTS_BUCKET.name)
    await kv.put(rec.id, runtime.encode(rec))


async def dispatch(js: JetStreamContext, a: Assignment) -> None:
    await js.publish(
        dispatch_subject(a.pod_id), runtime.encode(a), headers={"Nats-Msg-Id": f"{a.request_id}.dispatch.{a.attempt}"}
    )


async def wait_consumer_idle(js: JetStreamContext, timeout: float = 10) -> None:
    """Every assignment delivered and acknowledged (the work queue is empty), within `timeout`."""
    async with asyncio.timeout(timeout):
        while True:
            info = await js.consumer_info(DISPATCH_STREAM.name, EXECUTOR_CONSUMER.durable)
            stream = await js.stream_info(DISPATCH_STREAM.name)
            if info.num_pending == 0 and info.num_ack_pending == 0 and not stream.state.messages:
                return
            await asyncio.sleep(0.05)


async def comfyui_state(sim: RunningSimulator) -> tuple[dict[str, Any], dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sim.url}/history") as response:
            history = await response.json()
        async with http.get(f"{sim.url}/queue") as response:
            queue = await response.json()
    return history, queue


async def test_an_assignment_of_a_failed_request_never_reaches_comfyui(executor, js, sim, caplog):
    caplog.set_level(logging.INFO, logger="vibewave.executor")
    await store_record(js, record("req-failed", RequestStatus.FAILED, attempts=1))
    await dispatch(js, assignment("req-failed", 1, sim))
    await wait_consumer_idle(js)
    history, queue = await comfyui_state(sim)
    assert history == {}
    assert queue["queue_running"] == [] and queue["queue_pending"] == []
    info = await js.consumer_info(DISPATCH_STREAM.name, EXECUTOR_CONSUMER.durable)
    assert info.delivered.stream_seq == 1 and info.num_redelivered == 0, "acknowledged on its first delivery"
    assert "fenced: request is failed" in caplog.text


async def test_a_reassigned_attempt_is_fenced_and_the_current_one_runs(executor, js, sim, caplog):
    caplog.set_level(logging.INFO, logger="vibewave.executor")
    request_id = "req-moved"
    sub = await js.subscribe(
        request_subject(request_id, RequestEvent.ATTEMPT_SUCCEEDED), stream=REQUESTS_STREAM.name, ordered_consumer=True
    )
    await store_record(js, record(request_id, RequestStatus.ASSIGNED, attempts=2))
    await dispatch(js, assignment(request_id, 1, sim))  # the old attempt, e.g. redelivered late
    await dispatch(js, assignment(request_id, 2, sim))
    msg = await sub.next_msg(timeout=30)
    succeeded = runtime.decode(msg.data, AttemptSucceeded)
    assert succeeded.attempt == 2 and succeeded.result.files
    await wait_consumer_idle(js)
    history, _ = await comfyui_state(sim)
    assert set(history) == {prompt_id_for(request_id, 2)}, "only the current attempt reached ComfyUI"
    assert "fenced: reassigned to attempt 2 (this is attempt 1)" in caplog.text
    await sub.unsubscribe()
