"""The deployment as an operator runs it: the service image built from the locked workspace, the compose
file's core profile (a 3-node NATS cluster with auth, two apis, two schedulers, one pod-manager, two
executors, all in containers on the host's network), a request through the containerised api to a
completed PNG, and again with one NATS node stopped. The observability profile's images cannot be
pulled here: its part is checked in the rendered configuration.

Skipped only where no Docker engine (or no docker-compose/debootstrap) is there and CI is not set; in CI
it must run (deploy/ci/install-image-tools.sh installs the tools).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.containers import docker_available, nats_image
from tests.support.images import (
    ComposeProject,
    build_app_image,
    compose_command,
    debootstrap_available,
    ensure_base_image,
    image_size_mb,
    remove_leftover_projects,
    write_env_file,
)
from tests.support.stack import wait_for
from vibewave.devstack import nats_auth
from vibewave.devstack.nats_cluster import free_ports

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SERVICES = ("scheduler-1", "scheduler-2", "pod-manager", "executor-1", "executor-2", "api-1", "api-2")
OBSERVABILITY = ("otel-collector", "jaeger", "prometheus", "grafana")
PORT_VARIABLES = (
    "NATS_1_PORT", "NATS_2_PORT", "NATS_3_PORT", "NATS_1_ROUTE_PORT", "NATS_2_ROUTE_PORT", "NATS_3_ROUTE_PORT",
    "API_1_PORT", "API_2_PORT", "SCHEDULER_1_OPS_PORT", "SCHEDULER_2_OPS_PORT", "POD_MANAGER_OPS_PORT",
    "EXECUTOR_1_OPS_PORT", "EXECUTOR_2_OPS_PORT",
)  # fmt: skip


def _require(ready: bool, what: str) -> None:
    if ready:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing in CI (.ci/run installs it)")
    pytest.skip(f"{what} is not available here")


@pytest.fixture(scope="module")
def compose() -> list[str]:
    command = compose_command()
    _require(command is not None, "docker-compose")
    assert command is not None
    return command


def _env_file(tmp_path: Path, **extra: str) -> tuple[Path, dict[str, str]]:
    ports = dict(zip(PORT_VARIABLES, map(str, free_ports(len(PORT_VARIABLES))), strict=True))
    path = tmp_path / "compose.env"
    return path, write_env_file(path, {**ports, **extra})


def _service_env(config: dict[str, Any], service: str) -> dict[str, str]:
    environment: dict[str, str] = config["services"][service].get("environment") or {}
    return {name: str(value) for name, value in environment.items()}


def test_observability_profile_renders_and_secrets_reach_only_their_services(
    compose: list[str], tmp_path: Path
) -> None:
    env_file, values = _env_file(tmp_path, RUNPOD_API_KEY="rpa_test_not_a_real_key")
    config = ComposeProject(compose, env_file, profiles=["observability"]).config()
    assert set(config["services"]) == {"nats-1", "nats-2", "nats-3", *SERVICES, *OBSERVABILITY}
    # `up` without a profile runs the services that have none (docker-compose 1.29 renders them all)
    profiles = {name: service.get("profiles", []) for name, service in config["services"].items()}
    assert {name for name, names in profiles.items() if names} == set(OBSERVABILITY)
    assert all(profiles[name] == ["observability"] for name in OBSERVABILITY)

    secrets = ("RUNPOD_API_KEY", "VIBEWAVE_ADMIN_KEY", "WEBHOOK_SECRET", "VIBEWAVE_POD_TOKEN_KEY")
    holders = {name: [s for s in config["services"] if name in _service_env(config, s)] for name in secrets}
    assert holders["RUNPOD_API_KEY"] == ["pod-manager"]
    assert sorted(holders["VIBEWAVE_ADMIN_KEY"]) == sorted(holders["WEBHOOK_SECRET"]) == ["api-1", "api-2"]
    assert sorted(holders["VIBEWAVE_POD_TOKEN_KEY"]) == ["executor-1", "executor-2", "pod-manager"]

    passwords = {user: values[nats_auth.password_env(user)] for user in nats_auth.USERS}
    for service in SERVICES:
        env = _service_env(config, service)
        user = service.rsplit("-", 1)[0] if service[-1].isdigit() else service
        assert env["NATS_USER"] == user and env["NATS_PASSWORD"] == passwords[user], service
        assert env["NATS_PROVISION"] == ("1" if user == nats_auth.PROVISIONER else "0"), service
        others = {p for u, p in passwords.items() if u != user}
        assert not others & set(env.values()), f"{service} holds another user's NATS password"
        assert env["NATS_REPLICAS"] == "3" and len(env["NATS_URL"].split(",")) == 3
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "", "the core profile exports nothing by default"
        assert config["services"][service]["network_mode"] == "host"
    for node in ("nats-1", "nats-2", "nats-3"):
        env = _service_env(config, node)
        assert all(env[nats_auth.password_env(user)] == password for user, password in passwords.items())
        assert "VIBEWAVE_ADMIN_KEY" not in env and "RUNPOD_API_KEY" not in env
    for extra in OBSERVABILITY:
        assert not {"RUNPOD_API_KEY", "VIBEWAVE_ADMIN_KEY", "NATS_PASSWORD"} & set(_service_env(config, extra))


@pytest.fixture(scope="module")
def images() -> Iterator[dict[str, str]]:
    _require(docker_available(), "a Docker engine")
    _require(compose_command() is not None, "docker-compose")
    remove_leftover_projects()
    started = time.monotonic()
    base = ensure_base_image() if debootstrap_available() else None
    _require(base is not None, "debootstrap")
    assert base is not None
    app = build_app_image(base)
    nats = nats_image()
    print(f"images ready in {time.monotonic() - started:.0f}s: {app} {image_size_mb(app):.0f} MB on {base}")
    yield {"VIBEWAVE_IMAGE": app, "NATS_IMAGE": nats}


def _submit(client: httpx.Client, seed: int) -> str:
    body = {"prompt": "A futuristic cyberpunk cityscape at night with neon lights", "width": 512, "height": 512,
            "seed": seed}  # fmt: skip
    accepted = client.post("/api/qwen/generate-async", json=body)
    assert accepted.status_code == 202, accepted.text
    request_id: str = accepted.json()["request_id"]
    return request_id


def _completed(client: httpx.Client, request_id: str, timeout: float) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        response = client.get(f"/api/qwen/status/{request_id}")
        body: dict[str, Any] = response.json() if response.status_code == 200 else {}
        return body if body.get("status") in {"completed", "failed", "cancelled"} else None

    done: dict[str, Any] = wait_for(finished, timeout, f"request {request_id} to finish", interval=0.25)
    assert done["status"] == "completed", done
    return done


def _png(client: httpx.Client, done: dict[str, Any]) -> bytes:
    name = done["result"]["files"][0]
    download = client.get(f"/api/files/{name}")
    assert download.status_code == 200, download.text
    assert download.content[:8] == PNG_SIGNATURE, "not a PNG"
    return download.content


def test_core_profile_serves_a_png_and_survives_a_stopped_nats_node(
    compose: list[str], images: dict[str, str], tmp_path: Path
) -> None:
    env_file, values = _env_file(tmp_path, **images, SIM_STEP_TIME="0.01", POD_PROBE_INTERVAL="0.2",
                                 SCHEDULER_DEMAND_INTERVAL="0.2")  # fmt: skip
    project = ComposeProject(compose, env_file)
    headers = {"Authorization": f"Bearer {values['VIBEWAVE_ADMIN_KEY']}"}
    api_1 = httpx.Client(base_url=f"http://127.0.0.1:{values['API_1_PORT']}", headers=headers, timeout=10)
    api_2 = httpx.Client(base_url=f"http://127.0.0.1:{values['API_2_PORT']}", headers=headers, timeout=10)
    started = time.monotonic()
    try:
        project.run("up", "-d")

        def healthy() -> bool:
            try:
                return api_1.get("/health").status_code == 200 and api_2.get("/health").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 120, "both containerised apis' /health to be 200 (NATS cluster and every service up)", 0.5)
        print(f"compose up and healthy in {time.monotonic() - started:.0f}s")

        # Docker's healthchecks: every service's /health/ready (the ops port; the api's own port)
        def health() -> dict[str, str]:
            return {s: project.container(s).attrs["State"].get("Health", {}).get("Status", "") for s in SERVICES}

        wait_for(lambda: set(health().values()) == {"healthy"}, 60, "every service container to be healthy", 1.0)
        unauthenticated = httpx.get(f"http://127.0.0.1:{values['API_1_PORT']}/api/qwen/presets", timeout=10)
        assert unauthenticated.status_code == 401, "the api asks for keys here"
        assert api_1.get("/docs/assets/swagger-ui-dist/swagger-ui-bundle.js").status_code == 200, "no Django needed"

        # submitted through one api replica, followed through the other
        first = _completed(api_2, _submit(api_1, seed=1601), timeout=90)
        assert first["result"]["files"] == ["qwen_1601_001.png"]
        _png(api_1, first)

        project.container("nats-1").stop(timeout=10)
        stopped = time.monotonic()
        second = _completed(api_1, _submit(api_2, seed=1602), timeout=120)
        _png(api_2, second)
        print(f"with nats-1 stopped: completed in {time.monotonic() - stopped:.1f}s")
    except BaseException:
        print(project.logs())
        raise
    finally:
        api_1.close()
        api_2.close()
        project.down()
