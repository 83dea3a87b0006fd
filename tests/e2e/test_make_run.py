"""`make run` is one supervised unit: Ctrl-C, a killed process group or a closed terminal leave nothing
running; NATS that dies comes back; one stack per home; a configuration error stops the stack (78);
the RunPod key reaches pod-manager alone (and with VIBEWAVE_NATS_AUTH each service its own NATS password
alone); pods are retired on the way out and never reused by the next stack on another provider.

Each test runs the real `make run` in a session of its own, with its own home and free ports."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import select
import signal
import stat
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, uuid4, uuid5

import nats
import nats.errors
import pytest

from tests.chaos.harness import REPO, MakeRun, kill_all, processes_of
from tests.support.emulator import Emulator
from tests.support.stack import free_port
from vibewave.runtime.pod_token import pod_token

pytestmark = pytest.mark.e2e

STOP_BOUND = 20  # seconds from the signal to make's exit
SERVICE_STOP_ORDER = ("api", "executor", "scheduler", "pod-manager")
KEY = f"rpa_MAKERUN_{uuid4().hex}"

Factory = Callable[..., MakeRun]


@pytest.fixture
def make_run(tmp_path: Path) -> Iterator[Factory]:
    """Start `make run`s (default home `tmp_path/home`); each is stopped and swept at the end."""
    started: list[MakeRun] = []

    def start(home: Path | None = None, **kwargs: Any) -> MakeRun:
        run = MakeRun(home or tmp_path / "home", **kwargs).start()
        started.append(run)
        return run

    yield start
    for run in started:
        run.close()


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Emulator]:
    running = Emulator(tmp_path / "emulator", KEY)
    yield running
    running.close()


def assert_clean_stop(run: MakeRun, began: float) -> str:
    """Exited within the bound, no traceback, the services stopped in order before NATS, nothing left."""
    run.wait_exit(STOP_BOUND - (time.monotonic() - began))
    output = run.output()
    assert "Traceback" not in output, output[-4000:]
    lines = output.splitlines()

    def position(text: str) -> int:
        found = [i for i, line in enumerate(lines) if line.endswith(text)]
        assert found, f"no {text!r} in:\n{output[-3000:]}"
        return found[-1]

    stopped = [position(f"| {name} stopped") for name in SERVICE_STOP_ORDER]
    assert stopped == sorted(stopped), f"services stopped out of order:\n{output[-3000:]}"
    assert stopped[-1] < position("nats        | stopped (exit status 0)")
    assert "| all stopped in" in lines[-1], lines[-3:]
    run.wait_no_processes(5)
    return output


def test_ctrl_c_stops_services_then_nats_and_leaves_nothing(make_run: Factory):
    run = make_run()
    run.wait_healthy()
    run.wait_completed(run.submit())  # a pod exists for pod-manager to retire
    began = time.monotonic()
    run.signal_group(signal.SIGINT)
    assert_clean_stop(run, began)


def test_closing_the_terminal_stops_everything(tmp_path: Path):
    """A shell in a pseudo-terminal runs `make run`; closing the terminal hangs up the shell, which hangs up
    its job: the stack stops cleanly even though its console is gone."""
    run = MakeRun(tmp_path / "home")
    master, slave = pty.openpty()

    def controlling_terminal() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    shell = subprocess.Popen(
        ["bash", "--norc", "--noprofile", "-i"], cwd=REPO, env={**run.env, "PS1": "$ "},
        stdin=slave, stdout=slave, stderr=slave, preexec_fn=controlling_terminal,
    )  # fmt: skip
    os.close(slave)
    try:
        try:
            os.write(master, b"make --no-print-directory run\n")
            seen = b""
            deadline = time.monotonic() + 60
            while b"Vibewave is ready" not in seen:
                assert time.monotonic() < deadline, seen.decode(errors="replace")[-2000:]
                if select.select([master], [], [], 1)[0]:
                    seen += os.read(master, 65536)
        finally:
            os.close(master)  # the terminal goes away
        shell.wait(10)
        run.wait_no_processes(STOP_BOUND)
    finally:
        kill_all(run.processes())
    log = (run.home / "logs" / "devstack.log").read_text()
    assert "stopping (SIGHUP)" in log and log.rstrip().splitlines()[-1].split(" | ")[1].startswith("all stopped")


def test_killed_process_group_leaves_nothing_and_the_home_runs_again(make_run: Factory, tmp_path: Path):
    first = make_run()
    first.wait_healthy()
    first.wait_completed(first.submit())
    assert len(first.processes()) >= 7  # make, devstack, nats-server, four services (and a pod)
    first.signal_group(signal.SIGKILL)
    first.wait_exit(5)
    first.wait_no_processes(30)

    second = make_run(tmp_path / "home")
    second.wait_healthy()
    second.wait_completed(second.submit())


def test_nats_killed_is_restarted_and_requests_complete(make_run: Factory):
    run = make_run()
    run.wait_healthy()
    nats_pid = run.child_pids()["nats-server"]
    os.kill(nats_pid, signal.SIGKILL)
    run.wait_output("nats-server exited unexpectedly (killed by SIGKILL)", 10)
    run.wait_output("nats-server restarted at", 15)
    assert run.child_pids()["nats-server"] != nats_pid
    run.wait_healthy(15)
    run.wait_completed(run.submit())


def test_a_second_make_run_on_a_home_in_use_is_refused(make_run: Factory, tmp_path: Path):
    first = make_run()
    first.wait_healthy()
    pids = first.child_pids()
    second = make_run(tmp_path / "home")
    code = second.wait_exit(15)
    assert code != 0
    assert f"refusing to start: pid {pids['devstack']} is running a stack on this home" in second.output()
    assert first.child_pids() == pids and first.running()
    first.wait_healthy(5)
    first.wait_completed(first.submit())


def test_a_configuration_error_stops_the_stack_with_78(make_run: Factory, tmp_path: Path):
    direct = make_run(tmp_path / "direct", env={"POD_PROVIDER": "nonexistent"}, direct=True)
    assert direct.wait_exit(30) == 78
    output = direct.output()
    assert "pod-manager cannot run as configured (exit status 78)" in output
    assert "unknown POD_PROVIDER 'nonexistent'" in output
    assert "Traceback" not in output and "restarting" not in output
    direct.wait_no_processes(5)

    through_make = make_run(tmp_path / "make", env={"POD_PROVIDER": "runpod"})  # no key
    assert through_make.wait_exit(30) != 0
    assert "POD_PROVIDER=runpod needs RUNPOD_API_KEY" in through_make.output()
    assert "Error 78" in through_make.output()  # make's own status is 2; it names the recipe's


def test_processes_left_by_an_older_stack_are_stopped_at_start(make_run: Factory, tmp_path: Path):
    """A stack of an older version (no lock, no pids file) left a scheduler running on the home."""
    home = tmp_path / "home"
    home.mkdir()
    dead_nats = f"nats://127.0.0.1:{free_port()}"  # nothing listens there: it keeps retrying its start
    stray = subprocess.Popen(
        [sys.executable, "-m", "vibewave.scheduler"], env={**MakeRun(home).env, "NATS_URL": dead_nats},
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        run = make_run(home)
        run.wait_healthy()
        assert stray.wait(15) is not None
        assert f"{stray.pid} (vibewave.scheduler)" in run.output()
    finally:
        stray.kill()
        stray.wait()


def test_the_runpod_key_reaches_pod_manager_only(make_run: Factory):
    run = make_run(env={"POD_PROVIDER": "local", "RUNPOD_API_KEY": KEY})
    run.wait_healthy()
    children = {name: pid for name, pid in run.child_pids().items() if name != "devstack"}
    assert set(children) == {"nats-server", "scheduler", "pod-manager", "executor", "api"}
    for name, pid in children.items():
        holds_key = f"RUNPOD_API_KEY={KEY}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert holds_key == (name == "pod-manager"), name
    run.wait_completed(run.submit({"prompt": "a pod of its own"}), 60)
    pods = [pid for pid, command in processes_of(run.home).items() if "vibewave.comfyui_sim" in command]
    assert pods, "a local pod runs"
    for pid in pods:
        assert f"RUNPOD_API_KEY={KEY}".encode() not in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")


def test_with_nats_auth_each_service_connects_as_its_own_user_alone(make_run: Factory):
    run = make_run(env={"POD_PROVIDER": "local", "VIBEWAVE_NATS_AUTH": "1"})
    run.wait_healthy()
    passwords_file = run.home / "nats-auth" / "passwords.json"
    for private in (passwords_file, run.home / "nats" / "nats-server.conf"):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
    passwords: dict[str, str] = json.loads(passwords_file.read_text())
    children = {name: pid for name, pid in run.child_pids().items() if name != "devstack"}
    assert set(children) == {"nats-server", "scheduler", "pod-manager", "executor", "api"}
    for name, pid in children.items():
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        held = {user for user, password in passwords.items() if password.encode() in environ}
        assert held == ({name} if name != "nats-server" else set()), name
        assert f"NATS_USER={name}".encode() in environ.split(b"\0") or name == "nats-server"
    run.wait_completed(run.submit({"prompt": "on its own user"}), 60)

    async def anonymous() -> None:
        await nats.connect(run.nats_url, allow_reconnect=False, connect_timeout=2)

    with pytest.raises(nats.errors.Error, match=r"(?i)authorization violation"):
        asyncio.run(anonymous())
    began = time.monotonic()
    run.signal_group(signal.SIGINT)
    output = assert_clean_stop(run, began)
    logs = [output, *(path.read_text(errors="replace") for path in (run.home / "logs").glob("*.log*"))]
    assert not [user for user, password in passwords.items() if any(password in text for text in logs)]


def _with_pods(run: MakeRun, emulator: Emulator, count: int) -> list[str]:
    """Submit `count` requests, wait for them, return the emulator's pod ids."""
    for request_id in [run.submit({"prompt": f"pods {i}", "steps": 20}) for i in range(count)]:
        run.wait_completed(request_id, 90)
    pods = [pod["id"] for pod in emulator.pods()]
    assert pods
    return pods


def test_ctrl_c_terminates_the_pods_pod_manager_owns(make_run: Factory, emulator: Emulator):
    """Needs pod-manager's POD_SHUTDOWN (terminate by default for RunPod)."""
    run = make_run(env=emulator.pod_manager_env())
    run.wait_healthy()
    _with_pods(run, emulator, 3)
    began = time.monotonic()
    run.signal_group(signal.SIGINT)
    assert_clean_stop(run, began)
    assert emulator.pods() == [], [(pod["id"], pod["desiredStatus"]) for pod in emulator.pods()]


def test_the_next_stack_on_another_provider_dispatches_nothing_to_the_old_pods(
    make_run: Factory, emulator: Emulator, tmp_path: Path
):
    """Needs pod-manager to retire, at start, the records of pods of another provider."""
    first = make_run(env={**emulator.pod_manager_env(), "POD_SHUTDOWN": "keep"})
    first.wait_healthy()
    old_pods = _with_pods(run=first, emulator=emulator, count=3)
    began = time.monotonic()
    first.signal_group(signal.SIGINT)
    assert_clean_stop(first, began)
    kept = {pod["id"] for pod in emulator.pods()}
    assert kept == set(old_pods), "POD_SHUTDOWN=keep leaves the pods at the provider"
    key = (tmp_path / "home" / "pod-token.key").read_text().strip()  # the first stack's (its devstack made it)
    tokens = {pod["id"]: pod_token(key, pod["name"]) for pod in emulator.pods()}  # the pods' proxies ask for them
    before = {pod_id: set(emulator.history(pod_id, tokens[pod_id])) for pod_id in kept}

    second = make_run(tmp_path / "home")  # the local provider: no key
    second.wait_healthy()
    request_id = second.submit({"prompt": "after the switch"})
    done = second.wait_completed(request_id, 60)
    assert done["pod_id"] not in kept
    prompt_ids = {str(uuid5(NAMESPACE_URL, f"vibewave:{request_id}:{attempt}")) for attempt in range(1, 5)}
    for pod_id in kept:
        new = set(emulator.history(pod_id, tokens[pod_id])) - before[pod_id]
        assert not new, f"emulator pod {pod_id} ran {new} (ours: {new & prompt_ids})"
