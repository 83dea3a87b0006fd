"""The RunPod emulator as a process of a test's own, with its control routes as methods."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.support.stack import free_port, wait_for


class Emulator:
    def __init__(self, work: Path, key: str, *args: str) -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.work = work  # emulator.out (its log) and emu/ (pods' disks and container logs, network volumes)
        self.port = free_port()
        self.key = key
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (work / "emulator.out").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vibewave.runpod_emu", "--port", str(self.port), "--api-keys", key,
             "--boot-delay", "0.3", "--comfyui-step-time", "0.02", "--comfyui-restart-delay", "0.5",
             "--work-dir", str(work / "emu"), *args],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(self._up, 30, "the RunPod emulator")

    def _up(self) -> bool:
        try:
            return httpx.get(f"{self.url}/emulator/state", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def pod_manager_env(self) -> dict[str, str]:
        """What pod-manager needs to use this emulator as RunPod (the key goes to pod-manager only)."""
        return {
            "POD_PROVIDER": "runpod",
            "RUNPOD_API_KEY": self.key,
            "RUNPOD_API_BASE_URL": self.url,
            "RUNPOD_PROXY_URL_TEMPLATE": self.url + "/proxy/{pod_id}-{port}",
        }

    def faults(self, update: dict[str, Any] | None) -> None:
        url = f"{self.url}/emulator/faults"
        (httpx.delete(url) if update is None else httpx.post(url, json=update)).raise_for_status()

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = httpx.get(f"{self.url}/emulator/state", timeout=10).json()
        return state

    def pods(self) -> list[dict[str, Any]]:
        pods: list[dict[str, Any]] = self.state()["pods"]
        return pods

    def history(self, pod_id: str, token: str | None = None) -> dict[str, Any]:
        """The prompts the pod's ComfyUI has run (its `/history`, through the emulator's proxy; `token`: the
        pod's ComfyUI token, which the bootstrap's proxy asks for)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = httpx.get(f"{self.url}/proxy/{pod_id}-8188/history", headers=headers, timeout=10)
        response.raise_for_status()
        history: dict[str, Any] = response.json()
        return history

    def calls(self, operation: str) -> int:
        return int(self.state()["calls"].get(operation, 0))

    def kill_comfyui(self, pod_id: str) -> None:
        """SIGKILL what listens on the pod's 8188 (ComfyUI, or the bootstrap's token proxy in front of it)."""
        httpx.post(f"{self.url}/emulator/pods/{pod_id}/kill-comfyui").raise_for_status()

    def kill_container(self, pod_id: str) -> None:
        """SIGKILL every process of the pod's container; it restarts unless `--comfyui-no-restart`."""
        httpx.post(f"{self.url}/emulator/pods/{pod_id}/kill-container").raise_for_status()

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
