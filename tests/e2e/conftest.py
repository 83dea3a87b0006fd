from collections.abc import Iterator

import pytest

from tests.support.stack import Stack
from vibewave.devstack.nats_server import EmbeddedNats


@pytest.fixture(scope="module")
def stack_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    """A NATS server of the module's own, so its streams and buckets are its alone."""
    server = EmbeddedNats(tmp_path_factory.mktemp("e2e-nats"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack(stack_nats: EmbeddedNats, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    services = Stack(stack_nats.url, tmp_path_factory.mktemp("e2e-home"))
    services.start()
    try:
        services.wait_healthy(timeout=60)
        yield services
    finally:
        services.close()
