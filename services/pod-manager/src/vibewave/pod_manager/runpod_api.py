"""An async client of RunPod's APIs — GraphQL and, for what only it can do (restart in place), REST v2 —
over one swappable transport.

Values always travel as GraphQL variables, never pasted into query text. The key goes in an
`Authorization: Bearer` header and nowhere else: not in URLs, reprs, log lines or error messages.
RunPod's answers become precise errors (bad key, no capacity, host busy, balance, rate limit, generic).
Queries are retried on transient failures; mutations are not blindly repeated — after an ambiguous
failure the caller re-reads the pod, since RunPod sometimes reports an error for an action that
happened. A rate-limited call (HTTP 429) was not carried out, so any call is repeated after the
`Retry-After` the answer gives, within a bounded wait.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import aiohttp

from vibewave.pod_manager.providers.base import (
    BadRequest,
    CapacityError,
    Conflict,
    HostBusy,
    InsufficientBalance,
    PodNotFound,
    ProviderError,
    RateLimited,
    Unauthorized,
    Unavailable,
)

log = logging.getLogger("vibewave.pod_manager.runpod")

POD_FIELDS = """
  id name desiredStatus imageName gpuCount vcpuCount memoryInGb containerDiskInGb volumeInGb volumeMountPath
  costPerHr machineId ports lastStatusChange uptimeSeconds podType
  runtime { uptimeInSeconds ports { ip isIpPublic privatePort publicPort type } }
  machine { gpuDisplayName gpuTypeId podHostId }
"""
LIST_PODS = f"query Pods {{ myself {{ pods {{ {POD_FIELDS} }} }} }}"
GET_POD = f"query Pod($input: PodFilter!) {{ pod(input: $input) {{ {POD_FIELDS} }} }}"
CREATE_POD = """mutation CreatePod($input: PodFindAndDeployOnDemandInput!) {
  podFindAndDeployOnDemand(input: $input) { id imageName machineId machine { podHostId } } }"""
STOP_POD = "mutation StopPod($input: PodStopInput!) { podStop(input: $input) { id desiredStatus } }"
RESUME_POD = "mutation ResumePod($input: PodResumeInput!) { podResume(input: $input) { id desiredStatus } }"
TERMINATE_POD = "mutation TerminatePod($input: PodTerminateInput!) { podTerminate(input: $input) }"
GPU_TYPES = """query GpuTypes($price: GpuLowestPriceInput) { gpuTypes {
  id displayName manufacturer memoryInGb secureCloud communityCloud securePrice communityPrice
  lowestPrice(input: $price) { stockStatus uninterruptablePrice minimumBidPrice } } }"""
ACCOUNT = "query Account { myself { id email clientBalance currentSpendPerHr spendLimit underBalance } }"
NETWORK_VOLUMES = "query Volumes { myself { networkVolumes { id name size dataCenterId } } }"
TEMPLATES = """query Templates { myself { podTemplates {
  id name imageName dockerArgs containerDiskInGb volumeInGb volumeMountPath ports isServerless } } }"""

CAPACITY = "no longer any instances available"
HOST_BUSY = "not enough free gpus on the host"
GENERIC = "something went wrong"
DEFAULT_RETRY_AFTER_S = 5.0  # a 429 without a readable Retry-After
MAX_RATE_LIMIT_WAIT_S = 60.0  # a call waits out at most this much rate limiting before giving up

T = TypeVar("T")


class RunPodTransport(Protocol):
    async def execute(self, query: str, variables: dict[str, Any] | None, operation: str) -> dict[str, Any]: ...

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any] | None: ...

    async def close(self) -> None: ...


class RunPodHttp:
    """RunPod over HTTP with aiohttp: `POST {base}/graphql` and REST v2 `{base}/v2/...`, one session;
    maps HTTP, GraphQL and problem+json failures to ProviderErrors."""

    def __init__(self, base_url: str, api_key: str, *, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/graphql"
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": "vibewave-pod-manager/0.1 (aiohttp)",  # Cloudflare blocks bot-like default agents
        }
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"RunPodHttp({self.base_url!r}, api_key=<hidden>)"

    async def _send(self, method: str, url: str, body: dict[str, Any] | None) -> tuple[int, str, str | None]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.request(method, url, json=body, headers=self._headers) as response:
                return response.status, await response.text(), response.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"RunPod unreachable: {type(exc).__name__}") from None

    async def execute(self, query: str, variables: dict[str, Any] | None, operation: str) -> dict[str, Any]:
        body = {"query": query, "variables": variables or {}, "operationName": operation}
        status, text, retry_after = await self._send("POST", self.url, body)
        if status == 429:
            raise rate_limited(text, retry_after)
        return _parse(status, text, operation)

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """A REST v2 call (`path` under `/v2`); the JSON answer, or None for 204."""
        status, text, retry_after = await self._send(method, f"{self.base_url}/v2{path}", body)
        if status == 429:
            raise rate_limited(text, retry_after)
        if status >= 400:
            raise problem_error(status, text, f"{method} /v2{path}")
        if status == 204 or not text:
            return None
        try:
            answer: dict[str, Any] = json.loads(text)
        except ValueError:
            raise Unavailable(f"RunPod answered {status} with a non-JSON body") from None
        return answer

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def rate_limited(text: str, retry_after: str | None) -> RateLimited:
    """A 429: RunPod's `Retry-After` is integer seconds (REST v2); a missing or odd one gets a default."""
    try:
        wait = max(0.0, float(retry_after)) if retry_after is not None else DEFAULT_RETRY_AFTER_S
    except ValueError:
        wait = DEFAULT_RETRY_AFTER_S
    return RateLimited(f"RunPod rate limit: {_detail(text) or 'too many requests'}", wait)


def _detail(text: str) -> str:
    """The human part of an error body: problem+json `detail` (then `title`), else the text itself."""
    try:
        body = json.loads(text)
    except ValueError:
        return text.strip()[:200]
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("title") or "")
    return ""


def problem_error(status: int, text: str, call: str) -> ProviderError:
    """A REST v2 error (an RFC 9457 problem body; RunPod documents what each status means) → the precise error."""
    detail = _detail(text)
    lowered = detail.lower()
    if status == 401:
        return Unauthorized("RunPod refused the API key (401)")
    if status == 403:
        return Unauthorized(f"RunPod denied access (403): {detail}")
    if status == 402:
        return InsufficientBalance(detail or "RunPod: insufficient balance (402)")
    if status == 404:
        return PodNotFound(detail or "pod not found")
    if status == 409:
        return Conflict(f"RunPod refused {call} for the pod's current state: {detail}")
    if status == 400 and CAPACITY in lowered:
        return CapacityError(detail)
    if status == 400 and HOST_BUSY in lowered:
        return HostBusy(detail)
    if status in (400, 422):
        return BadRequest(f"RunPod rejected {call}: {detail}")
    return Unavailable(f"RunPod answered {status} to {call}" + (f": {detail}" if detail and "<" not in detail else ""))


def _parse(status: int, text: str, operation: str) -> dict[str, Any]:
    if status == 401:
        raise Unauthorized("RunPod refused the API key (401)")
    if status == 403 and "1010" in text:
        raise Unavailable("RunPod's front end blocked the request (Cloudflare error 1010)")
    try:
        payload = json.loads(text) if text else {}
    except ValueError:
        raise Unavailable(f"RunPod answered {status} with a non-JSON body") from None
    errors = payload.get("errors") if isinstance(payload, dict) else None
    if errors:
        raise error_from(status, str(errors[0].get("message", "")), operation)
    if status >= 500:
        raise Unavailable(f"RunPod answered {status}")
    if status >= 400:
        raise BadRequest(f"RunPod answered {status}")
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, dict):
        raise Unavailable("RunPod answered without data")
    return data


def error_from(status: int, message: str, operation: str) -> ProviderError:
    """RunPod's error message → the precise error the rest of pod-manager acts on."""
    lowered = message.lower()
    if CAPACITY in lowered:
        return CapacityError(message)
    if HOST_BUSY in lowered:
        return HostBusy(message)
    if "unauthorized" in lowered:
        return Unauthorized(f"RunPod: {message}")
    if "balance" in lowered or "credit" in lowered or "funds" in lowered:
        return InsufficientBalance(message)
    if "not found" in lowered:
        return PodNotFound(message)
    if status == 400:
        return BadRequest(f"RunPod rejected {operation}: {message}")
    return Unavailable(message or f"RunPod failed {operation}")


class RunPodClient:
    """The operations pod-manager uses; one method per operation, plain dicts out."""

    def __init__(
        self,
        transport: RunPodTransport,
        *,
        query_retries: int = 3,
        max_rate_limit_wait_s: float = MAX_RATE_LIMIT_WAIT_S,
    ) -> None:
        self.transport = transport
        self.query_retries = query_retries
        self.max_rate_limit_wait_s = max_rate_limit_wait_s

    async def _paced(self, call: Callable[[], Awaitable[T]], operation: str) -> T:
        """Run `call`; when RunPod answers 429, wait its Retry-After and call again — the refused call was
        not carried out, so repeating it is safe — until the waits would pass the bound."""
        waited = 0.0
        while True:
            try:
                return await call()
            except RateLimited as exc:
                if waited + exc.retry_after_s > self.max_rate_limit_wait_s:
                    raise
                log.warning("RunPod rate-limited %s; retrying in %.0fs as it asks", operation, exc.retry_after_s)
                await asyncio.sleep(exc.retry_after_s)
                waited += exc.retry_after_s

    async def _query(self, query: str, variables: dict[str, Any] | None, operation: str) -> dict[str, Any]:
        """A read: safe to repeat on transient failures, with backoff."""
        delay = 0.5
        for attempt in range(self.query_retries + 1):
            try:
                return await self._paced(lambda: self.transport.execute(query, variables, operation), operation)
            except RateLimited:
                raise
            except Unavailable as exc:
                if attempt == self.query_retries:
                    raise
                log.warning("RunPod %s failed (%s); retrying", operation, exc.message)
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    async def _mutate(self, query: str, variables: dict[str, Any], operation: str) -> dict[str, Any]:
        return await self._paced(lambda: self.transport.execute(query, variables, operation), operation)

    async def pod_action(self, pod_id: str, action: str) -> dict[str, Any] | None:
        """REST v2 `POST /v2/pods/{id}/action` (start, stop, restart, terminate): the Pod, or None for 204."""
        path = f"/pods/{quote(pod_id, safe='')}/action"
        return await self._paced(lambda: self.transport.request("POST", path, {"action": action}), f"pod {action}")

    async def pods(self) -> list[dict[str, Any]]:
        data = await self._query(LIST_PODS, None, "Pods")
        pods: list[dict[str, Any]] = (data.get("myself") or {}).get("pods") or []
        return pods

    async def pod(self, pod_id: str) -> dict[str, Any] | None:
        data = await self._query(GET_POD, {"input": {"podId": pod_id}}, "Pod")
        pod: dict[str, Any] | None = data.get("pod")
        return pod

    async def create_pod(self, spec: dict[str, Any]) -> dict[str, Any]:
        data = await self._mutate(CREATE_POD, {"input": spec}, "CreatePod")
        created: dict[str, Any] = data["podFindAndDeployOnDemand"]
        return created

    async def stop_pod(self, pod_id: str) -> None:
        await self._mutate(STOP_POD, {"input": {"podId": pod_id}}, "StopPod")

    async def resume_pod(self, pod_id: str, gpu_count: int) -> None:
        await self._mutate(RESUME_POD, {"input": {"podId": pod_id, "gpuCount": gpu_count}}, "ResumePod")

    async def terminate_pod(self, pod_id: str) -> None:
        await self._mutate(TERMINATE_POD, {"input": {"podId": pod_id}}, "TerminatePod")

    async def gpu_types(self) -> list[dict[str, Any]]:
        data = await self._query(GPU_TYPES, {"price": {"gpuCount": 1}}, "GpuTypes")
        return [g for g in data.get("gpuTypes") or [] if g.get("id") != "unknown"]

    async def account(self) -> dict[str, Any]:
        data = await self._query(ACCOUNT, None, "Account")
        myself: dict[str, Any] = data.get("myself") or {}
        return myself

    async def network_volumes(self) -> list[dict[str, Any]]:
        data = await self._query(NETWORK_VOLUMES, None, "Volumes")
        volumes: list[dict[str, Any]] = (data.get("myself") or {}).get("networkVolumes") or []
        return volumes

    async def templates(self) -> list[dict[str, Any]]:
        data = await self._query(TEMPLATES, None, "Templates")
        templates: list[dict[str, Any]] = (data.get("myself") or {}).get("podTemplates") or []
        return templates

    async def close(self) -> None:
        await self.transport.close()
