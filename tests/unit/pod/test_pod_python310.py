"""The bootstrap runs on the image's own Python, 3.10 on runpod/pytorch:2.1.0: nothing newer may slip in."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.pod.interpreters import python310
from vibewave.pod.payload import BOOTSTRAP_MODULES, PACKAGE_DIR

pytestmark = pytest.mark.unit

MODULES = [PACKAGE_DIR / name for name in BOOTSTRAP_MODULES]
ROOT = Path(__file__).parents[3]


def test_every_bootstrap_module_compiles_as_python_3_10() -> None:
    interpreter = python310()
    if interpreter is None:  # no 3.10 here: the grammar check, which misses 3.11-only library calls
        for path in MODULES:
            ast.parse(path.read_text(), str(path), feature_version=(3, 10))
        return
    script = "import sys\nfor f in sys.argv[1:]: compile(open(f).read(), f, 'exec')"
    done = subprocess.run([interpreter, "-c", script, *map(str, MODULES)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_the_bootstrap_uses_no_library_api_newer_than_3_10() -> None:
    """mypy against the 3.10 standard library stubs: `asyncio.TaskGroup`, `datetime.UTC`, `tomllib`, ... fail."""
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--python-version", "3.10", "--cache-dir", "/dev/null", *map(str, MODULES)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
