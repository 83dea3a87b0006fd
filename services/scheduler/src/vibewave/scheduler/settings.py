"""Scheduler settings, from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from vibewave.runtime.settings import CommonSettings, env_float, env_int


@dataclass(frozen=True, kw_only=True)
class SchedulerSettings:
    common: CommonSettings
    max_attempts: int  # SCHEDULER_MAX_ATTEMPTS: attempts per request when pods fault
    demand_interval_s: float  # SCHEDULER_DEMAND_INTERVAL: how often demand is re-announced
    aging_s: float  # SCHEDULER_AGING: a waiting request rises one priority class per this many seconds
    queue_ttl_s: float  # SCHEDULER_QUEUE_TTL: a request waiting longer fails with a timeout
    run_grace_s: float  # SCHEDULER_RUN_GRACE: beyond its execution timeout, a run is declared timed out
    retry_backoff_s: float  # SCHEDULER_RETRY_BACKOFF: a retry after a pod fault waits this, doubling per attempt
    workflows_dir: Path | None = None  # WORKFLOWS_DIR: operator's workflow folders (their expected run times)

    @classmethod
    def from_env(cls, common: CommonSettings | None = None) -> SchedulerSettings:
        return cls(
            common=common or CommonSettings.from_env(),
            max_attempts=env_int("SCHEDULER_MAX_ATTEMPTS", 3),
            demand_interval_s=env_float("SCHEDULER_DEMAND_INTERVAL", 1.0),
            aging_s=env_float("SCHEDULER_AGING", 30.0),
            queue_ttl_s=env_float("SCHEDULER_QUEUE_TTL", 3600.0),
            run_grace_s=env_float("SCHEDULER_RUN_GRACE", 120.0),
            retry_backoff_s=env_float("SCHEDULER_RETRY_BACKOFF", 0.5),
            workflows_dir=Path(workflows) if (workflows := os.environ.get("WORKFLOWS_DIR")) else None,
        )
