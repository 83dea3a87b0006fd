"""Scheduler settings, from the environment."""

from __future__ import annotations

from dataclasses import dataclass

from vibewave.contracts.runtime.settings import CommonSettings, env_float, env_int


@dataclass(frozen=True, kw_only=True)
class SchedulerSettings:
    common: CommonSettings
    max_attempts: int  # SCHEDULER_MAX_ATTEMPTS: attempts per request when pods fault
    demand_interval_s: float  # SCHEDULER_DEMAND_INTERVAL: how often demand is re-announced

    @classmethod
    def from_env(cls, common: CommonSettings | None = None) -> SchedulerSettings:
        return cls(
            common=common or CommonSettings.from_env(),
            max_attempts=env_int("SCHEDULER_MAX_ATTEMPTS", 3),
            demand_interval_s=env_float("SCHEDULER_DEMAND_INTERVAL", 1.0),
        )
