"""The service image and the compose deployment, for the tests that build and run them (Docker present).

No registry is reachable from these machines, so everything is built here: the Debian base with
`deploy/image/build-base.sh` (once per machine: kept by its tag), the service image from
`deploy/image/Dockerfile` (built every time — docker's layer cache makes an unchanged tree a few
seconds, and a changed source is rebuilt), and the NATS image of `tests.support.containers`.
Compose projects are named `vwtest-<pid>-<hex>`, so the ones a killed session left behind are found by
their compose label and removed (containers and volumes) by the next one.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import docker  # type: ignore[import-untyped]  # no stubs installed
import yaml  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "deploy" / "compose" / "compose.yaml"
MAKE_ENV = ROOT / "deploy" / "compose" / "make-env.py"
BASE_IMAGE = "vibewave-base:bookworm"
APP_IMAGE = "vibewave:local"
PROJECT_PREFIX = "vwtest-"
PROJECT_LABEL = "com.docker.compose.project"
BUILD_TIMEOUT = 900.0  # a first build on a fresh machine: debootstrap, then the dependencies from PyPI


def compose_command() -> list[str] | None:
    """docker-compose (v1, Debian's), else the v2 plugin, else None."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        if subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30).returncode == 0:
            return ["docker", "compose"]
    return None


def debootstrap_available() -> bool:
    return bool(shutil.which("debootstrap") or Path("/usr/sbin/debootstrap").exists())


def _run(argv: Sequence[str], timeout: float, env: Mapping[str, str] | None = None) -> str:
    """Run a build or compose step; its output goes into the failure, not to the console."""
    done = subprocess.run(list(argv), cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-4000:]
        raise AssertionError(f"{' '.join(argv[:4])} … exited {done.returncode}:\n{tail}")
    return done.stdout


def ensure_base_image() -> str:
    """The local Debian base (build-base.sh does nothing when the tag exists)."""
    _run([str(ROOT / "deploy" / "image" / "build-base.sh"), BASE_IMAGE], BUILD_TIMEOUT)
    return BASE_IMAGE


def build_app_image(base: str) -> str:
    """`docker build` of the service image, always: the cache makes it cheap, and a changed source is in."""
    argv = ["docker", "build", "--network", "host", "--quiet", "--build-arg", f"BASE_IMAGE={base}",
            "-f", "deploy/image/Dockerfile", "-t", APP_IMAGE, "."]  # fmt: skip
    before = _image_id(APP_IMAGE)
    _run(argv, BUILD_TIMEOUT)
    if before and before != _image_id(APP_IMAGE):  # the previous build, untagged now: its venv layer is ~160 MB
        with contextlib.suppress(docker.errors.APIError):
            docker.from_env().images.remove(before)
    return APP_IMAGE


def _image_id(tag: str) -> str | None:
    try:
        image_id: str = docker.from_env().images.get(tag).id
    except docker.errors.ImageNotFound:
        return None
    return image_id


def image_size_mb(tag: str) -> float:
    return int(_run(["docker", "image", "inspect", "--format", "{{.Size}}", tag], 30).strip()) / 1e6


def compose_variables() -> set[str]:
    """Every `${NAME...}` the compose file interpolates."""
    return set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE_FILE.read_text()))


def write_env_file(path: Path, settings: Mapping[str, str]) -> dict[str, str]:
    """A fresh env file from deploy/compose/make-env.py, with `settings` (ports, images) added; its values."""
    _run(["python3", str(MAKE_ENV), "--output", str(path)], 60)
    with path.open("a") as out:
        out.writelines(f"{name}={value}\n" for name, value in settings.items())
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            name, _, value = line.partition("=")
            values[name] = value
    return values


class ComposeProject:
    """One `docker-compose -p <unique> -f deploy/compose/compose.yaml --env-file <file>` deployment."""

    def __init__(self, command: list[str], env_file: Path, profiles: Sequence[str] = ()) -> None:
        self.name = f"{PROJECT_PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
        self.argv = [*command, "-p", self.name, "-f", str(COMPOSE_FILE), "--env-file", str(env_file)]
        for profile in profiles:
            self.argv += ["--profile", profile]
        # only the env file sets the compose file's variables (a COMPOSE_PROFILES or API_PORT of the
        # calling shell would otherwise win over it)
        skip = compose_variables() | {"COMPOSE_PROFILES", "COMPOSE_PROJECT_NAME", "COMPOSE_FILE"}
        self.env = {name: value for name, value in os.environ.items() if name not in skip}

    def run(self, *args: str, timeout: float = 180.0) -> str:
        return _run([*self.argv, *args], timeout, env=self.env)

    def config(self) -> dict[str, Any]:
        rendered: dict[str, Any] = yaml.safe_load(self.run("config"))
        return rendered

    def container(self, service: str) -> Any:
        found = docker.from_env().containers.list(
            all=True, filters={"label": [f"{PROJECT_LABEL}={self.name}", f"com.docker.compose.service={service}"]}
        )
        assert found, f"no container of {service} in {self.name}"
        return found[0]

    def logs(self, tail: int = 40) -> str:
        with contextlib.suppress(AssertionError, subprocess.SubprocessError):
            return self.run("logs", "--no-color", "--tail", str(tail), timeout=60)
        return "(no logs)"

    def down(self) -> None:
        with contextlib.suppress(AssertionError, subprocess.SubprocessError):
            self.run("down", "-v", "--remove-orphans", "--timeout", "20", timeout=120)
        remove_project(self.name)  # whatever compose could not remove


def remove_project(name: str) -> None:
    """Remove a compose project's containers and volumes through the engine (no compose file needed)."""
    client = docker.from_env()
    for container in client.containers.list(all=True, filters={"label": f"{PROJECT_LABEL}={name}"}):
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True, v=True)
    for volume in client.volumes.list(filters={"label": f"{PROJECT_LABEL}={name}"}):
        with contextlib.suppress(docker.errors.APIError):
            volume.remove(force=True)


def remove_leftover_projects() -> None:
    """Projects of test sessions that are gone (killed before their `down` ran): nothing else removes them."""
    names = set()
    for container in docker.from_env().containers.list(all=True, filters={"label": PROJECT_LABEL}):
        name = container.labels.get(PROJECT_LABEL, "")
        if name.startswith(PROJECT_PREFIX):
            names.add(name)
    for name in names:
        pid = name[len(PROJECT_PREFIX) :].split("-")[0]
        try:
            os.kill(int(pid), 0)
        except (ProcessLookupError, ValueError):
            remove_project(name)
        except PermissionError:
            pass  # alive, another user's
