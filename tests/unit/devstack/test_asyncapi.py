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


def test_no_core_subscriber_answers_the_publishes_of_a_stream():
    """A JetStream publish waits for its PubAck on its reply subject; a core subscriber on a stream's
    subject that answered it (FastStream answers every message with a reply subject unless `no_reply`)
    would hand the publisher an empty body instead (seen: a 500 on DELETE while the executor listened for
    cancels). Only request/reply subscribers may answer, and those are on no stream."""
    import re

    from faststream.nats.subscriber.usecases.core_subscriber import CoreSubscriber

    from vibewave.contracts.events import STREAMS
    from vibewave.devstack.asyncapi import _subject, brokers

    stored = [re.compile(s.replace(".", r"\.").replace(">", ".+").replace("*", "[^.]+")) for st in STREAMS
              for s in st.subjects]  # fmt: skip
    for service, broker in brokers().items():
        for sub in broker.subscribers:
            if isinstance(sub, CoreSubscriber):
                subject = _subject(sub).replace("*", "x").replace(">", "x")
                if any(p.fullmatch(subject) for p in stored):
                    assert sub._no_reply, f"{service} listens on {_subject(sub)} and would answer its publishes"
