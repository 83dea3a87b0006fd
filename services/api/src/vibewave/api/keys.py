"""`/api/keys`: admins create, list and revoke client API keys (see `auth`)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, delete, get, post
from litestar.datastructures import State
from litestar.exceptions import NotFoundException, ServiceUnavailableException
from litestar.params import Body, PathParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from vibewave.api.auth import KeysUnavailable, requires
from vibewave.api.routes import gateway_of
from vibewave.contracts.models import ApiKeyCreate, ApiKeyCreated, ApiKeyInfo, Scope

KeyId = Annotated[str, PathParameter(description="A key's `id` (not the key itself).")]


class KeysController(Controller):
    path = "/api/keys"
    tags = ["API keys"]
    guards = [requires(Scope.ADMIN)]

    @post("/", status_code=HTTP_201_CREATED, operation_id="createApiKey")
    async def create(self, state: State, data: Annotated[ApiKeyCreate, Body(title="ApiKeyCreate")]) -> ApiKeyCreated:
        """Create a client key for a tenant, with its scopes and limits. The key is in this answer only:
        it is stored hashed and cannot be shown again."""
        try:
            return await gateway_of(state).keys.create(data)
        except KeysUnavailable as exc:
            raise ServiceUnavailableException(detail=str(exc), headers={"Retry-After": "1"}) from exc

    @get("/", operation_id="listApiKeys")
    async def list_keys(self, state: State) -> list[ApiKeyInfo]:
        """Every client key (never the keys themselves), oldest first."""
        try:
            return await gateway_of(state).keys.list()
        except KeysUnavailable as exc:
            raise ServiceUnavailableException(detail=str(exc), headers={"Retry-After": "1"}) from exc

    @delete("/{key_id:str}", status_code=HTTP_200_OK, operation_id="revokeApiKey")
    async def revoke(self, state: State, key_id: KeyId) -> ApiKeyInfo:
        """Revoke a key: every api replica refuses it from now on (401). Its requests keep running."""
        try:
            revoked = await gateway_of(state).keys.revoke(key_id)
        except KeysUnavailable as exc:
            raise ServiceUnavailableException(detail=str(exc), headers={"Retry-After": "1"}) from exc
        if revoked is None:
            raise NotFoundException(detail="API key not found")
        return revoked
