"""API settings, from the environment."""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from vibewave.runtime.process import ConfigurationError
from vibewave.runtime.settings import CommonSettings, Secret, env_float, env_int, env_str
from vibewave.runtime.storage import StorageSettings

LOOPBACK = "127.0.0.1"
AUTH_MODES = ("auto", "on", "off")
WEBHOOK_SECRET = re.compile(r"^whsec_[A-Za-z0-9+/]{32,}={0,2}$")  # as ApiKeyCreate.webhook_secret


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, kw_only=True)
class WebhookSettings:
    """How webhooks are sent (see `webhooks`); the delays and tries default to the contract's consumer."""

    secret: Secret = field(default_factory=lambda: Secret(""))  # WEBHOOK_SECRET: signs for keys without their own
    retry_delays_s: tuple[float, ...] | None = None  # WEBHOOK_RETRY_DELAYS: "1,2,4", seconds before each retry
    max_tries: int | None = None  # WEBHOOK_MAX_TRIES: tries of one delivery before it is dead
    timeout_s: float = 10.0  # WEBHOOK_TIMEOUT: how long one try waits for the receiver's answer

    @classmethod
    def from_env(cls) -> WebhookSettings:
        secret = Secret(os.environ.get("WEBHOOK_SECRET", "").strip())
        if secret and not WEBHOOK_SECRET.match(secret.reveal()):
            raise ConfigurationError("WEBHOOK_SECRET must be `whsec_` followed by base64 (24 to 64 random bytes)")
        raw = env_str("WEBHOOK_RETRY_DELAYS", "")
        try:
            delays = tuple(float(d) for d in raw.split(",")) if raw else None
            max_tries = env_int("WEBHOOK_MAX_TRIES", 0) or None
            timeout_s = env_float("WEBHOOK_TIMEOUT", 10.0)
        except ValueError as exc:
            raise ConfigurationError(f"WEBHOOK_RETRY_DELAYS, WEBHOOK_MAX_TRIES or WEBHOOK_TIMEOUT: {exc}") from exc
        if any(d <= 0 for d in delays or ()) or (max_tries or 1) < 1 or timeout_s <= 0:
            raise ConfigurationError("WEBHOOK_RETRY_DELAYS, WEBHOOK_MAX_TRIES and WEBHOOK_TIMEOUT must be positive")
        return cls(secret=secret, retry_delays_s=delays, max_tries=max_tries, timeout_s=timeout_s)


@dataclass(frozen=True, kw_only=True)
class ApiSettings:
    common: CommonSettings
    host: str  # API_HOST: loopback unless keys are configured (or VIBEWAVE_AUTH=off)
    port: int  # API_PORT (8000)
    workflows_dir: Path | None  # WORKFLOWS_DIR: operator's workflow folders, beside the shipped ones
    health_timeout_s: float  # HEALTH_TIMEOUT: how long /health waits for each service's answer
    admin_key: Secret  # VIBEWAVE_ADMIN_KEY: the bootstrap admin key (empty: none)
    auth: bool  # whether every route but health and docs asks for a key (VIBEWAVE_AUTH, default: iff a key is set)
    storage: StorageSettings = field(default_factory=StorageSettings)  # OUTPUT_STORE and S3_*: where files are
    webhooks: WebhookSettings = field(default_factory=lambda: WebhookSettings())  # WEBHOOK_*: how they are sent

    @classmethod
    def from_env(cls, common: CommonSettings | None = None) -> ApiSettings:
        workflows_dir = os.environ.get("WORKFLOWS_DIR")
        admin_key = Secret(os.environ.get("VIBEWAVE_ADMIN_KEY", "").strip())
        mode = env_str("VIBEWAVE_AUTH", "auto").strip().lower()
        if mode not in AUTH_MODES:
            raise ConfigurationError(f"VIBEWAVE_AUTH must be one of {', '.join(AUTH_MODES)}, not {mode!r}")
        auth = mode == "on" or (mode == "auto" and bool(admin_key))
        if mode == "off" and admin_key:
            raise ConfigurationError("VIBEWAVE_AUTH=off with VIBEWAVE_ADMIN_KEY set: unset one of them")
        host = env_str("API_HOST", "0.0.0.0" if auth or mode == "off" else LOOPBACK)
        if not auth and mode != "off" and not is_loopback(host):
            raise ConfigurationError(
                f"API_HOST={host} would serve the API to the network without authentication: anyone who can "
                "reach it could create and terminate GPU pods. Set VIBEWAVE_ADMIN_KEY (a long random secret; "
                "clients then send 'Authorization: Bearer <key>'), or VIBEWAVE_AUTH=off to serve it open anyway"
            )
        if admin_key and len(admin_key.reveal()) < 16:
            raise ConfigurationError("VIBEWAVE_ADMIN_KEY must be at least 16 characters (use a long random secret)")
        return cls(
            common=common or CommonSettings.from_env(),
            host=host,
            port=env_int("API_PORT", 8000),
            workflows_dir=Path(workflows_dir) if workflows_dir else None,
            health_timeout_s=env_float("HEALTH_TIMEOUT", 1.0),
            admin_key=admin_key,
            auth=auth,
            storage=StorageSettings.from_env(),
            webhooks=WebhookSettings.from_env(),
        )
