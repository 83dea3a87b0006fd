"""Output name claims against a real NATS: a request collecting its outputs again (a redelivered
attempt) gets the names it already holds; another request gets the next free ones."""

from __future__ import annotations

import nats
import pytest

from vibewave.contracts.events import OUTPUT_NAMES_BUCKET
from vibewave.executor.outputs import OutputStore
from vibewave.runtime import broker as runtime

pytestmark = pytest.mark.integration


async def test_a_claim_is_the_requests_own_per_output_index(nats_url):
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        store = OutputStore(await runtime.ensure_kv(js, OUTPUT_NAMES_BUCKET, 1, 3600))
        first = [await store.claim_name("qwen_7", ".png", "req-a", i) for i in range(2)]
        again = [await store.claim_name("qwen_7", ".png", "req-a", i) for i in range(2)]
        other = await store.claim_name("qwen_7", ".png", "req-b", 0)
        assert first == ["qwen_7_001.png", "qwen_7_002.png"]
        assert again == first, "collecting again reuses the names, never a second one"
        assert other == "qwen_7_003.png"
    finally:
        await nc.close()
