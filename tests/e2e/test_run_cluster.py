"""`make run-cluster`: the whole system on a local 3-node NATS cluster with R3 streams, buckets and object
store (with VIBEWAVE_NATS_AUTH too: every node enforces the services' users); a request completes on it,
and Ctrl-C stops the services, then every node, leaving nothing."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from pathlib import Path

import nats
import nats.errors
import pytest

from tests.chaos.harness import MakeRun

STOP_BOUND = 20  # seconds from the signal to make's exit


async def _replicas(url: str, names: tuple[str, ...], **credentials: str) -> dict[str, int]:
    nc = await nats.connect(url.split(","), **credentials)
    try:
        js = nc.jetstream()
        return {name: (await js.stream_info(name)).config.num_replicas for name in names}
    finally:
        await nc.close()


async def _anonymous(url: str) -> None:
    await nats.connect(url, allow_reconnect=False, connect_timeout=2)


@pytest.mark.parametrize("auth", [False, True], ids=["open", "nats-auth"])
def test_make_run_cluster_serves_on_three_nodes_and_stops_cleanly(tmp_path: Path, auth: bool) -> None:
    run = MakeRun(tmp_path / "home", env={"VIBEWAVE_NATS_AUTH": "1"} if auth else None)
    run.command = ["make", "--no-print-directory", "run-cluster"]
    run.start()
    try:
        run.wait_healthy()
        found = re.search(r"NATS cluster of 3 nodes \(R3\) at (\S+)", run.output())
        assert found, run.output()[-2000:]
        url = found.group(1)
        assert len(url.split(",")) == 3
        run.wait_completed(run.submit())
        credentials: dict[str, str] = {}
        if auth:
            passwords = json.loads((run.home / "nats-auth" / "passwords.json").read_text())
            credentials = {"user": "scheduler", "password": passwords["scheduler"]}
            for node in url.split(","):
                with pytest.raises(nats.errors.Error, match=r"(?i)authorization violation"):
                    asyncio.run(_anonymous(node))
        assert asyncio.run(_replicas(url, ("REQUESTS", "KV_requests", "OBJ_outputs"), **credentials)) == {
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
