"""`make run-cluster`: the whole system on a local 3-node NATS cluster with R3 streams, buckets and object
store; a request completes on it, and Ctrl-C stops the services, then every node, leaving nothing."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from pathlib import Path

import nats

from tests.chaos.harness import MakeRun

STOP_BOUND = 20  # seconds from the signal to make's exit


async def _replicas(url: str, names: tuple[str, ...]) -> dict[str, int]:
    nc = await nats.connect(url.split(","))
    try:
        js = nc.jetstream()
        return {name: (await js.stream_info(name)).config.num_replicas for name in names}
    finally:
        await nc.close()


def test_make_run_cluster_serves_on_three_nodes_and_stops_cleanly(tmp_path: Path) -> None:
    run = MakeRun(tmp_path / "home")
    run.command = ["make", "--no-print-directory", "run-cluster"]
    run.start()
    try:
        run.wait_healthy()
        found = re.search(r"NATS cluster of 3 nodes \(R3\) at (\S+)", run.output())
        assert found, run.output()[-2000:]
        url = found.group(1)
        assert len(url.split(",")) == 3
        run.wait_completed(run.submit())
        assert asyncio.run(_replicas(url, ("REQUESTS", "KV_requests", "OBJ_outputs"))) == {
            "REQUESTS": 3, "KV_requests": 3, "OBJ_outputs": 3,
        }  # fmt: skip
        began = time.monotonic()
        run.signal_group(signal.SIGINT)
        run.wait_exit(STOP_BOUND - (time.monotonic() - began))
        output = run.output()
        assert "Traceback" not in output, output[-4000:]
        assert "| all stopped in" in output.splitlines()[-1], output[-1000:]
        run.wait_no_processes(5)  # the three nodes (their stores are under the home) included
    finally:
        run.close()
