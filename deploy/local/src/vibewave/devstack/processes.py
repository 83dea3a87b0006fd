"""What keeps one `make run` to one home and leaves no process behind it.

- Parent-death signal: every child (and the devstack itself) gets SIGTERM when its parent dies, so a
  SIGKILLed supervisor or `make` takes the whole tree down with it.
- `HomeLock`: an exclusive `flock` on `<home>/devstack.lock` (holding the pid), so a second stack on the same
  home refuses at once instead of running a second scheduler on the same NATS.
- `PidsFile` and `stop_leftovers`: `<home>/devstack.pids` lists the children; a new stack, with the lock
  taken, stops any of ours still alive (from that file, or found in /proc by their home: stacks started by
  older versions wrote no file).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import select
import signal
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

PR_SET_PDEATHSIG = 1


def _prctl() -> Callable[[int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl: Callable[[int, int], int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


_PRCTL = _prctl()  # resolved here, so a child between fork and exec only calls it


def die_with_parent() -> None:
    """Linux: this process gets SIGTERM when the thread that created it ends (a `preexec_fn`, or at start)."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)


class HomeBusy(Exception):
    """Another stack holds the home's lock."""

    def __init__(self, lock_path: Path, pid: int | None) -> None:
        self.lock_path = lock_path
        self.pid = pid
        holder = f"pid {pid}" if pid else "another process"
        super().__init__(f"{holder} is running a stack on this home (lock {lock_path})")


class HomeLock:
    """An exclusive, non-blocking `flock` on `<home>/devstack.lock`; the file holds the holder's pid.

    The lock goes with the process (and its open file), so a SIGKILLed stack never leaves a stale lock.
    """

    def __init__(self, home: Path) -> None:
        self.path = home / "devstack.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise HomeBusy(self.path, int(holder) if holder.isdigit() else None) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)


class PidsFile:
    """`<home>/devstack.pids`: one `<pid> <name>` line per live child, rewritten on every change."""

    def __init__(self, home: Path) -> None:
        self.path = home / "devstack.pids"
        self._pids: dict[str, int] = {}

    def read(self) -> list[int]:
        try:
            lines = self.path.read_text().splitlines()
        except OSError:
            return []
        return [int(line.split()[0]) for line in lines if line.split() and line.split()[0].isdigit()]

    def set(self, name: str, pid: int | None) -> None:
        if pid is None:
            self._pids.pop(name, None)
        else:
            self._pids[name] = pid
        self._write()

    def clear(self) -> None:
        self._pids.clear()
        with contextlib.suppress(OSError):
            self.path.unlink()

    def _write(self) -> None:
        text = "".join(f"{pid} {name}\n" for name, pid in self._pids.items())
        tmp = self.path.with_suffix(".pids.tmp")
        tmp.write_text(text)
        tmp.replace(self.path)


@dataclass(frozen=True)
class Leftover:
    pid: int
    what: str  # `vibewave.scheduler`, `nats-server`, …
    stage: int  # stop order: services, then pods and the emulator, then NATS


# Stop order for leftovers: the services first (pod-manager still has NATS for its last writes), then what
# serves them (pods, the emulator), NATS last.
_STAGES = {"vibewave.api": 0, "vibewave.executor": 0, "vibewave.scheduler": 0, "vibewave.pod_manager": 0}


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError:
        return b""


def identify(pid: int, home: Path) -> Leftover | None:
    """The process `pid` if it belongs to a stack on `home`: a `vibewave.*` module whose VIBEWAVE_HOME (or
    command line) is `home`, or a nats-server whose store is `<home>/nats/jetstream`."""
    argv = [part.decode(errors="replace") for part in _read(f"/proc/{pid}/cmdline").split(b"\0") if part]
    if not argv:
        return None
    if Path(argv[0]).name == "nats-server":
        store = str(home / "nats" / "jetstream")
        with contextlib.suppress(ValueError):
            if argv[argv.index("-sd") + 1] == store:
                return Leftover(pid, "nats-server", 2)
        return None
    module = next((argv[i + 1] for i, part in enumerate(argv[:-1]) if part == "-m"), "")
    if not module.startswith("vibewave."):
        return None
    environ = _read(f"/proc/{pid}/environ").split(b"\0")
    if f"VIBEWAVE_HOME={home}".encode() in environ or any(str(home) in part for part in argv):
        return Leftover(pid, module, _STAGES.get(module, 1))
    return None


def find_leftovers(home: Path, pids: Iterable[int]) -> list[Leftover]:
    """Processes of ours on `home` still alive: those listed, and any found in /proc."""
    me = os.getpid()
    candidates = set(pids)
    with contextlib.suppress(OSError):
        candidates.update(int(entry) for entry in os.listdir("/proc") if entry.isdigit())
    found = [identify(pid, home) for pid in sorted(candidates) if pid != me]
    return [leftover for leftover in found if leftover is not None and _alive(leftover.pid)]


def _alive(pid: int) -> bool:
    """Running, not a zombie (a leftover's new parent may never reap it)."""
    stat = _read(f"/proc/{pid}/stat")
    return bool(stat) and stat.rsplit(b")", 1)[-1].split()[0] != b"Z"


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait (bounded) until every pid has exited: pidfds become readable at exit. The ones still alive."""
    deadline = time.monotonic() + timeout
    fds: dict[int, int] = {}
    for pid in pids:
        with contextlib.suppress(OSError, AttributeError):
            fds[os.pidfd_open(pid)] = pid
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    try:
        while True:
            alive = [pid for pid in pids if _alive(pid)]
            if not alive or time.monotonic() >= deadline:
                return alive
            for fd, pid in list(fds.items()):
                if pid not in alive:
                    poller.unregister(fd)
                    del fds[fd]
                    os.close(fd)
            if len(fds) == len(alive):
                poller.poll(max(1, int((deadline - time.monotonic()) * 1000)))
            else:
                time.sleep(0.05)  # no pidfd for some (old kernel): look at /proc again
    finally:
        for fd in fds:
            os.close(fd)


def stop_leftovers(leftovers: list[Leftover], say: Callable[[str], None], timeout: float = 10.0) -> None:
    """SIGTERM each stage in order, wait (bounded), then SIGKILL what remains of it."""
    for stage in sorted({leftover.stage for leftover in leftovers}):
        pids = [leftover.pid for leftover in leftovers if leftover.stage == stage]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
        stubborn = _wait_gone(pids, timeout)
        for pid in stubborn:
            say(f"pid {pid} did not stop within {timeout:.0f}s; killed")
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        _wait_gone(stubborn, 5.0)
