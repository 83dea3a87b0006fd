"""An async client of RunPod's pod APIs — REST v2 (`RUNPOD_API=rest`, the default) or GraphQL
(`RUNPOD_API=graphql`, until RunPod retires it early 2027) — over one swappable transport.

Both speak the same operations; answers come back in the API's own shapes (the provider reads both). Two
calls do not depend on the setting: the in-place restart exists only in REST v2, and the account balance
only in GraphQL (see `RunPodClient.account`).

Values never travel inside text: GraphQL values are variables, REST values are JSON bodies, and ids in REST
paths are percent-encoded. The key goes in an `Authorization: Bearer` header and nowhere else: not in URLs,
reprs, log lines or error messages. RunPod's answers become precise errors (bad key, no capacity, host busy,
balance, rate limit, validation, generic): GraphQL's error messages and REST's problem+json statuses alike.
Reads are retried on transient failures; writes are not blindly repeated — after an ambiguous failure the
caller re-reads, since RunPod sometimes reports an error for an action that happened. A rate-limited call
(HTTP 429) was not carried out, so any call is repeated after the `Retry-After` the answer gives, within a
bounded wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import platform
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Protocol, TypeVar
from urllib.parse import quote, urlencode

import aiohttp
from opentelemetry import trace

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
from vibewave.runtime.metrics import instruments
from vibewave.runtime.telemetry import client_span, responded

log = logging.getLogger("vibewave.pod_manager.runpod")
_tracer = trace.get_tracer("vibewave.pod_manager.runpod")  # a CLIENT span per call: `runpod {operation}`

REST = "rest"
GRAPHQL = "graphql"
APIS = (REST, GRAPHQL)

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

CAPACITY = ("no longer any instances available", "no compatible cuda host")
HOST_BUSY = "not enough free gpus on the host"
DEFAULT_RETRY_AFTER_S = 5.0  # a 429 without a readable Retry-After
MAX_RATE_LIMIT_WAIT_S = 60.0  # a call waits out at most this much rate limiting before giving up
MAX_PAGES = 100  # a REST list longer than this many pages is a server fault, not a fleet
VOLUME_MOUNT_PATH = "/workspace"

T = TypeVar("T")


def _user_agent() -> str:
    """Cloudflare in front of RunPod refuses bot-like default agents (error 1010): say who calls, and with what."""
    try:
        version = metadata.version("vibewave-pod-manager")
    except metadata.PackageNotFoundError:
        version = "0"
    return f"vibewave-pod-manager/{version} aiohttp/{aiohttp.__version__} Python/{platform.python_version()}"


USER_AGENT = _user_agent()


class ApiRetired(ProviderError):
    """RunPod answered 410 Gone: the API asked for is retired (GraphQL from early 2027, REST v1 since 2026-11-15)."""


class Forbidden(Unauthorized):
    """The key is valid but may not do this (HTTP 403); on a create, RunPod's word for a pool the account
    cannot use — another GPU type may do."""


@dataclass(frozen=True)
class PodCreateSpec:
    """One pod to create, in neither API's words: one GPU type (count 1) in one cloud. `cloud` ALL is GraphQL's
    "either" and means the REST default (SECURE) there — the provider asks per cloud itself."""

    name: str
    image: str
    gpu_type_id: str
    cloud: str
    container_disk_gb: int
    ports: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    start_command: str = ""  # one shell string; REST `args`, GraphQL `dockerArgs`
    allowed_cuda_versions: tuple[str, ...] = ()
    min_memory_gb: int = 0  # host RAM; with one GPU, pod-wide (GraphQL) and per GPU (REST) are the same
    network_volume_id: str | None = None
    data_center_id: str | None = None  # the network volume's: REST places the pod there explicitly
    template_id: str | None = None

    def rest_body(self) -> dict[str, Any]:
        """A REST v2 `CreatePodRequest`: always `gpu.count` (omitted, live matched no machine) and an explicit
        `disk` and `ports` (v2 has no defaults); `cloud` omitted for ALL (REST has no ALL: SECURE). The RAM floor
        is `gpu.minRamPerGpu`, from RunPod's later spec (the emulator's schema has it, the official SDK sends
        it); a server on the first v2 spec refuses it (422), and `RUNPOD_MIN_MEMORY_GB=0` leaves it out."""
        gpu: dict[str, Any] = {"id": self.gpu_type_id, "count": 1}
        if self.allowed_cuda_versions:
            gpu["allowedCudaVersions"] = list(self.allowed_cuda_versions)
        if self.min_memory_gb > 0:
            gpu["minRamPerGpu"] = self.min_memory_gb
        body: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "gpu": gpu,
            "disk": self.container_disk_gb,
            "ports": list(self.ports),
            "startSsh": True,
        }
        if self.cloud in ("SECURE", "COMMUNITY"):
            body["cloud"] = self.cloud
        if self.env:
            body["env"] = dict(self.env)
        if self.start_command:
            body["args"] = self.start_command
        if self.template_id:
            body["templateId"] = self.template_id
        if self.network_volume_id:
            body["mounts"] = {"network": [{"volumeId": self.network_volume_id, "path": VOLUME_MOUNT_PATH}]}
            if self.data_center_id:
                body["dataCenterIds"] = [self.data_center_id]
        return body

    def graphql_input(self) -> dict[str, Any]:
        """A GraphQL `PodFindAndDeployOnDemandInput`."""
        inp: dict[str, Any] = {
            "name": self.name,
            "gpuTypeId": self.gpu_type_id,
            "gpuCount": 1,
            "cloudType": self.cloud,
            "imageName": self.image,
            "containerDiskInGb": self.container_disk_gb,
            "minMemoryInGb": self.min_memory_gb,
            "ports": ",".join(self.ports),
            "volumeInGb": 0,
            "startSsh": True,
        }
        if self.env:
            inp["env"] = [{"key": key, "value": value} for key, value in self.env.items()]
        if self.start_command:
            inp["dockerArgs"] = self.start_command
        if self.allowed_cuda_versions:
            inp["allowedCudaVersions"] = list(self.allowed_cuda_versions)
        if self.network_volume_id:
            inp["networkVolumeId"] = self.network_volume_id
            inp["volumeMountPath"] = VOLUME_MOUNT_PATH
        if self.template_id:
            inp["templateId"] = self.template_id
        return inp


class RunPodTransport(Protocol):
    async def execute(self, query: str, variables: dict[str, Any] | None, operation: str) -> dict[str, Any]: ...

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any] | None: ...

    async def close(self) -> None: ...


class RunPodHttp:
    """RunPod over HTTP with aiohttp: `POST {base}/graphql` and REST v2 `{base}/v2/...`, one session;
    maps HTTP, GraphQL and problem+json failures to ProviderErrors. Each call is a CLIENT span `runpod
    {operation}` (GraphQL's operation name; REST `runpod GET /pods/{podId}`) with the HTTP client attributes
    and `error.type` on failure: never the key (a header) nor a query string (`telemetry.safe_url`)."""

    def __init__(self, base_url: str, api_key: str, *, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/graphql"
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
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
                responded(trace.get_current_span(), response.status)  # the call's span (`execute`, `request`)
                return response.status, await response.text(), response.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"RunPod unreachable: {type(exc).__name__}") from None

    async def execute(self, query: str, variables: dict[str, Any] | None, operation: str) -> dict[str, Any]:
        graphql = {"graphql.operation.name": operation}
        with counted(operation), client_span(_tracer, f"runpod {operation}", "POST", self.url, graphql):
            body = {"query": query, "variables": variables or {}, "operationName": operation}
            status, text, retry_after = await self._send("POST", self.url, body)
            if status == 429:
                raise rate_limited(text, retry_after)
            return _parse(status, text, operation)

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """A REST v2 call (`path` under `/v2`, query string included); the JSON answer, or None for 204."""
        route = rest_route(path)
        url = f"{self.base_url}/v2{path}"
        with counted(f"{method} {route}"), client_span(_tracer, f"runpod {method} {route}", method, url):
            return await self._rest(method, path, body)

    async def _rest(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any] | None:
        status, text, retry_after = await self._send(method, f"{self.base_url}/v2{path}", body)
        if status == 429:
            raise rate_limited(text, retry_after)
        if status >= 400:
            raise problem_error(status, text, f"{method} /v2{path.partition('?')[0]}")
        if status == 204 or not text:
            return None
        try:
            answer = json.loads(text)
        except ValueError:
            raise Unavailable(f"RunPod answered {status} with a non-JSON body") from None
        if not isinstance(answer, dict):
            raise Unavailable(f"RunPod answered {status} with JSON that is not an object")
        return answer

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


REST_IDS = {"pods": "{podId}", "network-volumes": "{networkVolumeId}", "templates": "{templateId}"}


def rest_route(path: str) -> str:
    """A REST path as its route template, without the query: `/pods/abc/stop?x=1` → `/pods/{podId}/stop`
    (a bounded name: a metric label or a span name never carries an id)."""
    parts = path.partition("?")[0].split("/")
    for i in range(1, len(parts) - 1):
        if parts[i] in REST_IDS and parts[i + 1]:
            parts[i + 1] = REST_IDS[parts[i]]
    return "/".join(parts)


@contextlib.contextmanager
def counted(operation: str) -> Iterator[None]:
    """One `vibewave.runpod.api.calls` per HTTP call (a retry is another call), with `error.type` — the
    failure's class, e.g. `RateLimited`, `Unavailable` — when it failed."""
    try:
        yield
    except Exception as exc:
        instruments().runpod_calls.add(1, {"operation": operation, "error.type": type(exc).__name__})
        raise
    instruments().runpod_calls.add(1, {"operation": operation})


def rate_limited(text: str, retry_after: str | None) -> RateLimited:
    """A 429: RunPod's `Retry-After` is integer seconds (REST v2); a missing or odd one gets a default."""
    try:
        wait = max(0.0, float(retry_after)) if retry_after is not None else DEFAULT_RETRY_AFTER_S
    except ValueError:
        wait = DEFAULT_RETRY_AFTER_S
    return RateLimited(f"RunPod rate limit: {_detail(text) or 'too many requests'}", wait)


def _problem(text: str) -> dict[str, Any] | None:
    try:
        body = json.loads(text)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _detail(text: str) -> str:
    """The human part of an error body: problem+json `detail` (then `title`), else the text itself."""
    body = _problem(text)
    if body is None:
        return text.strip()[:200]
    return str(body.get("detail") or body.get("title") or "")


def problem_error(status: int, text: str, call: str) -> ProviderError:
    """A REST v2 error (an RFC 9457 problem body; RunPod documents what each status means) → the precise error.
    400 is either "no capacity" (another GPU type or cloud may have some), a busy host on start, or a request
    RunPod will never accept; 403 on a create is a pool the account may not use, also worth the next candidate."""
    body = _problem(text)
    detail = _detail(text)
    lowered = detail.lower()
    errors = [str(e) for e in (body or {}).get("errors") or []]
    explained = detail + (f" ({'; '.join(errors)})" if errors else "")
    if status == 401:
        return Unauthorized("RunPod refused the API key (401)")
    if status == 403 and body is None and "1010" in text:
        return Unavailable("RunPod's front end blocked the request (Cloudflare error 1010)")
    if status == 403:
        return Forbidden(f"RunPod denied {call} (403): {detail}")
    if status == 402:
        return InsufficientBalance(detail or "RunPod: insufficient balance (402)")
    if status == 404 and call == "POST /v2/pods":
        return BadRequest(f"RunPod rejected {call}: {detail} (404: the template is unknown or not the account's)")
    if status == 404:
        return PodNotFound(detail or "not found")
    if status == 409:
        return Conflict(f"RunPod refused {call} for the pod's current state: {detail}")
    if status == 410:
        return ApiRetired(f"RunPod retired this API (410 Gone): {call}")
    if status == 413:
        return BadRequest(f"RunPod rejected {call}: the request body is over 100 KiB (413); shorten env or command")
    if status == 400 and any(phrase in lowered for phrase in CAPACITY):
        return CapacityError(detail)
    if status == 400 and HOST_BUSY in lowered:
        return HostBusy(detail)
    if 400 <= status < 500:
        return BadRequest(f"RunPod rejected {call} ({status}): {explained}")
    if body is not None and detail:
        return Unavailable(detail)
    return Unavailable(f"RunPod answered {status} to {call}")


def _parse(status: int, text: str, operation: str) -> dict[str, Any]:
    if status == 401:
        raise Unauthorized("RunPod refused the API key (401)")
    if status == 403 and "1010" in text:
        raise Unavailable("RunPod's front end blocked the request (Cloudflare error 1010)")
    if status == 410:
        raise ApiRetired(f"RunPod retired its GraphQL API (410 Gone): {operation}")
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
    """RunPod's GraphQL error message → the precise error the rest of pod-manager acts on."""
    lowered = message.lower()
    if any(phrase in lowered for phrase in CAPACITY):
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


def _path(*parts: str) -> str:
    """A REST path with every id percent-encoded (`/` and spaces included: `NVIDIA%20A100`)."""
    return "".join("/" + quote(part, safe="") for part in parts)


class RunPodClient:
    """The operations pod-manager uses; one method per operation, plain dicts out (in the API's own shapes).

    `api` is `RUNPOD_API`: the service builds the client with it (default REST v2); a client built without it
    speaks GraphQL, as this class always did for its direct callers.
    """

    def __init__(
        self,
        transport: RunPodTransport,
        *,
        api: str = GRAPHQL,
        query_retries: int = 3,
        max_rate_limit_wait_s: float = MAX_RATE_LIMIT_WAIT_S,
    ) -> None:
        if api not in APIS:
            raise ValueError(f"api must be one of {', '.join(APIS)}, not {api!r}")
        self.transport = transport
        self.api = api
        self.query_retries = query_retries
        self.max_rate_limit_wait_s = max_rate_limit_wait_s

    @property
    def rest(self) -> bool:
        return self.api == REST

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

    async def _read(self, call: Callable[[], Awaitable[T]], operation: str) -> T:
        """A read: safe to repeat on transient failures, with backoff."""
        delay = 0.5
        for attempt in range(self.query_retries + 1):
            try:
                return await self._paced(call, operation)
            except RateLimited:
                raise
            except Unavailable as exc:
                if attempt == self.query_retries:
                    raise
                log.warning("RunPod %s failed (%s); retrying", operation, exc.message)
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    async def _query(self, query: str, variables: dict[str, Any] | None, operation: str) -> dict[str, Any]:
        return await self._read(lambda: self.transport.execute(query, variables, operation), operation)

    async def _mutate(self, query: str, variables: dict[str, Any], operation: str) -> dict[str, Any]:
        return await self._paced(lambda: self.transport.execute(query, variables, operation), operation)

    async def _get(self, path: str) -> dict[str, Any]:
        answer = await self._read(lambda: self.transport.request("GET", path), f"GET {path}")
        return answer or {}

    async def _write(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any] | None:
        return await self._paced(lambda: self.transport.request(method, path, body), f"{method} {path}")

    async def _rest_pods(self) -> list[dict[str, Any]]:
        """`GET /v2/pods`, following `pagination.nextCursor` while `hasNextPage` where RunPod pages the list
        (newer servers); without `pagination` the list is whole."""
        pods: list[dict[str, Any]] = []
        path, seen = "/pods", set()
        for _ in range(MAX_PAGES):
            page = await self._get(path)
            pods.extend(page.get("pods") or [])
            pagination = page.get("pagination")
            if not isinstance(pagination, dict) or not pagination.get("hasNextPage"):
                return pods
            cursor = pagination.get("nextCursor")
            if not cursor or cursor in seen:
                raise Unavailable("RunPod's pod list says it has a next page but gives no new cursor")
            seen.add(cursor)
            path = "/pods?" + urlencode({"cursor": cursor})
        raise Unavailable(f"RunPod's pod list runs past {MAX_PAGES} pages")

    async def pods(self) -> list[dict[str, Any]]:
        if self.rest:
            return await self._rest_pods()
        data = await self._query(LIST_PODS, None, "Pods")
        pods: list[dict[str, Any]] = (data.get("myself") or {}).get("pods") or []
        return pods

    async def pod(self, pod_id: str) -> dict[str, Any] | None:
        """The pod, or None when RunPod does not know it (any more)."""
        if self.rest:
            try:
                return await self._get(_path("pods", pod_id))
            except PodNotFound:
                return None
        data = await self._query(GET_POD, {"input": {"podId": pod_id}}, "Pod")
        pod: dict[str, Any] | None = data.get("pod")
        return pod

    async def create_pod(self, spec: PodCreateSpec | Mapping[str, Any]) -> dict[str, Any]:
        """One create, never repeated here. REST answers the whole Pod; GraphQL its id (read it for more).
        A mapping is sent as it is: a body already in the API's own words."""
        if self.rest:
            body = spec.rest_body() if isinstance(spec, PodCreateSpec) else dict(spec)
            created = await self._write("POST", "/pods", body)
            if not created:
                raise Unavailable("RunPod answered the create without a pod")
            return created
        inp = spec.graphql_input() if isinstance(spec, PodCreateSpec) else dict(spec)
        data = await self._mutate(CREATE_POD, {"input": inp}, "CreatePod")
        made: dict[str, Any] = data["podFindAndDeployOnDemand"]
        return made

    async def pod_action(self, pod_id: str, action: str) -> dict[str, Any] | None:
        """REST v2 `POST /v2/pods/{id}/action` (start, stop, restart, terminate): the Pod, or None for 204."""
        return await self._write("POST", _path("pods", pod_id) + "/action", {"action": action})

    async def start_pod(self, pod_id: str) -> None:
        """Resume a stopped pod on its machine (GraphQL: with its one GPU)."""
        if self.rest:
            await self.pod_action(pod_id, "start")
        else:
            await self._mutate(RESUME_POD, {"input": {"podId": pod_id, "gpuCount": 1}}, "ResumePod")

    async def stop_pod(self, pod_id: str) -> None:
        if self.rest:
            await self.pod_action(pod_id, "stop")
        else:
            await self._mutate(STOP_POD, {"input": {"podId": pod_id}}, "StopPod")

    async def restart_pod(self, pod_id: str) -> None:
        """In place, on its machine with its GPU: REST v2 in both modes (GraphQL has no restart)."""
        await self.pod_action(pod_id, "restart")

    async def terminate_pod(self, pod_id: str) -> None:
        if self.rest:
            await self._write("DELETE", _path("pods", pod_id))
        else:
            await self._mutate(TERMINATE_POD, {"input": {"podId": pod_id}}, "TerminatePod")

    async def gpu_types(self) -> list[dict[str, Any]]:
        """The GPU catalogue without RunPod's GraphQL-only `unknown` placeholder type."""
        if self.rest:
            gpus = (await self._get("/catalog/gpus")).get("gpus") or []
        else:
            gpus = (await self._query(GPU_TYPES, {"price": {"gpuCount": 1}}, "GpuTypes")).get("gpuTypes") or []
        return [g for g in gpus if g.get("id") != "unknown"]

    async def account(self) -> dict[str, Any]:
        """The balance and burn rate: over GraphQL in both modes, as REST v2 has no account route. Once RunPod
        retires GraphQL (410 Gone) the answer degrades to what REST v2 knows — no balance (`clientBalance`
        None), the burn rate as the sum of the pods' `cost` — rather than failing every health check."""
        try:
            data = await self._query(ACCOUNT, None, "Account")
        except ApiRetired as exc:
            pods = await self._rest_pods()
            spend = round(sum(float(p.get("cost") or 0.0) for p in pods), 4)
            return {"clientBalance": None, "currentSpendPerHr": spend, "balanceUnavailable": exc.message}
        myself: dict[str, Any] = data.get("myself") or {}
        return myself

    async def network_volumes(self) -> list[dict[str, Any]]:
        if self.rest:
            volumes: list[dict[str, Any]] = (await self._get("/network-volumes")).get("networkVolumes") or []
            return volumes
        data = await self._query(NETWORK_VOLUMES, None, "Volumes")
        listed: list[dict[str, Any]] = (data.get("myself") or {}).get("networkVolumes") or []
        return listed

    async def network_volume(self, volume_id: str) -> dict[str, Any] | None:
        """One network volume (REST `dataCenter`, GraphQL `dataCenterId`), or None."""
        if self.rest:
            try:
                return await self._get(_path("network-volumes", volume_id))
            except PodNotFound:
                return None
        return next((v for v in await self.network_volumes() if v.get("id") == volume_id), None)

    async def templates(self) -> list[dict[str, Any]]:
        if self.rest:
            own: list[dict[str, Any]] = (await self._get("/templates")).get("templates") or []
            return own
        data = await self._query(TEMPLATES, None, "Templates")
        templates: list[dict[str, Any]] = (data.get("myself") or {}).get("podTemplates") or []
        return templates

    async def close(self) -> None:
        await self.transport.close()
