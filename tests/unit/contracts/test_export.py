"""The checked-in contract documents must match the code; regenerate with `python -m vibewave.contracts.export`."""

import pytest

from vibewave.contracts.events import CHANNELS
from vibewave.contracts.export import DOCUMENTS, SCHEMA_DIR, asyncapi_document, render

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("filename", sorted(DOCUMENTS))
def test_checked_in_document_is_current(filename):
    checked_in = (SCHEMA_DIR / filename).read_text()
    assert checked_in == render(DOCUMENTS[filename]()), (
        f"contracts/schema/{filename} is stale: run `python -m vibewave.contracts.export`"
    )


def test_asyncapi_lists_every_channel_with_its_payload_schema():
    document = asyncapi_document()
    assert document["asyncapi"].startswith("3.")
    addresses = {c["address"] for c in document["channels"].values()}
    assert addresses == {c.address for c in CHANNELS}
    schemas = document["components"]["schemas"]
    for channel in CHANNELS:
        assert channel.message.__name__ in schemas
    assert "request_id" in schemas["RequestSubmitted"]["required"]
