"""Settings every Vibewave process shares, read from the environment in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from vibewave.contracts.events import DEFAULT_RETENTION_S

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class Secret:
    """A value that never shows itself in a repr, a log line or an exception."""

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret(<hidden>)" if self._value else "Secret(<empty>)"

    __str__ = __repr__


def parse_duration(raw: str) -> float:
    """`90`, `90s`, `15m`, `12h`, `7d`, `2w` → seconds (ValueError otherwise)."""
    text = raw.strip().lower()
    unit = _DURATION_UNITS.get(text[-1:]) if text else None
    number = float(text[:-1] if unit else text)
    seconds = number * (unit or 1)
    if seconds <= 0:
        raise ValueError(f"a duration must be positive, not {raw!r}")
    return seconds


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return default if raw is None or raw.strip() == "" else int(raw)


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return default if raw is None or raw.strip() == "" else float(raw)


def env_str(name: str, default: str) -> str:
    raw = os.environ.get(name)
    return default if raw is None or raw.strip() == "" else raw.strip()


@dataclass(frozen=True, kw_only=True)
class CommonSettings:
    nats_url: str  # NATS_URL
    home: Path  # VIBEWAVE_HOME: state, logs and the embedded NATS store (default ./.vibewave)
    log_level: str  # LOG_LEVEL (INFO; DEBUG when DEBUG=true)
    debug: bool  # DEBUG
    replicas: int  # NATS_REPLICAS: stream/bucket replicas (1 locally, 3 in a cluster)
    retention_s: float = DEFAULT_RETENTION_S  # VIBEWAVE_RETENTION: finished requests, keys and files kept (7d)
    nats_user: str | None = None  # NATS_USER: this service's own NATS user (None: connect without credentials)
    nats_password: Secret = field(default_factory=lambda: Secret(""))  # NATS_PASSWORD: its password (never logged)
    provision: bool = True  # NATS_PROVISION: create/update the contract's streams, buckets and store at start
    ops_host: str = "127.0.0.1"  # OPS_HOST: where the ops port listens (0.0.0.0 in containers)
    ops_port: int | None = None  # OPS_PORT: /metrics, /health/live, /health/ready (None: no ops server)
    # VIBEWAVE_TIME_SCALE: simulated seconds per real second, for time-compressed benchmarks only (1: real time).
    # Fixed durations the services assume (catalogue run times, the policies' defaults) are divided by it.
    time_scale: float = 1.0

    @property
    def nats_servers(self) -> list[str]:
        """NATS_URL may name several servers, comma-separated, as NATS tools accept."""
        return [url.strip() for url in self.nats_url.split(",") if url.strip()]

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @classmethod
    def from_env(cls) -> CommonSettings:
        debug = env_bool("DEBUG")
        return cls(
            nats_url=env_str("NATS_URL", DEFAULT_NATS_URL),
            home=Path(env_str("VIBEWAVE_HOME", ".vibewave")).absolute(),
            log_level=env_str("LOG_LEVEL", "DEBUG" if debug else "INFO").upper(),
            debug=debug,
            replicas=env_int("NATS_REPLICAS", 1),
            retention_s=parse_duration(env_str("VIBEWAVE_RETENTION", str(DEFAULT_RETENTION_S))),
            nats_user=os.environ.get("NATS_USER", "").strip() or None,
            nats_password=Secret(os.environ.get("NATS_PASSWORD", "")),
            provision=env_bool("NATS_PROVISION", True),
            ops_host=env_str("OPS_HOST", "127.0.0.1"),
            ops_port=env_int("OPS_PORT", 0) if env_str("OPS_PORT", "") else None,
            time_scale=env_float("VIBEWAVE_TIME_SCALE", 1.0),
        )
