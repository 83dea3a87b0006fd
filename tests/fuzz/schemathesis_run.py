"""`python -m tests.fuzz.schemathesis_run`: schemathesis over every operation of the live OpenAPI document.

The four services run as processes against a NATS server of their own (keys on: the admin key is sent),
with simulated pods; schemathesis generates valid and invalid requests for every operation from
`/schema/openapi.json` and checks that none answers a server error and that every answer — its status,
content type, headers and body — is one the document declares. Bounded: a few examples per operation
and a time budget (CI runs it from `.ci/run`). Exits with schemathesis's status; prints its summary.
"""

from __future__ import annotations

import argparse
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support.stack import Stack
from vibewave.devstack.nats_server import EmbeddedNats

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-examples", type=int, default=10, help="examples per operation and phase")
    parser.add_argument("--max-time", type=int, default=600, help="seconds for the whole run")
    parser.add_argument("--seed", type=int, default=14, help="hypothesis seed (a fixed one: a rerun is the same run)")
    args = parser.parse_args()
    admin_key = "fuzz-" + secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="vibewave-fuzz-") as tmp:
        nats = EmbeddedNats(Path(tmp) / "nats")
        nats.start()
        home = Path(tmp) / "home"
        home.mkdir()
        stack = Stack(nats.url, home, VIBEWAVE_ADMIN_KEY=admin_key, MAX_PODS="2", SIM_STEP_TIME="0.001")
        try:
            stack.start()
            stack.wait_healthy(timeout=90)
            command = [
                str(Path(sys.executable).with_name("st")), "run", f"{stack.base_url}/schema/openapi.json",
                "--header", f"Authorization: Bearer {admin_key}",
                "--checks", ",".join(CHECKS),
                "--max-examples", str(args.max_examples),
                "--max-time", str(args.max_time),
                "--seed", str(args.seed),
                "--request-timeout", "60",
                # one worker: schemathesis's threads run hypothesis's ast.parse concurrently, which CPython 3.11
                # (before 3.11.9) can fail with "AST constructor recursion depth mismatch" (CI saw it)
                "--workers", "1",
                "--continue-on-failure",
                "--report", "junit",
                "--report-dir", str(Path("tests/fuzz/report").resolve()),
                "--output-truncate", "true",
            ]  # fmt: skip
            done = subprocess.run(command, check=False)
            errors = [
                line for line in stack.logs().splitlines() if '"level": "ERROR"' in line or '"level":"ERROR"' in line
            ]
            if errors:
                print(f"{len(errors)} ERROR lines in the services' logs during the run; the first:\n{errors[0]}")
                return done.returncode or 1
            return done.returncode
        finally:
            stack.close()
            nats.stop()


if __name__ == "__main__":
    raise SystemExit(main())
