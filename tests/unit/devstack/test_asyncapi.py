"""The AsyncAPI document is what the four FastStream apps declare; the checked-in copy must be current
(regenerate with `python -m vibewave.devstack.asyncapi`)."""

import pytest

from vibewave.contracts.events import CHANNELS
from vibewave.contracts.export import SCHEMA_DIR, render
from vibewave.devstack.asyncapi import asyncapi_document

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def document():
    return asyncapi_document()


def test_checked_in_document_is_current(document):
    assert (SCHEMA_DIR / "asyncapi.json").read_text() == render(document), (
        "contracts/schema/asyncapi.json is stale: run `python -m vibewave.devstack.asyncapi`"
    )


def test_each_channel_is_sent_by_the_service_the_contract_names(document):
    """The contract's table and the code agree: every bus channel's publisher declares a send on it
    (the pod admin calls are requests the api makes with `broker.request`, not a declared publisher)."""
    sends = {(op["x-service"], op["channel"]["$ref"].split("/")[-1])
             for op in document["operations"].values() if op["action"] == "send"}  # fmt: skip
    for channel in CHANNELS:
        if (
            channel.address.startswith("vw.")
            and not channel.address.startswith("vw.rpc")
            and channel.publisher in ("api", "scheduler", "pod-manager", "executor")
        ):
            assert (channel.publisher, channel.message.__name__) in sends, channel.address


def test_public_channels_streams_and_headers_are_marked(document):
    channels = document["channels"]
    assert channels["RequestCompleted"]["x-public"] and not channels["AttemptSucceeded"]["x-public"]
    assert channels["RequestCompleted"]["x-stream"] == "REQUESTS"
    assert channels["Assignment"]["x-stream"] == "DISPATCH"
    assert channels["DeadLetter"]["x-stream"] == "DEADLETTER"
    headers = document["components"]["messages"]["RequestCompleted"]["headers"]["properties"]
    assert {"Nats-Msg-Id", "traceparent"} <= set(headers)
    durables = {op.get("x-durable") for op in document["operations"].values()}
    assert {"scheduler", "executor", "pod-manager-faults"} <= durables
