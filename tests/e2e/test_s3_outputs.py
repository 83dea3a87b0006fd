"""Outputs in an S3 bucket (OUTPUT_STORE=s3, a real SeaweedFS): the executor stores them there, results
carry presigned `urls` beside `files`, and `/api/files/{name}` still serves the same bytes."""

from __future__ import annotations

import asyncio

import httpx
import nats
import pytest

from tests.e2e.conftest import StackFactory
from tests.support.seaweedfs import SeaweedFS
from tests.support.stack import Stack
from vibewave.contracts.events import OUTPUTS_STORE

pytestmark = pytest.mark.e2e


async def nats_store_messages(nats_url: str) -> int:
    nc = await nats.connect(nats_url)
    try:
        info = await nc.jetstream().stream_info(f"OBJ_{OUTPUTS_STORE.name}")
        return info.state.messages
    finally:
        await nc.close()


def test_outputs_land_in_the_bucket_and_their_presigned_urls_download_them(
    start_own_stack: StackFactory, seaweedfs: SeaweedFS
) -> None:
    bucket = seaweedfs.new_bucket()
    s3 = seaweedfs.env(bucket, S3_PREFIX="outputs/", S3_URL_TTL="1h")
    stack: Stack = start_own_stack(service_env={"executor": dict(s3), "api": dict(s3)})

    request_id = stack.generate("a lighthouse in a storm", width=512, height=512)
    done = stack.wait_status(request_id, {"completed", "failed"})
    assert done["status"] == "completed", done
    files, urls = done["result"]["files"], done["result"]["urls"]
    assert len(urls) == len(files) == 1
    name = files[0]

    assert seaweedfs.keys(bucket) == [f"outputs/{name}"], "the output is in the bucket, under the prefix"
    stored = seaweedfs.client().get_object(Bucket=bucket, Key=f"outputs/{name}")
    in_bucket = stored["Body"].read()
    assert stored["ContentType"] == "image/png"

    served = stack.client.get(f"/api/files/{name}")
    assert served.status_code == 200
    assert served.headers["content-type"] == "image/png"
    assert int(served.headers["content-length"]) == len(served.content)
    assert served.content == in_bucket and served.content.startswith(b"\x89PNG")

    assert "X-Amz-Expires=3600" in urls[0]
    presigned = httpx.get(urls[0], timeout=10)  # no api, no key: the bucket answers the signed URL itself
    assert presigned.status_code == 200, presigned.text
    assert presigned.content == served.content

    record = stack.record(request_id, {"completed"})
    assert record.result is not None and record.result.files == files
    assert len(record.result.urls) == 1 and httpx.get(record.result.urls[0], timeout=10).content == in_bucket

    assert asyncio.run(nats_store_messages(stack.env["NATS_URL"])) == 0, "nothing went to the NATS object store"
    assert s3["AWS_SECRET_ACCESS_KEY"] not in stack.logs(), "credentials are never logged"
