"""`make run` hands the S3 credentials of its environment to the executor and the api alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from vibewave.devstack import supervisor


def test_s3_credentials_reach_only_the_executor_and_the_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "an-s3-secret")
    monkeypatch.setenv("OUTPUT_STORE", "s3")
    settings = supervisor.StackSettings(
        home=tmp_path, nats_url=None, nats_port=4222, api_port=8000, raw_logs=False, color=False,
        runpod_emulator=False, emulator_port=8765, nats_auth=False,
    )  # fmt: skip
    common, extra = supervisor.child_environments(settings, "nats://127.0.0.1:4222")
    assert "AWS_SECRET_ACCESS_KEY" not in common and "AWS_ACCESS_KEY_ID" not in common
    assert common["OUTPUT_STORE"] == "s3", "the store's choice is no secret: every child may read it"
    holders = [name for name in supervisor.SERVICES if extra[name].get("AWS_SECRET_ACCESS_KEY") == "an-s3-secret"]
    assert sorted(holders) == ["api", "executor"]
