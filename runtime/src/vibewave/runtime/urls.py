"""Outbound URLs a client names (webhooks, input images): only public https addresses, unless the operator
allows private ones (`VIBEWAVE_ALLOW_PRIVATE_URLS=true`, e.g. receivers on 127.0.0.1 in development).

A URL is checked when it is accepted (`check_url`, so a bad one is a 400 at submit), again before each
fetch or delivery (`check_url`: settings may have changed), and at every connection (`guarded_session`:
its resolver drops private addresses), so a name that resolves to a public address at submit and to
10.0.0.1 later (DNS rebinding) still reaches nothing inside.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from vibewave.runtime.settings import env_bool

ALLOW_PRIVATE_ENV = "VIBEWAVE_ALLOW_PRIVATE_URLS"
RESOLVE_TIMEOUT_S = 5.0
MAX_URL_LENGTH = 2048


class UrlRefused(ValueError):
    """The URL may not be fetched or called; the message says why (for a 400's `detail`)."""


def allow_private_urls() -> bool:
    return env_bool(ALLOW_PRIVATE_ENV)


def is_public(address: str) -> bool:
    """A globally routable unicast address (not loopback, private, link-local, shared, reserved or multicast)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


async def check_url(url: str, *, allow_private: bool, what: str = "URL") -> None:
    """Raise UrlRefused unless `url` is an absolute https URL (http too where private ones are allowed) whose
    host resolves to public addresses only (any address where private ones are allowed)."""
    if len(url) > MAX_URL_LENGTH:
        raise UrlRefused(f"{what} is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRefused(f"{what} is not a valid URL ({exc})") from exc
    schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in schemes:
        raise UrlRefused(f"{what} must be an {' or '.join(s + '://' for s in schemes)} URL")
    host = parts.hostname
    if not host:
        raise UrlRefused(f"{what} has no host")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused(f"{what} must not carry credentials")
    if allow_private:
        return
    literal = _literal(host)
    if literal is not None:
        addresses = [literal]
    else:
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, port or 443, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_S
            )
        except (OSError, TimeoutError) as exc:
            raise UrlRefused(f"{what}: the host {host!r} cannot be resolved ({exc})") from exc
        addresses = [str(info[4][0]) for info in infos]
    private = [a for a in addresses if not is_public(a)]
    if private or not addresses:
        raise UrlRefused(
            f"{what} points at a private, loopback or link-local address ({', '.join(private) or host}); "
            f"only public addresses are allowed (an operator can allow others: {ALLOW_PRIVATE_ENV}=true)"
        )


class PublicOnlyResolver(AbstractResolver):
    """aiohttp's resolver, keeping only public addresses (connecting fails when none is left)."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        public = [r for r in found if is_public(r["host"])]
        if not public:
            raise OSError(f"{host} resolves to no public address; refused ({ALLOW_PRIVATE_ENV} is not set)")
        return public

    async def close(self) -> None:
        await self._inner.close()


def guarded_session(*, allow_private: bool, **session_options: Any) -> aiohttp.ClientSession:
    """A client session for client-named URLs: every connection checked (see the module's docstring)."""
    connector = aiohttp.TCPConnector(resolver=None if allow_private else PublicOnlyResolver(), limit=100)
    return aiohttp.ClientSession(connector=connector, **session_options)
