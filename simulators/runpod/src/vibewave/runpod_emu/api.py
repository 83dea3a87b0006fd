"""GraphQL execution: parse, validate and run one request against the `World`, RunPod-style answers.

HTTP status rules (reference §2.8): syntax and validation errors → 400 `{"errors": [...]}`; variable values
that do not coerce → 400; domain errors → 200 with `errors` (message, locations, path, extensions.code) and
`data.<root>: null`. Messages keep graphql-js's double quotes, since that is what RunPod's server prints.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    GraphQLError,
    GraphQLResolveInfo,
    OperationDefinitionNode,
    execute,
    parse,
    validate,
)

from vibewave.runpod_emu.catalogue import DATA_CENTERS, GpuType, network_volume_cost_per_hr
from vibewave.runpod_emu.faults import UNAUTHORIZED_MESSAGE
from vibewave.runpod_emu.schema import schema
from vibewave.runpod_emu.state import Account, ApiError, Pod, World, internal_error, iso

Resolver = Callable[..., Any]
BAD_BODY_MESSAGE = "POST body missing, invalid Content-Type, or JSON object has no keys."
# Operations a pod-scoped key (the RUNPOD_API_KEY inside a pod) may not run.
ACCOUNT_ONLY = {
    "myself",
    "podFindAndDeployOnDemand",
    "deployCpuPod",
    "updateUserSettings",
    "saveTemplate",
    "deleteTemplate",
    "createNetworkVolume",
    "deleteNetworkVolume",
}
_QUOTED_NAME = re.compile(r"'(\$?[_A-Za-z\[][_0-9A-Za-z.!\[\]]*)'")


@dataclass
class Outcome:
    """HTTP status and JSON body of one GraphQL answer."""

    status: int
    body: dict[str, Any]


def js_quotes(message: str) -> str:
    """graphql-core quotes names with ' where graphql-js (RunPod's server) uses "."""
    return _QUOTED_NAME.sub(r'"\1"', message)


def _error_json(error: GraphQLError, code: str | None = None) -> dict[str, Any]:
    out = error.formatted
    out["message"] = js_quotes(out["message"])
    if code is not None and not out.get("extensions"):
        out["extensions"] = {"code": code}
    return dict(out)


def bad_request(message: str, code: str = "BAD_REQUEST") -> Outcome:
    return Outcome(400, {"errors": [{"message": message, "extensions": {"code": code}}]})


def parse_request(body: Any) -> tuple[DocumentNode, dict[str, Any] | None, str | None] | Outcome:
    """The document, variables and operation name of a request body, or the 400 answer."""
    if not isinstance(body, dict) or not body:
        return bad_request(BAD_BODY_MESSAGE)
    query = body.get("query")
    if not isinstance(query, str) or not query.strip():
        return bad_request("GraphQL operations must contain a non-empty `query` or a `persistedQuery` extension.")
    variables = body.get("variables")
    if variables is not None and not isinstance(variables, dict):
        return bad_request("`variables` in a POST body should be provided as an object.")
    operation_name = body.get("operationName")
    if operation_name is not None and not isinstance(operation_name, str):
        return bad_request("`operationName` in a POST body must be a string if provided.")
    try:
        document = parse(query)
    except GraphQLError as exc:
        return Outcome(400, {"errors": [_error_json(exc, "GRAPHQL_PARSE_FAILED")]})
    return document, variables, operation_name


def root_fields(document: DocumentNode, operation_name: str | None = None) -> list[str]:
    """Root field names of the operation that will run (for fault filters and logs)."""
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode) and (
            operation_name is None or (definition.name is not None and definition.name.value == operation_name)
        ):
            return [s.name.value for s in definition.selection_set.selections if isinstance(s, FieldNode)]
    return []


def run(
    world: World, document: DocumentNode, variables: dict[str, Any] | None, operation_name: str | None, scoped: bool
) -> Outcome:
    """Validate and execute; domain errors come back as HTTP 200 with `errors` listed first."""
    errors = validate(schema(), document)
    if errors:
        return Outcome(400, {"errors": [_error_json(e, "GRAPHQL_VALIDATION_FAILED") for e in errors]})
    result = execute(
        schema(),
        document,
        root_value=Resolvers(world, scoped).root(),
        variable_values=variables,
        operation_name=operation_name,
    )
    assert isinstance(result, ExecutionResult), "resolvers are synchronous"
    if result.data is None and result.errors:
        return Outcome(400, {"errors": [_error_json(e, "BAD_USER_INPUT") for e in result.errors]})
    body: dict[str, Any] = {}
    if result.errors:
        body["errors"] = [_error_json(e) for e in result.errors]
    body["data"] = result.data
    return Outcome(200, body)


# --- JSON shapes ---------------------------------------------------------------------------------


def pod_json(world: World, pod: Pod) -> dict[str, Any]:
    """A `Pod` with every field the schema knows; graphql-core keeps only the selected ones."""
    now = world.clock()
    runtime: dict[str, Any] | None = None
    if pod.runtime_up:
        uptime = pod.uptime(now)
        runtime = {
            "uptimeInSeconds": uptime,
            "ports": [dict(p) for p in pod.runtime_ports or []],
            "gpus": [
                {"id": f"GPU-{pod.id[:8]}-{i:04x}-emu", "gpuUtilPercent": 0, "memoryUtilPercent": 0}
                for i in range(pod.gpu_count)
            ],
            "container": {"cpuPercent": 1, "memoryPercent": 2},
        }
    gpu = pod.gpu_type
    volume = world.volumes.get(pod.network_volume_id or "")
    return {
        "id": pod.id,
        "name": pod.name,
        "desiredStatus": pod.desired_status,
        "imageName": pod.image_name,
        "gpuCount": pod.gpu_count,
        "vcpuCount": pod.vcpu_count,
        "memoryInGb": pod.memory_in_gb,
        "containerDiskInGb": pod.container_disk_in_gb,
        "volumeInGb": pod.volume_in_gb,
        "volumeMountPath": pod.volume_mount_path,
        "costPerHr": pod.cost_per_hr,
        "adjustedCostPerHr": pod.cost_per_hr,
        "machineId": pod.machine.id,
        "env": pod.env_strings(),
        "ports": pod.ports,
        "port": None,
        "dockerArgs": pod.docker_args,
        "dockerId": None,
        "lastStatusChange": pod.last_status_change,
        "uptimeSeconds": pod.uptime(now),
        "podType": "RESERVED",
        "templateId": pod.template_id,
        "networkVolumeId": pod.network_volume_id,
        "locked": False,
        "lastStartedAt": iso(pod.last_started_at) if pod.last_started_at else None,
        "createdAt": iso(pod.created_at),
        "cpuFlavorId": pod.cpu_flavor_id,
        "volumeEncrypted": False,
        "containerRegistryAuthId": pod.registry,
        "runtime": runtime,
        "machine": {
            "podHostId": pod.pod_host_id,
            "gpuDisplayName": gpu.display_name if gpu else None,
            "gpuTypeId": gpu.id if gpu else None,
            "gpuType": gpu_json(world, gpu) if gpu else None,
            "location": pod.machine.location,
            "dataCenterId": pod.machine.data_center_id,
            "secureCloud": pod.machine.secure_cloud,
            "supportPublicIp": pod.machine.support_public_ip,
            "costPerHr": pod.cost_per_hr,
            "currentPricePerGpu": (gpu.price(pod.cloud_type) if gpu else None),
            "maxDownloadSpeedMbps": 4000 if pod.machine.secure_cloud else 900,
            "maxUploadSpeedMbps": 3000 if pod.machine.secure_cloud else 600,
        },
        "networkVolume": dict(volume) if volume else None,
    }


GPU_COUNTS = (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 16, 20)


def lowest_price(gpu: GpuType, inp: dict[str, Any] | None) -> dict[str, Any]:
    """`lowestPrice(input)`: per-GPU prices for the cloud asked for; null prices where nothing fits."""
    inp = inp or {}
    count = int(inp.get("gpuCount") or 1)
    secure = inp.get("secureCloud")
    if secure is True:
        price, spot = gpu.secure_price, gpu.spot_price(True)
    elif secure is False:
        price, spot = gpu.community_price, gpu.spot_price(False)
    else:
        spots = [p for p in (gpu.spot_price(True), gpu.spot_price(False)) if p is not None]
        price, spot = gpu.lowest_price(), min(spots) if spots else None
    fits = price is not None and count <= gpu.max_gpu_count and (gpu.available is None or gpu.available >= count)
    total = max(gpu.max_gpu_count * 8, 1)
    free = total if gpu.available is None else max(0, min(total, gpu.available))
    return {
        "gpuName": gpu.display_name,
        "gpuTypeId": gpu.id,
        "minimumBidPrice": spot if fits else None,
        "uninterruptablePrice": price if fits else None,
        "minMemory": gpu.ram_per_gpu * count,
        "minVcpu": gpu.vcpu_per_gpu * count,
        "stockStatus": gpu.stock_status if fits and free > 0 else None,
        "availableGpuCounts": [c for c in GPU_COUNTS if c <= gpu.max_gpu_count and c <= free] if price else [],
        "rentalPercentage": round((total - free) / total, 2),
        "rentedCount": total - free,
        "totalCount": total,
        "countryCode": inp.get("countryCode"),
        "supportPublicIp": True,
    }


def gpu_json(world: World, gpu: GpuType) -> dict[str, Any]:
    def lowest(info: GraphQLResolveInfo, input: dict[str, Any] | None = None) -> dict[str, Any]:
        return lowest_price(gpu, input)

    return {
        "id": gpu.id,
        "displayName": gpu.display_name,
        "manufacturer": gpu.manufacturer,
        "memoryInGb": gpu.memory_in_gb,
        "cudaCores": gpu.cuda_cores,
        "maxGpuCount": gpu.max_gpu_count,
        "maxGpuCountSecureCloud": gpu.max_gpu_count if gpu.secure_cloud else 0,
        "maxGpuCountCommunityCloud": gpu.max_gpu_count if gpu.community_cloud else 0,
        "minPodGpuCount": 1,
        "secureCloud": gpu.secure_cloud,
        "communityCloud": gpu.community_cloud,
        "securePrice": gpu.secure_price,
        "communityPrice": gpu.community_price,
        "secureSpotPrice": gpu.spot_price(True),
        "communitySpotPrice": gpu.spot_price(False),
        "oneWeekPrice": gpu.term_price(0.95),
        "oneMonthPrice": gpu.term_price(0.9),
        "threeMonthPrice": gpu.term_price(0.85),
        "sixMonthPrice": gpu.term_price(0.8),
        "lowestPrice": lowest,
    }


def account_json(world: World, account: Account) -> dict[str, Any]:
    pods = list(world.pods.values())
    spend = world.current_spend_per_hr()
    return {
        "id": account.id,
        "email": account.email,
        "clientBalance": round(account.client_balance, 6),
        "currentSpendPerHr": round(spend, 6),
        "spendLimit": account.spend_limit,
        "underBalance": account.client_balance <= 0,
        "minBalance": 0.0,
        "clientLifetimeSpend": round(account.lifetime_spend, 6),
        "creditAlertThreshold": account.credit_alert_threshold,
        "notifyPodsStale": account.notify_pods_stale,
        "notifyPodsGeneral": account.notify_pods_general,
        "notifyLowBalance": account.notify_low_balance,
        "pubKey": account.pub_key,
        "pods": lambda info: [pod_json(world, p) for p in pods],
        "networkVolumes": lambda info: [dict(v) for v in world.volumes.values()],
        "podTemplates": lambda info: [dict(t) for t in world.templates.values() if not t["isRunpod"]],
        "spendDetails": {
            "localStoragePerHour": round(sum(p.storage_cost_per_hr() for p in pods), 6),
            "networkStoragePerHour": round(
                sum(network_volume_cost_per_hr(int(v["size"])) for v in world.volumes.values()), 6
            ),
            "gpuComputePerHour": round(sum(p.cost_per_hr for p in pods if p.running), 6),
        },
    }


# --- resolvers -----------------------------------------------------------------------------------


def _required(value: dict[str, Any] | None) -> dict[str, Any]:
    if value is None:
        raise ApiError("input is required")
    return value


class Resolvers:
    """Root fields of Query and Mutation, bound to one world and one caller."""

    def __init__(self, world: World, scoped: bool) -> None:
        self.world = world
        self.scoped = scoped

    def root(self) -> dict[str, Resolver]:
        w = self.world
        fields: dict[str, Resolver] = {
            "myself": lambda info: account_json(w, self._advanced(w.account)),
            "pod": self.pod,
            "gpuTypes": self.gpu_types,
            "dataCenters": self.data_centers,
            "podTemplate": lambda info, id: w.templates.get(id),
            "podFindAndDeployOnDemand": lambda info, input=None: pod_json(w, w.create_pod(_required(input), cpu=False)),
            "deployCpuPod": lambda info, input=None: pod_json(w, w.create_pod(_required(input), cpu=True)),
            "podStop": lambda info, input=None: pod_json(w, w.stop_pod(_required(input)["podId"])),
            "podResume": self.pod_resume,
            "podTerminate": lambda info, input=None: w.terminate_pod(_required(input)["podId"]),
            "updateUserSettings": lambda info, input=None: account_json(w, w.update_user(_required(input))),
            "saveTemplate": lambda info, input=None: w.save_template(_required(input)),
            "deleteTemplate": self.delete_template,
            "createNetworkVolume": lambda info, input=None: w.create_volume(_required(input)),
            "deleteNetworkVolume": lambda info, input=None: w.delete_volume(_required(input)["id"]),
        }
        return {name: self._guarded(name, fn) for name, fn in fields.items()}

    def _advanced(self, account: Account) -> Account:
        self.world.advance()
        return account

    def _guarded(self, name: str, fn: Resolver) -> Resolver:
        """Pod-scoped keys and the generic-error fault (optionally after the action really happened)."""

        def resolver(info: GraphQLResolveInfo, **args: Any) -> Any:
            if self.scoped and name in ACCOUNT_ONLY:
                raise ApiError(UNAUTHORIZED_MESSAGE)
            fault = self.world.faults.fire("internal_error", name)
            if fault is not None and not fault.after_action:
                raise internal_error()
            result = fn(info, **args)
            if fault is not None:
                raise internal_error()
            return result

        return resolver

    def pod(self, info: GraphQLResolveInfo, input: dict[str, Any]) -> dict[str, Any] | None:
        pod = self.world.get_pod(str(input["podId"]))
        return None if pod is None else pod_json(self.world, pod)

    def pod_resume(self, info: GraphQLResolveInfo, input: dict[str, Any] | None = None) -> dict[str, Any]:
        inp = _required(input)
        return pod_json(self.world, self.world.resume_pod(str(inp["podId"]), inp.get("gpuCount")))

    def gpu_types(self, info: GraphQLResolveInfo, input: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        wanted: set[str] | None = None
        if input is not None and (input.get("id") is not None or input.get("ids") is not None):
            wanted = set(input.get("ids") or [])
            if input.get("id") is not None:
                wanted.add(str(input["id"]))
        return [gpu_json(self.world, g) for g in self.world.gpu_types if wanted is None or g.id in wanted]

    def data_centers(self, info: GraphQLResolveInfo) -> list[dict[str, Any]]:
        offered = [g for g in self.world.gpu_types if g.secure_cloud]
        return [
            {
                "id": dc.id,
                "name": dc.name,
                "location": dc.location,
                "storageSupport": dc.storage_support,
                "gpuAvailability": [
                    {
                        "gpuTypeId": g.id,
                        "displayName": g.display_name,
                        "stockStatus": g.stock_status,
                        "available": g.available is None or g.available > 0,
                    }
                    for g in offered
                ],
            }
            for dc in DATA_CENTERS
        ]

    def delete_template(self, info: GraphQLResolveInfo, templateName: str | None = None) -> None:
        if not templateName:
            raise ApiError("templateName is required")
        self.world.delete_template(templateName)
