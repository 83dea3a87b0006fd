"""An async client of RunPod's GraphQL API (`reference/runpod.md` §2), with a swappable transport.

Values always travel as GraphQL variables, never pasted into query text. The key goes in an
`Authorization: Bearer` header and nowhere else: not in URLs, reprs, log lines or error messages.
RunPod's answers become precise errors (bad key, no capacity, host busy, balance, generic). Queries are
retried on transient failures; mutations are not blindly repeated — after an ambiguous failure the
caller re-reads the pod, since RunPod sometimes reports an error for an action that happened.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Protocol

import aiohttp

from vibewave.pod_manager.providers.base import (
    BadRequest,
    CapacityError,
    HostBusy,
    InsufficientBalance,
    PodNotFound,
    ProviderError,
    Unauthorized,
    Unavailable,
)

log = logging.getLogger("vibewave.pod_manager.runpod")

POD_FIELDS = """
  id name desiredStatus imageName gpuCount vcpuCount memoryInGb containerDiskInGb volumeInGb volumeMountPath
  costPerHr machineId ports lastStatusChange uptimeSeconds podType
  runtime { uptimeInSeconds ports { ip isIpPublic privatePort publicPort type } }
  machine { gpuDisplayName podHostId }
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


class GraphQLTransport(Protocol):
    async def execute(self, query: str, variables: dict[str, Any] | None, operation: str) -> dict[str, Any]: ...

    async def close(self) -> None: ...


class HttpGraphQLTransport:
    """`POST {base}/graphql` with aiohttp; maps HTTP and GraphQL failures to ProviderErrors."""

    def __init__(self, base_url: str, api_key: str, *, timeout_s: float = 30.0) -> None:
        self.url = base_url.rstrip("/") + "/graphql"
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "User-Agent": "vibewave-pod-manager/0.1 (aiohttp)",  # Cloudflare blocks bot-like default agents
        }
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"HttpGraphQLTransport({self.url!r}, api_key=<hidden>)"

    async def execute(self, query: str, variables: dict[str, Any] | None, operation: str) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        body = {"query": query, "variables": variables or {}, "operationName": operation}
        try:
            async with self._session.post(self.url, json=body, headers=self._headers) as response:
                text = await response.text()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"RunPod unreachable: {type(exc).__name__}") from None
        return _parse(status, text, operation)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


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
    """The GraphQL operations pod-manager uses; one method per operation, plain dicts out."""

    def __init__(self, transport: GraphQLTransport, *, query_retries: int = 3) -> None:
        self.transport = transport
        self.query_retries = query_retries

    async def _query(self, query: str, variables: dict[str, Any] | None, operation: str) -> dict[str, Any]:
        """A read: safe to repeat on transient failures, with backoff."""
        delay = 0.5
        for attempt in range(self.query_retries + 1):
            try:
                return await self.transport.execute(query, variables, operation)
            except Unavailable as exc:
                if attempt == self.query_retries:
                    raise
                log.warning("RunPod %s failed (%s); retrying", operation, exc.message)
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    async def _mutate(self, query: str, variables: dict[str, Any], operation: str) -> dict[str, Any]:
        return await self.transport.execute(query, variables, operation)

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
