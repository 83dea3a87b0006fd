"""Studio day: a simulated day of studio traffic on the GPU fleet, under each fleet policy (no services, no NATS).

`bench.daysim` replays the committed traces (steady, bursty, big_batch) through a discrete-event model of the
scheduler, pod-manager and RunPod (boots, failed resumes, per-second billing; see `bench/daysim/engine.py`),
calling pod-manager's real policies at every reconcile pass: (a) demand, (b) serverless, (c) economic, and
economic on the preference-order GPU. Writes `bench/results/day/report.md` and `.json` and one PNG per trace.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.common import log
from bench.context import Context
from bench.daylive import DEFAULT_TRACE, des_counterpart, replay
from bench.daysim.engine import CREATE_BOOT_S, RESUME_BOOT_S, SEED, Model, RunResult, simulate, variants
from bench.daysim.report import compare, metrics, plot, tables
from bench.daysim.traces import TRACES, load
from vibewave.pod_manager.policy import WAIT_WORTH


def model_from_env() -> Model:
    """BENCH_DAY_SEED (boot and resume draws), BENCH_DAY_RESUME_BOOT (`low,high` s; `30,120`: no network volume)."""
    low, high = (float(x) for x in os.environ.get("BENCH_DAY_RESUME_BOOT", "{},{}".format(*RESUME_BOOT_S)).split(","))
    return Model(resume_boot_s=(low, high), seed=int(os.environ.get("BENCH_DAY_SEED") or SEED))


def run_day(out: Path, traces: list[str], model: Model) -> dict[str, Any]:
    """Every trace under every variant: the metrics, the comparisons, the plots and the report files."""
    sections: dict[str, dict[str, Any]] = {}
    for name in traces:
        trace = load(name)
        began = time.monotonic()
        runs: list[RunResult] = [simulate(trace, variant, model) for variant in variants(model.max_pods)]
        rows = {run.variant.name: metrics(run) for run in runs}
        plot(runs, out / f"{trace.name}.png")
        sections[trace.name] = {
            "description": trace.description,
            "seed": trace.seed,
            "requests": len(trace.requests),
            "policies": rows,
            "comparisons": compare(rows),
            "plot": f"bench/results/day/{trace.name}.png",
            "sim_wall_s": round(time.monotonic() - began, 2),
        }
        c, b = rows["economic"], rows["serverless"]
        log(f"day {trace.name}: economic ${c['cost_usd']} p95 {c['wait_p95_s']} s; "
            f"serverless ${b['cost_usd']} p95 {b['wait_p95_s']} s")  # fmt: skip
    budget = {
        f"{name}: economic costs less than serverless": s["policies"]["economic"]["cost_usd"]
        < s["policies"]["serverless"]["cost_usd"]
        for name, s in sections.items()
    } | {
        f"{name}: economic p95 wait <= serverless": s["policies"]["economic"]["wait_p95_s"]
        <= s["policies"]["serverless"]["wait_p95_s"]
        for name, s in sections.items()
    }
    if "bursty" in sections:
        bursty = sections["bursty"]["policies"]
        budget["bursty: economic at least 20 % cheaper than serverless at equal or better p95"] = (
            bursty["economic"]["cost_usd"] <= 0.8 * bursty["serverless"]["cost_usd"]
            and bursty["economic"]["wait_p95_s"] <= bursty["serverless"]["wait_p95_s"]
        )
    spread = seed_spread(traces, model)
    weights = weight_sweep(sections, model)
    section: dict[str, Any] = {
        "model": {
            "max_pods": model.max_pods,
            "probe_interval_s": model.probe_interval_s,
            "resume_failure": model.resume_failure,
            "create_boot_s": list(model.create_boot_s),
            "resume_boot_s": list(model.resume_boot_s),
            "stopped_price_per_hr": round(model.stopped_price_per_hr, 6),
            "seed": model.seed,
        },
        "traces": sections,
        "budget": budget,
        "seed_spread": spread,
        "wait_worth_sweep": weights,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(section, indent=2) + "\n")
    (out / "report.md").write_text(
        "# Studio day: fleet policies compared\n\n" + tables(sections) + "\n" + spread_table(spread) + "\n"
        + weight_table(weights) + "\n"
    )  # fmt: skip
    return section


SPREAD_SEEDS = 4  # other draws of boots and resume failures, to tell a real p95 difference from luck


def seed_spread(traces: list[str], model: Model) -> dict[str, Any]:
    """demand against economic on the same (preference-order) GPU under other boot and resume draws: the p95
    wait and cost of each, so a few seconds of p95 between them can be read against the draws' own spread."""
    chosen = {v.name: v for v in variants(model.max_pods)}
    spread: dict[str, Any] = {}
    for name in traces:
        trace = load(name)
        rows = []
        for seed in range(model.seed + 1, model.seed + 1 + SPREAD_SEEDS):
            drawn = replace(model, seed=seed)
            a, c = (metrics(simulate(trace, chosen[v], drawn)) for v in ("demand", "economic_pref_gpu"))
            rows.append({"seed": seed, "demand_p95_s": a["wait_p95_s"], "economic_p95_s": c["wait_p95_s"],
                         "demand_usd": a["cost_usd"], "economic_usd": c["cost_usd"]})  # fmt: skip
        spread[name] = rows
    return spread


def spread_table(spread: dict[str, Any]) -> str:
    lines = [
        "## Other draws (boots, resume failures): demand vs economic on the same GPU (RTX 4090)",
        "",
        "| trace | seed | demand p95 s | economic p95 s | demand $ | economic $ |",
        "|---|---|---|---|---|---|",
    ]
    for name, rows in spread.items():
        for r in rows:
            lines.append(f"| {name} | {r['seed']} | {r['demand_p95_s']} | {r['economic_p95_s']} | "
                         f"{r['demand_usd']} | {r['economic_usd']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


WEIGHTS = (3.0, WAIT_WORTH, 12.0, 20.0)  # FLEET_WAIT_WORTH values the report runs economic at


def weight_sweep(sections: dict[str, dict[str, Any]], model: Model) -> dict[str, Any]:
    """economic (on its cheapest GPU) at each of WEIGHTS, per trace, against demand's p95 and serverless' cost
    from the main run: what shorter waits cost, so an operator can choose FLEET_WAIT_WORTH."""
    economic = next(v for v in variants(model.max_pods) if v.name == "economic")
    sweep: dict[str, Any] = {}
    for name, section in sections.items():
        trace = load(name)
        demand, serverless = section["policies"]["demand"], section["policies"]["serverless"]
        rows = []
        for weight in WEIGHTS:
            row = metrics(simulate(trace, replace(economic, wait_worth=weight), model))
            rows.append({
                "wait_worth": weight, "wait_p95_s": row["wait_p95_s"], "cost_usd": row["cost_usd"],
                "p95_vs_demand_s": round(row["wait_p95_s"] - demand["wait_p95_s"], 1),
                "cost_vs_demand_pct": round(100 * (row["cost_usd"] / demand["cost_usd"] - 1), 1),
                "cost_vs_serverless_pct": round(100 * (row["cost_usd"] / serverless["cost_usd"] - 1), 1),
            })  # fmt: skip
        sweep[name] = rows
    return sweep


def weight_table(sweep: dict[str, Any]) -> str:
    lines = [
        f"## economic's one weight: FLEET_WAIT_WORTH (default {WAIT_WORTH:g}), seed of the main run",
        "",
        "| trace | FLEET_WAIT_WORTH | p95 wait s | vs demand's p95 | total $ | vs demand's $ | vs serverless' $ |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rows in sweep.items():
        for r in rows:
            cost = f"{r['cost_usd']} | {r['cost_vs_demand_pct']:+} % | {r['cost_vs_serverless_pct']:+} %"
            lines.append(f"| {name} | {r['wait_worth']:g} | {r['wait_p95_s']} | {r['p95_vs_demand_s']:+} s | {cost} |")
    return "\n".join(lines) + "\n"


LIVE_POLICIES = ("demand", "serverless", "economic")


async def live_check(out: Path, clock: float) -> dict[str, Any]:
    """The bursty trace's busiest 3 h through the real services on the RunPod emulator (`bench.daylive`), once
    per policy, next to the DES on the same window — with its drawn boots, and with the live stack's measured
    boot overhead added (what the clock factor cannot compress). Results in `out/live/<policy>.json`."""
    (out / "live").mkdir(parents=True, exist_ok=True)
    runs: dict[str, Any] = {}
    for policy in LIVE_POLICIES:
        log(f"day live: {policy} at clock {clock:g}")
        result = await replay(DEFAULT_TRACE, policy, clock=clock)
        create = result["boot_s"]["create"].get("mean", 0.0) if result.get("boot_s") else 0.0
        result["des"] = des_counterpart(result)
        result["des_with_live_boots"] = des_counterpart(result, boot_shift_s=max(0.0, create - sum(CREATE_BOOT_S) / 2))
        (out / "live" / f"{policy}.json").write_text(json.dumps(result, indent=2) + "\n")
        runs[policy] = result
    return runs


def live_table(runs: dict[str, Any]) -> str:
    lines = [
        "## Live cross-check: the real services on the RunPod emulator (bursty, busiest 3 h, clock factor "
        f"{next(iter(runs.values()))['clock']:g})",
        "",
        "| policy | run | wait mean / p95 s | pods created / resumed / failed resumes | paid GPU-h | paid idle |",
        "|---|---|---|---|---|---|",
    ]
    for policy, live in runs.items():
        w = live["wait_s"]
        lines.append(f"| {policy} | live | {w.get('mean')} / {w.get('p95')} | {live['pods_created']} / "
                     f"{live['pods_resumed']} / {live['resume_failures']} | {live['paid_gpu_hours']} | "
                     f"{live['paid_idle_fraction']} |")  # fmt: skip
        for label, key in (("DES, drawn boots", "des"), ("DES, live boots", "des_with_live_boots")):
            d = live[key]
            dw = d["wait_s"]
            lines.append(f"| {policy} | {label} (+{d['boot_shift_s']:.0f} s) | {dw.get('mean')} / {dw.get('p95')} | "
                         f"{d['pods_created']} / {d['pods_resumed']} / {d['resume_failures']} | "
                         f"{d['paid_gpu_hours_at_cut']} | {d['paid_idle_fraction_at_cut']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


async def run(ctx: Context) -> dict[str, Any]:
    """BENCH_DAY_LIVE=0 skips the live cross-check (~10 min) and reports the one last written, if any."""
    names = [n.strip() for n in os.environ.get("BENCH_DAY_TRACES", ",".join(TRACES)).split(",") if n.strip()]
    out = ctx.root / "bench" / "results" / "day"
    section = run_day(out, names, model_from_env())
    if os.environ.get("BENCH_DAY_LIVE", "1") != "0":
        live = await live_check(out, float(os.environ.get("BENCH_DAY_CLOCK") or 60))
    else:
        files = {p: out / "live" / f"{p}.json" for p in LIVE_POLICIES}
        live = {p: json.loads(f.read_text()) for p, f in files.items() if f.exists()}
    if live:
        section["live"] = {p: {k: v for k, v in r.items() if k != "trace_header"} for p, r in live.items()}
        with (out / "report.md").open("a") as report:
            report.write("\n" + live_table(live))
    return section
