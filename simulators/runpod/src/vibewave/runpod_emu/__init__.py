"""vibewave-runpod-emulator: an offline stand-in for RunPod's pod-management GraphQL API and HTTP proxy.

Every emulated pod that reaches "runtime up" runs a container: a real process group running the pod's start
command or what its image would run (a ComfyUI simulator for `runpod/comfyui`, nothing on 8188 for
`runpod/pytorch`), reachable through the emulator's `/proxy/{podId}-{port}/...` route the way RunPod's
`https://{podId}-{port}.proxy.runpod.net` proxy reaches a pod's HTTP port.
"""

from vibewave.runpod_emu.app import RunningEmulator, create_app, run, serve
from vibewave.runpod_emu.config import EmuConfig
from vibewave.runpod_emu.faults import Fault, Faults

__all__ = ["EmuConfig", "Fault", "Faults", "RunningEmulator", "create_app", "run", "serve"]
