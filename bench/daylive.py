"""The live cross-check of the studio-day simulation: a window of a day trace replayed through the real services.

`bench/daysim` simulates a whole studio day per fleet policy; this replays a window of the same trace (by default
the 3 busiest hours of the bursty trace) against the real api, scheduler, executor and pod-manager on the RunPod
emulator, compressed in time, once per `FLEET_POLICY`, and reports the same metrics so the two can be compared.

Clock factor K (`clock`, default 60): one real second stands for K seconds of the studio day. Everything with a
duration is divided by K — arrivals, the emulator's boot delays (create 30-120 s, resume 30-60 s, drawn per boot)
and ComfyUI steps (11.25 s per step), pod-manager's and the scheduler's timers, and the services' own assumed
durations (`VIBEWAVE_TIME_SCALE=K`) — and the emulator bills K seconds per real second. Measured real durations
are multiplied back by K. What cannot be compressed is the stack's own latency (dispatch, polling, HTTP,
process start in a pod's container): each real millisecond of it counts as K ms of the day, so at K=60 a run
takes a few emulated seconds longer than its steps, and a boot longer than its drawn delay (`run_s` and
`boot_overhead` in the result say by how much).

One step time cannot match every preset's catalogue midpoint; 11.25 s/step gives (steps x 11.25 s):
qwen fast 4 steps 45 s (midpoint 45), quality 8 steps 90 s (90), ultra 12 steps 135 s (210); wan preview 12 steps
135 s (120), standard 20 steps 225 s (420). Trace rows of the image-to-video workflow run as text-to-video
(`comfyui_video_wan22`: same model family and steps, no input image to upload).

Accounting: paid GPU time is each pod's time in desiredStatus RUNNING (RunPod bills from the create or resume
call until the stop or terminate), sampled from the emulator every `poll_s` real seconds and priced at the pod's
`costPerHr`; the emulator's own bill (`clientLifetimeSpend`, which adds container-disk storage) is reported
beside it. Busy GPU time is the sum of the requests' `gpu_seconds`. Billing is read `tail_s` emulated seconds
after the later of the window's end and the last request's end, so idle pods the policy keeps are paid for.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import nats

from bench.common import PROMPT, log
from bench.daysim import engine
from bench.daysim import traces as daysim_traces
from bench.stack import ROOT, Stack, free_port, wait_http, wait_until
from bench.stats import percentile
from vibewave.contracts.events import PODS_STREAM, PodEvent, PodStatus
from vibewave.runtime.broker import decode
from vibewave.runtime.pod_token import POD_TOKEN_KEY_ENV, new_key

DEFAULT_TRACE = ROOT / "bench" / "daysim" / "traces" / "bursty.jsonl"
POLICIES = ("demand", "serverless", "economic")
IDLE_TIMEOUT_S = {"demand": 300.0, "serverless": 5.0, "economic": 300.0}
WINDOW_S = 3 * 3600.0
STEP_S = 11.25
CREATE_BOOT_S = (30.0, 120.0)
RESUME_BOOT_S = (30.0, 60.0)
RESUME_FAILURE_RATE = 0.2
TERMINATE_TIMEOUT_S = 3600.0
PROBE_INTERVAL_S = 2.0
SYNC_INTERVAL_S = 15.0
DEMAND_INTERVAL_S = 1.0
BREAKER_COOLDOWN_S = 1800.0
# Real seconds, not divided by K: a pod's container starts processes in real time, and a probe of a pod on a
# busy 2-core machine can be late by a real second or two.
READY_TIMEOUT_REAL_S = 120.0
BOOT_TIMEOUT_REAL_S = 300.0
UNHEALTHY_TIMEOUT_REAL_S = 15.0
API_KEY = "daylive-key"
QWEN = "comfyui_image_qwen"
WAN = "comfyui_video_wan22"
WAN_WORKFLOWS = {WAN, "comfyui_video_wan22_i2v"}
FINISHED = {"completed", "failed", "cancelled"}
PODS_QUERY = "query { myself { clientLifetimeSpend pods { id desiredStatus costPerHr } } }"


@dataclass(frozen=True)
class TraceRequest:
    """One trace row: a request of `workflow` and `preset` arriving at second `t` of the day; `batch` names the
    burst it belongs to (None: a single)."""

    t: float
    workflow: str
    preset: str | None
    run_s: float
    video_s: float | None
    batch: str | None


def load_trace(path: Path) -> tuple[dict[str, Any], list[TraceRequest]]:
    """The header (first line) and the rows of a day trace, by arrival time."""
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    header: dict[str, Any] = json.loads(lines[0]) if lines else {}
    rows = [json.loads(line) for line in lines[1:]]
    if "t" in header and "workflow" in header:  # no header line after all
        rows, header = [header, *rows], {}
    requests = [
        TraceRequest(
            t=float(row["t"]),
            workflow=str(row["workflow"]),
            preset=row.get("preset"),
            run_s=float(row.get("run_s") or 0.0),
            video_s=None if row.get("video_s") is None else float(row["video_s"]),
            batch=None if row.get("batch") is None else str(row["batch"]),
        )
        for row in rows
    ]
    return header, sorted(requests, key=lambda r: r.t)


def busiest_window(requests: list[TraceRequest], length: float = WINDOW_S) -> tuple[float, float]:
    """The `length`-second window, starting at an arrival, holding the most GPU work (the rows' run_s)."""
    if not requests:
        return 0.0, length
    best, best_start, end, work = -1.0, requests[0].t, 0, 0.0
    for first in requests:
        while end < len(requests) and requests[end].t < first.t + length:
            work += requests[end].run_s
            end += 1
        if work > best:
            best, best_start = work, first.t
        work -= first.run_s
    return best_start, best_start + length


def live_run_s(workflow: str, preset: str | None) -> float:
    """What the live ComfyUI simulator spends on a preset's sampler steps (emulated seconds)."""
    steps = {
        (QWEN, "fast"): 4, (QWEN, "quality"): 8, (QWEN, "ultra"): 12, (QWEN, None): 4,
        (WAN, "preview"): 12, (WAN, "standard"): 20, (WAN, None): 20,
    }  # fmt: skip
    return steps[(WAN if workflow in WAN_WORKFLOWS else QWEN, preset)] * STEP_S


@dataclass
class PodWatch:
    """Samples the emulator's pods and bill; a pod's paid time is the span of samples that saw it RUNNING."""

    url: str
    poll_s: float
    first_spend: float | None = None
    last_spend: float = 0.0
    running_since: dict[str, float] = field(default_factory=dict)
    paid: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # pod id → paid real seconds
    paid_usd: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # at K=1
    price: dict[str, float] = field(default_factory=dict)
    last_poll: float = 0.0

    async def sample(self, session: aiohttp.ClientSession) -> None:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with session.post(f"{self.url}/graphql", json={"query": PODS_QUERY}, headers=headers) as response:
            body = await response.json()
        now = time.monotonic()
        me = body["data"]["myself"]
        spend = float(me["clientLifetimeSpend"])
        if self.first_spend is None:
            self.first_spend = spend
        self.last_spend = spend
        running = {p["id"]: float(p["costPerHr"] or 0.0) for p in me["pods"] if p["desiredStatus"] == "RUNNING"}
        half = (now - self.last_poll) / 2 if self.last_poll else 0.0
        for pod_id, price in running.items():
            self.price[pod_id] = price
            self.running_since.setdefault(pod_id, now - half)
        for pod_id in [p for p in self.running_since if p not in running]:
            self._close(pod_id, now - half)
        self.last_poll = now

    def _close(self, pod_id: str, at: float) -> None:
        seconds = max(0.0, at - self.running_since.pop(pod_id))
        self.paid[pod_id] += seconds
        self.paid_usd[pod_id] += seconds * self.price.get(pod_id, 0.0) / 3600.0

    def close_all(self) -> None:
        for pod_id in list(self.running_since):
            self._close(pod_id, self.last_poll)

    async def run(self, stop: asyncio.Event) -> None:
        async with aiohttp.ClientSession() as session:
            while not stop.is_set():
                await self.sample(session)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll_s)
            await self.sample(session)
        self.close_all()


async def pod_boots(nats_url: str) -> dict[str, list[float]]:
    """Real seconds from each create (a pod's first event) or resume (`stopped` → `starting`) to `ready`, from the pod
    events pod-manager published (their JetStream timestamps)."""
    nc = await nats.connect(nats_url)
    boots: dict[str, list[float]] = {"create": [], "resume": []}
    try:
        js = nc.jetstream()
        pending = (await js.stream_info(PODS_STREAM.name)).state.messages
        sub = await js.subscribe(PODS_STREAM.subjects[0], ordered_consumer=True)
        last: dict[str, PodStatus] = {}
        began: dict[str, tuple[str, float]] = {}
        for _ in range(pending):
            msg = await sub.next_msg(timeout=10)
            pod = decode(msg.data, PodEvent).pod
            at = msg.metadata.timestamp.timestamp()
            before = last.get(pod.id)
            if pod.status in (PodStatus.CREATING, PodStatus.STARTING) and before is None:
                began[pod.id] = ("create", at)
            elif pod.status == PodStatus.STARTING and before == PodStatus.STOPPED:
                began[pod.id] = ("resume", at)
            elif pod.status == PodStatus.READY and pod.id in began:
                kind, start = began.pop(pod.id)
                boots[kind].append(at - start)
            last[pod.id] = pod.status
        await sub.unsubscribe()
    finally:
        await nc.close()
    return boots


def emulator_argv(port: int, work: Path, clock: float, rng_seed: int) -> list[str]:
    k = clock
    return [
        sys.executable, "-m", "vibewave.runpod_emu", "--port", str(port), "--api-keys", API_KEY,
        "--work-dir", str(work), "--rng-seed", str(rng_seed), "--billing-speed", str(k), "--tick", "0.05",
        "--boot-delay", str(CREATE_BOOT_S[0] / k), "--boot-delay-max", str(CREATE_BOOT_S[1] / k),
        "--resume-delay", str(RESUME_BOOT_S[0] / k), "--resume-delay-max", str(RESUME_BOOT_S[1] / k),
        "--resume-failure-rate", str(RESUME_FAILURE_RATE), "--comfyui-step-time", str(STEP_S / k),
        "--comfyui-restart-delay", str(max(0.05, 5.0 / k)), "--balance", "100000",
    ]  # fmt: skip


def service_env(policy: str, clock: float, emu_port: int, max_pods: int) -> dict[str, str]:
    """What every service sees: the fleet policy and every timer divided by the clock factor."""
    k = clock
    return {
        "FLEET_POLICY": policy,
        "VIBEWAVE_TIME_SCALE": str(k),
        "MAX_PODS": str(max_pods),
        "MIN_WARM_PODS": "0",
        "POD_IDLE_TIMEOUT": str(IDLE_TIMEOUT_S[policy] / k),
        "POD_TERMINATE_TIMEOUT": str(TERMINATE_TIMEOUT_S / k),
        "POD_PROBE_INTERVAL": str(PROBE_INTERVAL_S / k),
        "POD_SYNC_INTERVAL": str(SYNC_INTERVAL_S / k),
        "SCHEDULER_DEMAND_INTERVAL": str(DEMAND_INTERVAL_S / k),
        "POD_BREAKER_COOLDOWN": str(BREAKER_COOLDOWN_S / k),
        "POD_READY_TIMEOUT": str(READY_TIMEOUT_REAL_S),
        "POD_BOOT_TIMEOUT": str(BOOT_TIMEOUT_REAL_S),
        "POD_UNHEALTHY_TIMEOUT": str(UNHEALTHY_TIMEOUT_REAL_S),
        "POD_WORKFLOWS": f"{QWEN},{WAN}",
        "POD_OPTIONAL_MODELS": "true",  # the ultra preset's distilled model is an optional file
        "RUNPOD_CONTAINER_DISK_GB": "150",  # both workflows' models (~70 GB with the optional ones) and ComfyUI
        "POD_PROVIDER": "runpod",
        "RUNPOD_API_BASE_URL": f"http://127.0.0.1:{emu_port}",
        "RUNPOD_PROXY_URL_TEMPLATE": f"http://127.0.0.1:{emu_port}/proxy/{{pod_id}}-{{port}}",
        # The sampler steps are divided by K through the emulator; the simulator's other nodes (decode, save) too.
        "VIBEWAVE_SIM_NODE_COST_SCALE": str(1.0 / k),
    }


async def submit(session: aiohttp.ClientSession, row: TraceRequest, index: int) -> str:
    """Post one trace row through the api as a client would; returns its request id."""
    preset = {"preset": row.preset} if row.preset else {}
    seed = 1000 + index
    if row.workflow in WAN_WORKFLOWS:
        body = {"workflow_name": WAN, "inputs": {"prompt": PROMPT, "seed": seed}, **preset}
        async with session.post("/api/runpod/workflows/queue", json=body) as response:
            response.raise_for_status()
            return str((await response.json())["id"])
    async with session.post("/api/qwen/generate-async", json={"prompt": PROMPT, "seed": seed, **preset}) as response:
        response.raise_for_status()
        return str((await response.json())["request_id"])


async def replay(
    trace_path: Path = DEFAULT_TRACE,
    policy: str = "demand",
    *,
    window: tuple[float, float] | None = None,
    clock: float = 60.0,
    max_pods: int = 5,
    tail_s: float = 300.0,
    poll_s: float = 0.05,
    rng_seed: int = 1,
    home: Path | None = None,
) -> dict[str, Any]:
    """Replay the trace's requests arriving in `window` (day seconds; default its busiest 3 hours) through the real
    services on the RunPod emulator under `policy`, at `clock` emulated seconds per real second."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}: use one of {', '.join(POLICIES)}")
    header, rows = load_trace(trace_path)
    start, end = window or busiest_window(rows)
    rows = [r for r in rows if start <= r.t < end]
    k = clock
    scratch = home or Path(tempfile.mkdtemp(prefix="vibewave-daylive-"))
    emu_port = free_port()
    pod_token_key = new_key()
    stack = Stack(scratch / policy, cluster=False, **service_env(policy, k, emu_port, max_pods))
    watch = PodWatch(f"http://127.0.0.1:{emu_port}", poll_s)
    stop_watch = asyncio.Event()
    watcher: asyncio.Task[None] | None = None
    records: dict[str, dict[str, Any]] = {}
    submitted: list[tuple[str, TraceRequest]] = []
    try:
        stack.start_nats()
        stack.spawn("runpod-emu", emulator_argv(emu_port, stack.home / "emu", k, rng_seed))
        await wait_http(f"http://127.0.0.1:{emu_port}/emulator/state", stack=stack)
        holders = {POD_TOKEN_KEY_ENV: pod_token_key}
        stack.start_service("scheduler")
        stack.start_service("pod-manager", RUNPOD_API_KEY=API_KEY, **holders)
        stack.start_service("executor", **holders)
        base = f"http://127.0.0.1:{stack.start_api()}"
        await wait_http(f"{base}/health", timeout=90, stack=stack)
        log(f"daylive {policy}: {len(rows)} trace rows in [{start:.0f}, {end:.0f}) s at clock {k:g}")
        watcher = asyncio.create_task(watch.run(stop_watch))
        async with aiohttp.ClientSession(base_url=base, timeout=aiohttp.ClientTimeout(total=30)) as session:
            t0 = time.monotonic()

            async def arrive(index: int, row: TraceRequest) -> None:
                await asyncio.sleep(max(0.0, t0 + (row.t - start) / k - time.monotonic()))
                submitted.append((await submit(session, row, index), row))

            await asyncio.gather(*(arrive(i, r) for i, r in enumerate(rows)))

            async def all_finished() -> bool:
                stack.check_alive()
                for request_id, _ in submitted:
                    if records.get(request_id, {}).get("status") in FINISHED:
                        continue
                    async with session.get(f"/api/runpod/workflows/status/{request_id}") as response:
                        records[request_id] = await response.json()
                return len(submitted) == len(rows) and all(r.get("status") in FINISHED for r in records.values())

            slack_s = 4 * 3600.0 / k + 60.0
            await wait_until(all_finished, slack_s, "every replayed request to finish", interval=0.5)
            finished_at = time.monotonic()
            window_end = t0 + (end - start) / k
            await asyncio.sleep(max(0.0, max(finished_at, window_end) + tail_s / k - time.monotonic()))
            measured_s = (time.monotonic() - t0) * k
        stop_watch.set()
        await watcher
        watcher = None
        emu_state = await wait_http(f"http://127.0.0.1:{emu_port}/emulator/state", stack=stack)
        boots = await pod_boots(stack.nats_url)
    finally:
        stop_watch.set()
        if watcher is not None:
            await asyncio.gather(watcher, return_exceptions=True)
        stack.close()
        if home is None:
            shutil.rmtree(scratch, ignore_errors=True)
    result = summary(policy, header, trace_path, (start, end), k, rows, submitted, records, watch, emu_state)
    result["boot_s"] = {kind: seconds_summary([b * k for b in values]) for kind, values in boots.items()}
    result["measured_s"] = round(measured_s, 1)
    return result


def summary(
    policy: str,
    header: dict[str, Any],
    trace_path: Path,
    window: tuple[float, float],
    k: float,
    rows: list[TraceRequest],
    submitted: list[tuple[str, TraceRequest]],
    records: dict[str, dict[str, Any]],
    watch: PodWatch,
    emu: dict[str, Any],
) -> dict[str, Any]:
    """The DES's metrics, in emulated seconds and dollars."""
    statuses = Counter(str(r.get("status")) for r in records.values())
    waits: list[float] = []
    runs: dict[str, list[float]] = defaultdict(list)
    busy_s = 0.0
    for request_id, row in submitted:
        record = records.get(request_id, {})
        timings = record.get("timings") or {}
        if timings:
            waits.append((timings["queued_ms"] + timings["boot_wait_ms"]) * k / 1000)
            runs[f"{WAN if row.workflow in WAN_WORKFLOWS else QWEN}:{row.preset}"].append(timings["run_ms"] * k / 1000)
        busy_s += float(record.get("gpu_seconds") or 0.0) * k
    paid_s = sum(watch.paid.values()) * k
    calls = emu.get("calls", {})
    resume_calls = int(calls.get("rest:podAction:start", 0)) + int(calls.get("podResume", 0))
    resumes = int(emu.get("resumes", 0))
    return {
        "policy": policy,
        "trace": str(trace_path),
        "trace_header": header,
        "window_s": list(window),
        "clock": k,
        "rows": len(rows),
        "requests": len(submitted),
        "statuses": dict(statuses),
        "wait_s": seconds_summary(waits),
        "run_s": {name: seconds_summary(values) for name, values in sorted(runs.items())},
        "live_run_s_steps": {f"{QWEN}:{p}": live_run_s(QWEN, p) for p in ("fast", "quality", "ultra")}
        | {f"{WAN}:{p}": live_run_s(WAN, p) for p in ("preview", "standard")},
        "pods_created": int(emu.get("podsCreated", 0)),
        "pods_resumed": resumes,
        "resume_failures": max(0, resume_calls - resumes),
        "pods_terminated": len(emu.get("terminatedPodIds", [])),
        "paid_gpu_hours": round(paid_s / 3600, 4),
        "paid_usd": round(sum(watch.paid_usd.values()) * k, 4),
        "billed_usd": round((watch.last_spend - (watch.first_spend or 0.0)), 4),
        "busy_gpu_hours": round(busy_s / 3600, 4),
        "paid_idle_fraction": round(1 - busy_s / paid_s, 4) if paid_s > 0 else None,
    }


def des_counterpart(live: dict[str, Any], *, boot_shift_s: float = 0.0) -> dict[str, Any]:
    """The DES (`bench/daysim`) on the same window and policy, with each preset's run time set to the mean the live
    run measured, billed up to the same cut (the live run's `measured_s` after the window's start).
    `boot_shift_s` moves both boot ranges up, e.g. by the live stack's boot overhead beyond the drawn delay."""
    trace = daysim_traces.load(Path(live["trace"]))
    start, end = live["window_s"]
    runs = {name: stats["mean"] for name, stats in live["run_s"].items() if stats.get("n")}
    requests = []
    for r in trace.requests:
        if start <= r.t < end:
            workflow = WAN if r.workflow in WAN_WORKFLOWS else r.workflow
            run_s = runs.get(f"{workflow}:{r.preset}", live_run_s(r.workflow, r.preset))
            requests.append(daysim_traces.Request(r.t, workflow, r.preset, run_s, r.video_s, r.batch))
    window = daysim_traces.Trace(f"{trace.name}-window", trace.seed, trace.description, tuple(requests))
    variant = next(v for v in engine.variants() if v.name == live["policy"])
    model = engine.Model(
        create_boot_s=(engine.CREATE_BOOT_S[0] + boot_shift_s, engine.CREATE_BOOT_S[1] + boot_shift_s),
        resume_boot_s=(engine.RESUME_BOOT_S[0] + boot_shift_s, engine.RESUME_BOOT_S[1] + boot_shift_s),
    )
    result = engine.simulate(window, variant, model)
    cut = start + live["measured_s"]
    at_cut = [sample for sample in result.samples if sample.t <= cut]
    cost_at_cut = at_cut[-1].cost if at_cut else 0.0
    return {
        "policy": variant.name,
        "gpu_type": variant.gpu_type,
        "boot_shift_s": boot_shift_s,
        "requests": len(requests),
        "wait_s": seconds_summary(list(result.waits)),
        "pods_created": len(result.pods),
        "pods_resumed": result.resumes,
        "resume_failures": result.failed_resumes,
        "usd_at_cut": round(cost_at_cut, 4),
        "paid_gpu_hours_at_cut": round(cost_at_cut / variant.price_per_hr, 4),
        "busy_gpu_hours": round(result.busy_s / 3600, 4),
        "day_usd": round(result.cost, 4),
        "day_paid_gpu_hours": round(result.running_s / 3600, 4),
        "paid_idle_fraction_at_cut": round(1 - result.busy_s / 3600 / (cost_at_cut / variant.price_per_hr), 4)
        if cost_at_cut > 0
        else None,
    }


def seconds_summary(values: list[float]) -> dict[str, float]:
    """n, mean, p50, p90, p95 and max, in (emulated) seconds."""
    ordered = sorted(values)
    if not ordered:
        return {"n": 0}
    out = {"n": len(ordered), "mean": sum(ordered) / len(ordered), "max": ordered[-1]}
    out |= {f"p{q}": percentile(ordered, q) for q in (50, 90, 95)}
    return {key: round(value, 1) for key, value in out.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.daylive", description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=DEFAULT_TRACE)
    parser.add_argument("--policy", choices=POLICIES, default="demand")
    parser.add_argument("--clock", type=float, default=60.0, help="emulated seconds per real second")
    parser.add_argument("--start", type=float, help="window start, second of the day (default: busiest 3 h)")
    parser.add_argument("--hours", type=float, default=WINDOW_S / 3600, help="window length")
    parser.add_argument("--max-pods", type=int, default=5)
    parser.add_argument("--home", type=Path, help="keep the stack's logs here")
    parser.add_argument("--des", action="store_true", help="add the DES's numbers for the same window and policy")
    args = parser.parse_args(argv)
    window = None if args.start is None else (args.start, args.start + args.hours * 3600)
    if window is None and args.hours != WINDOW_S / 3600:
        window = busiest_window(load_trace(args.trace)[1], args.hours * 3600)
    result = asyncio.run(
        replay(args.trace, args.policy, window=window, clock=args.clock, max_pods=args.max_pods, home=args.home)
    )
    if args.des:
        overhead = result["boot_s"]["create"].get("mean", 0.0) - sum(CREATE_BOOT_S) / 2 if result["boot_s"] else 0.0
        result["des"] = des_counterpart(result)
        result["des_with_live_boots"] = des_counterpart(result, boot_shift_s=max(0.0, overhead))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
