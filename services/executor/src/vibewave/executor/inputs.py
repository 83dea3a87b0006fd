"""Input images: before a graph runs, each image input's file is fetched and uploaded to the pod's ComfyUI,
and the name ComfyUI gives it goes into the graph (a LoadImage reads only the server's input folder).

An upload comes from the file store; a URL is fetched here, on the executor side, within limits (size,
time, content type). The URL is checked again before the fetch (the api checked it at submit, settings
may have changed since) and at every connection and redirect (`runtime.urls`), so a name that resolves
to a private address only now still reaches nothing inside. An image that cannot be had fails the
attempt as a workflow error: another pod would fetch the same nothing.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import aiohttp
from opentelemetry import trace

from vibewave.contracts.workflows import IMAGE_TYPES, MAX_IMAGE_BYTES, Workflow, image_inputs, is_stored_image
from vibewave.executor.comfyui import ComfyUIClient, WorkflowError
from vibewave.runtime.storage import FileStore, FileTooLarge
from vibewave.runtime.urls import UrlRefused, allow_private_urls, check_url, guarded_session

FETCH_TIMEOUT_S = 30.0
MAX_REDIRECTS = 3
READ_CHUNK = 64 * 1024
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


class InputImageError(WorkflowError):
    """An input image could not be had (missing, too big, not an image, too slow, a refused address)."""


@dataclass(frozen=True, kw_only=True)
class FetchLimits:
    max_bytes: int = MAX_IMAGE_BYTES
    timeout_s: float = FETCH_TIMEOUT_S  # the whole fetch, redirects included
    allow_private: bool | None = None  # None: VIBEWAVE_ALLOW_PRIVATE_URLS, read at each fetch


async def fetch_image(url: str, what: str, limits: FetchLimits | None = None) -> tuple[bytes, str]:
    """The image at `url` and its content type, or InputImageError saying why not."""
    limits = limits or FetchLimits()
    allow_private = allow_private_urls() if limits.allow_private is None else limits.allow_private
    try:
        async with asyncio.timeout(limits.timeout_s):
            async with guarded_session(allow_private=allow_private) as session:
                for _ in range(MAX_REDIRECTS + 1):
                    await check_url(url, allow_private=allow_private, what=what)
                    async with session.get(url, allow_redirects=False) as response:
                        if response.status in (301, 302, 303, 307, 308) and "Location" in response.headers:
                            url = urljoin(url, response.headers["Location"])
                            continue
                        return await _read(response, what, limits.max_bytes)
                raise InputImageError(f"{what}: more than {MAX_REDIRECTS} redirects")
    except UrlRefused as exc:
        raise InputImageError(str(exc)) from exc
    except TimeoutError:
        raise InputImageError(f"{what}: fetching {url} took longer than {limits.timeout_s:.0f}s") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise InputImageError(f"{what}: could not fetch {url} ({type(exc).__name__}: {exc})") from exc


async def _read(response: aiohttp.ClientResponse, what: str, max_bytes: int) -> tuple[bytes, str]:
    if response.status != 200:
        raise InputImageError(f"{what}: {response.url} answered {response.status}")
    content_type = response.content_type.lower()
    if content_type not in IMAGE_TYPES:
        allowed = ", ".join(IMAGE_TYPES)
        raise InputImageError(f"{what}: {response.url} is {content_type or 'untyped'}, not an image ({allowed})")
    if response.content_length is not None and response.content_length > max_bytes:
        raise InputImageError(f"{what}: {response.url} is {response.content_length} bytes, more than {max_bytes}")
    data = bytearray()
    async for chunk in response.content.iter_chunked(READ_CHUNK):
        data += chunk
        if len(data) > max_bytes:
            raise InputImageError(f"{what}: {response.url} is more than {max_bytes} bytes")
    return bytes(data), content_type


class InputImages:
    """Places a request's input images on its pod (see the module docstring)."""

    def __init__(self, files: FileStore, limits: FetchLimits | None = None, tracer: trace.Tracer | None = None) -> None:
        self.files = files
        self.limits = limits or FetchLimits()
        self.tracer = tracer or trace.get_tracer("vibewave.executor")

    async def place(
        self, client: ComfyUIClient, workflow: Workflow, inputs: dict[str, Any], graph: dict[str, Any], request_id: str
    ) -> dict[str, Any]:
        """`graph` with each image input's field set to the name ComfyUI stored the image under. The names
        are the request's own, so a retried attempt replaces the same files."""
        for name, value in image_inputs(workflow, inputs).items():
            what = f"inputs.{name}"
            source = "stored" if is_stored_image(value) else "url"
            with self.tracer.start_as_current_span(
                "comfyui upload image", attributes={"vibewave.input": name, "vibewave.input.source": source}
            ) as span:
                data, content_type = await self._bytes_of(value, what)
                extension = IMAGE_TYPES.get(content_type, "png")
                stored = await client.upload_image(
                    f"vw_{request_id}_{_UNSAFE.sub('_', name)}.{extension}", data, content_type
                )
                span.set_attributes({"vibewave.file.bytes": len(data), "vibewave.file.name": stored})
            spec = workflow.definition.inputs[name]
            graph[spec.node]["inputs"][spec.field] = stored
        return graph

    async def _bytes_of(self, value: str, what: str) -> tuple[bytes, str]:
        if not is_stored_image(value):
            return await fetch_image(value, what, self.limits)
        try:
            found = await self.files.read(value, self.limits.max_bytes)
        except FileTooLarge as exc:
            raise InputImageError(f"{what}: {exc}") from exc
        if found is None:
            raise InputImageError(f"{what}: the stored image {value} is gone (files are kept for the retention)")
        return found
