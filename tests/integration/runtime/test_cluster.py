"""The services' NATS setup on a local 3-node cluster (`vibewave.devstack.nats_cluster`): with
NATS_REPLICAS=3 every stream, bucket and object store has three replicas, and when the node that leads
the requests stream is SIGKILLed, what was stored is still there and a client given the comma-separated
NATS_URL goes on publishing and reading."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import nats
import nats.errors
import nats.js.errors
import pytest

from tests.support.cluster import cluster_nodes
from vibewave.contracts.events import BUCKETS, OBJECT_STORES, REQUESTS_BUCKET, REQUESTS_STREAM, STREAMS
from vibewave.devstack.nats_cluster import NatsCluster, free_ports
from vibewave.runtime import broker as runtime
from vibewave.runtime.settings import CommonSettings

FAILOVER_BOUND_S = 20.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """Through testcontainers when Docker answers, else the binary (`tests.support.cluster`)."""
    with cluster_nodes(tmp_path / "cluster") as started:
        yield started


async def test_r3_everywhere_and_the_requests_stream_survives_losing_its_leader(
    cluster: NatsCluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("NATS_URL", cluster.url)
    monkeypatch.setenv("NATS_REPLICAS", "3")
    monkeypatch.setenv("VIBEWAVE_HOME", str(tmp_path / "home"))
    settings = CommonSettings.from_env()
    assert len(settings.nats_servers) == 3
    broker = runtime.new_broker("cluster-test", settings)
    await runtime.connect(broker)
    try:
        await runtime.provision(broker, settings)
        js = runtime.jetstream(broker)
        names = [s.name for s in STREAMS] + [f"KV_{b.name}" for b in BUCKETS] + [f"OBJ_{o.name}" for o in OBJECT_STORES]
        for name in names:
            assert (await js.stream_info(name)).config.num_replicas == 3, name

        kv = await js.key_value(REQUESTS_BUCKET.name)
        for i in range(20):
            await kv.put(f"req-{i}", msgspec.json.encode({"n": i}))
        info = await js.stream_info(REQUESTS_STREAM.name)
        await js.publish("vw.req.req-0.submitted", b"{}")
        before = (await js.stream_info(REQUESTS_STREAM.name)).state.messages
        assert info.cluster is not None and info.cluster.leader is not None
        old_leader = info.cluster.leader

        cluster.node(old_leader).kill()

        deadline = time.monotonic() + FAILOVER_BOUND_S
        started = time.monotonic()
        while True:
            try:
                await js.publish("vw.req.req-1.submitted", b"{}", timeout=1)
                break
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.js.errors.Error):
                assert time.monotonic() < deadline, f"no publish within {FAILOVER_BOUND_S}s of losing {old_leader}"
                await asyncio.sleep(0.1)
        failover_s = time.monotonic() - started

        after = await js.stream_info(REQUESTS_STREAM.name)
        assert after.cluster is not None and after.cluster.leader not in (None, old_leader)
        assert after.state.messages == before + 1

        async def stored() -> list[object]:  # KV_requests may have led from the lost node too: it elects anew
            while True:
                try:
                    return [msgspec.json.decode((await kv.get(f"req-{i}")).value or b"") for i in range(20)]
                except (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.js.errors.Error):
                    assert time.monotonic() < deadline, f"the requests bucket unreadable {FAILOVER_BOUND_S}s on"
                    await asyncio.sleep(0.1)

        assert await stored() == [{"n": i} for i in range(20)]
        print(f"requests stream: leader {old_leader} killed, {after.cluster.leader} took over in {failover_s:.2f}s")
    finally:
        await runtime.stop_broker(broker)


def test_a_container_cluster_whose_node_finds_its_port_taken_forms_again_on_fresh_ports() -> None:
    """On the host's network a port chosen free can be taken before the node binds it: that node exits,
    and the cluster starts again on fresh ports instead of timing out."""
    from tests.support.containers import STARTED, ContainerCluster, docker_available

    if not docker_available():
        pytest.skip("needs a Docker engine (`.ci/run` starts one)")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))  # bound, not listening: the node cannot bind it, and nothing answers there
    try:
        ports = free_ports(6)
        ports[2] = taken.getsockname()[1]  # n3's client port
        reported = len(STARTED)
        with ContainerCluster(ports=ports) as cluster:
            assert taken.getsockname()[1] not in {int(url.rsplit(":", 1)[1]) for url in cluster.url.split(",")}
            asyncio.run(_three_replicas_placed(cluster.url))
        retried = [line for line in STARTED[reported:] if "lost a node" in line]
        assert len(retried) == 1 and "n3" in retried[0] and "status exited" in retried[0], STARTED[reported:]
    finally:
        taken.close()


async def _three_replicas_placed(url: str) -> None:
    nc = await nats.connect(url.split(","))
    try:
        js = nc.jetstream()
        await js.add_stream(name="PORTS_PROBE", subjects=["_ports.probe"], num_replicas=3)
        assert (await js.stream_info("PORTS_PROBE")).config.num_replicas == 3
    finally:
        await nc.close()
