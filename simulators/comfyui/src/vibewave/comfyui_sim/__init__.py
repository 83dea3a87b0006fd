"""vibewave-comfyui-simulator: a protocol-faithful, GPU-free stand-in for a ComfyUI 0.33 server."""

from vibewave.comfyui_sim.app import RunningSimulator, create_app, run, serve
from vibewave.comfyui_sim.config import Faults, NodeFault, SimConfig

__all__ = ["Faults", "NodeFault", "RunningSimulator", "SimConfig", "create_app", "run", "serve"]
