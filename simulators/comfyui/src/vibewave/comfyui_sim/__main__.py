"""Command line: `python -m vibewave.comfyui_sim --host 127.0.0.1 --port 8188 [--step-time 0.05] ...`.

Every flag also reads an environment variable `VIBEWAVE_SIM_<FLAG>` (dashes as underscores, upper case),
so a deployment can configure the simulator without changing its command line; flags win.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from vibewave.comfyui_sim.app import run
from vibewave.comfyui_sim.config import DEFAULT_MODELS, ENV_PREFIX, Faults, NodeFault, SimConfig, parse_bool
from vibewave.comfyui_sim.versions import DEFAULT_VERSION, VERSIONS


def _env_default(flag: str, default: str | None = None) -> str | None:
    return os.environ.get(ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper(), default)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m vibewave.comfyui_sim",
        description="vibewave-comfyui-simulator: a GPU-free stand-in for a ComfyUI 0.33.0 (or 0.3.64) server.",
    )

    def add(flag: str, help: str, default: str | None = None, type: Callable[[str], object] = str) -> None:
        env_name = ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()
        p.add_argument(flag, default=_env_default(flag, default), type=type, help=f"{help} (env {env_name})")

    add("--host", "address to listen on", "127.0.0.1")
    add("--port", "port to listen on; 0 picks a free one", "8188", type=int)
    add("--base-dir", "directory holding output/, input/ and temp/ (default: a new temporary directory)")
    add("--output-dir", "output directory (default BASE/output)")
    add("--input-dir", "input directory (default BASE/input)")
    add("--temp-dir", "temp directory (default BASE/temp)")
    add(
        "--comfyui-version",
        f"ComfyUI release to behave as: {' or '.join(VERSIONS)} (wording, routes, catalogue, cache)",
        DEFAULT_VERSION,
    )
    add("--models", "JSON file {folder: [file names]} of the model files the simulator knows")
    present_env = ENV_PREFIX + "MODELS_PRESENT"
    p.add_argument(
        "--models-present",
        action=argparse.BooleanOptionalAction,
        default=parse_bool(os.environ.get(present_env, "0")),
        help="the --models files are on disk (default: absent, like a ComfyUI with empty model folders, "
        f"so model graphs fail validation) (env {present_env}=1)",
    )
    add(
        "--models-dir",
        "list the model files really present below DIR/<folder>/ (ComfyUI's models/ directory), re-read when it "
        "changes; replaces --models and --models-present",
    )
    add("--cache-size", "node results kept for cached re-runs", "1000", type=int)
    add("--history-size", "history entries kept", "10000", type=int)
    add("--max-upload-size", "request size limit in MB", "100", type=float)
    add("--startup-delay", "seconds to wait before listening (slow start)", "0", type=float)
    add("--step-time", "seconds per sampler step", "0.1", type=float)
    add(
        "--node-cost-scale",
        "time model-free image nodes take, relative to ComfyUI on the calibration CPU (1 = as measured, 0 = instant)",
        "1",
        type=float,
    )
    add("--node-time", "extra seconds spent in every executed node", "0", type=float)
    add(
        "--load-time",
        "extra seconds spent in every executed model loader (first use only: cached after)",
        "0",
        type=float,
    )
    add("--http-delay", "seconds added before every HTTP answer", "0", type=float)
    add(
        "--progress-throttle",
        "min seconds between progress frames of one node; 0.1 reproduces 0.33's throttling (default: off)",
        "0",
        type=float,
    )
    add("--fail-node", "class_type or node id that raises an execution error")
    add("--fail-step", "sampler step at which --fail-node fails", type=int)
    add("--fail-message", "exception message of --fail-node")
    add("--fail-type", "exception type reported for --fail-node", "RuntimeError")
    add("--oom-node", "class_type or node id that raises torch.OutOfMemoryError")
    add("--oom-step", "sampler step at which --oom-node runs out of memory", type=int)
    add("--crash-node", "class_type or node id at which the process exits abruptly")
    add("--crash-step", "sampler step at which the process exits", type=int)
    add("--crash-exit-code", "exit code of the simulated crash", "137", type=int)
    add("--fault-times", "how many times each fault fires (default: every time)", type=int)
    add("--log-level", "logging level", "INFO")
    return p


def config_from_args(argv: Sequence[str] | None = None) -> tuple[SimConfig, str]:
    args = build_parser().parse_args(argv)
    models = {k: list(v) for k, v in DEFAULT_MODELS.items()}
    if args.models:
        loaded = json.loads(Path(args.models).read_text())
        models.update({str(k): [str(f) for f in v] for k, v in loaded.items()})
    faults = Faults(
        step_time=float(args.step_time),
        node_time=float(args.node_time),
        load_time=float(args.load_time),
        http_delay=float(args.http_delay),
        progress_throttle=float(args.progress_throttle),
        node_cost_scale=float(args.node_cost_scale),
    )
    if str(args.comfyui_version) not in VERSIONS:
        raise SystemExit(f"--comfyui-version must be one of {', '.join(VERSIONS)}, not {args.comfyui_version!r}")
    times = int(args.fault_times) if args.fault_times is not None else None
    if args.fail_node:
        faults.execution_error = NodeFault(
            args.fail_node, _opt_int(args.fail_step), times, args.fail_message, args.fail_type
        )
    if args.oom_node:
        faults.oom = NodeFault(args.oom_node, _opt_int(args.oom_step), times)
    if args.crash_node:
        faults.crash = NodeFault(args.crash_node, _opt_int(args.crash_step), times, exit_code=int(args.crash_exit_code))

    def path(value: str | None) -> Path | None:
        return Path(value) if value else None

    config = SimConfig(
        host=str(args.host),
        port=int(args.port),
        base_dir=path(args.base_dir),
        output_dir=path(args.output_dir),
        input_dir=path(args.input_dir),
        temp_dir=path(args.temp_dir),
        startup_delay=float(args.startup_delay),
        cache_size=int(args.cache_size),
        history_size=int(args.history_size),
        max_upload_size=int(float(args.max_upload_size) * 1024 * 1024),
        models=models,
        models_present=bool(args.models_present),
        models_dir=path(args.models_dir),
        comfyui_version=str(args.comfyui_version),
        faults=faults,
    )
    return config, str(args.log_level)


def _opt_int(value: object) -> int | None:
    return None if value is None else int(str(value))


def main(argv: Sequence[str] | None = None) -> None:
    config, level = config_from_args(argv)
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(config))


if __name__ == "__main__":
    main()
