"""API settings, from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from vibewave.runtime.settings import CommonSettings, env_float, env_int, env_str


@dataclass(frozen=True, kw_only=True)
class ApiSettings:
    common: CommonSettings
    host: str  # API_HOST
    port: int  # API_PORT (8000)
    workflows_dir: Path | None  # WORKFLOWS_DIR: operator's workflow folders, beside the shipped ones
    health_timeout_s: float  # HEALTH_TIMEOUT: how long /health waits for each service's answer

    @classmethod
    def from_env(cls, common: CommonSettings | None = None) -> ApiSettings:
        workflows_dir = os.environ.get("WORKFLOWS_DIR")
        return cls(
            common=common or CommonSettings.from_env(),
            host=env_str("API_HOST", "0.0.0.0"),
            port=env_int("API_PORT", 8000),
            workflows_dir=Path(workflows_dir) if workflows_dir else None,
            health_timeout_s=env_float("HEALTH_TIMEOUT", 1.0),
        )
