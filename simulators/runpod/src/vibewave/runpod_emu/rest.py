"""REST API v2 on the shared `World`: RunPod's `/v2/...` operations as plain functions of one request.

A pod created over GraphQL is the same pod here and vice versa; this module only translates. A create body is
validated (422 with schema errors, 400 for cross-field rules, 404 for an unknown template, reference-v2 §11.3),
then turned into the GraphQL-shaped input `World.create_pod` takes; answers use v2's shapes (§4.2, §5.1, §6,
§11.8). Errors are `Problem`s (or the world's `ApiError`s, which carry their status); the HTTP layer
(`rest_routes`) adds auth, rate limits, fault switches and headers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from vibewave.runpod_emu.catalogue import (
    COMMUNITY_LOCATIONS,
    CPU_FLAVOR_PRICES,
    CPU_RAM_PER_VCPU,
    CPU_VCPU_COUNTS,
    DATA_CENTERS,
    GPU_POOLS,
    HOST_CUDA_VERSIONS,
    GpuType,
    country_of,
    cuda_key,
    host_cuda_version,
)
from vibewave.runpod_emu.faults import CAPACITY_MESSAGE, POD_NOT_FOUND_MESSAGE
from vibewave.runpod_emu.state import Pod, World, iso, parse_ports
from vibewave.runpod_emu.v2schema import (
    CREATE_NETWORK_VOLUME,
    POD_ACTION,
    VALIDATION_FAILED,
    create_pod_errors,
    validate,
)

SSH_PROXY_HOST = "ssh.runpod.io"
AVAILABILITY = "AVAILABILITY"
AVAILABILITY_PARAMS = ("product", "count", "cloud", "countryCodes", "cudaVersions", "minCudaVersion")
PRODUCTS = ("POD", "CLUSTER", "SERVERLESS")


class Problem(Exception):
    """An RFC 9457 answer: status, `detail`, optional `errors` (strings)."""

    def __init__(self, status: int, detail: str, errors: list[str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors


def invalid(errors: list[str]) -> Problem:
    return Problem(422, VALIDATION_FAILED, errors)


@dataclass
class Call:
    """One request as an operation sees it: path parameters, query string and the parsed JSON body."""

    params: Mapping[str, str]
    query: Mapping[str, str]
    body: Any = None


@dataclass
class Reply:
    """Status and JSON body; a None body is sent as an empty 204."""

    status: int
    body: Any = None


def action_operation(body: Any) -> str:
    """Operation name of a pod action for counters and fault filters: `rest:podAction:<verb>` for a valid body,
    `rest:podAction` for one that will get the 422."""
    if isinstance(body, dict) and not validate(POD_ACTION, body):
        return f"rest:podAction:{body['action']}"
    return "rest:podAction"


# --- shapes --------------------------------------------------------------------------------------


def pod_json(world: World, pod: Pod) -> dict[str, Any]:
    """A v2 `Pod` (reference-v2 §4.2, §11.8)."""
    status = world.status(pod)
    ports: list[dict[str, Any]] = []
    runtime: dict[str, Any] | None = None
    if pod.runtime_up:
        ports = [
            {"ip": p["ip"], "private": p["privatePort"], "public": p["publicPort"], "type": p["type"]}
            for p in pod.runtime_ports or []
        ]
        runtime = {
            "uptime": pod.uptime(world.clock()),
            "gpus": [{"util": 0, "memoryUtil": 0} for _ in range(pod.gpu_count)],
            "cpu": {"util": 1},
            "memory": {"util": 2},
            "ports": ports,
        }
    ssh = next(
        (p for p in pod.runtime_ports or [] if p["privatePort"] == 22 and p["type"] == "tcp" and p["isIpPublic"]),
        None,
    )
    first_boot = status in ("PROVISIONING", "STARTING") and pod.start_count == 1
    out: dict[str, Any] = {
        "id": pod.id,
        "name": pod.name,
        "status": status,
        "actions": world.actions(pod),
        "image": pod.image_name,
        "args": pod.docker_args or "",
        "disk": pod.container_disk_in_gb,
        "ports": [f"{n}/{p}" for n, p in parse_ports(pod.ports)],
        "env": pod.env_map(),
        "registry": pod.registry,
        "mounts": _mounts(pod.network_volume_id, pod.volume_in_gb, pod.volume_mount_path),
        "cloud": pod.cloud_type,
        "dataCenterId": pod.machine.data_center_id,
        "cudaVersion": pod.cuda_version,
        "ssh": {
            "proxy": {
                "host": SSH_PROXY_HOST,
                "port": 22,
                "username": pod.pod_host_id,
                "command": f"ssh {pod.pod_host_id}@{SSH_PROXY_HOST}",
            },
            "direct": None
            if ssh is None
            else {
                "host": ssh["ip"],
                "port": ssh["publicPort"],
                "username": "root",
                "command": f"ssh root@{ssh['ip']} -p {ssh['publicPort']}",
            },
        },
        "template": None,
        "cost": pod.cost_per_hr if pod.running else 0.0,
        "locked": False,
        "globalNetworking": {"enabled": True, "internalDns": f"{pod.id}.runpod.internal"}
        if pod.global_networking
        else {"enabled": False},
        "runtime": runtime,
        "createdAt": iso(pod.created_at),
        "startedAt": None if first_boot or pod.last_started_at is None else iso(pod.last_started_at),
    }
    if pod.gpu_type is not None:
        out["gpu"] = {"id": pod.gpu_type.id, "count": pod.gpu_count}
    else:
        out["cpu"] = {"id": pod.cpu_flavor_id, "vcpuCount": pod.vcpu_count, "memory": pod.memory_in_gb}
    return out


def _mounts(network_volume_id: str | None, volume_in_gb: int, path: str) -> dict[str, Any]:
    if network_volume_id:
        return {"network": [{"volumeId": network_volume_id, "path": path}]}
    if volume_in_gb > 0:
        return {"persistent": {"size": volume_in_gb, "path": path}}
    return {}


def volume_json(volume: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": volume["id"],
        "name": volume["name"],
        "size": volume["size"],
        "dataCenter": volume["dataCenterId"],
        "type": volume.get("type", "STANDARD"),
    }


def template_json(template: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": template["id"],
        "name": template["name"],
        "image": template["imageName"],
        "args": template["dockerArgs"] or "",
        "disk": template["containerDiskInGb"],
        "mounts": _mounts(None, int(template["volumeInGb"] or 0), template["volumeMountPath"]),
        "ports": [f"{n}/{p}" for n, p in parse_ports(template["ports"])],
        "env": {e["key"]: e["value"] for e in template["env"]},
        "registry": template["containerRegistryAuthId"],
        "serverless": template["isServerless"],
        "public": template["isPublic"],
        "category": template["category"],
        "startSsh": template["startSsh"],
        "startJupyter": template["startJupyter"],
        "allowedCudaVersions": [],
    }


@dataclass
class Availability:
    """The `include=AVAILABILITY` part of a catalog query."""

    count: int = 1
    cloud: str = "SECURE"
    country_codes: list[str] | None = None
    cuda_versions: list[str] | None = None
    min_cuda_version: str | None = None


def gpu_json(gpu: GpuType, availability: Availability | None) -> dict[str, Any]:
    """A v2 `GpuType`: prices per single GPU (0 where the cloud does not offer it); with availability, the
    level (upper case), the data centers offering it in that configuration and the host CUDA versions."""
    out: dict[str, Any] = {
        "id": gpu.id,
        "name": gpu.display_name,
        "pool": GPU_POOLS.get(gpu.id),
        "manufacturer": gpu.manufacturer.upper(),
        "memory": gpu.memory_in_gb,
        "secure": gpu.secure_cloud,
        "community": gpu.community_cloud,
        "price": {"secure": gpu.secure_price or 0.0, "community": gpu.community_price or 0.0},
        "maxCount": {
            "secure": gpu.max_gpu_count if gpu.secure_cloud else 0,
            "community": gpu.max_gpu_count if gpu.community_cloud else 0,
        },
    }
    if availability is None:
        return out
    want = availability
    centers = [
        dc
        for dc in offering_data_centers(want.cloud)
        if want.country_codes is None or country_of(dc) in want.country_codes
    ]
    versions = [
        v
        for v in HOST_CUDA_VERSIONS
        if (want.cuda_versions is None or v in want.cuda_versions)
        and (want.min_cuda_version is None or cuda_key(v) >= cuda_key(want.min_cuda_version))
    ]
    fits = (
        gpu.price(want.cloud) is not None
        and want.count <= gpu.max_gpu_count
        and (gpu.available is None or gpu.available >= want.count)
        and gpu.stock_status is not None
        and bool(centers)
        and bool(versions)
    )
    level = (gpu.stock_status or "").upper() if fits else "NONE"
    out["availability"] = level
    if fits:
        names = {dc.id: dc.name for dc in DATA_CENTERS}
        out["dataCenters"] = [{"id": dc, "name": names.get(dc, dc), "availability": level} for dc in centers]
    out["cudaVersions"] = [{"version": v, "available": fits and v in versions} for v in HOST_CUDA_VERSIONS]
    return out


def offering_data_centers(cloud: str) -> list[str]:
    """Where the emulated cloud places pods: every secure data center offers every secure GPU; community pods
    land on hosts listed by country code."""
    return [dc.id for dc in DATA_CENTERS] if cloud == "SECURE" else list(COMMUNITY_LOCATIONS)


def availability_query(query: Mapping[str, str]) -> Availability | None:
    """Parse `include=AVAILABILITY&product=POD[&count&cloud&countryCodes&cudaVersions|minCudaVersion]`; the
    availability parameters are 400 without `include`, `product` is 400 missing with it (reference-v2 §5.1)."""
    if "include" not in query:
        given = [p for p in AVAILABILITY_PARAMS if p in query]
        if given:
            raise Problem(400, f"query parameter '{given[0]}' is valid only with include=AVAILABILITY")
        return None
    errors = [f"$.include: value must be '{AVAILABILITY}'" for v in _csv(query["include"]) if v != AVAILABILITY]
    if "product" not in query:
        raise Problem(400, "query parameter 'product' is required with include=AVAILABILITY")
    errors += [
        "$.product: value must be one of 'POD', 'CLUSTER', 'SERVERLESS'"
        for v in _csv(query["product"])
        if v not in PRODUCTS
    ]
    want = Availability()
    if "count" in query:
        raw = query["count"]
        if not raw.isdigit() or int(raw) < 1:
            errors.append(f"$.count: '{raw}' is not an integer >= 1")
        else:
            want.count = int(raw)
    if "cloud" in query:
        if query["cloud"] not in ("SECURE", "COMMUNITY"):
            errors.append("$.cloud: value must be one of 'SECURE', 'COMMUNITY'")
        want.cloud = query["cloud"]
    if "countryCodes" in query:
        want.country_codes = _csv(query["countryCodes"])
        errors += [f"$.countryCodes: '{c}' is not an ISO country code" for c in want.country_codes if not _iso2(c)]
    if "cudaVersions" in query:
        want.cuda_versions = _csv(query["cudaVersions"])
        errors += [f"$.cudaVersions: '{v}' is not a CUDA version" for v in want.cuda_versions if not _cuda(v, 2)]
    if "minCudaVersion" in query:
        want.min_cuda_version = query["minCudaVersion"]
        if not _cuda(want.min_cuda_version, 1):
            errors.append(f"$.minCudaVersion: '{want.min_cuda_version}' is not a CUDA version")
    if errors:
        raise invalid(errors)
    if want.cuda_versions is not None and want.min_cuda_version is not None:
        raise Problem(400, "cudaVersions and minCudaVersion are mutually exclusive")
    return want


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _iso2(code: str) -> bool:
    return len(code) == 2 and code.isascii() and code.isalpha() and code.isupper()


def _cuda(version: str, min_parts: int) -> bool:
    parts = version.split(".")
    return min_parts <= len(parts) <= 2 and all(p.isdigit() for p in parts)


# --- operations ----------------------------------------------------------------------------------


class RestApi:
    """The v2 operations against one world; each takes a `Call` and returns a `Reply` or raises."""

    def __init__(self, world: World) -> None:
        self.world = world

    def list_pods(self, call: Call) -> Reply:
        """`includeClusterPods` and unknown parameters are ignored (no cluster pods are modelled)."""
        return Reply(200, {"pods": [pod_json(self.world, p) for p in self.world.list_pods()]})

    def get_pod(self, call: Call) -> Reply:
        return Reply(200, pod_json(self.world, self._pod(call)))

    def create_pod(self, call: Call) -> Reply:
        errors = create_pod_errors(call.body)
        if errors:
            raise invalid(errors)
        inp, cpu = self._create_input(call.body)
        pod = self.world.create_pod(inp, cpu=cpu, operation="rest:createPod")
        return Reply(201, pod_json(self.world, pod))

    def delete_pod(self, call: Call) -> Reply:
        self.world.terminate_pod(call.params["id"])
        return Reply(204)

    def pod_action(self, call: Call) -> Reply:
        errors = validate(POD_ACTION, call.body)
        if errors:
            raise invalid(errors)
        action = str(call.body["action"])
        pod = self._pod(call)
        self.world.check_action(pod, action)
        if action == "terminate":
            self.world.terminate_pod(pod.id)
            return Reply(204)
        if action == "start":
            self.world.resume_pod(pod.id, None, operation="rest:podAction:start")
        elif action == "stop":
            self.world.stop_pod(pod.id)
        else:
            self.world.restart_pod(pod.id)
        return Reply(200, pod_json(self.world, pod))

    def list_gpu_types(self, call: Call) -> Reply:
        """RunPod's GraphQL-only `unknown` placeholder type is not a deployable id and is left out."""
        availability = availability_query(call.query)
        gpus = [gpu_json(g, availability) for g in self.world.gpu_types if g.id != "unknown"]
        return Reply(200, {"gpus": gpus})

    def get_gpu_type(self, call: Call) -> Reply:
        gpu = self.world.gpu(call.params["id"])
        if gpu is None or gpu.id == "unknown":
            raise Problem(404, "gpu type not found")
        return Reply(200, gpu_json(gpu, availability_query(call.query)))

    def list_network_volumes(self, call: Call) -> Reply:
        self.world.advance()
        return Reply(200, {"networkVolumes": [volume_json(v) for v in self.world.volumes.values()]})

    def get_network_volume(self, call: Call) -> Reply:
        self.world.advance()
        volume = self.world.volumes.get(call.params["id"])
        if volume is None:
            raise Problem(404, "network volume not found")
        return Reply(200, volume_json(volume))

    def create_network_volume(self, call: Call) -> Reply:
        errors = validate(CREATE_NETWORK_VOLUME, call.body)
        if errors:
            raise invalid(errors)
        body = call.body
        supported = [dc.id for dc in DATA_CENTERS if dc.storage_support]
        if body["dataCenter"] not in supported:
            raise Problem(
                400,
                f"data center '{body['dataCenter']}' does not support network volumes; "
                f"supported data centers: {', '.join(supported)}",
            )
        volume = self.world.add_volume(
            str(body["name"]), int(body["size"]), str(body["dataCenter"]), str(body.get("type", "STANDARD"))
        )
        return Reply(201, volume_json(volume))

    def list_templates(self, call: Call) -> Reply:
        """The account's own templates (RunPod's public ones are in the catalog, not here)."""
        self.world.advance()
        own = [template_json(t) for t in self.world.templates.values() if not t["isRunpod"]]
        return Reply(200, {"templates": own})

    def _pod(self, call: Call) -> Pod:
        pod = self.world.get_pod(call.params["id"])
        if pod is None:
            raise Problem(404, POD_NOT_FOUND_MESSAGE)  # the spec's example; other not-found details follow it
        return pod

    def _create_input(self, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """CreatePodRequest → `World.create_pod` input, after the cross-field rules (400) and template (404)."""
        template = None
        if "templateId" in body:
            template = self.world.templates.get(body["templateId"])
            if template is None:
                raise Problem(404, "template not found")
            if template["isServerless"]:
                raise Problem(422, "a serverless template cannot be used to create a pod")
        gpu, cpu = body.get("gpu"), body.get("cpu")
        if (gpu is None) == (cpu is None):
            raise Problem(400, "exactly one of 'gpu' or 'cpu' must be set")
        mounts = body.get("mounts") or {}
        if "persistent" in mounts and "network" in mounts:
            raise Problem(400, "mounts may set 'persistent' or 'network', not both")
        if cpu is not None and "persistent" in mounts:
            raise Problem(400, "persistent mounts are not available on CPU pods")
        if gpu is not None and gpu.get("allowedCudaVersions") and "minCudaVersion" in gpu:
            raise Problem(400, "allowedCudaVersions and minCudaVersion are mutually exclusive")
        cloud = str(body.get("cloud", "SECURE"))
        inp: dict[str, Any] = {"name": body["name"], "cloudType": cloud}
        for key, name in (("image", "imageName"), ("args", "dockerArgs"), ("disk", "containerDiskInGb")):
            if key in body:
                inp[name] = body[key]
        if "ports" in body:
            inp["ports"] = ",".join(body["ports"])
        inp["env"] = [{"key": k, "value": v} for k, v in (body.get("env") or {}).items()]
        if "registry" in body:
            inp["containerRegistryAuthId"] = body["registry"]
        for flag in ("startSsh", "startJupyter"):
            inp[flag] = bool(body.get(flag, (template or {}).get(flag, False)))
        if "templateId" in body:
            inp["templateId"] = body["templateId"]
        if body.get("globalNetworking"):
            inp["globalNetworking"] = True
        if "persistent" in mounts:
            inp["volumeInGb"] = mounts["persistent"]["size"]
            inp["volumeMountPath"] = mounts["persistent"]["path"]
        elif cpu is not None:
            inp["volumeInGb"] = 0  # CPU pods ignore a template's persistent mount
        self._place(body, mounts, cloud, inp)
        if gpu is not None:
            self._gpu_input(gpu, inp)
            return inp, False
        assert cpu is not None, "exactly one of gpu and cpu, checked above"
        flavor, vcpu = str(cpu["id"]), int(cpu["vcpuCount"])
        if flavor not in CPU_FLAVOR_PRICES:
            raise Problem(400, CAPACITY_MESSAGE)
        if vcpu not in CPU_VCPU_COUNTS:
            raise Problem(400, f"vcpuCount for {flavor} must be a power of two from 2 to {CPU_VCPU_COUNTS[-1]}")
        inp["instanceId"] = f"{flavor}-{vcpu}-{vcpu * CPU_RAM_PER_VCPU[flavor[-1]]}"
        return inp, True

    def _place(self, body: dict[str, Any], mounts: dict[str, Any], cloud: str, inp: dict[str, Any]) -> None:
        """`dataCenterIds` is enforced, not a preference: no offering data center among them is the capacity
        400. A network volume puts the pod in the volume's data center."""
        wanted: list[str] | None = body.get("dataCenterIds") or None
        if "network" in mounts:
            (mount,) = mounts["network"]
            volume = self.world.volumes.get(mount["volumeId"])
            if volume is None:
                raise Problem(400, f"network volume '{mount['volumeId']}' not found")
            if cloud != "SECURE":
                raise Problem(400, "network volumes are only available in SECURE cloud")
            if wanted is not None and volume["dataCenterId"] not in wanted:
                raise Problem(
                    400, f"network volume '{volume['id']}' is in {volume['dataCenterId']}, not in dataCenterIds"
                )
            inp["networkVolumeId"] = volume["id"]
            inp["volumeMountPath"] = mount["path"]
            inp["dataCenterId"] = volume["dataCenterId"]
        elif wanted is not None:
            offering = offering_data_centers(cloud)
            placed = next((dc for dc in wanted if dc in offering), None)
            if placed is None:
                raise Problem(400, CAPACITY_MESSAGE)
            inp["dataCenterId"] = placed

    def _gpu_input(self, gpu: dict[str, Any], inp: dict[str, Any]) -> None:
        """GPU fields; host filters the emulated machines cannot meet are the capacity 400, like live."""
        if "count" not in gpu and self.world.config.rest_omitted_gpu_count_capacity:
            raise Problem(400, CAPACITY_MESSAGE)
        count = int(gpu.get("count", 1))
        inp["gpuTypeId"], inp["gpuCount"] = gpu["id"], count
        known = self.world.gpu(str(gpu["id"]))
        if known is not None and (
            gpu.get("minRamPerGpu", 0) > known.ram_per_gpu or gpu.get("minVcpuCountPerGpu", 0) > known.vcpu_per_gpu
        ):
            raise Problem(400, CAPACITY_MESSAGE)
        allowed, minimum = gpu.get("allowedCudaVersions") or None, gpu.get("minCudaVersion")
        if (allowed or minimum) and host_cuda_version(allowed, minimum) is None:
            raise Problem(400, CAPACITY_MESSAGE)
        if allowed:
            inp["allowedCudaVersions"] = allowed
        if minimum:
            inp["minCudaVersion"] = minimum


Operation = Callable[[RestApi, Call], Reply]
# (method, path, operation id as in RunPod's OpenAPI document, handler); counters call them `rest:<id>`.
ROUTES: tuple[tuple[str, str, str, Operation], ...] = (
    ("GET", "/v2/pods", "listPods", RestApi.list_pods),
    ("POST", "/v2/pods", "createPod", RestApi.create_pod),
    ("GET", "/v2/pods/{id}", "getPod", RestApi.get_pod),
    ("DELETE", "/v2/pods/{id}", "deletePod", RestApi.delete_pod),
    ("POST", "/v2/pods/{id}/action", "podAction", RestApi.pod_action),
    ("GET", "/v2/catalog/gpus", "listGpuTypes", RestApi.list_gpu_types),
    ("GET", "/v2/catalog/gpus/{id}", "getGpuType", RestApi.get_gpu_type),
    ("GET", "/v2/network-volumes", "listNetworkVolumes", RestApi.list_network_volumes),
    ("POST", "/v2/network-volumes", "createNetworkVolume", RestApi.create_network_volume),
    ("GET", "/v2/network-volumes/{id}", "getNetworkVolume", RestApi.get_network_volume),
    ("GET", "/v2/templates", "listTemplates", RestApi.list_templates),
)
# What a pod-scoped key may do over REST, as over GraphQL: read and act on pods by id, read the catalog.
POD_SCOPED_OPERATIONS = frozenset({"getPod", "deletePod", "podAction", "listGpuTypes", "getGpuType"})
