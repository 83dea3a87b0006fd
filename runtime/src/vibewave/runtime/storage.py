"""Where generated (and uploaded) files are kept: the NATS object store `outputs`, or an S3 bucket.

The executor saves into a `FileStore` and the api serves from the same one, so both read one setting,
`OUTPUT_STORE` (nats | s3), through `StorageSettings.from_env`. The NATS store needs nothing beyond the
cluster; S3 (any S3-compatible server: AWS, R2, MinIO, SeaweedFS) keeps large files off JetStream and
hands clients presigned URLs that download straight from the bucket. Credentials come from botocore's
standard chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile, an instance role): they never
pass through our settings, so they cannot be logged. Retention in a bucket is the bucket's own
lifecycle rule; the NATS store keeps files for VIBEWAVE_RETENTION.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Protocol

import nats.js.errors
from aiobotocore.session import get_session as aio_session
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.session import get_session as sync_session
from nats.js.api import ObjectInfo, ObjectMeta
from nats.js.client import JetStreamContext
from nats.js.object_store import ObjectStore

from vibewave.contracts.events import OUTPUTS_STORE
from vibewave.runtime.process import ConfigurationError
from vibewave.runtime.settings import env_str, parse_duration

BACKENDS = ("nats", "s3")
DEFAULT_URL_TTL_S = 24 * 3600.0
MAX_URL_TTL_S = 7 * 86400.0  # SigV4 presigned URLs cannot live longer
S3_CHUNK_BYTES = 256 * 1024
OCTET_STREAM = "application/octet-stream"


class FileTooLarge(Exception):
    """`read` found a file bigger than the caller's limit."""


@dataclass(frozen=True)
class StoredObject:
    """A stored file, its bytes read chunk by chunk as they are sent on (never whole in memory)."""

    name: str
    size: int
    content_type: str
    chunks: AsyncIterator[bytes]


class FileStore(Protocol):
    async def save(self, name: str, data: bytes, content_type: str) -> None:
        """Store `data` under `name`, replacing a file of that name (so a repeated save is harmless)."""

    async def open(self, name: str) -> StoredObject | None:
        """The file, streamed; None when there is none of that name."""

    async def read(self, name: str, max_bytes: int) -> tuple[bytes, str] | None:
        """A small file whole, with its content type; None when missing, FileTooLarge above `max_bytes`."""

    def presign(self, name: str, expires_s: float | None = None) -> str | None:
        """A URL that downloads the file without our api (None: this store has no such URLs)."""

    async def close(self) -> None: ...


@dataclass(frozen=True, kw_only=True)
class StorageSettings:
    backend: str = "nats"  # OUTPUT_STORE: nats | s3
    bucket: str | None = None  # S3_BUCKET (required with s3)
    endpoint_url: str | None = None  # S3_ENDPOINT_URL, else AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL (None: AWS)
    region: str | None = None  # AWS_REGION, else AWS_DEFAULT_REGION
    prefix: str = ""  # S3_PREFIX: prepended to every key (e.g. `vibewave/`)
    url_ttl_s: float = DEFAULT_URL_TTL_S  # S3_URL_TTL: lifetime of presigned URLs (24h; at most 7d)

    @classmethod
    def from_env(cls) -> StorageSettings:
        backend = env_str("OUTPUT_STORE", "nats").lower()
        if backend not in BACKENDS:
            raise ConfigurationError(f"OUTPUT_STORE must be one of {', '.join(BACKENDS)}, not {backend!r}")
        raw_ttl = env_str("S3_URL_TTL", str(DEFAULT_URL_TTL_S))
        try:
            ttl = parse_duration(raw_ttl)
        except ValueError as exc:
            raise ConfigurationError(f"S3_URL_TTL must be a duration like 3600, 12h or 7d, not {raw_ttl!r}") from exc
        if ttl > MAX_URL_TTL_S:
            raise ConfigurationError(f"S3_URL_TTL is at most 7d (presigned URLs live no longer), not {raw_ttl!r}")
        settings = cls(
            backend=backend,
            bucket=_first("S3_BUCKET"),
            endpoint_url=_first("S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
            region=_first("AWS_REGION", "AWS_DEFAULT_REGION"),
            prefix=os.environ.get("S3_PREFIX", "").strip().lstrip("/"),
            url_ttl_s=ttl,
        )
        if backend == "s3" and not settings.bucket:
            raise ConfigurationError("OUTPUT_STORE=s3 needs S3_BUCKET (and S3_ENDPOINT_URL unless it is AWS S3)")
        return settings


def _first(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def open_file_store(settings: StorageSettings, jetstream: Callable[[], JetStreamContext]) -> FileStore:
    """The configured store. Nothing connects yet: the NATS store asks `jetstream` on first use (after
    the service has connected), the S3 client is made on first use."""
    if settings.backend == "s3":
        return S3FileStore(settings)
    return NatsFileStore(jetstream)


# ------------------------------------------------------------------------------------------------ NATS


class NatsFileStore:
    """Files in the JetStream object store `outputs` (the contract provisions it)."""

    def __init__(self, jetstream: Callable[[], JetStreamContext], bucket: str = OUTPUTS_STORE.name) -> None:
        self._jetstream = jetstream
        self._bucket = bucket
        self._store: ObjectStore | None = None

    async def _object_store(self) -> ObjectStore:
        if self._store is None:
            self._store = await self._jetstream().object_store(self._bucket)
        return self._store

    async def save(self, name: str, data: bytes, content_type: str) -> None:
        meta = ObjectMeta(name=name, description=content_type, headers={"Content-Type": [content_type]})
        await (await self._object_store()).put(name, data, meta=meta)

    async def _info(self, name: str) -> ObjectInfo | None:
        try:
            info = await (await self._object_store()).get_info(name)
        except nats.js.errors.ObjectNotFoundError:
            return None
        return None if info.nuid is None else info

    async def open(self, name: str) -> StoredObject | None:
        info = await self._info(name)
        if info is None:
            return None
        headers = info.headers or {}
        content_type = (headers.get("Content-Type") or [info.description or OCTET_STREAM])[0]
        return StoredObject(info.name or name, info.size or 0, content_type, self._chunks(info))

    async def _chunks(self, info: ObjectInfo) -> AsyncIterator[bytes]:
        """The object's chunks in order, from an ordered consumer on its chunk subject (raw JetStream:
        nats-py's `ObjectStore.get` reads the whole object into memory, and FastStream's object-store
        subscriber watches for changes, it does not read)."""
        if not info.size:
            return
        subscription = await self._jetstream().subscribe(f"$O.{info.bucket}.C.{info.nuid}", ordered_consumer=True)
        try:
            while True:
                msg = await subscription.next_msg(timeout=10)
                yield msg.data
                if msg.metadata.num_pending == 0:
                    return
        finally:
            await subscription.unsubscribe()

    async def read(self, name: str, max_bytes: int) -> tuple[bytes, str] | None:
        return await whole(await self.open(name), max_bytes)

    def presign(self, name: str, expires_s: float | None = None) -> str | None:
        return None

    async def close(self) -> None:
        self._store = None


async def whole(stored: StoredObject | None, max_bytes: int) -> tuple[bytes, str] | None:
    """A small file's bytes and content type (FileTooLarge beyond `max_bytes`, before reading any)."""
    if stored is None:
        return None
    if stored.size > max_bytes:
        raise FileTooLarge(f"{stored.name} is {stored.size} bytes, more than {max_bytes}")
    return b"".join([chunk async for chunk in stored.chunks]), stored.content_type


# -------------------------------------------------------------------------------------------------- S3


class S3FileStore:
    """Files in an S3 bucket, under `S3_PREFIX`. One aiobotocore client for the I/O, made on first use
    and closed by `close`; presigning is local signing with a plain botocore client (aiobotocore's is
    async only), so status reads can re-sign URLs without a request to the bucket."""

    def __init__(self, settings: StorageSettings) -> None:
        assert settings.bucket, "StorageSettings.from_env requires S3_BUCKET with OUTPUT_STORE=s3"
        self.settings = settings
        self.bucket = settings.bucket
        self._exit = AsyncExitStack()
        self._client: Any = None
        self._signer: Any = None

    def key(self, name: str) -> str:
        return f"{self.settings.prefix}{name}"

    def _client_args(self) -> dict[str, Any]:
        style = "path" if self.settings.endpoint_url else "auto"  # S3-compatible servers rarely do virtual hosts
        return {
            "endpoint_url": self.settings.endpoint_url,
            "region_name": self.settings.region or "us-east-1",
            "config": Config(signature_version="s3v4", s3={"addressing_style": style}, retries={"mode": "standard"}),
        }

    async def _s3(self) -> Any:
        if self._client is None:
            client = aio_session().create_client("s3", **self._client_args())
            self._client = await self._exit.enter_async_context(client)
        return self._client

    async def save(self, name: str, data: bytes, content_type: str) -> None:
        s3 = await self._s3()
        await s3.put_object(Bucket=self.bucket, Key=self.key(name), Body=data, ContentType=content_type)

    async def open(self, name: str) -> StoredObject | None:
        s3 = await self._s3()
        try:
            head = await s3.head_object(Bucket=self.bucket, Key=self.key(name))
        except ClientError as exc:
            if _missing(exc):
                return None
            raise
        size = int(head.get("ContentLength") or 0)
        return StoredObject(name, size, head.get("ContentType") or OCTET_STREAM, self._chunks(name, size))

    async def _chunks(self, name: str, size: int) -> AsyncIterator[bytes]:
        """The object's body as it arrives; fetched only when the response starts, so an unread
        `StoredObject` holds no connection."""
        if not size:
            return
        s3 = await self._s3()
        response = await s3.get_object(Bucket=self.bucket, Key=self.key(name))
        async with response["Body"] as body:
            async for chunk in body.iter_chunks(S3_CHUNK_BYTES):
                yield chunk

    async def read(self, name: str, max_bytes: int) -> tuple[bytes, str] | None:
        return await whole(await self.open(name), max_bytes)

    def presign(self, name: str, expires_s: float | None = None) -> str | None:
        if self._signer is None:
            self._signer = sync_session().create_client("s3", **self._client_args())
        expires = round(min(expires_s or self.settings.url_ttl_s, MAX_URL_TTL_S))
        url: str = self._signer.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self.key(name)}, ExpiresIn=expires
        )
        return url

    async def close(self) -> None:
        self._client = None
        await self._exit.aclose()


def _missing(exc: ClientError) -> bool:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status == 404 or error.get("Code") in {"404", "NoSuchKey", "NotFound"}
