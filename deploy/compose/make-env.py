#!/usr/bin/env python3
"""Write the compose deployment's env file with fresh secrets: every NATS user's password (the nodes read
them all, each service only its own), the routes' password, the api's admin key, the pods' token key, a
webhook signing secret and Grafana's admin password.

    python3 deploy/compose/make-env.py [--output deploy/compose/.env] [--force]

Only the standard library is used, so it runs with any Python 3.11 on the host. The file is created with
mode 0600 and is never overwritten without --force (new passwords would lock the running cluster out).
Keep it out of version control (.gitignore has deploy/compose/.env).
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import sys
from pathlib import Path

# as vibewave.devstack.nats_auth: USERS and password_env (tests/unit/devstack/test_compose_files.py holds them equal)
NATS_USERS = ("api", "scheduler", "pod-manager", "executor", "observer")
PASSWORD_ENV_PREFIX = "VIBEWAVE_NATS_PASSWORD_"

OPTIONAL = """
# Optional (uncomment to use):
# RUNPOD_API_KEY=...                  # pod-manager only: pods on RunPod instead of simulated local ones
# API_HOST=0.0.0.0                    # serve the api to the network (it always asks for keys here)
# COMPOSE_PROFILES=observability      # the OpenTelemetry Collector, Jaeger, Prometheus and Grafana too ...
# OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318   # ... and the services' traces and metrics to it
"""


def password_env(user: str) -> str:
    return PASSWORD_ENV_PREFIX + user.upper().replace("-", "_")


def password() -> str:
    """48 hex digits after a letter: nats-server takes an all-digit `$VAR` password for a number and will not start."""
    return "p" + secrets.token_hex(24)


def fresh_environment() -> dict[str, str]:
    """Every secret the compose file asks for, drawn anew."""
    env = {password_env(user): password() for user in NATS_USERS}
    env["VIBEWAVE_NATS_ROUTE_PASSWORD"] = password()
    env["VIBEWAVE_ADMIN_KEY"] = secrets.token_urlsafe(32)
    env["VIBEWAVE_POD_TOKEN_KEY"] = secrets.token_urlsafe(32)  # as vibewave.runtime.pod_token.new_key
    env["WEBHOOK_SECRET"] = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    env["GRAFANA_ADMIN_PASSWORD"] = secrets.token_urlsafe(18)
    return env


def render(env: dict[str, str]) -> str:
    lines = ["# Vibewave compose deployment: secrets made by deploy/compose/make-env.py. Keep private."]
    lines += [f"{name}={value}" for name, value in env.items()]
    return "\n".join(lines) + "\n" + OPTIONAL


def write(path: Path, text: str, *, force: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the compose deployment's env file with fresh secrets.")
    parser.add_argument("--output", type=Path, default=Path(__file__).resolve().parent / ".env")
    parser.add_argument("--force", action="store_true", help="replace an existing file (new passwords)")
    args = parser.parse_args(argv)
    try:
        write(args.output, render(fresh_environment()), force=args.force)
    except FileExistsError:
        print(f"{args.output} exists: keeping it (--force replaces it with new secrets)", file=sys.stderr)
        return 1
    print(f"wrote {args.output} (mode 0600)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
