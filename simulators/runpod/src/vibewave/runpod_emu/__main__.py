"""Command line: `python -m vibewave.runpod_emu --port 8765 [--boot-delay 3] [--capacity-error 2] ...`.

Every flag also reads `VIBEWAVE_RUNPOD_EMU_<FLAG>` (dashes as underscores, upper case) so a deployment can
configure the emulator without changing its command line; flags win. Environment variables `VIBEWAVE_SIM_*`
reach every pod's container, so the ComfyUI simulators in them see them (their own fault switches).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vibewave.runpod_emu.app import run
from vibewave.runpod_emu.catalogue import Seed
from vibewave.runpod_emu.config import DEFAULT_API_KEY, DEFAULT_PORT, ENV_PREFIX, REST_STATUS_MODES, EmuConfig
from vibewave.runpod_emu.faults import NEVER_READY_MODES, Faults

TRUE = {"1", "true", "yes", "on"}


def _env_name(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def _count(value: str) -> str:
    """A fault count: an integer, or "always" (validated here, converted by `_times`)."""
    if value.lower() != "always" and (not value.isdigit()):
        raise argparse.ArgumentTypeError("a count must be a non-negative integer or 'always'")
    return value.lower()


def _times(value: str) -> int | None:
    return None if value == "always" else int(value)


def _csv(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m vibewave.runpod_emu",
        description="vibewave-runpod-emulator: an offline emulator of RunPod's pod GraphQL API and HTTP proxy, "
        "whose pods run their start command or their image's emulated CMD.",
    )

    def add(flag: str, help: str, default: str | None = None, type: Callable[[str], Any] = str) -> None:
        p.add_argument(
            flag, default=os.environ.get(_env_name(flag), default), type=type, help=f"{help} (env {_env_name(flag)})"
        )

    def switch(flag: str, help: str) -> None:
        default = os.environ.get(_env_name(flag), "").lower() in TRUE
        p.add_argument(flag, action="store_true", default=default, help=f"{help} (env {_env_name(flag)}=1)")

    add("--host", "address to listen on", "127.0.0.1")
    add("--port", "port to listen on; 0 picks a free one", str(DEFAULT_PORT), type=int)
    add("--api-keys", "comma-separated API keys accepted (others get 401)", DEFAULT_API_KEY)
    add("--pod-scoped-keys", "comma-separated pod-scoped keys (`myself` answers Unauthorized)", "")
    add("--seed", "JSON file {networkVolumes, templates, account} replacing the seeded objects")
    add("--balance", "starting clientBalance in USD (overrides the seed)", type=float)
    add("--spend-limit", "account spendLimit in $/hour (overrides the seed)", type=int)
    add("--boot-delay", "seconds a new/resumed pod shows runtime null before its ports appear", "3", type=float)
    add("--boot-delay-max", "draw each create's boot delay uniformly from [--boot-delay, this]", type=float)
    add("--resume-delay", "a resume's boot delay (default: as a create's)", type=float)
    add("--resume-delay-max", "draw each resume's boot delay uniformly from [--resume-delay, this]", type=float)
    add("--resume-failure-rate", "probability (0-1) that a resume fails with the busy-host message", type=float)
    add("--latency", "seconds added before every /graphql answer", "0", type=float)
    add("--work-dir", "directory for pod disks, network volumes and container logs (default: a new temp dir)")
    switch("--no-comfyui", "do not run pod containers (the proxy then always answers 502)")
    add("--comfyui-port", "pod port the proxy maps to the container's VIBEWAVE_LISTEN_PORT", "8188", type=int)
    add("--comfyui-step-time", "VIBEWAVE_SIM_STEP_TIME for the ComfyUI simulators in pods", "0.05", type=float)
    add("--comfyui-args", "extra arguments for the simulator that emulates runpod/comfyui, shell-quoted", "")
    switch("--comfyui-no-restart", "do not restart a pod's container after its main process exits")
    add("--comfyui-restart-delay", "seconds before a container whose main process exited restarts", "1", type=float)
    add("--proxy-timeout", "seconds the proxy waits for an answer before 524 (Cloudflare: 100)", "100", type=float)
    add("--billing-speed", "billed seconds per real second (60: a minute per second)", "1", type=float)
    add("--tick", "seconds between clock ticks (boot, billing, zero-balance checks)", "0.2", type=float)
    add("--min-balance-hours", "hours of the new pod's cost the balance must cover to create/resume", "1", type=float)
    add("--insufficient-balance-message", "error text when the balance is too low (RunPod's is unknown)")
    switch("--network-volume-any-cloud", "allow network volumes outside SECURE cloud (RunPod errors)")
    switch("--cloudflare-ua-check", "answer 403 `error code: 1010` to bot-like User-Agents, as Cloudflare does")
    add("--rng-seed", "seed for ids, IPs and ports (reproducible runs)", type=int)
    add("--rate-limit-per-minute", "calls per minute per API key, with RateLimit headers; 0 is off", "0", type=int)
    add("--rest-status-mode", f"v2 status before the runtime is up: {' or '.join(REST_STATUS_MODES)}", "live")
    switch("--rest-omitted-gpu-count-capacity", "a v2 create without gpu.count gets the capacity 400, as live")
    add("--faults", "initial fault switches as JSON (same shape as POST /emulator/faults) or @file")
    add("--capacity-error", "create fails with the capacity message: count or 'always'", type=_count)
    add("--capacity-gpu-types", "comma-separated GPU type ids --capacity-error applies to (default all)")
    add("--host-busy", "podResume fails with the busy-host message: count or 'always'", type=_count)
    add("--internal-error", "answer the generic INTERNAL_SERVER_ERROR: count or 'always'", type=_count)
    add("--internal-error-operations", "comma-separated root fields --internal-error applies to (default all)")
    switch("--internal-error-after-action", "perform the action, then answer --internal-error anyway")
    add("--insufficient-balance", "create/resume fail with the balance message: count or 'always'", type=_count)
    add("--disk-space-error", "create with templateId and no containerDiskInGb fails: count or 'always'", type=_count)
    add("--http-502", "/graphql answers an HTML 502: count or 'always'", type=_count)
    add("--cloudflare-403", "/graphql answers 403 `error code: 1010`: count or 'always'", type=_count)
    add("--never-ready", f"new pods never become usable: one of {', '.join(NEVER_READY_MODES)}")
    add("--rate-limit", "calls are refused with 429 and Retry-After: 1: count or 'always'", type=_count)
    add("--log-level", "logging level", "INFO")
    return p


def _fault(times: int | None, **extra: Any) -> dict[str, Any]:
    return {"times": times, **{k: v for k, v in extra.items() if v}}


def config_from_args(argv: Sequence[str] | None = None) -> tuple[EmuConfig, str]:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.rest_status_mode not in REST_STATUS_MODES:
        parser.error(f"--rest-status-mode must be one of {', '.join(REST_STATUS_MODES)}")
    if args.rate_limit_per_minute < 0:
        parser.error("--rate-limit-per-minute must not be negative")
    seed = Seed.from_json(json.loads(Path(args.seed).read_text())) if args.seed else Seed.default()
    if args.balance is not None:
        seed.account["clientBalance"] = float(args.balance)
    if args.spend_limit is not None:
        seed.account["spendLimit"] = int(args.spend_limit)
    faults = Faults(latency=float(args.latency), boot_delay=float(args.boot_delay))
    updates: dict[str, Any] = {}
    if args.faults:
        text = Path(args.faults[1:]).read_text() if args.faults.startswith("@") else args.faults
        updates.update(json.loads(text))
    for name in ("boot_delay_max", "resume_delay", "resume_delay_max", "resume_failure_rate"):
        if getattr(args, name) is not None:
            updates[name] = getattr(args, name)
    flag_faults: list[tuple[str, str, dict[str, Any]]] = [
        ("capacity", "capacity_error", {"gpu_types": _csv(args.capacity_gpu_types) or None}),
        ("host_busy", "host_busy", {}),
        (
            "internal_error",
            "internal_error",
            {
                "operations": _csv(args.internal_error_operations) or None,
                "after_action": args.internal_error_after_action,
            },
        ),
        ("insufficient_balance", "insufficient_balance", {}),
        ("disk_space", "disk_space_error", {}),
        ("http_502", "http_502", {}),
        ("cloudflare_403", "cloudflare_403", {}),
        ("rate_limit", "rate_limit", {}),
    ]
    for name, attr, extra in flag_faults:
        raw = getattr(args, attr)
        if raw is not None:
            updates[name] = _fault(_times(_count(str(raw))), **extra)
    if args.never_ready:
        updates["never_ready"] = {"mode": args.never_ready}
    faults.update(updates)
    config = EmuConfig(
        host=str(args.host),
        port=int(args.port),
        api_keys=_csv(args.api_keys) or [DEFAULT_API_KEY],
        pod_scoped_keys=_csv(args.pod_scoped_keys),
        seed=seed,
        faults=faults,
        comfyui=not args.no_comfyui,
        comfyui_port=int(args.comfyui_port),
        comfyui_step_time=float(args.comfyui_step_time),
        comfyui_args=shlex.split(args.comfyui_args or ""),
        comfyui_restart=not args.comfyui_no_restart,
        comfyui_restart_delay=float(args.comfyui_restart_delay),
        work_dir=Path(args.work_dir) if args.work_dir else None,
        proxy_timeout=float(args.proxy_timeout),
        billing_speed=float(args.billing_speed),
        tick=float(args.tick),
        min_balance_hours=float(args.min_balance_hours),
        strict_network_volume_cloud=not args.network_volume_any_cloud,
        cloudflare_ua_check=bool(args.cloudflare_ua_check),
        rng_seed=args.rng_seed,
        rate_limit_per_minute=int(args.rate_limit_per_minute),
        rest_status_mode=str(args.rest_status_mode),
        rest_omitted_gpu_count_capacity=bool(args.rest_omitted_gpu_count_capacity),
    )
    if args.insufficient_balance_message:
        config.insufficient_balance_message = str(args.insufficient_balance_message)
    return config, str(args.log_level)


def main(argv: Sequence[str] | None = None) -> None:
    config, level = config_from_args(argv)
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(config))


if __name__ == "__main__":
    main()
