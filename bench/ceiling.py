"""The raw ceiling of the edge: a bare Litestar handler that decodes the same body into the same Struct
and does one JetStream publish (file storage, `Nats-Msg-Id`, awaiting the ack) — nothing else.

`python -m bench.ceiling` (NATS_URL, API_PORT), served by uvicorn exactly as `python -m vibewave.api` is.
With `CEILING_HEAP=services` it also takes the services' garbage-collector settings once started
(`vibewave.runtime.heap`), so the api's own code path can be compared on equal terms as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated
from uuid import uuid4

import msgspec
import nats
import nats.js.errors
import uvicorn

try:
    import uvloop
except ImportError:
    uvloop = None  # type: ignore[assignment]
from litestar import Litestar, post
from litestar.datastructures import State
from litestar.params import Body
from litestar.status_codes import HTTP_202_ACCEPTED
from nats.js.api import StorageType, StreamConfig

from vibewave.contracts.models import WorkflowInput
from vibewave.runtime.heap import settle_after_start

STREAM = StreamConfig(name="BENCH_CEILING", subjects=["bench.ceiling.>"], storage=StorageType.FILE, max_msgs=1_000_000)


class Accepted(msgspec.Struct):
    request_id: str
    status: str


@post("/api/qwen/generate-async", status_code=HTTP_202_ACCEPTED)
async def accept(state: State, data: Annotated[WorkflowInput, Body(title="WorkflowInput")]) -> Accepted:
    request_id = f"req-{uuid4().hex[:16]}"
    payload = msgspec.json.encode(data)
    await state.js.publish(f"bench.ceiling.{request_id}", payload, headers={"Nats-Msg-Id": request_id}, timeout=2)
    return Accepted(request_id=request_id, status="pending")


@asynccontextmanager
async def connect(app: Litestar) -> AsyncIterator[None]:
    nc = await nats.connect(os.environ["NATS_URL"])
    js = nc.jetstream()
    with contextlib.suppress(nats.js.errors.BadRequestError):
        await js.add_stream(STREAM)
    app.state.js = js
    try:
        yield
    finally:
        await nc.drain()


def main() -> None:
    app = Litestar(route_handlers=[accept], lifespan=[connect], logging_config=None)
    if os.environ.get("CEILING_HEAP") == "services":
        app.on_startup.append(settle_after_start)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=int(os.environ["API_PORT"]), log_config=None, access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    if uvloop is not None:  # the same event loop as `python -m vibewave.api`
        uvloop.run(server.serve())
    else:
        asyncio.run(server.serve())


if __name__ == "__main__":
    main()
