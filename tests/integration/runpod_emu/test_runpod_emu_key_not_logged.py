"""The RunPod emulator never writes an API key it is given or shown into its output, at any log level:
one of its keys is the RUNPOD_API_KEY pod-manager holds (`make run` with RUNPOD_EMULATOR=1)."""

from __future__ import annotations

from pathlib import Path
from uuid import uuid4

import httpx
import pytest

from tests.support.emulator import Emulator

pytestmark = pytest.mark.integration

CREATE = (
    'mutation { podFindAndDeployOnDemand(input: {name: "quiet", imageName: "runpod/comfyui", '
    'gpuTypeId: "NVIDIA GeForce RTX 3090", ports: "8188/http"}) { id } }'
)


def test_the_emulator_logs_no_api_key(tmp_path: Path) -> None:
    key, wrong = f"rpa_EMULOG_{uuid4().hex}", f"rpa_WRONG_{uuid4().hex}"
    emulator = Emulator(tmp_path, key, "--log-level", "DEBUG")
    try:
        bearer = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=emulator.url, timeout=10) as http:
            assert http.post("/graphql", json={"query": "{ myself { id } }"}, headers=bearer).status_code == 200
            answer = http.post("/graphql", params={"api_key": key}, json={"query": CREATE}).json()
            pod_id = answer["data"]["podFindAndDeployOnDemand"]["id"]
            assert http.get("/v2/pods", headers=bearer).status_code == 200
            assert http.get(f"/v2/pods/{pod_id}", headers=bearer).status_code == 200
            stop = http.post(f"/v2/pods/{pod_id}/action", json={"action": "stop"}, headers=bearer)
            assert stop.status_code == 200, stop.text
            assert http.delete(f"/v2/pods/{pod_id}", headers=bearer).status_code in (200, 204)
            assert http.get("/v2/pods", headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
            refused = http.post("/graphql", params={"api_key": wrong}, json={"query": "{ myself { id } }"})
            assert refused.status_code == 401
    finally:
        emulator.close()
    output = (tmp_path / "emulator.out").read_text(errors="replace")
    assert "listening on" in output and "1 api key(s)" in output, output[-2000:]
    assert key not in output and wrong not in output
