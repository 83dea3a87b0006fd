"""RunPod REST v2 shapes copied verbatim from the team's reference (`runpod-rest-v2.md`): the contract our
client parses and the emulator must answer with. Section numbers are the reference's."""

from __future__ import annotations

from typing import Any

CAPACITY_DETAIL = (
    "There are no longer any instances available with the requested specifications. Please refresh and try again."
)
HOST_BUSY_DETAIL = "There are not enough free GPUs on the host machine to start this pod."

# §4.2: the live RUNNING pod (REC `V2_POD`).
V2_POD: dict[str, Any] = {
    "actions": ["stop", "restart", "terminate"],
    "args": "",
    "cloud": "SECURE",
    "cost": 0.72,
    "createdAt": "2026-08-20T06:16:19.436Z",
    "cudaVersion": "13.0",
    "dataCenterId": "EU-RO-1",
    "disk": 30,
    "env": {"PUBLIC_KEY": "ssh-ed25519 SCRUBBED"},
    "globalNetworking": {"enabled": False},
    "gpu": {"count": 1, "id": "NVIDIA RTX PRO 4500 Blackwell"},
    "id": "5xpma5eg46tqjq",
    "image": "runpod/pytorch:1.0.7-cu1281-torch291-ubuntu2204",
    "locked": False,
    "mounts": {"network": [{"path": "/workspace", "volumeId": "grvtso8ftn"}]},
    "name": "imgtbx-v2-probe",
    "ports": ["22/tcp"],
    "registry": None,
    "runtime": {
        "cpu": {"util": 0},
        "gpus": [{"memoryUtil": 0, "util": 0}],
        "memory": {"util": 0},
        "ports": [
            {"ip": "213.173.104.74", "private": 22, "public": 35558, "type": "tcp"},
            {"ip": "100.65.14.155", "private": 19123, "public": 60821, "type": "http"},
        ],
        "uptime": 3,
    },
    "ssh": {
        "direct": {
            "command": "ssh root@213.173.104.74 -p 35558",
            "host": "213.173.104.74",
            "port": 35558,
            "username": "root",
        },
        "proxy": {
            "command": "ssh 5xpma5eg46tqjq-SCRUBBED@ssh.runpod.io",
            "host": "ssh.runpod.io",
            "port": 22,
            "username": "5xpma5eg46tqjq-SCRUBBED",
        },
    },
    "startedAt": "2026-08-20T06:16:19.43Z",
    "status": "RUNNING",
    "template": None,
}

# §4.2: the same pod moments after creation (the recording may be trimmed).
V2_POD_NOT_READY: dict[str, Any] = {
    "cost": 0.72,
    "dataCenterId": "EU-RO-1",
    "gpu": {"count": 1, "id": "NVIDIA RTX PRO 4500 Blackwell"},
    "id": "5xpma5eg46tqjq",
    "name": "imgtbx-v2-probe",
    "runtime": None,
    "ssh": {"direct": None, "proxy": {"host": "ssh.runpod.io", "port": 22, "username": "5xpma5eg46tqjq-SCRUBBED"}},
    "status": "RUNNING",
}

# §11.8: just created (spec-faithful mode).
V2_POD_CREATED: dict[str, Any] = {
    "id": "k3v9x2q7m1p0ab",
    "name": "fleet-worker-001",
    "image": "runpod/pytorch:1.0.2-cu1281-torch280-ubuntu2404",
    "args": "",
    "disk": 20,
    "ports": ["8000/http", "22/tcp"],
    "env": {"PUBLIC_KEY": "ssh-ed25519 AAAA… fleet"},
    "registry": None,
    "status": "PROVISIONING",
    "actions": ["stop", "terminate"],
    "mounts": {},
    "gpu": {"id": "NVIDIA GeForce RTX 4090", "count": 1},
    "cloud": "SECURE",
    "dataCenterId": "EU-RO-1",
    "cudaVersion": "12.8",
    "ssh": {
        "proxy": {
            "host": "ssh.runpod.io",
            "port": 22,
            "username": "k3v9x2q7m1p0ab-64411eb2",
            "command": "ssh k3v9x2q7m1p0ab-64411eb2@ssh.runpod.io",
        },
        "direct": None,
    },
    "template": None,
    "cost": 0.44,
    "locked": False,
    "globalNetworking": {"enabled": False},
    "runtime": None,
    "createdAt": "2026-08-20T06:16:19.436Z",
    "startedAt": None,
}

# §11.8: stopped — the fields that differ from the running pod, all others unchanged.
V2_POD_STOPPED: dict[str, Any] = {
    **V2_POD,
    "status": "EXITED",
    "actions": ["start", "terminate"],
    "cost": 0.0,
    "runtime": None,
    "ssh": {
        "proxy": {
            "host": "ssh.runpod.io",
            "port": 22,
            "username": "k3v9x2q7m1p0ab-64411eb2",
            "command": "ssh k3v9x2q7m1p0ab-64411eb2@ssh.runpod.io",
        },
        "direct": None,
    },
    "dataCenterId": "EU-RO-1",
    "cudaVersion": "12.8",
    "startedAt": "2026-08-20T06:16:40.120Z",
}

# §5.1: the spec's `GET /v2/catalog/gpus` example (with include=AVAILABILITY; without it, `availability` and
# `dataCenters` are absent, and `price.serverless` is optional).
GPUS: dict[str, Any] = {
    "gpus": [
        {
            "id": "NVIDIA GeForce RTX 4090",
            "name": "RTX 4090",
            "pool": "ADA_24",
            "manufacturer": "NVIDIA",
            "memory": 24,
            "secure": True,
            "community": True,
            "price": {"secure": 0.44, "community": 0.31, "serverless": 1.1},
            "maxCount": {"secure": 8, "community": 4},
            "availability": "HIGH",
            "dataCenters": [{"id": "US-KS-2", "name": "US Kansas 2", "availability": "HIGH"}],
        }
    ]
}
GPU_AVAILABILITY_ONLY = ("availability", "dataCenters", "cudaVersions", "price.serverless")

# §6.1: a live network-volume list (REC).
VOLUMES: dict[str, Any] = {
    "networkVolumes": [
        {"dataCenter": "EU-RO-1", "id": "grvtso8ftn", "name": "image-toolbox-models", "size": 50, "type": "STANDARD"}
    ]
}

# §6.2: the Template object.
TEMPLATE: dict[str, Any] = {
    "id": "9x4m2p7v",
    "name": "PyTorch GPU Template",
    "image": "runpod/pytorch:1.0.2-cu1281-torch280-ubuntu2404",
    "args": "",
    "disk": 50,
    "mounts": {"persistent": {"size": 20, "path": "/workspace"}},
    "ports": ["8888/http"],
    "env": {"JUPYTER_ENABLE_LAB": "yes"},
    "registry": None,
    "serverless": False,
    "public": False,
    "category": "NVIDIA",
    "startSsh": True,
    "startJupyter": False,
    "allowedCudaVersions": [],
}

# §2.3 / §1.5 / §11.8: error bodies (problem+json).
CAPACITY_400 = {"detail": CAPACITY_DETAIL, "status": 400, "title": "Bad Request"}
ACTION_422 = {
    "detail": "Request validation failed.",
    "errors": ["$.action: value must be one of 'start', 'stop', 'restart', 'terminate'"],
    "status": 422,
    "title": "Unprocessable Entity",
}
FIELD_422 = {
    "detail": "Request validation failed.",
    "errors": ["$: missing property 'dataCenter'", "$: additional properties 'dataCenterId' not allowed"],
    "status": 422,
    "title": "Unprocessable Entity",
}
UNAUTHORIZED_401 = {"title": "Unauthorized", "status": 401, "detail": "missing bearer token"}
FORBIDDEN_403 = {"title": "Forbidden", "status": 403, "detail": "access denied"}
NOT_FOUND_404 = {"title": "Not Found", "status": 404, "detail": "pod not found"}
CONFLICT_409 = {"title": "Conflict", "status": 409, "detail": "action 'restart' is not valid for status EXITED"}
TOO_MANY_429 = {"title": "Too Many Requests", "status": 429, "detail": "rate limit exceeded for the minute window"}
HOST_BUSY_400 = {"title": "Bad Request", "status": 400, "detail": HOST_BUSY_DETAIL}
PAYMENT_402 = {"title": "Payment Required", "status": 402, "detail": "insufficient balance"}


# Objects whose keys are data, not field names (env maps), and fields present only for some contents
# (a pod has at most one kind of mount).
MAPS = ("env",)
CONTENT_OPTIONAL = ("mounts.persistent", "mounts.network")


def shape_errors(ours: Any, reference: Any, at: str = "$", optional: tuple[str, ...] = ()) -> list[str]:
    """Where `ours` departs from `reference` in field names or JSON types: every reference key must be there with
    the same type (null on either side is taken as the field's nullability; numbers are one type), recursively;
    lists compare their first items, maps (`MAPS`) their values. `optional` names dotted paths that may be
    missing (besides `CONTENT_OPTIONAL`)."""
    if ours is None or reference is None:
        return []
    path = at.removeprefix("$").removeprefix(".")
    if isinstance(reference, dict):
        if not isinstance(ours, dict):
            return [f"{path or '$'}: {type(ours).__name__}, want object"]
        if path in MAPS:
            return [f"{path}.{k}: {type(v).__name__}, want string" for k, v in ours.items() if not isinstance(v, str)]
        errors = []
        for key, value in reference.items():
            inner = f"{path}.{key}" if path else key
            if key not in ours:
                if inner not in (*optional, *CONTENT_OPTIONAL):
                    errors.append(f"{inner}: missing")
                continue
            errors += shape_errors(ours[key], value, f"$.{inner}", optional)
        return errors
    if isinstance(reference, list):
        if not isinstance(ours, list):
            return [f"{path}: {type(ours).__name__}, want array"]
        return shape_errors(ours[0], reference[0], at, optional) if ours and reference else []
    kinds = {bool: "boolean", int: "number", float: "number", str: "string"}
    want, got = kinds.get(type(reference)), kinds.get(type(ours))
    return [] if want == got else [f"{path}: {got}, want {want}"]
