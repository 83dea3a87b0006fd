"""Request bodies: JSON only, decoded strictly, and hostile input answered 400 or 415 — never 500.

Litestar reads a handler's `data` as JSON whatever the request's Content-Type, and decodes it with
msgspec catching only `msgspec.DecodeError`: invalid UTF-8 in a string (`UnicodeDecodeError`) and deep
nesting (`RecursionError`, msgspec recursing once per level) escaped as 500s. It then converts the body
into its Struct with the same lax rules as query strings (`"1024"` became 1024).

Two pieces close that: `JsonBodiesOnly`, an ASGI middleware that refuses any non-JSON Content-Type
before anything is read, and `JsonBodyRequest`, the app's request class, whose `json()` checks the
bytes (UTF-8, depth) and decodes them strictly into the handler's body type in one pass (the signature
model then passes that Struct through unchanged).

A route that takes another kind of body (the image upload) names its media types in its handler's `opt`
(`ACCEPTS`); those pass the middleware on that route only, still behind the cross-site check.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import msgspec
from litestar import Request
from litestar.enums import ScopeType
from litestar.exceptions import ClientException, HTTPException, PermissionDeniedException, ValidationException
from litestar.handlers import BaseRouteHandler
from litestar.serialization import default_deserializer
from litestar.status_codes import HTTP_415_UNSUPPORTED_MEDIA_TYPE
from litestar.types import ASGIApp, Receive, Scope, Send, TypeDecodersSequence

JSON_MEDIA_TYPE = "application/json"
# msgspec recurses once per level and raises RecursionError near the interpreter's limit (1000, less
# the frames already on the stack), so the bound must sit well below it; 64 is still far deeper than
# any body of ours (a workflow's `inputs`, the deepest, nest 2 levels), and keeps whatever walks a value
# recursively later (encoders, loggers) safe.
MAX_DEPTH = 64
# methods a browser sends cross-site as a form or a "simple" fetch, and the others that change state
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ACCEPTS = "body_media_types"  # handler opt: the non-JSON media types a route takes (`POST /api/files`)

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_BRACKETS = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(range(256)).translate(None, b"[]{}")
_RUNS = re.compile(rb"\[+|\]+")
_ERROR_AT = re.compile(r"^(.*) - at `\$\.?(.*)`$", re.DOTALL)
_ANY = msgspec.json.Decoder()


def refusal(headers: Iterable[tuple[bytes, bytes]], takes_body: bool, accepts: Iterable[str] = ()) -> str | None:
    """Why a state-changing request may not go on (its 415 detail), or None.

    A JSON Content-Type (`application/json`, `application/*+json`; UTF-8 only) needs a CORS preflight
    from another site; a form's types and `text/plain` do not — a cross-site page could post them from
    a visitor's browser — so any other type is refused, with or without a body. A request without a
    Content-Type passes only when it has no body (`POST /api/runpod/pods/{id}/start`); a JSON body sent
    to a route that takes none is ignored (`requests.post(url, json={})`), one of any other type refused.
    `takes_body` is kept for the reason's wording only; `accepts`: other media types the route takes.
    """
    content_type: bytes | None = None
    has_body = False
    for name, value in headers:
        if name == b"content-type":
            content_type = value
        elif name == b"content-length":
            has_body = has_body or value.strip() not in (b"0", b"")
        elif name == b"transfer-encoding":
            has_body = True
    if content_type is None:
        return f"A request body needs 'Content-Type: {JSON_MEDIA_TYPE}'" if has_body else None
    media_type, *params = content_type.decode("latin-1").split(";")
    media_type = media_type.strip().lower()
    if media_type in accepts:
        return None
    if media_type != JSON_MEDIA_TYPE and not (media_type.startswith("application/") and media_type.endswith("+json")):
        return f"Unsupported Content-Type {media_type or '(empty)'!r}: send the body as JSON, '{JSON_MEDIA_TYPE}'"
    for param in params:
        key, _, given = param.partition("=")
        charset = given.strip().strip('"').lower()
        if key.strip().lower() == "charset" and charset not in ("utf-8", "utf8"):
            return f"Unsupported charset {charset!r}: JSON bodies are UTF-8, '{JSON_MEDIA_TYPE}; charset=utf-8'"
    return None


def cross_site(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether a browser sent this from a page of another origin. A body-less POST without a Content-Type
    (`fetch(url, {method: "POST", mode: "no-cors"})`) needs no preflight either, so the JSON rule alone
    cannot stop a cross-site page from stopping or terminating pods in a visitor's browser. Browsers say
    where a request comes from: `Sec-Fetch-Site` (anything but `same-origin` or `none` — a navigation,
    or not a browser at all — is another origin; this API serves no CORS), else `Origin` against `Host`.
    Clients that are not browsers send neither."""
    fetch_site = origin = host = None
    for name, value in headers:
        if name == b"sec-fetch-site":
            fetch_site = value.decode("latin-1").strip().lower()
        elif name == b"origin":
            origin = value.decode("latin-1").strip()
        elif name == b"host":
            host = value.decode("latin-1").strip().lower()
    if fetch_site is not None:
        return fetch_site not in ("same-origin", "none")
    if origin is None:
        return False
    return origin == "null" or urlsplit(origin).netloc.lower() != host


class JsonBodiesOnly:
    """Pure ASGI, before any body is read: a state-changing request from another site's page is a 403,
    one with a non-JSON body a 415."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and scope["method"] in UNSAFE_METHODS:
            if cross_site(scope["headers"]):
                raise PermissionDeniedException(
                    detail="Cross-site requests may not change anything here (this API serves no CORS): call it "
                    "from a server, or from a page of its own origin"
                )
            handler = scope["route_handler"]
            reason = refusal(scope["headers"], body_type_of(handler) is not None, media_types_of(handler))
            if reason is not None:
                raise HTTPException(status_code=HTTP_415_UNSUPPORTED_MEDIA_TYPE, detail=reason)
        await self.app(scope, receive, send)


def nesting_problem(body: bytes, limit: int) -> str | None:
    """Why `body`'s arrays and objects cannot be decoded safely — nested more than `limit` levels, or
    brackets that do not balance (not JSON, and maybe an unclosed `[[[…`) — or None.

    Counting brackets settles nearly every body at once. One with more than `limit` of them is reduced
    to its brackets (strings dropped, `{}` read as `[]`); while innermost pairs are many, a pass (in C)
    removes them all, one level; then the few runs left are walked. A hostile megabyte costs ~25 ms.
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return None
    deep, unbalanced = f"nested deeper than {limit} levels", "its brackets do not balance"
    brackets = _STRING.sub(b"", body).translate(_BRACKETS, _NOT_BRACKETS)
    peeled = 0
    while brackets.count(b"[]") * 32 > len(brackets):
        if peeled == limit:
            return deep
        brackets = brackets.replace(b"[]", b"")
        peeled += 1
    depth = peeled
    for run in _RUNS.finditer(brackets):
        start, end = run.span()
        depth += end - start if brackets[start] == ord("[") else start - end
        if depth > limit:
            return deep
        if depth < peeled:
            return unbalanced
    return None if depth == peeled else unbalanced


class MalformedBody(ClientException):
    """400: the body is not JSON we can read."""

    def __init__(self, reason: str) -> None:
        super().__init__(detail=f"Invalid JSON body: {reason}")


def invalid_body(exc: msgspec.ValidationError) -> ValidationException:
    """msgspec's error as Litestar's body validation errors, which `errors.validation_detail` words."""
    message, key = str(exc), "data"
    if match := _ERROR_AT.match(message):
        message, key = match.group(1), match.group(2) or "data"
    return ValidationException(extra=[{"message": message, "key": key, "source": "body"}])


def decode_body(body: bytes, body_type: Any, type_decoders: TypeDecodersSequence | None = None) -> Any:
    """`body` decoded strictly into `body_type` (any JSON when None); a 400 for anything unreadable."""
    if not body.isascii():
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedBody(f"not valid UTF-8 (byte {exc.start})") from None
    if problem := nesting_problem(body, MAX_DEPTH):
        raise MalformedBody(problem)
    try:
        if body_type is None:
            return _ANY.decode(body)
        hook = partial(default_deserializer, type_decoders=type_decoders)
        return msgspec.json.decode(body, type=body_type, strict=True, dec_hook=hook)
    except msgspec.ValidationError as exc:
        raise invalid_body(exc) from None
    except msgspec.DecodeError as exc:
        raise MalformedBody(str(exc)) from None


def body_type_of(handler: BaseRouteHandler) -> Any:
    """The type of the handler's `data` parameter, or None when it takes no body."""
    field = handler.parsed_fn_signature.parameters.get("data")
    return None if field is None else field.annotation


def media_types_of(handler: BaseRouteHandler) -> tuple[str, ...]:
    """The non-JSON body media types the handler takes (its `opt[ACCEPTS]`); none for most."""
    return tuple(handler.opt.get(ACCEPTS, ()))


class JsonBodyRequest(Request[Any, Any, Any]):
    """The app's request: `json()` is the handler's body, read as `decode_body` does."""

    async def json(self) -> Any:
        handler = self.route_handler
        body = await self.body()
        return decode_body(body, body_type_of(handler), handler.resolve_type_decoders()) if body else None
