"""What happened to requests, read back from the REQUESTS stream: each event's server timestamp."""

from __future__ import annotations

import asyncio
from datetime import datetime

import nats

from vibewave.contracts.events import REQUESTS_STREAM, split_request_subject


async def _request_events(nats_url: str) -> dict[str, dict[str, list[datetime]]]:
    nc = await nats.connect(nats_url)
    found: dict[str, dict[str, list[datetime]]] = {}
    try:
        js = nc.jetstream()
        pending = (await js.stream_info(REQUESTS_STREAM.name)).state.messages
        if not pending:
            return found
        sub = await js.subscribe(REQUESTS_STREAM.subjects[0], ordered_consumer=True)
        for _ in range(pending):
            msg = await sub.next_msg(timeout=5)
            request_id, event = split_request_subject(msg.subject)
            found.setdefault(request_id, {}).setdefault(event, []).append(msg.metadata.timestamp)
        await sub.unsubscribe()
    finally:
        await nc.close()
    return found


def request_events(nats_url: str) -> dict[str, dict[str, list[datetime]]]:
    """request id → event name (submitted, started, completed, …) → when each was stored, in order."""
    return asyncio.run(_request_events(nats_url))
