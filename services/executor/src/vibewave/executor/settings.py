"""Executor settings, from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from vibewave.runtime.pod_token import POD_TOKEN_KEY_ENV
from vibewave.runtime.settings import CommonSettings, Secret, env_float, env_int
from vibewave.runtime.storage import StorageSettings


@dataclass(frozen=True, kw_only=True)
class ExecutorSettings:
    common: CommonSettings
    concurrency: int  # EXECUTOR_CONCURRENCY: assignments run at once by this process (one per pod)
    execution_timeout_s: float  # EXECUTOR_TIMEOUT: a prompt running longer is interrupted and fails
    connect_timeout_s: float  # EXECUTOR_CONNECT_TIMEOUT: ComfyUI must answer within this
    progress_interval_s: float  # EXECUTOR_PROGRESS_INTERVAL: at most one progress event per interval
    workflows_dir: Path | None  # WORKFLOWS_DIR: operator's workflow folders, beside the shipped ones
    # EXECUTOR_ACK_WAIT: an assignment whose executor went silent this long is redelivered (None: the
    # contract's EXECUTOR_CONSUMER ack wait, 3 s; a running handler keeps its assignment alive meanwhile)
    ack_wait_s: float | None
    pod_token_key: Secret  # VIBEWAVE_POD_TOKEN_KEY: derives each pod's ComfyUI token (unset: send none)
    storage: StorageSettings = field(default_factory=StorageSettings)  # OUTPUT_STORE and S3_*: where outputs go

    @classmethod
    def from_env(cls, common: CommonSettings | None = None) -> ExecutorSettings:
        workflows_dir = os.environ.get("WORKFLOWS_DIR")
        return cls(
            common=common or CommonSettings.from_env(),
            concurrency=env_int("EXECUTOR_CONCURRENCY", 16),
            execution_timeout_s=env_float("EXECUTOR_TIMEOUT", 900.0),
            connect_timeout_s=env_float("EXECUTOR_CONNECT_TIMEOUT", 10.0),
            progress_interval_s=env_float("EXECUTOR_PROGRESS_INTERVAL", 0.25),
            workflows_dir=Path(workflows_dir) if workflows_dir else None,
            ack_wait_s=float(ack_wait) if (ack_wait := os.environ.get("EXECUTOR_ACK_WAIT", "").strip()) else None,
            pod_token_key=Secret(os.environ.get(POD_TOKEN_KEY_ENV, "").strip()),
            storage=StorageSettings.from_env(),
        )
