"""The checked-in contract documents must match the code; regenerate with `python -m vibewave.contracts.export`."""

import pytest

from vibewave.contracts.export import DOCUMENTS, SCHEMA_DIR, render

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("filename", sorted(DOCUMENTS))
def test_checked_in_document_is_current(filename):
    checked_in = (SCHEMA_DIR / filename).read_text()
    assert checked_in == render(DOCUMENTS[filename]()), (
        f"contracts/schema/{filename} is stale: run `python -m vibewave.contracts.export`"
    )
