"""The compose deployment's checked-in files agree with the code they stand for: the NATS authorization
block with the event contract (regenerate: `python -m vibewave.devstack.nats_auth`, see the file's
header), and make-env.py's users and variable names with `nats_auth` and with what compose.yaml asks for."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

from vibewave.devstack import nats_auth

pytestmark = pytest.mark.unit

COMPOSE = Path(__file__).resolve().parents[3] / "deploy" / "compose"


def _make_env() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_env", COMPOSE / "make-env.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_checked_in_authorization_block_is_the_contracts() -> None:
    text = (COMPOSE / "nats" / "auth.conf").read_text()
    block = "".join(line for line in text.splitlines(keepends=True) if not line.startswith("#"))
    assert block == nats_auth.authorization_block(), (
        "deploy/compose/nats/auth.conf is stale: regenerate it as its header says"
    )


def test_make_env_knows_every_nats_user_by_its_variable() -> None:
    make_env = _make_env()
    assert tuple(make_env.NATS_USERS) == nats_auth.USERS
    assert all(make_env.password_env(user) == nats_auth.password_env(user) for user in nats_auth.USERS)


def test_make_env_writes_every_secret_compose_requires(tmp_path: Path) -> None:
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", (COMPOSE / "compose.yaml").read_text()))
    assert required, "compose.yaml requires its secrets with ${NAME:?...}"
    make_env = _make_env()
    target = tmp_path / ".env"
    assert make_env.main(["--output", str(target)]) == 0
    assert target.stat().st_mode & 0o777 == 0o600
    written = dict(line.split("=", 1) for line in target.read_text().splitlines() if line and line[0] != "#")
    assert required <= set(written), f"make-env.py does not write {sorted(required - set(written))}"
    assert all(written[name] for name in required)
    assert make_env.main(["--output", str(target)]) == 1, "an existing env file is kept"
    again = dict(line.split("=", 1) for line in target.read_text().splitlines() if line and line[0] != "#")
    assert again == written


def test_env_example_names_every_variable_of_the_compose_file() -> None:
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", (COMPOSE / "compose.yaml").read_text()))
    example = (COMPOSE / "env.example").read_text()
    documented = set(re.findall(r"^#? ?([A-Z0-9_]+)=", example, flags=re.MULTILINE))
    assert used <= documented, f"env.example does not name {sorted(used - documented)}"
