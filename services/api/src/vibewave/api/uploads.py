"""Input images: `POST /api/files` stores one, and a workflow's image input may name it (or a URL).

An upload is decoded with Pillow before it is kept, so what is stored is a real PNG, JPEG or WebP of the
size it claims (the format is read from the bytes, never taken from the client), within MAX_IMAGE_BYTES
and MAX_PIXELS. It is kept in the file store beside the outputs, under a name of ours, and its tenant in
KV `uploads`: only that tenant (or an admin) may name it in a request or download it. At submit an image
input's URL is checked (`runtime.urls`: https, public addresses only unless the operator allows others),
so a URL at 127.0.0.1 is a 400 there, long before the executor would refuse to fetch it.
"""

from __future__ import annotations

import asyncio
import io
import secrets
from collections.abc import Mapping
from typing import Any

import msgspec
import nats.js.errors
from faststream.nats import NatsBroker
from litestar import Request
from litestar.datastructures import UploadFile
from litestar.exceptions import ClientException, HTTPException
from litestar.status_codes import HTTP_415_UNSUPPORTED_MEDIA_TYPE
from PIL import Image

from vibewave.api.auth import Principal
from vibewave.contracts.events import UPLOADS_BUCKET
from vibewave.contracts.models import FileUploaded
from vibewave.contracts.workflows import (
    IMAGE_TYPES,
    MAX_IMAGE_BYTES,
    InvalidInput,
    Workflow,
    image_inputs,
    is_stored_image,
    is_upload,
)
from vibewave.runtime.storage import FileStore
from vibewave.runtime.urls import UrlRefused, allow_private_urls, check_url

MAX_PIXELS = 25_000_000  # 5000 x 5000: far more than any video frame, far less than a decompression bomb
MULTIPART = "multipart/form-data"
UPLOAD_MEDIA_TYPES = (*IMAGE_TYPES, MULTIPART)
MAX_UPLOAD_BODY = MAX_IMAGE_BYTES + 64 * 1024  # the image, and a multipart envelope around it
FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
HOW = (
    "send the image as the body (Content-Type image/png, image/jpeg or image/webp) or as the field `file` "
    "of a multipart/form-data body (curl -F file=@still.png)"
)


class BadImage(ClientException):
    """400: not an image we take."""


def inspect_image(data: bytes) -> tuple[str, int, int]:
    """The image's content type, width and height, once Pillow has decoded it whole; BadImage otherwise."""
    if not data:
        raise BadImage(detail=f"No image in the body: {HOW}")
    try:
        with Image.open(io.BytesIO(data), formats=list(FORMATS)) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise BadImage(detail=f"The image is {width}x{height}: more than {MAX_PIXELS:,} pixels")
            image.load()
            content_type = FORMATS[str(image.format)]
    except BadImage:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, KeyError, Image.DecompressionBombError) as exc:
        raise BadImage(detail=f"Not a readable PNG, JPEG or WebP image ({type(exc).__name__}: {exc})") from exc
    return content_type, width, height


async def image_body(request: Request[Any, Any, Any]) -> bytes:
    """The uploaded bytes, raw or from the multipart field `file` (413 beyond the route's size limit)."""
    media_type = request.content_type[0].lower()
    if media_type in IMAGE_TYPES:
        return await request.body()
    if media_type != MULTIPART:
        raise HTTPException(status_code=HTTP_415_UNSUPPORTED_MEDIA_TYPE, detail=f"Unsupported Content-Type: {HOW}")
    form = await request.form()
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise BadImage(detail=f"The multipart body has no file field `file`: {HOW}")
    try:
        return await upload.read()
    finally:
        await upload.close()


class Uploads:
    """The uploads' bytes (in the file store) and whose each one is (KV `uploads`: name → tenant, JSON)."""

    def __init__(self, broker: NatsBroker, files: FileStore) -> None:
        self.broker = broker
        self.files = files

    async def receive(self, request: Request[Any, Any, Any], principal: Principal) -> FileUploaded:
        data = await image_body(request)
        if len(data) > MAX_IMAGE_BYTES:
            raise HTTPException(status_code=413, detail=f"The image is larger than {MAX_IMAGE_BYTES} bytes")
        content_type, width, height = await asyncio.to_thread(inspect_image, data)
        name = f"upload_{secrets.token_hex(8)}.{IMAGE_TYPES[content_type]}"
        await self.files.save(name, data, content_type)  # first: a recorded name always has its file
        bucket = await self.broker.key_value(UPLOADS_BUCKET.name, declare=False)
        await bucket.put(name, msgspec.json.encode(principal.tenant))
        return FileUploaded(name=name, size=len(data), content_type=content_type, width=width, height=height)

    async def visible(self, name: str, principal: Principal) -> bool:
        """Whether `name` is an upload this caller may use and read."""
        if not is_upload(name):
            return False
        bucket = await self.broker.key_value(UPLOADS_BUCKET.name, declare=False)
        try:
            entry = await bucket.get(name)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return False
        tenant = msgspec.json.decode(entry.value or b"null", type=str | None)
        return principal.sees(tenant)

    async def check_inputs(
        self,
        workflow: Workflow,
        inputs: dict[str, Any],
        principal: Principal,
        outputs: Mapping[str, str | None] | None = None,
    ) -> None:
        """InvalidInput for an image input naming no upload or generated image of the caller's (`outputs`:
        output file name → its tenant), or a URL that may not be fetched."""
        for name, value in image_inputs(workflow, inputs).items():
            if is_stored_image(value):
                if is_upload(value) and await self.visible(value, principal):
                    continue
                if outputs is not None and value in outputs and principal.sees(outputs[value]):
                    continue
                raise InvalidInput(
                    name, f"no image {value!r} of yours (upload one with POST /api/files, or name a generated one)"
                )
            try:
                await check_url(value, allow_private=allow_private_urls(), what="the URL")
            except UrlRefused as exc:
                raise InvalidInput(name, str(exc)) from exc
