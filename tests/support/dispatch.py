"""The executor's side of the DISPATCH work queue, read from the server: what is delivered and unacked."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import nats

from vibewave.contracts.events import DISPATCH_STREAM, EXECUTOR_CONSUMER


@dataclass(frozen=True)
class DispatchState:
    ack_pending: int  # delivered to an executor, not yet acknowledged
    redelivered: int  # of those, delivered more than once
    pending: int  # not yet delivered


async def _dispatch_state(nats_url: str) -> DispatchState:
    nc = await nats.connect(nats_url)
    try:
        info = await nc.jetstream().consumer_info(DISPATCH_STREAM.name, EXECUTOR_CONSUMER.durable)
    finally:
        await nc.close()
    return DispatchState(info.num_ack_pending or 0, info.num_redelivered or 0, info.num_pending or 0)


def dispatch_state(nats_url: str) -> DispatchState:
    return asyncio.run(_dispatch_state(nats_url))
