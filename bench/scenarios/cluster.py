"""Dispatch and end-to-end overhead on a 3-node NATS cluster (R3 streams, buckets and object store) next to
a single server (R1), measured in the same run with the same series (see `pipeline`): what replication
costs each request. Every write the services make is acknowledged by a quorum of two nodes on the
cluster, so each store-then-announce step pays a route round trip more than on one server."""

from __future__ import annotations

from typing import Any

from bench.common import log
from bench.context import Context
from bench.scenarios.pipeline import measure


async def run(ctx: Context) -> dict[str, Any]:
    single = await measure(ctx, cluster=False, label="cluster-single")
    log("cluster: single node done; now the 3-node cluster")
    clustered = await measure(ctx, cluster=True, label="cluster-r3")
    legs = ("accept_to_prompt", "success_to_readable", "e2e_overhead")
    return {
        "single_node": single,
        "cluster_r3": clustered,
        "added_by_the_cluster_ms": {
            leg: {
                q: round(clustered[leg][q] - single[leg][q], 2)
                for q in ("p50_ms", "p99_ms")
                if q in clustered.get(leg, {}) and q in single.get(leg, {})
            }
            for leg in legs
        },
    }
