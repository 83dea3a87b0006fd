"""What the emulated RunPod offers: GPU types with prices, data centers, CPU flavors, seeded volumes/templates.

Ids and display names are RunPod's real ones (reference §2.2, §2.4) so a client's configured GPU preference
list works unchanged; prices are plausible on-demand list prices in $/GPU/hour, not live quotes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class GpuType:
    """One `GpuType` of the catalogue, plus the per-GPU vCPU/RAM a pod of this type gets."""

    id: str
    display_name: str
    memory_in_gb: int
    cuda_cores: int
    secure_price: float | None
    community_price: float | None
    max_gpu_count: int = 8
    vcpu_per_gpu: int = 8
    ram_per_gpu: int = 32
    manufacturer: str = "Nvidia"
    stock_status: str | None = "High"
    # None: unlimited; a number: GPUs still free (creates beyond it fail with the capacity error).
    available: int | None = None

    @property
    def secure_cloud(self) -> bool:
        return self.secure_price is not None

    @property
    def community_cloud(self) -> bool:
        return self.community_price is not None

    def price(self, cloud_type: str) -> float | None:
        """$/GPU/hour for SECURE or COMMUNITY."""
        return self.secure_price if cloud_type == "SECURE" else self.community_price

    def lowest_price(self) -> float | None:
        prices = [p for p in (self.secure_price, self.community_price) if p is not None]
        return min(prices) if prices else None

    def spot_price(self, secure: bool) -> float | None:
        price = self.secure_price if secure else self.community_price
        return None if price is None else round(price * 0.5, 2)

    def term_price(self, factor: float) -> float | None:
        return None if self.secure_price is None else round(self.secure_price * factor, 2)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "displayName": self.display_name,
            "memoryInGb": self.memory_in_gb,
            "securePrice": self.secure_price,
            "communityPrice": self.community_price,
            "maxGpuCount": self.max_gpu_count,
            "stockStatus": self.stock_status,
            "available": self.available,
        }


def _gpu(
    gpu_id: str,
    name: str,
    mem: int,
    cores: int,
    secure: float | None,
    community: float | None,
    vcpu: int,
    ram: int,
    max_count: int = 8,
) -> GpuType:
    return GpuType(gpu_id, name, mem, cores, secure, community, max_count, vcpu, ram)


def default_gpu_types() -> list[GpuType]:
    """A fresh copy of the catalogue (mutable per emulator: stock and availability can be changed at runtime)."""
    return [
        _gpu("NVIDIA GeForce RTX 4090", "RTX 4090", 24, 16384, 0.69, 0.34, 6, 41),
        _gpu("NVIDIA GeForce RTX 5090", "RTX 5090", 32, 21760, 0.94, 0.69, 8, 46),
        _gpu("NVIDIA RTX A6000", "RTX A6000", 48, 10752, 0.49, 0.33, 8, 50),
        _gpu("NVIDIA GeForce RTX 3090", "RTX 3090", 24, 10496, 0.43, 0.22, 4, 24),
        _gpu("NVIDIA L40S", "L40S", 48, 18176, 0.86, 0.79, 16, 62),
        _gpu("NVIDIA L4", "L4", 24, 7424, 0.43, None, 12, 50),
        _gpu("NVIDIA RTX 6000 Ada Generation", "RTX 6000 Ada", 48, 18176, 0.77, 0.74, 10, 62),
        _gpu("NVIDIA RTX A5000", "RTX A5000", 24, 8192, 0.27, 0.16, 4, 24),
        _gpu("NVIDIA RTX A4000", "RTX A4000", 16, 6144, 0.25, 0.17, 4, 20),
        _gpu("NVIDIA A100 80GB PCIe", "A100 80GB", 80, 6912, 1.64, 1.19, 8, 117),
        _gpu("NVIDIA A100-SXM4-80GB", "A100 SXM", 80, 6912, 1.74, 1.39, 16, 125),
        _gpu("NVIDIA H100 PCIe", "H100 PCIe", 80, 14592, 2.39, 1.99, 16, 176),
        _gpu("NVIDIA H100 80GB HBM3", "H100 SXM", 80, 16896, 2.69, 2.69, 20, 125),
        _gpu("NVIDIA GeForce RTX 3080", "RTX 3080", 10, 8704, None, 0.17, 4, 16, 2),
        _gpu("NVIDIA GeForce RTX 3070", "RTX 3070", 8, 5888, None, 0.13, 4, 16, 2),
        # RunPod's list really contains this placeholder entry (runpodctl filters it out).
        GpuType("unknown", "unknown", 0, 0, None, None, 0, 0, 0, stock_status=None),
    ]


# Serverless pool of each GPU type (REST v2 `pool`), plausible values in RunPod's naming; null if none.
GPU_POOLS: dict[str, str] = {
    "NVIDIA GeForce RTX 4090": "ADA_24",
    "NVIDIA GeForce RTX 5090": "ADA_32_PRO",
    "NVIDIA RTX A6000": "AMPERE_48",
    "NVIDIA GeForce RTX 3090": "AMPERE_24",
    "NVIDIA L40S": "ADA_48_PRO",
    "NVIDIA L4": "ADA_24",
    "NVIDIA RTX 6000 Ada Generation": "ADA_48_PRO",
    "NVIDIA RTX A5000": "AMPERE_24",
    "NVIDIA RTX A4000": "AMPERE_16",
    "NVIDIA A100 80GB PCIe": "AMPERE_80",
    "NVIDIA A100-SXM4-80GB": "AMPERE_80",
    "NVIDIA H100 PCIe": "ADA_80_PRO",
    "NVIDIA H100 80GB HBM3": "ADA_80_PRO",
}


@dataclass(frozen=True)
class DataCenter:
    id: str
    name: str
    location: str
    storage_support: bool = True


DATA_CENTERS: tuple[DataCenter, ...] = (
    DataCenter("EU-RO-1", "EU-RO-1", "Romania"),
    DataCenter("EU-SE-1", "EU-SE-1", "Sweden"),
    DataCenter("EU-CZ-1", "EU-CZ-1", "Czech Republic"),
    DataCenter("EUR-IS-1", "EUR-IS-1", "Iceland"),
    DataCenter("EU-NL-1", "EU-NL-1", "Netherlands"),
    DataCenter("US-TX-3", "US-TX-3", "United States"),
    DataCenter("US-IL-1", "US-IL-1", "United States"),
    DataCenter("US-KS-2", "US-KS-2", "United States"),
    DataCenter("US-GA-2", "US-GA-2", "United States"),
    DataCenter("CA-MTL-1", "CA-MTL-1", "Canada"),
    DataCenter("AP-JP-1", "AP-JP-1", "Japan"),
)
# Community hosts are listed by country code and never support network volumes (reference §2.4).
COMMUNITY_LOCATIONS: tuple[str, ...] = ("US", "CZ", "SE", "CA")

# CUDA versions the emulated hosts report; a pod lands on the default unless its constraints exclude it.
HOST_CUDA_VERSIONS: tuple[str, ...] = ("12.4", "12.6", "12.8", "13.0")
DEFAULT_CUDA_VERSION = "12.8"


def cuda_key(version: str) -> tuple[int, ...]:
    """Numeric order, so 12.11 > 12.2 as RunPod compares them."""
    return tuple(int(part) for part in version.split("."))


def host_cuda_version(allowed: list[str] | None, minimum: str | None) -> str | None:
    """The host CUDA version a pod with these constraints gets, or None when no host reports a fitting one."""
    fitting = [
        v
        for v in HOST_CUDA_VERSIONS
        if (not allowed or v in allowed) and (minimum is None or cuda_key(v) >= cuda_key(minimum))
    ]
    if DEFAULT_CUDA_VERSION in fitting:
        return DEFAULT_CUDA_VERSION
    return max(fitting, key=cuda_key) if fitting else None


def country_of(data_center_id: str) -> str:
    """ISO country code of a data center: `EU-RO-1` → RO, `US-TX-3` → US; community locations already are one."""
    parts = data_center_id.split("-")
    if len(parts) == 1:
        return data_center_id
    return parts[1] if parts[0] in ("EU", "EUR", "AP", "OC") else parts[0]


# $/vCPU/hour by CPU flavor (instanceId `<flavor>-<vcpu>-<memGB>`, e.g. "cpu3c-2-4").
CPU_FLAVOR_PRICES: dict[str, float] = {
    "cpu3c": 0.03,
    "cpu3g": 0.04,
    "cpu3m": 0.05,
    "cpu5c": 0.04,
    "cpu5g": 0.05,
    "cpu5m": 0.06,
}
# GB of RAM per vCPU by the flavor's last letter (compute, general, memory), as in RunPod's `cpu3c-2-4`.
CPU_RAM_PER_VCPU: dict[str, int] = {"c": 2, "g": 4, "m": 8}
CPU_VCPU_COUNTS: tuple[int, ...] = (2, 4, 8, 16, 32)

# Storage prices in $/GB/month (reference §5); a month is taken as 730 hours.
HOURS_PER_MONTH = 730.0
DISK_RUNNING_PER_GB_MONTH = 0.10
VOLUME_STOPPED_PER_GB_MONTH = 0.20
NETWORK_VOLUME_PER_GB_MONTH = 0.07
NETWORK_VOLUME_LARGE_PER_GB_MONTH = 0.05


def network_volume_cost_per_hr(size_gb: int) -> float:
    rate = NETWORK_VOLUME_PER_GB_MONTH if size_gb < 1000 else NETWORK_VOLUME_LARGE_PER_GB_MONTH
    return size_gb * rate / HOURS_PER_MONTH


@dataclass
class Seed:
    """Objects present at start-up and after `POST /emulator/reset` (replace with `--seed FILE`)."""

    network_volumes: list[dict[str, Any]] = field(default_factory=list)
    templates: list[dict[str, Any]] = field(default_factory=list)
    account: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def default(cls) -> Seed:
        return cls(
            network_volumes=[
                {"id": "agv6w2qcg7", "name": "vibewave-models", "size": 200, "dataCenterId": "EU-RO-1"},
                {"id": "grvtso8ftn", "name": "vibewave-models-us", "size": 200, "dataCenterId": "US-TX-3"},
            ],
            templates=[
                {
                    "id": "runpod-ubuntu",
                    "name": "Runpod Ubuntu",
                    "imageName": "runpod/base:0.5.1-cpu",
                    "containerDiskInGb": 5,
                    "volumeInGb": 0,
                    "volumeMountPath": "/workspace",
                    "ports": "22/tcp",
                    "isPublic": True,
                    "category": "CPU",
                },
                {
                    "id": "runpod-torch-v240",
                    "name": "Runpod Pytorch 2.4.0",
                    "imageName": "runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04",
                    "containerDiskInGb": 50,
                    "volumeInGb": 20,
                    "volumeMountPath": "/workspace",
                    "ports": "8888/http,22/tcp",
                    "isPublic": True,
                },
                {
                    "id": "vw7cmfy0ui",
                    "name": "vibewave-comfyui",
                    "imageName": "vibewave/comfyui:0.33",
                    "containerDiskInGb": 40,
                    "volumeInGb": 0,
                    "volumeMountPath": "/workspace",
                    "ports": "8188/http,22/tcp",
                    "env": [{"key": "COMFYUI_PORT", "value": "8188"}],
                },
            ],
            account={
                "id": "user_2vWbEmuLatorVibewaveRunPod",
                "email": "emulator@vibewave.invalid",
                "clientBalance": 100.0,
                "spendLimit": 80,
                "pubKey": None,
            },
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Seed:
        """Keys missing from the file keep their defaults."""
        default = cls.default()
        unknown = set(data) - {"networkVolumes", "templates", "account"}
        if unknown:
            raise ValueError(f"unknown seed keys {sorted(unknown)}")
        return cls(
            network_volumes=list(data.get("networkVolumes", default.network_volumes)),
            templates=list(data.get("templates", default.templates)),
            account={**default.account, **data.get("account", {})},
        )
