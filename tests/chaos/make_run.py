"""Chaos for `make run`, run by hand (not part of `make test`):

    python -m tests.chaos.make_run --scenario pod-manager|process-group|nats [--runs 2] [--burst 200]

Each run: a fresh home and free ports, `make run` in its own session (local provider, MAX_PODS=5), a burst
of N `POST /api/qwen/generate-async` with Idempotency-Keys from 8 clients that retry on transport errors
and 5xx, and once 40% are accepted, the fault:

- `pod-manager`: SIGKILL the pod-manager process (the supervisor restarts it; its pods die with it);
- `process-group`: `kill -9 -- -<pgid>` of make run, check that no process of the run is left, then
  start `make run` again on the same home and ports;
- `nats`: SIGKILL the nats-server child (the supervisor restarts it on the same port and store).

Then it waits (bounded) until every accepted request is terminal, stops the stack with Ctrl-C and prints
what it counted: accepted, completed, failed (with their errors), ran twice (successful prompts per
request in every reachable pod's ComfyUI `/history`, and the pods' output files that carry the request's
prompt, so pods that died are counted too), orphan processes, time to recover. Exit status 1 if any
request was not accepted, failed, did not end, ran twice, or an orphan remained.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from uuid import NAMESPACE_URL, uuid4, uuid5

import httpx

from tests.chaos.harness import MakeRun, Ports, kill_all, processes_of
from tests.support.requests import read_bucket
from vibewave.contracts.events import PODS_BUCKET, REQUESTS_BUCKET, PodRecord, RequestRecord
from vibewave.runtime.broker import decode

SCENARIOS = ("pod-manager", "process-group", "nats")
CLIENTS = 8
FAULT_AT = 0.4  # share of the burst accepted before the fault
ACCEPT_BOUND = 180.0  # seconds a client keeps retrying one request
END_BOUND = 300.0  # seconds for every accepted request to be terminal
RECOVER_BOUND = 60.0
ORPHAN_BOUND = 30.0  # seconds for a killed run's processes to go
MAX_ATTEMPTS = 6  # prompt ids are counted for attempts 1..MAX_ATTEMPTS


@dataclass
class RunReport:
    number: int
    home: Path
    ports: Ports
    accepted: dict[int, str] = field(default_factory=dict)  # burst index → request id
    not_accepted: dict[int, str] = field(default_factory=dict)  # burst index → last answer
    records: dict[str, RequestRecord] = field(default_factory=dict)
    fault: str = ""
    recovered_s: float | None = None
    ended_s: float | None = None
    runs: Counter[str] = field(default_factory=Counter)  # request id → successful runs seen
    orphans: dict[int, str] = field(default_factory=dict)
    stop_s: float | None = None
    tracebacks: int = 0

    @property
    def failed(self) -> dict[str, str]:
        return {
            rid: str(r.error) for rid, r in self.records.items() if str(r.status) != "completed" and r.status.terminal
        }

    @property
    def not_terminal(self) -> list[str]:
        return [
            rid for rid in self.accepted.values() if rid not in self.records or not self.records[rid].status.terminal
        ]

    @property
    def ran_twice(self) -> dict[str, int]:
        return {rid: n for rid, n in self.runs.items() if n > 1}

    @property
    def passed(self) -> bool:
        return not (self.not_accepted or self.failed or self.not_terminal or self.ran_twice or self.orphans)


def submit_until_accepted(base_url: str, tag: str, index: int) -> tuple[str | None, str]:
    """(request id, "") once accepted; (None, last answer) if a 4xx came or the bound passed."""
    body = {"prompt": f"chaos-{tag}-{index:04d}", "seed": index, "width": 256, "height": 256}
    headers = {"Idempotency-Key": f"chaos-{tag}-{index}"}
    deadline = time.monotonic() + ACCEPT_BOUND
    last = ""
    with httpx.Client(base_url=base_url, timeout=15) as client:
        while time.monotonic() < deadline:
            try:
                response = client.post("/api/qwen/generate-async", json=body, headers=headers)
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 202:
                    return response.json()["request_id"], ""
                last = f"{response.status_code} {response.text[:200]}"
                if response.status_code < 500 and response.status_code != 429:
                    return None, last
            time.sleep(0.2)
    return None, f"not accepted within {ACCEPT_BOUND:.0f}s; last: {last}"


def records_of(run: MakeRun, ids: set[str]) -> dict[str, RequestRecord]:
    try:
        values = asyncio.run(read_bucket(run.nats_url, REQUESTS_BUCKET.name))
    except Exception:
        return {}
    return {r.id: r for r in (decode(v, RequestRecord) for v in values if v) if r.id in ids}


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.2) -> bool:
    """Poll `predicate` until it is truthy (True) or `timeout` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def count_runs(run: MakeRun, report: RunReport, tag: str) -> None:
    """Successful runs per request: ComfyUI histories of the pods still up, and the output files every local
    pod left in `<home>/pods/<pod>/` (their PNG text carries the prompt); the larger count per request."""
    by_prompt_id = {
        str(uuid5(NAMESPACE_URL, f"vibewave:{rid}:{attempt}")): rid
        for rid in report.accepted.values()
        for attempt in range(1, MAX_ATTEMPTS + 1)
    }
    in_history: Counter[str] = Counter()
    try:
        pods = [decode(v, PodRecord) for v in asyncio.run(read_bucket(run.nats_url, PODS_BUCKET.name)) if v]
    except Exception:
        pods = []
    for pod in pods:
        if not pod.comfyui_url:
            continue
        try:
            history = httpx.get(f"{pod.comfyui_url}/history", timeout=5).json()
        except (httpx.HTTPError, ValueError):
            continue  # a pod that is gone: its files are counted below
        for prompt_id, entry in history.items():
            if prompt_id in by_prompt_id and entry.get("status", {}).get("status_str") == "success":
                in_history[by_prompt_id[prompt_id]] += 1
    marker = re.compile(rf"chaos-{re.escape(tag)}-(\d{{4}})".encode())
    in_files: Counter[str] = Counter()
    for path in (report.home / "pods").glob("*/**/*"):
        if path.is_file():
            for index in {int(m) for m in marker.findall(path.read_bytes())}:
                if index in report.accepted:
                    in_files[report.accepted[index]] += 1
    for rid in set(in_history) | set(in_files):
        report.runs[rid] = max(in_history[rid], in_files[rid])


def fault(run: MakeRun, scenario: str, report: RunReport) -> MakeRun:
    """Inflict the scenario's fault, wait (bounded) until the stack is healthy again; the stack now running."""
    began = time.monotonic()
    if scenario in ("pod-manager", "nats"):
        name = "pod-manager" if scenario == "pod-manager" else "nats-server"
        pid = run.child_pids()[name]
        os.kill(pid, signal.SIGKILL)
        report.fault = f"{name} (pid {pid}) SIGKILLed"
        restarted = wait_until(lambda: run.child_pids().get(name) not in (None, pid), RECOVER_BOUND)
        healthy = restarted and wait_until(lambda: run.health() == 200, RECOVER_BOUND)
    else:
        report.fault = f"make run's process group ({run.pgid}) SIGKILLed"
        run.signal_group(signal.SIGKILL)
        run.wait_exit(10)
        if not wait_until(lambda: not processes_of(run.home), ORPHAN_BOUND):
            report.orphans.update(processes_of(run.home))
            kill_all(report.orphans)
        run = MakeRun(run.home, ports=run.ports, env=run_env()).start()
        healthy = wait_until(lambda: run.health() == 200, RECOVER_BOUND)
    if healthy:
        report.recovered_s = time.monotonic() - began
    return run


def run_env() -> dict[str, str]:
    return {"MAX_PODS": "5", "POD_PROVIDER": "local", "SIM_STEP_TIME": "0.02", "POD_IDLE_TIMEOUT": "600"}


def one_run(number: int, scenario: str, burst: int, keep: bool) -> RunReport:
    home = Path(tempfile.mkdtemp(prefix="vibewave-chaos-")) / "home"
    tag = uuid4().hex[:8]
    run = MakeRun(home, env=run_env())
    report = RunReport(number, home, run.ports)
    stacks = [run]
    lock = threading.Lock()
    try:
        run.start()
        run.wait_healthy(90)

        def submit(index: int) -> None:
            request_id, answer = submit_until_accepted(run.base_url, tag, index)
            with lock:
                if request_id is None:
                    report.not_accepted[index] = answer
                else:
                    report.accepted[index] = request_id

        def settled() -> int:
            with lock:
                return len(report.accepted) + len(report.not_accepted)

        with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
            futures = [pool.submit(submit, index) for index in range(burst)]
            wait_until(lambda: settled() >= burst * FAULT_AT, ACCEPT_BOUND)
            run = fault(run, scenario, report)
            stacks.append(run)
            for future in futures:
                future.result()

        ids = set(report.accepted.values())
        ending = time.monotonic()

        def all_terminal() -> bool:
            report.records = records_of(run, ids)
            return len(report.records) == len(ids) and all(r.status.terminal for r in report.records.values())

        if wait_until(all_terminal, END_BOUND, interval=1.0):
            report.ended_s = time.monotonic() - ending
        count_runs(run, report, tag)

        stopping = time.monotonic()
        run.signal_group(signal.SIGINT)
        run.wait_exit(60)
        report.stop_s = time.monotonic() - stopping
        if not wait_until(lambda: not processes_of(home), 10):
            report.orphans.update(processes_of(home))
    finally:
        run.close()
        report.tracebacks = sum(stack.output().count("Traceback") for stack in {id(s): s for s in stacks}.values())
        if report.passed and not keep:
            shutil.rmtree(home.parent, ignore_errors=True)
    return report


def print_report(report: RunReport, runs: int) -> None:
    accepted = len(report.accepted)
    total = accepted + len(report.not_accepted)
    completed = sum(1 for r in report.records.values() if str(r.status) == "completed")
    print(f"run {report.number}/{runs}  home {report.home}  (nats {report.ports.nats}, api {report.ports.api})")
    recovered = (
        f"healthy again after {report.recovered_s:.1f}s" if report.recovered_s is not None else "NOT healthy again"
    )
    print(f"  fault       {report.fault}; {recovered}")
    print(f"  accepted    {accepted}/{total}")
    for index, answer in sorted(report.not_accepted.items())[:5]:
        print(f"    never accepted #{index}: {answer}")
    ended = f"all terminal after {report.ended_s:.1f}s" if report.ended_s is not None else "NOT all terminal"
    print(f"  completed   {completed}  ({ended})")
    print(f"  failed      {len(report.failed)}")
    for error, count in Counter(report.failed.values()).most_common(5):
        print(f"    {count}x {error}")
    if report.not_terminal:
        print(f"  not ended   {len(report.not_terminal)}: {', '.join(report.not_terminal[:5])}")
    twice = f": {dict(list(report.ran_twice.items())[:5])}" if report.ran_twice else ""
    print(f"  ran twice   {len(report.ran_twice)}{twice}  (runs found for {len(report.runs)} requests)")
    print(f"  orphans     {len(report.orphans)}")
    for pid, cmd in list(report.orphans.items())[:5]:
        print(f"    {pid} {cmd[:120]}")
    stop = f"{report.stop_s:.1f}s" if report.stop_s is not None else "?"
    print(f"  stop        {stop}; tracebacks in make run's output: {report.tracebacks}")
    print(f"  → {'PASS' if report.passed else 'FAIL'}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.make_run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=SCENARIOS, required=True)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--keep", action="store_true", help="keep every run's home (failed runs' are always kept)")
    args = parser.parse_args(argv)
    print(f"make run chaos: scenario {args.scenario}, {args.runs} run(s) of {args.burst} requests", flush=True)
    reports = []
    for number in range(1, args.runs + 1):
        report = one_run(number, args.scenario, args.burst, args.keep)
        print_report(report, args.runs)
        reports.append(report)
    passed = sum(report.passed for report in reports)
    print(f"{args.scenario}: {passed}/{len(reports)} run(s) passed")
    return 0 if passed == len(reports) else 1


if __name__ == "__main__":
    sys.exit(main())
