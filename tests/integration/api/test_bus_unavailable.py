"""With NATS gone (a stream electing its leader after a node was lost looks the same to a client), a
create answers 503 with a `detail` and `Retry-After` — never a 500 — and the same call with its
Idempotency-Key is accepted once NATS is back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from vibewave.api.app import create_app
from vibewave.api.settings import ApiSettings
from vibewave.devstack.nats_server import EmbeddedNats
from vibewave.runtime.settings import CommonSettings

pytestmark = pytest.mark.integration


async def test_a_create_while_nats_is_away_answers_503_then_succeeds_on_retry(tmp_path: Path, vibewave_home):
    server = EmbeddedNats(tmp_path / "nats")
    server.start()
    try:
        common = CommonSettings(nats_url=server.url, home=vibewave_home, log_level="INFO", debug=False, replicas=1)
        app = create_app(ApiSettings.from_env(common))
        body = {"prompt": "while the bus is away", "width": 256, "height": 256}
        headers = {"Idempotency-Key": "bus-away-1"}
        async with AsyncTestClient(app, timeout=30) as client:
            await asyncio.wait_for(app.state.gateway.index.loaded.wait(), 10)
            await asyncio.to_thread(server.stop)
            away = await client.post("/api/qwen/generate-async", json=body, headers=headers)
            assert away.status_code == 503, away.text
            assert away.headers["retry-after"] == "1"
            assert "bus is unavailable" in away.json()["detail"]
            await asyncio.to_thread(server.start)
            for _ in range(100):
                back = await client.post("/api/qwen/generate-async", json=body, headers=headers)
                if back.status_code == 202:
                    break
                assert back.status_code == 503, back.text
                await asyncio.sleep(0.2)
            assert back.status_code == 202, back.text
    finally:
        server.stop()
