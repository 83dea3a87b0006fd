"""The prompt worker: one prompt at a time, frames in the order of PROTOCOL.md §3.5.

Mirrors ComfyUI's PromptExecutor.execute: execution_start, execution_cached, then per node
progress_state(running) + executing, the node body (progress per sampler step), executed for nodes with
UI output, progress_state(finished); a cached output node only replays its old `executed`. The interrupt
flag is reset when a prompt starts and checked before each node and at every sampler step; faults from
the control route are injected at the same points. Model-free nodes take the time the real node would
(costs.py, scaled by `node_cost_scale`) and cannot be interrupted while they run, as on the real server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vibewave.comfyui_sim import costs, nodes
from vibewave.comfyui_sim.catalogue import Catalogue
from vibewave.comfyui_sim.config import DEFAULT_OOM_MESSAGE, OOM_TIPS, Faults, NodeFault, SimConfig
from vibewave.comfyui_sim.graph import CacheEntry, ExecutionList, OutputCache, signatures
from vibewave.comfyui_sim.hub import Hub
from vibewave.comfyui_sim.state import PromptQueue, QueueItem
from vibewave.comfyui_sim.validation import DYNAMIC_COMBO, full_type_name, is_link
from vibewave.comfyui_sim.values import format_value
from vibewave.comfyui_sim.versions import dialect

log = logging.getLogger("vibewave.comfyui_sim")

MODEL_LOADERS = {"UNETLoader", "CLIPLoader", "VAELoader", "LoraLoaderModelOnly"}
# Nodes that run model layers (comfy.ops checks the interrupt flag on every call): an interrupt stops them
# within their `node_time`. Every other node finishes its work first.
MODEL_BASED = {"KSampler", "KSamplerAdvanced", "VAEDecode", "VAEEncode", "CLIPTextEncode"}


class Interrupted(Exception):
    """ComfyUI's InterruptProcessingException."""


class InjectedFault(Exception):
    """An execution error switched on through the fault settings; reported under its configured type."""

    def __init__(self, exception_type: str, message: str, tips: str = "") -> None:
        super().__init__(message)
        self.exception_type = exception_type
        self.tips = tips


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class PromptRun:
    """Everything that belongs to the execution of one prompt."""

    item: QueueItem
    hub: Hub
    messages: list[list[Any]] = field(default_factory=list)
    progress: dict[str, dict[str, Any]] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)
    ui_outputs: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    values: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    success: bool = True

    @property
    def prompt_id(self) -> str:
        return self.item.prompt_id

    @property
    def client_id(self) -> str | None:
        cid = self.item.extra_data.get("client_id")
        return cid if isinstance(cid, str) else None

    def add_message(self, event: str, data: dict[str, Any], broadcast: bool) -> None:
        data = {**data, "timestamp": now_ms()}
        self.messages.append([event, data])
        if self.client_id is not None or broadcast:
            self.hub.send(event, data, self.client_id)

    def _send_progress_state(self) -> None:
        nodes_state = {
            node_id: {
                "value": state["value"],
                "max": state["max"],
                "state": state["state"],
                "node_id": node_id,
                "prompt_id": self.prompt_id,
                "display_node_id": node_id,
                "parent_node_id": None,
                "real_node_id": node_id,
            }
            for node_id, state in self.progress.items()
        }
        self.hub.send("progress_state", {"prompt_id": self.prompt_id, "nodes": nodes_state}, self.client_id)

    def progress_start(self, node_id: str) -> None:
        self.progress[node_id] = {"value": 0.0, "max": 1.0, "state": "running"}
        self._send_progress_state()

    def progress_update(self, node_id: str, value: int, total: int) -> None:
        self.progress[node_id] = {"value": value, "max": total, "state": "running"}
        self._send_progress_state()

    def progress_finish(self, node_id: str) -> None:
        entry = self.progress.setdefault(node_id, {"value": 0, "max": 1, "state": "pending"})
        entry["state"] = "finished"
        entry["value"] = entry["max"]
        self._send_progress_state()

    def node_meta(self, node_id: str) -> dict[str, Any]:
        return {"node_id": node_id, "display_node": node_id, "parent_node": None, "real_node_id": node_id}


class NodeRun:
    """The NodeContext handed to node functions: progress, faults, interrupt checks, file locations."""

    def __init__(self, worker: Worker, run: PromptRun, node_id: str, class_type: str, cost: float) -> None:
        self.worker = worker
        self.run = run
        self.node_id = node_id
        self.class_type = class_type
        self.prompt_id = run.prompt_id
        self.prompt = run.item.prompt
        self.extra_data = run.item.extra_data
        self.output_dir: Path = worker.config.out
        self.temp_dir: Path = worker.config.tmp
        self.input_dir: Path = worker.config.inp
        self._last_sent: float | None = None
        self._last_value = 0
        self.cost = cost
        self.started = time.monotonic()

    def add_cost(self, seconds: float) -> None:
        """More real-node time, known only once the node has looked at its input (e.g. a file's size)."""
        self.cost += seconds

    async def pace(self, fraction: float = 1.0) -> None:
        """Wait until `fraction` of the node's cost (times node_cost_scale) has passed since it started.

        A plain sleep: like a torch or Pillow call on the real server, it does not notice an interrupt; nodes
        with a progress bar are interruptible at their progress updates instead."""
        target = self.started + self.cost * self.worker.faults.node_cost_scale * fraction
        delay = target - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    async def progress(self, value: int, total: int, preview: bytes | None = None) -> None:
        """comfy.utils.ProgressBar.update_absolute + the server hook, with 0.33's throttling."""
        value = min(value, total)
        now = time.perf_counter()
        throttle = self.worker.faults.progress_throttle
        final = value >= total
        if (
            self._last_sent is not None
            and preview is None
            and not final
            and (now - self._last_sent < throttle or value - self._last_value < 0.005 * total)
        ):
            return
        self._last_sent, self._last_value = now, value
        self.worker.check_interrupt()
        hub, sid = self.worker.hub, self.run.client_id
        self.run.progress_update(self.node_id, value, total)
        metadata = {
            "node_id": self.node_id,
            "prompt_id": self.prompt_id,
            "display_node_id": self.node_id,
            "parent_node_id": None,
            "real_node_id": self.node_id,
            "image_type": "image/png",
        }
        if preview is not None:
            hub.send_preview(preview, metadata, sid, with_metadata=True)
        hub.send("progress", {"value": value, "max": total, "prompt_id": self.prompt_id, "node": self.node_id}, sid)
        if preview is not None:
            hub.send_preview(preview, metadata, sid, with_metadata=False)

    async def sampler_step(self, step: int, total: int) -> None:
        """One denoising step: takes step_time, can be interrupted or faulted, then reports progress."""
        await self.worker.sleep_interruptible(self.worker.faults.step_time)
        self.worker.check_interrupt()
        self.worker.check_faults(self.node_id, self.class_type, step)
        await self.progress(step, total)

    async def send_text(self, text: str) -> None:
        self.worker.hub.send_text(self.node_id, text)

    async def run_blocking(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.to_thread(fn)


class Worker:
    def __init__(
        self,
        config: SimConfig,
        catalogue: Catalogue,
        queue: PromptQueue,
        hub: Hub,
        exit_process: Callable[[int], None] = os._exit,
    ) -> None:
        self.config = config
        self.faults: Faults = config.faults
        self.catalogue = catalogue
        self.queue = queue
        self.hub = hub
        self.cache = OutputCache(config.cache_size)
        self.dialect = dialect(config.comfyui_version)
        self.exit_process = exit_process
        self.client_id: str | None = None
        self.last_node_id: str | None = None
        self._interrupt = asyncio.Event()

    # --- control ---------------------------------------------------------------------------------

    def interrupt(self, prompt_id: str | None = None) -> None:
        if prompt_id:
            if prompt_id in self.queue.running:
                log.info("Interrupting prompt %s", prompt_id)
                self._interrupt.set()
            else:
                log.info("Prompt %s is not currently running, skipping interrupt", prompt_id)
            return
        log.info("Global interrupt (no prompt_id specified)")
        self._interrupt.set()

    def check_interrupt(self) -> None:
        if self._interrupt.is_set():
            raise Interrupted("Processing interrupted")

    async def sleep_interruptible(self, seconds: float) -> None:
        if seconds <= 0:
            return
        try:
            await asyncio.wait_for(self._interrupt.wait(), timeout=seconds)
        except TimeoutError:
            return

    def check_faults(self, node_id: str, class_type: str, step: int | None) -> None:
        """Raise or exit if a configured fault targets this node (and this step, for samplers)."""
        for kind in ("crash", "oom", "execution_error"):
            fault: NodeFault | None = getattr(self.faults, kind)
            if fault is None or not fault.matches(node_id, class_type) or fault.step != step:
                continue
            fault.consume()
            if kind == "crash":
                log.error("simulated crash in node %s (%s), exiting with %s", node_id, class_type, fault.exit_code)
                logging.shutdown()
                self.exit_process(fault.exit_code)
                return
            if kind == "oom":
                raise InjectedFault(
                    fault.exception_type or "torch.OutOfMemoryError",
                    fault.message or DEFAULT_OOM_MESSAGE,
                    OOM_TIPS,
                )
            raise InjectedFault(
                fault.exception_type or "RuntimeError", fault.message or "simulated execution error (vibewave)"
            )

    # --- the loop ---------------------------------------------------------------------------------

    async def run_forever(self) -> None:
        while True:
            item = await self.queue.get()
            try:
                await self.execute(item)
            except Exception:
                log.exception("simulator worker failed on prompt %s", item.prompt_id)
                if item.prompt_id in self.queue.running:
                    status = {"status_str": "error", "completed": False, "messages": []}
                    self.queue.task_done(item.prompt_id, {"outputs": {}, "meta": {}}, status)

    async def execute(self, item: QueueItem) -> None:
        prompt = item.prompt
        run = PromptRun(item, self.hub)
        self.client_id = run.client_id
        self._interrupt.clear()
        run.add_message("execution_start", {"prompt_id": item.prompt_id}, broadcast=False)

        def changed(node_id: str) -> str | None:
            node = prompt[node_id]
            return nodes.is_changed_token(node["class_type"], node["inputs"], self.config.inp)

        sigs = signatures(prompt, changed, self.catalogue.takes_unique_id)
        if self.dialect.classic_cache:
            self.cache.retain(set(sigs.values()))
        cached: dict[str, CacheEntry] = {}
        for nid in prompt:
            entry = self.cache.get(sigs[nid])
            if entry is not None:
                cached[nid] = entry
        run.add_message(
            "execution_cached",
            {"nodes": [nid for nid in prompt if nid in cached], "prompt_id": item.prompt_id},
            broadcast=False,
        )
        order = ExecutionList(
            prompt, lambda n: self.catalogue.is_output(prompt[n]["class_type"]), lambda n: n in cached
        )
        for output in item.outputs:
            order.add_node(output)
        while not order.is_empty():
            node_id = order.stage()
            if not await self.execute_node(run, node_id, sigs[node_id], cached):
                run.success = False
                break
            order.complete(node_id)
        else:
            run.add_message("execution_success", {"prompt_id": item.prompt_id}, broadcast=False)

        self.last_node_id = None
        status: dict[str, Any] = {
            "status_str": "success" if run.success else "error",
            "completed": run.success,
            "messages": run.messages,
        }
        self.queue.task_done(item.prompt_id, {"outputs": run.ui_outputs, "meta": run.meta}, status)
        if run.client_id is not None:
            self.hub.send("executing", {"node": None, "prompt_id": item.prompt_id}, run.client_id)

    def _input(self, run: PromptRun, value: Any, cached: dict[str, CacheEntry]) -> Any:
        if not is_link(value):
            return value
        source, slot = value
        outputs = run.values[source] if source in run.values else cached[source][0]
        return outputs[slot]

    def _node_kwargs(self, run: PromptRun, node_id: str, cached: dict[str, CacheEntry]) -> dict[str, Any]:
        node = run.item.prompt[node_id]
        specs = self.catalogue.inputs(node["class_type"])
        declared = {s.name for s in specs}
        dynamic = tuple(f"{s.name}." for s in specs if s.type == DYNAMIC_COMBO)
        return {
            name: self._input(run, value, cached)
            for name, value in node["inputs"].items()
            if name in declared or (dynamic and name.startswith(dynamic))
        }

    async def execute_node(self, run: PromptRun, node_id: str, signature: str, cached: dict[str, CacheEntry]) -> bool:
        class_type = run.item.prompt[node_id]["class_type"]
        sid = run.client_id
        if node_id in cached:
            outputs, ui = cached[node_id]
            if ui is not None:
                if sid is not None:
                    self.hub.send(
                        "executed",
                        {"node": node_id, "display_node": node_id, "output": ui, "prompt_id": run.prompt_id},
                        sid,
                    )
                run.ui_outputs[node_id] = ui
                run.meta[node_id] = run.node_meta(node_id)
            run.progress_finish(node_id)
            run.values[node_id] = outputs
            run.executed.append(node_id)
            return True

        run.progress_start(node_id)
        if sid is not None:
            self.last_node_id = node_id
            self.hub.send("executing", {"node": node_id, "display_node": node_id, "prompt_id": run.prompt_id}, sid)
        kwargs: dict[str, Any] = {}
        try:
            kwargs = self._node_kwargs(run, node_id, cached)
            self.check_interrupt()
            self.check_faults(node_id, class_type, None)
            delay = self.faults.node_time + (self.faults.load_time if class_type in MODEL_LOADERS else 0.0)
            if class_type in MODEL_BASED:
                # Model inference checks the interrupt flag on every layer call (PROTOCOL.md §5.4).
                await self.sleep_interruptible(delay)
                self.check_interrupt()
            elif delay > 0:
                # Anything else runs to the end; the interrupt then hits before the next node (scenario 10).
                await asyncio.sleep(delay)
            ctx = NodeRun(self, run, node_id, class_type, costs.node_cost(class_type, kwargs))
            outputs, ui = await nodes.NODE_FUNCTIONS[class_type](ctx, **kwargs)
            await ctx.pace()
        except Interrupted:
            run.add_message(
                "execution_interrupted",
                {
                    "prompt_id": run.prompt_id,
                    "node_id": node_id,
                    "node_type": class_type,
                    "executed": list(run.executed),
                },
                broadcast=True,
            )
            return False
        except Exception as ex:
            typ, _, tb = sys.exc_info()
            assert typ is not None
            tips = ""
            if isinstance(ex, InjectedFault):
                exception_type, tips = ex.exception_type, ex.tips
            else:
                exception_type = full_type_name(typ)
            log.error("!!! Exception during processing !!! %s", ex)
            run.add_message(
                "execution_error",
                {
                    "prompt_id": run.prompt_id,
                    "node_id": node_id,
                    "node_type": class_type,
                    "executed": list(run.executed),
                    "exception_message": f"{ex}\n{tips}",
                    "exception_type": exception_type,
                    "traceback": traceback.format_tb(tb),
                    "current_inputs": {k: [format_value(v)] for k, v in kwargs.items()},
                    "current_outputs": list(run.item.prompt),
                },
                broadcast=False,
            )
            return False

        self.cache.put(signature, outputs, ui)
        run.values[node_id] = outputs
        if ui:
            run.ui_outputs[node_id] = ui
            run.meta[node_id] = run.node_meta(node_id)
            if sid is not None:
                self.hub.send(
                    "executed",
                    {"node": node_id, "display_node": node_id, "output": ui, "prompt_id": run.prompt_id},
                    sid,
                )
        run.progress_finish(node_id)
        run.executed.append(node_id)
        return True
