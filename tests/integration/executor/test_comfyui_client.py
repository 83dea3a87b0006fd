"""The executor's ComfyUI client against the ComfyUI simulator, scenario by scenario (the transcripts'
scenarios: prompt with progress, cached rerun, validation error, execution error, interrupt, queue
delete, reconnect), plus the faults a pod can have: out of memory, restart mid-run, unreachable, timeout."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.proxy import CuttableProxy
from vibewave.comfyui_sim.app import RunningSimulator, serve
from vibewave.comfyui_sim.config import Faults, NodeFault, SimConfig
from vibewave.contracts.events import FailureKind
from vibewave.contracts.workflows import load_catalog
from vibewave.executor.comfyui import (
    Cancelled,
    ComfyUIClient,
    ExecutionTimeout,
    PodFault,
    Progress,
    WorkflowError,
)

pytestmark = pytest.mark.integration

QWEN = load_catalog()["comfyui_image_qwen"]


def qwen_graph(seed: int = 1, steps: int = 4, width: int = 256, height: int = 256) -> dict[str, Any]:
    return QWEN.render(QWEN.resolve_inputs({"prompt": "a lake", "seed": seed, "steps": steps, "width": width,
                                            "height": height}))  # fmt: skip


def blocker_graph(seed: int) -> dict[str, Any]:
    """A long Qwen run (many steps) that keeps the simulator's single worker busy."""
    return qwen_graph(seed=seed, steps=50)


class Recorder:
    def __init__(self) -> None:
        self.started = 0
        self.started_event = asyncio.Event()
        self.progress: list[Progress] = []
        self.first_progress = asyncio.Event()

    async def on_started(self) -> None:
        self.started += 1
        self.started_event.set()

    async def on_progress(self, progress: Progress) -> None:
        self.progress.append(progress)
        if progress.value > 0:
            self.first_progress.set()


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[RunningSimulator]:
    running = await serve(SimConfig(port=0, base_dir=tmp_path, models_present=True, faults=Faults(step_time=0.01)))
    yield running
    await running.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


async def run(client: ComfyUIClient, graph: dict[str, Any], recorder: Recorder, **kw: Any) -> Any:
    return await client.run(
        graph, str(uuid.uuid4()), on_started=recorder.on_started, on_progress=recorder.on_progress,
        timeout=kw.pop("timeout", 30), **kw,
    )  # fmt: skip


async def test_prompt_runs_with_progress_and_its_png_downloads(sim, session):
    client, recorder = ComfyUIClient(sim.url, session), Recorder()
    refs = await run(client, qwen_graph(steps=4, width=320, height=256), recorder)
    assert recorder.started == 1
    assert [r.node_id for r in refs] == ["60"]
    data, content_type = await client.download(refs[0])
    assert content_type == "image/png" and data[:8] == b"\x89PNG\r\n\x1a\n"
    steps = [(p.value, p.max) for p in recorder.progress if p.node == "3" and p.max]
    assert steps[-1] == (4, 4)
    percents = [p.percent for p in recorder.progress]
    assert percents == sorted(percents), "overall progress never goes back"
    assert recorder.progress[-1].final and recorder.progress[-1].percent == 100.0


async def test_cached_rerun_returns_the_earlier_outputs(sim, session):
    client = ComfyUIClient(sim.url, session)
    first = await run(client, qwen_graph(seed=7), Recorder())
    again = Recorder()
    second = await run(client, qwen_graph(seed=7), again)
    assert [r.filename for r in second] == [r.filename for r in first]
    assert again.progress[-1].percent == 100.0


async def test_rejected_workflow_is_a_workflow_error_naming_node_and_reason(sim, session):
    graph = qwen_graph()
    graph["58"]["inputs"]["width"] = 99999
    with pytest.raises(WorkflowError) as info:
        await run(ComfyUIClient(sim.url, session), graph, Recorder())
    assert info.value.kind == FailureKind.WORKFLOW
    assert "node 58 (EmptySD3LatentImage)" in str(info.value) and "bigger than max" in str(info.value)


async def test_execution_error_names_node_and_exception(sim, session):
    sim.simulator.faults.execution_error = NodeFault(node="KSampler", step=2, message="boom")
    with pytest.raises(WorkflowError) as info:
        await run(ComfyUIClient(sim.url, session), qwen_graph(), Recorder())
    message = str(info.value)
    assert message.startswith("execution error in node 3 (KSampler)") and "boom" in message


async def test_out_of_memory_is_recognisable(sim, session):
    sim.simulator.faults.oom = NodeFault(node="VAEDecode")
    with pytest.raises(WorkflowError) as info:
        await run(ComfyUIClient(sim.url, session), qwen_graph(), Recorder())
    assert str(info.value).startswith("out of memory in node 8 (VAEDecode): torch.OutOfMemoryError")


async def test_cancel_of_a_running_prompt_interrupts_only_that_prompt(sim, session):
    sim.simulator.faults.step_time = 0.05
    client, recorder, cancel = ComfyUIClient(sim.url, session), Recorder(), asyncio.Event()
    task = asyncio.create_task(run(client, qwen_graph(steps=40), recorder, cancel=cancel))
    await asyncio.wait_for(recorder.first_progress.wait(), 10)
    cancel.set()
    with pytest.raises(Cancelled) as info:
        await task
    assert info.value.kind == FailureKind.CANCELLED
    history = await (await session.get(f"{sim.url}/history")).json()
    (entry,) = history.values()
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"


async def test_cancel_of_a_queued_prompt_deletes_it_from_the_queue(sim, session):
    sim.simulator.faults.step_time = 0.05
    client = ComfyUIClient(sim.url, session)
    blocker_id = str(uuid.uuid4())
    await client.submit(blocker_graph(seed=99), uuid.uuid4().hex, blocker_id)
    recorder, cancel = Recorder(), asyncio.Event()
    prompt_id = str(uuid.uuid4())
    task = asyncio.create_task(
        client.run(qwen_graph(seed=5), prompt_id, on_started=recorder.on_started, on_progress=recorder.on_progress,
                   timeout=30, cancel=cancel)
    )  # fmt: skip
    await asyncio.wait_for(recorder.started_event.wait(), 10)
    cancel.set()
    with pytest.raises(Cancelled, match="deleted from its queue"):
        await task
    queue = await (await session.get(f"{sim.url}/queue")).json()
    assert prompt_id not in [item[1] for item in queue["queue_pending"]]
    assert [item[1] for item in queue["queue_running"]] == [blocker_id], "the other client's prompt runs on"
    await client.stop(blocker_id)


async def test_a_dropped_socket_is_reopened_and_the_result_kept(sim, session):
    sim.simulator.faults.step_time = 0.05
    proxy = CuttableProxy("127.0.0.1", sim.port)
    client, recorder = ComfyUIClient(await proxy.start(), session), Recorder()
    try:
        task = asyncio.create_task(run(client, qwen_graph(steps=20), recorder))
        await asyncio.wait_for(recorder.first_progress.wait(), 10)
        assert proxy.cut() >= 1
        refs = await task
    finally:
        await proxy.close()
    assert [r.node_id for r in refs] == ["60"]
    assert max(p.value for p in recorder.progress if p.node == "3") == 20, "frames resumed after the reconnect"


async def test_comfyui_restart_mid_run_is_a_pod_fault(tmp_path, session):
    running = await serve(
        SimConfig(port=0, base_dir=tmp_path / "a", models_present=True, faults=Faults(step_time=0.05))
    )
    port, recorder = running.port, Recorder()
    client = ComfyUIClient(running.url, session)
    task = asyncio.create_task(run(client, qwen_graph(steps=40), recorder))
    await asyncio.wait_for(recorder.first_progress.wait(), 10)
    await running.close()
    restarted = await serve(
        SimConfig(port=port, base_dir=tmp_path / "b", models_present=True, faults=Faults(step_time=0.05))
    )
    try:
        with pytest.raises(PodFault) as info:
            await task
    finally:
        await restarted.close()
    assert info.value.kind == FailureKind.POD_FAULT


async def test_unreachable_comfyui_is_a_pod_fault(session):
    with pytest.raises(PodFault, match="unreachable"):
        await run(ComfyUIClient("http://127.0.0.1:9", session), qwen_graph(), Recorder())


async def test_execution_timeout_interrupts_the_prompt(sim, session):
    sim.simulator.faults.step_time = 0.2
    client = ComfyUIClient(sim.url, session)
    async with session.ws_connect(f"{sim.url}/ws", params={"clientId": "observer"}) as observer:
        with pytest.raises(ExecutionTimeout) as info:
            await run(client, qwen_graph(steps=40), Recorder(), timeout=1.0)
        assert info.value.kind == FailureKind.TIMEOUT
        busy = False
        async with asyncio.timeout(10):  # `status` is broadcast to every socket when the queue changes
            async for frame in observer:
                message = frame.json()
                if message["type"] == "status":
                    remaining = message["data"]["status"]["exec_info"]["queue_remaining"]
                    if busy and remaining == 0:
                        break
                    busy = busy or remaining > 0
    history = await (await session.get(f"{sim.url}/history")).json()
    (entry,) = history.values()
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"
