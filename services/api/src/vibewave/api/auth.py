"""Who is calling: API keys (`Authorization: Bearer <key>`), their scopes and tenants.

A client key is `vw_<id>_<secret>`. KV `api_keys` keeps, by id, the key's tenant, scopes and limits and
the SHA-256 of its secret — never the secret: the key is shown once, when an admin creates it. Every
request looks its key up in KV (one direct get), so a key revoked on one api replica is refused by every
replica from that moment on; keys are high-entropy random strings, so a plain SHA-256 (compared in
constant time) is what protects them at rest, not a slow password hash. The bootstrap admin key comes
from `VIBEWAVE_ADMIN_KEY` and is never stored.

Without keys (`VIBEWAVE_AUTH` off or no admin key), every caller is the operator: the api then listens
on loopback only (see `settings`), as the API document's examples on `make run` expect.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import msgspec
import nats.errors
import nats.js.errors
from faststream.nats import NatsBroker
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException, ServiceUnavailableException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware.authentication import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.types import ASGIApp

from vibewave.contracts.events import API_KEYS_BUCKET, ApiKeyRecord, utcnow
from vibewave.contracts.models import ApiKeyCreate, ApiKeyCreated, ApiKeyInfo, Scope
from vibewave.runtime.broker import decode
from vibewave.runtime.settings import Secret

KEY_FORMAT = re.compile(r"^vw_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
KEY_ID = re.compile(r"^[0-9a-f]{12}$")
ALL_SCOPES = frozenset(Scope)
# open to anyone: health (load balancers, probes) and the API's documentation
PUBLIC_PATHS = [
    r"^/health$", r"^/health/(live|ready)$", r"^/metrics$", r"^/api/qwen/health$", r"^/api/runpod/health$",
    r"^/docs", r"^/redoc", r"^/schema",
]  # fmt: skip
BEARER = {"WWW-Authenticate": 'Bearer realm="vibewave"'}


class KeysUnavailable(Exception):
    """The key store (NATS) could not be read: the caller cannot be checked now."""


@dataclass(frozen=True, kw_only=True)
class Principal:
    """The caller of one request."""

    key_id: str  # for logs and records: a client key's id, "admin" (the bootstrap key) or "open" (no auth)
    tenant: str | None  # None: the operator (admin key, or no auth), who sees every tenant
    scopes: frozenset[Scope]
    requests_per_minute: int | None = None
    max_open_requests: int | None = None
    share_weight: float = 1.0
    own_webhook_secret: bool = False  # the key signs its webhooks with its own secret (never held here)

    @property
    def admin(self) -> bool:
        return Scope.ADMIN in self.scopes

    @property
    def client_key(self) -> str | None:
        """The client key's id (None for the operator: no per-key limits apply)."""
        return None if self.key_id in ("admin", "open") else self.key_id

    def allows(self, needed: Iterable[Scope]) -> bool:
        return self.admin or any(scope in self.scopes for scope in needed)

    def sees(self, tenant: str | None) -> bool:
        """Whether this caller may read what `tenant` made (others' requests and files are 404 to it)."""
        return self.admin or (self.tenant is not None and tenant == self.tenant)


OPEN = Principal(key_id="open", tenant=None, scopes=ALL_SCOPES)
ADMIN = Principal(key_id="admin", tenant=None, scopes=ALL_SCOPES)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def info_of(record: ApiKeyRecord) -> ApiKeyInfo:
    return ApiKeyInfo(
        id=record.id, name=record.name, tenant=record.tenant, scopes=[Scope(s) for s in record.scopes],
        requests_per_minute=record.requests_per_minute, max_open_requests=record.max_open_requests,
        weight=record.share_weight, created_at=record.created_at, webhook_secret_set=record.webhook_secret is not None,
    )  # fmt: skip


class KeyStore:
    """Client keys in KV `api_keys`, and the bootstrap admin key."""

    def __init__(self, broker: NatsBroker, admin_key: Secret) -> None:
        self.broker = broker
        self._admin_sha256 = hash_secret(admin_key.reveal()) if admin_key else None

    async def _bucket(self) -> nats.js.kv.KeyValue:
        return await self.broker.key_value(API_KEYS_BUCKET.name, declare=False)

    async def authenticate(self, key: str) -> Principal | None:
        """The key's principal, or None when it is unknown or revoked."""
        if self._admin_sha256 is not None and hmac.compare_digest(hash_secret(key), self._admin_sha256):
            return ADMIN
        match = KEY_FORMAT.match(key)
        if match is None:
            return None
        key_id, secret = match.groups()
        record = await self._get(key_id)
        if record is None or not hmac.compare_digest(hash_secret(secret), record.secret_sha256):
            return None
        return Principal(
            key_id=record.id,
            tenant=record.tenant,
            scopes=frozenset(Scope(s) for s in record.scopes),
            requests_per_minute=record.requests_per_minute,
            max_open_requests=record.max_open_requests,
            share_weight=record.share_weight,
            own_webhook_secret=record.webhook_secret is not None,
        )

    async def webhook_secret(self, key_id: str | None) -> str | None:
        """The key's own webhook secret, looked up when a webhook is signed (None: no such key, or none set)."""
        record = await self._get(key_id) if key_id is not None and KEY_ID.match(key_id) else None
        return record.webhook_secret if record is not None else None

    async def _get(self, key_id: str) -> ApiKeyRecord | None:
        try:
            entry = await (await self._bucket()).get(key_id)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None
        except (nats.errors.Error, OSError) as exc:
            raise KeysUnavailable(f"the key store is unavailable ({type(exc).__name__}); retry shortly") from exc
        return decode(entry.value, ApiKeyRecord) if entry.value else None

    async def create(self, spec: ApiKeyCreate) -> ApiKeyCreated:
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        record = ApiKeyRecord(
            id=key_id,
            name=spec.name,
            tenant=spec.tenant or spec.name.replace(" ", "-").replace("@", "-"),
            scopes=sorted(set(spec.scopes)),
            secret_sha256=hash_secret(secret),
            created_at=utcnow(),
            requests_per_minute=spec.requests_per_minute,
            max_open_requests=spec.max_open_requests,
            share_weight=spec.weight,
            webhook_secret=spec.webhook_secret,
        )
        try:
            await (await self._bucket()).create(key_id, msgspec.json.encode(record))
        except (nats.errors.Error, OSError) as exc:
            raise KeysUnavailable(f"the key store is unavailable ({type(exc).__name__}); no key was made") from exc
        info = info_of(record)
        return ApiKeyCreated(**msgspec.structs.asdict(info), key=f"vw_{key_id}_{secret}")

    async def list(self) -> list[ApiKeyInfo]:
        bucket = await self._bucket()
        try:
            keys = await bucket.keys()
        except nats.js.errors.NoKeysError:
            return []
        records = [await self._get(key_id) for key_id in keys]
        return sorted((info_of(r) for r in records if r is not None), key=lambda k: k.created_at)

    async def revoke(self, key_id: str) -> ApiKeyInfo | None:
        """Delete the key: from now on no replica accepts it. None if there is no such key."""
        if not KEY_ID.match(key_id):
            return None
        record = await self._get(key_id)
        if record is None:
            return None
        await (await self._bucket()).delete(key_id)
        return info_of(record)


class ApiKeyMiddleware(AbstractAuthenticationMiddleware):
    """Sets `request.user` to the caller's Principal; 401 without a valid key (when auth is on)."""

    def __init__(self, app: ASGIApp, store: Callable[[], KeyStore | None], enabled: bool) -> None:
        super().__init__(app, exclude=PUBLIC_PATHS if enabled else None)
        self.store = store
        self.enabled = enabled

    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:  # type: ignore[type-arg]
        if not self.enabled:
            return AuthenticationResult(user=OPEN, auth=None)
        header = connection.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise NotAuthorizedException(
                detail="An API key is required: send 'Authorization: Bearer <key>'", headers=BEARER
            )
        store = self.store()
        try:
            if store is None:
                raise KeysUnavailable("the api is starting; retry shortly")
            principal = await store.authenticate(key.strip())
        except KeysUnavailable as exc:
            raise ServiceUnavailableException(detail=str(exc), headers={"Retry-After": "1"}) from exc
        if principal is None:
            raise NotAuthorizedException(detail="Invalid or revoked API key", headers=BEARER)
        return AuthenticationResult(user=principal, auth=None)


def principal_of(connection: ASGIConnection) -> Principal:  # type: ignore[type-arg]
    """The caller (the operator on routes that are open to all)."""
    user = connection.scope.get("user")
    return user if isinstance(user, Principal) else OPEN


def requires(*scopes: Scope) -> Callable[[ASGIConnection, BaseRouteHandler], None]:  # type: ignore[type-arg]
    """A guard: the key must hold one of `scopes` (an admin key holds them all)."""
    names = " or ".join(f"'{s}'" for s in scopes)

    def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:  # type: ignore[type-arg]
        if not principal_of(connection).allows(scopes):
            raise PermissionDeniedException(detail=f"This API key lacks the scope this needs: {names}")

    return guard
