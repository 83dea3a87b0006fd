"""The real services as processes against a test's NATS server, for end-to-end tests over HTTP."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.requests import wait_for_record
from vibewave.contracts.events import RequestRecord
from vibewave.devstack import nats_auth
from vibewave.runtime.pod_token import POD_TOKEN_KEY_ENV, new_key, pod_token

SERVICES = ("scheduler", "pod-manager", "executor", "api")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll `predicate` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Stack:
    def __init__(
        self,
        nats_url: str,
        home: Path,
        *,
        service_env: dict[str, dict[str, str]] | None = None,
        nats_passwords: dict[str, str] | None = None,
        **env: str,
    ) -> None:
        """`nats_passwords` (user → password): each service connects as its own NATS user, as `make run`
        with VIBEWAVE_NATS_AUTH=1 has it (`vibewave.devstack.nats_auth`); `record` then cannot read NATS."""
        self.home = home
        self.api_port = free_port()
        self.base_url = f"http://127.0.0.1:{self.api_port}"
        self.env = {
            **os.environ,
            "NATS_URL": nats_url,
            "VIBEWAVE_HOME": str(home),
            "API_HOST": "127.0.0.1",
            "API_PORT": str(self.api_port),
            "SIM_STEP_TIME": "0.01",
            "POD_PROBE_INTERVAL": "0.2",
            "SCHEDULER_DEMAND_INTERVAL": "0.2",
            **env,
        }
        self.service_env = service_env or {}  # e.g. the RunPod key for pod-manager only
        self.pod_token_key = new_key()  # as make run does: pods' ComfyUI tokens, for pod-manager and executor only
        for holder in ("pod-manager", "executor"):
            self.service_env.setdefault(holder, {}).setdefault(POD_TOKEN_KEY_ENV, self.pod_token_key)
        for name, password in (nats_passwords or {}).items():
            if name in SERVICES:
                self.service_env.setdefault(name, {}).update(nats_auth.service_environment(name, password))
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.ops_ports: dict[str, int] = {}  # each non-api process's OPS_PORT (kept across its restarts)
        self.client = httpx.Client(base_url=self.base_url, timeout=10)

    def start(self, *names: str) -> None:
        """Start services by name; `scheduler@2` is a second replica of the scheduler (its own log; its
        settings from `service_env["scheduler@2"]`, e.g. another API_PORT for `api@2`)."""
        for name in names or SERVICES:
            log = (self.home / f"{name}.out").open("ab")
            module = name.split("@", 1)[0].replace("-", "_")
            ops = {} if module == "api" else {"OPS_PORT": str(self.ops_ports.setdefault(name, free_port()))}
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", f"vibewave.{module}"],
                env={
                    **self.env,
                    **ops,
                    **self.service_env.get(name.split("@", 1)[0], {}),
                    **self.service_env.get(name, {}),
                },
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def pod_token(self, pod_name: str) -> str:
        """The ComfyUI token of one of this stack's pods (what the executor presents)."""
        return pod_token(self.service_env["pod-manager"][POD_TOKEN_KEY_ENV], pod_name)

    def stop(self, *names: str) -> None:
        for name in names or tuple(reversed(list(self.processes))):
            process = self.processes.pop(name, None)
            if process is None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def kill(self, name: str) -> None:
        """SIGKILL: no graceful stop, as a crash would leave things."""
        process = self.processes.pop(name)
        process.kill()
        process.wait()

    def generate(self, prompt: str = "a rooftop at night", **body: Any) -> str:
        """`POST /api/qwen/generate-async`; the accepted request's id."""
        response = self.client.post("/api/qwen/generate-async", json={"prompt": prompt, **body})
        assert response.status_code == 202, response.text
        request_id: str = response.json()["request_id"]
        return request_id

    def health(self) -> httpx.Response | None:
        try:
            return self.client.get("/health")
        except httpx.TransportError:
            return None

    def wait_healthy(self, timeout: float = 30) -> dict[str, Any]:
        def healthy() -> dict[str, Any] | None:
            response = self.health()
            return response.json() if response is not None and response.status_code == 200 else None

        result: dict[str, Any] = wait_for(healthy, timeout, "a healthy stack")
        return result

    def wait_status(self, request_id: str, statuses: set[str], timeout: float = 60) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            body: dict[str, Any] = self.client.get(f"/api/qwen/status/{request_id}").json()
            return body if body.get("status") in statuses else None

        result: dict[str, Any] = wait_for(reached, timeout, f"request {request_id} to reach {statuses}")
        return result

    def record(self, request_id: str, statuses: set[str], timeout: float = 60) -> RequestRecord:
        """The request's stored record once it reaches one of `statuses` (a KV watch, bounded)."""
        return asyncio.run(wait_for_record(self.env["NATS_URL"], request_id, statuses, timeout))

    def ops_url(self, name: str) -> str:
        """Where a process serves `/metrics`, `/health/live` and `/health/ready`: the api on its own port,
        the others on their OPS_PORT."""
        if name.split("@", 1)[0] == "api":
            port = int(self.service_env.get(name, {}).get("API_PORT", self.api_port))
        else:
            port = self.ops_ports[name]
        return f"http://127.0.0.1:{port}"

    def metrics(self, name: str) -> str:
        """A scrape of the process's `/metrics` (Prometheus text)."""
        response = httpx.get(f"{self.ops_url(name)}/metrics", timeout=10)
        assert response.status_code == 200, response.text
        return response.text

    def samples(self, name: str) -> list[Sample]:
        """The process's `/metrics`, parsed: every sample with its labels."""
        return parse_metrics(self.metrics(name))

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.home.glob("*.out")))

    def close(self) -> None:
        self.stop()
        self.client.close()


class Sample(NamedTuple):
    name: str  # as exposed: `vibewave_requests_total`, `vibewave_queue_wait_seconds_count`, …
    labels: dict[str, str]
    value: float


def parse_metrics(text: str) -> list[Sample]:
    """Prometheus text → its samples (prometheus_client's own parser)."""
    return [
        Sample(sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def total(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    return sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())


def submit_until_accepted(base_url: str, body: dict[str, Any], key: str, bound: float = 90) -> str:
    """A client that retries `POST /api/qwen/generate-async` (with its Idempotency-Key, so a retry never
    makes a second request) until the request is accepted, within `bound` seconds; the request id."""
    deadline = time.monotonic() + bound
    with httpx.Client(base_url=base_url, timeout=15) as client:
        while True:
            try:
                response = client.post("/api/qwen/generate-async", json=body, headers={"Idempotency-Key": key})
                if response.status_code == 202:
                    request_id: str = response.json()["request_id"]
                    return request_id
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"request {key} was never accepted")
            time.sleep(0.2)
