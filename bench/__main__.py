"""`python -m bench [--scenario NAME ...]`: run the scenarios, write bench/results/ (see bench/README.md)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import platform
import shutil
import subprocess
import time
import traceback
from datetime import UTC, datetime
from typing import Any

from bench.common import log
from bench.context import ROOT, Context
from bench.report import render

SCENARIOS = ("edge", "pipeline", "deepqueue", "history", "scale", "cluster", "day")
ALIASES = {"dispatch": "pipeline", "e2e": "pipeline", "deep-queue": "deepqueue", "queue": "deepqueue"}


def machine() -> dict[str, Any]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, cwd=ROOT)
    return {
        "python": platform.python_version(),
        "cpus": __import__("os").cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "commit": commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else ""),
    }


async def main(names: list[str], keep: bool) -> dict[str, Any]:
    ctx = Context()
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "scenarios": {},
    }
    started = time.monotonic()
    try:
        for name in names:
            log(f"scenario {name}")
            began = time.monotonic()
            module = importlib.import_module(f"bench.scenarios.{name}")
            try:
                section = await module.run(ctx)
            except Exception as exc:
                traceback.print_exc()
                section = {"error": f"{type(exc).__name__}: {exc}"}
            section["wall_s"] = round(time.monotonic() - began, 1)
            results["scenarios"][name] = section
    finally:
        if not keep:
            shutil.rmtree(ctx.scratch, ignore_errors=True)
        else:
            log(f"scratch kept in {ctx.scratch}")
    results["wall_s"] = round(time.monotonic() - started, 1)
    return results


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--scenario", action="append", default=[], help=f"one of {', '.join(SCENARIOS)} (repeatable)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (logs, NATS stores)")
    parser.add_argument("--label", default="", help="a note stored with the results (e.g. 'before fix')")
    args = parser.parse_args()
    names = [ALIASES.get(n, n) for s in args.scenario for n in s.split(",") if n] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}")
    results = asyncio.run(main(list(dict.fromkeys(names)), args.keep))
    results["label"] = args.label
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    suffix = "" if names == list(SCENARIOS) else "-" + "-".join(names)
    markdown = render(results)
    (out / f"{stamp}{suffix}.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / f"{stamp}{suffix}.md").write_text(markdown)
    (out / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "latest.md").write_text(markdown)
    print(markdown)
    log(f"wrote bench/results/{stamp}{suffix}.md and .json (and latest.md)")


if __name__ == "__main__":
    cli()
