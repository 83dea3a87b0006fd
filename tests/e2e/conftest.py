from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.support.stack import Stack
from vibewave.devstack.nats_server import EmbeddedNats

StackFactory = Callable[..., Stack]


@pytest.fixture(scope="module")
def stack_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    """A NATS server of the module's own, so its streams and buckets are its alone."""
    server = EmbeddedNats(tmp_path_factory.mktemp("e2e-nats"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def start_own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackFactory]:
    """A stack on a NATS server of its own, both stopped when the test ends: for a test whose settings or
    state must not meet another's (pod records, circuit breakers, the fleet's heartbeat)."""
    with ExitStack() as cleanup:

        def start(service_env: dict[str, dict[str, str]] | None = None, **settings: Any) -> Stack:
            nats = EmbeddedNats(tmp_path_factory.mktemp("own-nats"))
            nats.start()
            cleanup.callback(nats.stop)
            services = Stack(nats.url, tmp_path_factory.mktemp("own-home"), service_env=service_env, **settings)
            cleanup.callback(services.close)
            services.start()
            services.wait_healthy(timeout=60)
            return services

        yield start


@pytest.fixture(scope="module")
def start_stack(stack_nats: EmbeddedNats, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackFactory]:
    """Start the four services (with extra settings) against the module's NATS; all stopped at the end."""
    with ExitStack() as cleanup:

        def start(nats: EmbeddedNats | None = None, home: Path | None = None, **settings: Any) -> Stack:
            services = Stack((nats or stack_nats).url, home or tmp_path_factory.mktemp("e2e-home"), **settings)
            cleanup.callback(services.close)
            services.start()
            services.wait_healthy(timeout=60)
            return services

        yield start


@pytest.fixture(scope="module")
def stack(start_stack: StackFactory) -> Stack:
    return start_stack()
