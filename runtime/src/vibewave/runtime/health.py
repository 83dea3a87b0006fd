"""Liveness over NATS: each service answers the NATS service API (`$SRV.PING.vibewave-<name>`)."""

from __future__ import annotations

import asyncio
import time

import nats.errors
import nats.micro
from nats.aio.client import Client as NATS
from nats.micro.service import Service

SERVICE_NAMES = ("scheduler", "pod-manager", "executor")
VERSION = "0.1.0"


def micro_name(service: str) -> str:
    return f"vibewave-{service}"


async def serve_liveness(nc: NATS, service: str, description: str) -> Service:
    """Register with the NATS service API so `$SRV.PING` finds this process while it lives."""
    return await nats.micro.add_service(nc, name=micro_name(service), version=VERSION, description=description)


async def ping(nc: NATS, service: str, timeout: float = 1.0) -> float:
    """Round trip in ms to any live instance of `service`; raises if none answers in time."""
    started = time.perf_counter()
    try:
        await nc.request(f"$SRV.PING.{micro_name(service)}", b"", timeout=timeout)
    except nats.errors.NoRespondersError as exc:
        raise LookupError(f"{service}: no instance running") from exc
    except nats.errors.TimeoutError as exc:
        raise LookupError(f"{service}: no answer within {timeout:.1f}s") from exc
    return (time.perf_counter() - started) * 1000


async def count_instances(nc: NATS, service: str, wait: float = 0.3) -> int:
    """How many instances of `service` answer the NATS service ping within `wait` seconds."""
    inbox = nc.new_inbox()
    answers = 0

    async def count(_msg: object) -> None:
        nonlocal answers
        answers += 1

    subscription = await nc.subscribe(inbox, cb=count)
    try:
        await nc.publish(f"$SRV.PING.{micro_name(service)}", b"", reply=inbox)
        await nc.flush()
        await asyncio.sleep(wait)
    finally:
        await subscription.unsubscribe()
    return answers
