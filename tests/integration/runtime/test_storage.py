"""Both file stores against real servers (NATS JetStream, SeaweedFS's S3 gateway), through the one
`FileStore` surface the executor and the api use: round trips, streaming, presigned URLs, misses."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from unittest import mock

import aiohttp
import nats
import pytest

from tests.support.seaweedfs import SeaweedFS
from vibewave.contracts.events import OUTPUTS_STORE
from vibewave.runtime import broker as runtime
from vibewave.runtime.process import ConfigurationError
from vibewave.runtime.storage import (
    FileStore,
    FileTooLarge,
    NatsFileStore,
    S3FileStore,
    StorageSettings,
    open_file_store,
)

pytestmark = pytest.mark.integration

BIG = bytes(range(256)) * 4096 * 3  # 3 MiB: many NATS chunks (128 KiB), several S3 reads


@pytest.fixture(params=["nats", "s3"])
async def store(request: pytest.FixtureRequest, nats_url: str) -> AsyncIterator[FileStore]:
    if request.param == "nats":
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        await runtime.ensure_object_store(js, OUTPUTS_STORE, 1, 3600)
        files: FileStore = NatsFileStore(lambda: js)
        yield files
        await files.close()
        await nc.close()
    else:
        server: SeaweedFS = request.getfixturevalue("seaweedfs")
        with mock.patch.dict(os.environ, server.env(server.new_bucket(), S3_PREFIX="outputs/")):
            files = open_file_store(StorageSettings.from_env(), lambda: pytest.fail("S3 needs no NATS"))
            assert isinstance(files, S3FileStore)
            yield files  # botocore reads the credentials from the environment on first use
            await files.close()


async def test_a_saved_file_opens_and_reads_back(store: FileStore) -> None:
    await store.save("qwen_7_001.png", b"\x89PNG small", "image/png")
    stored = await store.open("qwen_7_001.png")
    assert stored is not None
    assert (stored.name, stored.size, stored.content_type) == ("qwen_7_001.png", 10, "image/png")
    assert b"".join([c async for c in stored.chunks]) == b"\x89PNG small"
    assert await store.read("qwen_7_001.png", max_bytes=1024) == (b"\x89PNG small", "image/png")
    with pytest.raises(FileTooLarge):
        await store.read("qwen_7_001.png", max_bytes=4)


async def test_a_large_file_streams_in_chunks(store: FileStore) -> None:
    await store.save("clip_001.webp", BIG, "image/webp")
    stored = await store.open("clip_001.webp")
    assert stored is not None and stored.size == len(BIG)
    chunks = [c async for c in stored.chunks]
    assert len(chunks) > 1, "streamed, never read whole"
    assert max(len(c) for c in chunks) < len(BIG)
    assert b"".join(chunks) == BIG


async def test_saving_again_replaces_the_file(store: FileStore) -> None:
    await store.save("again_001.png", b"first", "image/png")
    await store.save("again_001.png", b"second", "image/png")
    assert await store.read("again_001.png", max_bytes=100) == (b"second", "image/png")


async def test_a_missing_file_is_none(store: FileStore) -> None:
    assert await store.open("never_001.png") is None
    assert await store.read("never_001.png", max_bytes=100) is None


async def test_only_s3_presigns_and_its_url_downloads_the_same_bytes(store: FileStore) -> None:
    await store.save("signed_001.webp", BIG, "image/webp")
    url = store.presign("signed_001.webp", 300)
    if isinstance(store, NatsFileStore):
        assert url is None
        return
    assert url is not None and "X-Amz-Signature=" in url and "/outputs/signed_001.webp" in url
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "image/webp"
        assert await response.read() == BIG
    tampered = url.replace("signed_001", "signed_002")
    async with aiohttp.ClientSession() as http, http.get(tampered) as response:
        assert response.status == 403, "a URL signs exactly one key"


async def test_s3_keys_carry_the_prefix(seaweedfs: SeaweedFS) -> None:
    bucket = seaweedfs.new_bucket()
    with mock.patch.dict(os.environ, seaweedfs.env(bucket, S3_PREFIX="vw/")):
        files = S3FileStore(StorageSettings.from_env())
        try:
            await files.save("a_001.png", b"x", "image/png")
        finally:
            await files.close()
    assert seaweedfs.keys(bucket) == ["vw/a_001.png"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OUTPUT_STORE": "s3"}, "S3_BUCKET"),
        ({"OUTPUT_STORE": "gcs"}, "OUTPUT_STORE must be one of"),
        ({"OUTPUT_STORE": "s3", "S3_BUCKET": "b", "S3_URL_TTL": "8d"}, "at most 7d"),
        ({"OUTPUT_STORE": "s3", "S3_BUCKET": "b", "S3_URL_TTL": "soon"}, "S3_URL_TTL"),
    ],
)
def test_bad_settings_stop_the_start(env: dict[str, str], message: str) -> None:
    with mock.patch.dict(os.environ, env, clear=True), pytest.raises(ConfigurationError, match=message):
        StorageSettings.from_env()


def test_settings_take_the_standard_aws_variables() -> None:
    env = {"OUTPUT_STORE": "s3", "S3_BUCKET": "b", "AWS_ENDPOINT_URL": "http://s3.local", "AWS_DEFAULT_REGION": "eu-1"}
    with mock.patch.dict(os.environ, env, clear=True):
        settings = StorageSettings.from_env()
    assert (settings.endpoint_url, settings.region, settings.url_ttl_s) == ("http://s3.local", "eu-1", 86400.0)
    assert StorageSettings().backend == "nats"
