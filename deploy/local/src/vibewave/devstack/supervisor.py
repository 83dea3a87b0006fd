"""Run the whole system on one machine as one supervised unit: embedded NATS, the four services, their
simulated pods (and, with RUNPOD_EMULATOR=1, the RunPod emulator).

Each service is its own process, as in production; their log lines are interleaved on the console,
labelled and made readable (the JSON stays in `<home>/logs/`). Every child runs in its own session, so a
terminal's Ctrl-C or hang-up reaches only `make` and this supervisor, which then stops them in order, and
with a parent-death signal, so none outlives a supervisor that was killed. A service that dies is
restarted with backoff, unless it exited with EX_CONFIG (78): then the whole stack stops with that status.
NATS that dies is restarted on the same port and store.

Stop (Ctrl-C, SIGTERM, SIGHUP): the api (no new requests), the executor, the scheduler, pod-manager (it
still has NATS and the provider's API to retire its pods), the RunPod emulator, NATS last. Each step is
bounded: SIGTERM, wait, then SIGKILL of the child's process group.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import logging.handlers
import os
import secrets
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType

from vibewave.devstack import nats_auth
from vibewave.devstack.nats_cluster import free_ports
from vibewave.devstack.nats_server import EmbeddedNats
from vibewave.devstack.processes import HomeBusy, HomeLock, PidsFile, die_with_parent, find_leftovers, stop_leftovers
from vibewave.runtime.logs import LOG_FILE_BACKUPS, LOG_FILE_BYTES
from vibewave.runtime.pod_token import POD_TOKEN_KEY_ENV, new_key
from vibewave.runtime.process import EX_CONFIG

SERVICES = ("scheduler", "pod-manager", "executor", "api")
STOP_ORDER = ("api", "executor", "scheduler", "pod-manager", "runpod-emu")  # then NATS
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
STOP_BOUND = 10.0  # seconds a child has between SIGTERM and SIGKILL of its process group
STOP_BOUNDS = {"pod-manager": 15.0}  # it terminates the pods it owns on the way out
KILL_WAIT = 5.0  # seconds to wait for a SIGKILLed process to be gone
POD_MANAGER_ONLY = ("RUNPOD_API_KEY",)  # secrets no other child sees
API_ONLY = ("VIBEWAVE_ADMIN_KEY", "WEBHOOK_SECRET")  # the api's bootstrap key and webhook secret: no other child
POD_TOKEN_HOLDERS = ("pod-manager", "executor")  # the only children that derive pods' ComfyUI tokens
OPS_SERVICES = ("scheduler", "pod-manager", "executor")  # each on a free OPS_PORT (the api's are on API_PORT)
STORAGE_HOLDERS = ("executor", "api")  # the only children that write or read the S3 output store
STORAGE_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
NATS_CREDENTIALS = ("NATS_USER", "NATS_PASSWORD", "NATS_PROVISION")  # the services' alone, each its own with auth
SECRETS = (*POD_MANAGER_ONLY, *API_ONLY, POD_TOKEN_KEY_ENV, *NATS_CREDENTIALS, *STORAGE_CREDENTIALS)
EX_SOFTWARE = 1  # the stack could not start (home in use, NATS did not start)
LINE_LIMIT = 1 << 20  # a log line longer than this is cut (asyncio's default of 64 KiB is too small)

COLORS = {"nats": 90, "runpod-emu": 34, "scheduler": 35, "pod-manager": 33, "executor": 36, "api": 32, "devstack": 1}
LEVEL_COLORS = {"WARNING": 33, "ERROR": 31, "CRITICAL": 31}


@dataclass(frozen=True)
class StackSettings:
    home: Path  # VIBEWAVE_HOME
    nats_url: str | None  # NATS_URL: use this server instead of starting one
    nats_port: int  # NATS_PORT: the embedded server's port
    api_port: int  # API_PORT
    raw_logs: bool  # VIBEWAVE_RAW_LOGS=1: print the services' JSON lines as they are
    color: bool
    runpod_emulator: bool  # RUNPOD_EMULATOR=1: pods come from the RunPod emulator instead of local processes
    emulator_port: int  # RUNPOD_EMULATOR_PORT
    nats_auth: bool = False  # VIBEWAVE_NATS_AUTH=1: a NATS user per service, with its permissions (nats_auth)

    @classmethod
    def from_env(cls) -> StackSettings:
        return cls(
            home=Path(os.environ.get("VIBEWAVE_HOME", ".vibewave")).absolute(),
            nats_url=os.environ.get("NATS_URL") or None,
            nats_port=int(os.environ.get("NATS_PORT", "4222")),
            api_port=int(os.environ.get("API_PORT", "8000")),
            raw_logs=os.environ.get("VIBEWAVE_RAW_LOGS", "") in {"1", "true"},
            color=sys.stdout.isatty() and "NO_COLOR" not in os.environ,
            runpod_emulator=os.environ.get("RUNPOD_EMULATOR", "") in {"1", "true"},
            emulator_port=int(os.environ.get("RUNPOD_EMULATOR_PORT", "8765")),
            nats_auth=os.environ.get("VIBEWAVE_NATS_AUTH", "") in {"1", "true"},
        )


class Console:
    """Labelled lines on stdout; the supervisor's own also go to `<home>/logs/devstack.log`.

    A console that went away (terminal closed: EIO; pipe closed: EPIPE) is dropped, and stdout/stderr
    point at /dev/null from then on, so the stop carries on and nothing fails at exit."""

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.width = max(len(s) for s in (*SERVICES, "devstack", "runpod-emu"))
        self.attached = True
        self._log: logging.handlers.RotatingFileHandler | None = None

    def open_log(self, path: Path) -> None:
        """The supervisor's own lines also go to `path`, which rotates like the services' logs."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self._log = logging.handlers.RotatingFileHandler(
            path, maxBytes=LOG_FILE_BYTES, backupCount=LOG_FILE_BACKUPS, encoding="utf-8"
        )
        self._log.setFormatter(logging.Formatter("%(message)s"))

    def close_log(self) -> None:
        log, self._log = self._log, None
        if log is not None:
            log.close()

    def say(self, text: str, label: str = "devstack") -> None:
        if self._log is not None:
            line = f"{datetime.now().isoformat(timespec='milliseconds')} {label} | {text}"
            self._log.emit(logging.LogRecord("vibewave.devstack", logging.INFO, "", 0, line, None, None))
        self.line(label, text)

    def line(self, label: str, text: str) -> None:
        if not self.attached:
            return
        if not self.settings.raw_logs:
            text = self._readable(text)
        tag = label.ljust(self.width)
        if self.settings.color:
            tag = f"\033[{COLORS.get(label, 0)}m{tag}\033[0m"
        try:
            print(f"{tag} | {text}", flush=True)
        except (OSError, ValueError):
            self._detach()

    def _detach(self) -> None:
        self.attached = False
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            os.close(devnull)

    def _readable(self, text: str) -> str:
        try:
            entry = json.loads(text)
        except ValueError:
            return text
        if not isinstance(entry, dict) or "msg" not in entry:
            return text
        level = str(entry.pop("level", "INFO"))
        ts = str(entry.pop("ts", ""))[11:23]
        message = str(entry.pop("msg"))
        for key in ("service", "logger", "span_id"):
            entry.pop(key, None)
        exc = entry.pop("exc", None)
        extras = " ".join(f"{k}={v}" for k, v in entry.items())
        if self.settings.color and level in LEVEL_COLORS:
            level = f"\033[{LEVEL_COLORS[level]}m{level}\033[0m"
        out = f"{ts} {level:<7} {message}" + (f"  {extras}" if extras else "")
        return out + (f"\n{exc}" if exc else "")


def describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"


async def terminate(process: asyncio.subprocess.Process, name: str, bound: float, console: Console) -> None:
    """SIGTERM the child, wait up to `bound` seconds, then SIGKILL its whole process group."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), bound)
        except TimeoutError:
            console.say(f"{name} did not stop within {bound:.0f}s; killing its process group")
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), KILL_WAIT)
    _sweep_group(process.pid)


def _sweep_group(pgid: int) -> None:
    """Kill whatever is left in a child's process group once it is gone (its pods, had they lingered)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


async def spawn(argv: list[str], env: dict[str, str], **kwargs: object) -> asyncio.subprocess.Process:
    """A child in a session of its own (terminal signals do not reach it) that gets SIGTERM when we die.

    Called from the event loop, on the main thread: a parent-death signal fires when the *thread* that
    forked the child ends."""
    return await asyncio.create_subprocess_exec(
        *argv, env=env, stdin=asyncio.subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent,
        **kwargs,  # type: ignore[arg-type]
    )  # fmt: skip


@dataclass
class ServiceProcess:
    """A service (or the emulator) kept running: restarted with backoff (1 s doubling to 10 s) when it dies,
    except after EX_CONFIG, which is reported to `on_fatal`."""

    name: str
    env: dict[str, str]
    console: Console
    pids: PidsFile
    on_fatal: Callable[[ServiceProcess], None]
    module: str = ""
    process: asyncio.subprocess.Process | None = field(default=None, init=False)
    exit_code: int | None = field(default=None, init=False)
    last_lines: deque[str] = field(default_factory=lambda: deque(maxlen=20), init=False)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.module = self.module or f"vibewave.{self.name.replace('-', '_')}"

    @property
    def stop_bound(self) -> float:
        return STOP_BOUNDS.get(self.name, STOP_BOUND)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run_forever(), name=f"devstack:{self.name}")

    async def _run_forever(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                process = await spawn(
                    [sys.executable, "-m", self.module], self.env,
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, limit=LINE_LIMIT,
                )  # fmt: skip
            except OSError as exc:
                self.console.say(f"{self.name} could not start: {exc}")
            else:
                self.process = process
                self.pids.set(self.name, process.pid)
                code = await self._until_exit_or_stop(process)
                self.exit_code = code
                self.pids.set(self.name, None)
                if self._stopping.is_set():
                    unusual = "" if code in (0, -signal.SIGTERM) else f" ({describe_exit(code)})"
                    self.console.say(f"{self.name} stopped{unusual}")
                    return
                if code == EX_CONFIG:
                    self.on_fatal(self)
                    return
                if time.monotonic() - started > 30:
                    backoff = 1.0
                self.console.say(f"{self.name} exited ({describe_exit(code)}); restarting in {backoff:.0f}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff)
            backoff = min(backoff * 2, 10.0)

    async def _until_exit_or_stop(self, process: asyncio.subprocess.Process) -> int:
        pump = asyncio.create_task(self._pump(process))
        exited = asyncio.ensure_future(process.wait())
        stopping = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not exited.done():
            await terminate(process, self.name, self.stop_bound, self.console)
        else:
            _sweep_group(process.pid)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(pump), 2)  # the last lines, unless a grandchild holds the pipe
        pump.cancel()
        exited.cancel()
        # None only if it outlived SIGKILL (uninterruptible sleep): give up on it rather than hang the stop
        return process.returncode if process.returncode is not None else -signal.SIGKILL

    async def _pump(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while True:
            try:
                raw = await process.stdout.readline()
            except ValueError:  # longer than LINE_LIMIT: take what is buffered
                raw = await process.stdout.read(LINE_LIMIT)
            if not raw:
                return
            text = raw.decode(errors="replace").rstrip()
            self.last_lines.append(text)
            self.console.line(self.name, text)

    def error_lines(self) -> list[str]:
        """The messages of its last ERROR lines (its last lines if none was JSON at error level)."""
        errors = []
        for text in self.last_lines:
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                entry = json.loads(text)
                if entry.get("level") in {"ERROR", "CRITICAL"}:
                    errors.append(str(entry["msg"]))
        return errors or list(self.last_lines)[-5:]

    async def stop(self) -> None:
        """Stop it (bounded by `stop_bound` and the SIGKILL that follows) and keep it stopped."""
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), self.stop_bound + KILL_WAIT + 5)


class NatsProcess:
    """The embedded nats-server, supervised: restarted with backoff (0.5 s doubling to 5 s) on the same port
    and store when it dies, until `stop()`."""

    def __init__(
        self, store_dir: Path, port: int, console: Console, pids: PidsFile, authorization: str | None = None
    ) -> None:
        self.server = EmbeddedNats(store_dir, port=port, authorization=authorization)
        self.console = console
        self.pids = pids
        self.process: asyncio.subprocess.Process | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return self.server.url

    async def start(self, timeout: float = 15.0) -> str:
        """Start it and return its URL once it listens; `RuntimeError` if it exits or does not listen in time."""
        command = self.server.command()
        with (self.server.store_dir / "nats-server.out").open("ab") as out:
            process = await spawn(command, without_secrets(os.environ), stdout=out, stderr=out)
        self.process = process
        self.pids.set("nats-server", process.pid)
        deadline = time.monotonic() + timeout
        while (url := self.server.bound_url(process.pid)) is None:
            if process.returncode is not None or time.monotonic() > deadline:
                if process.returncode is None:
                    await terminate(process, "nats-server", STOP_BOUND, self.console)
                self.pids.set("nats-server", None)
                raise RuntimeError(f"nats-server did not start ({describe_exit(process.returncode)}): "
                                   f"{self.server.log_tail()}")  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 0.01)
        return url

    def supervise(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name="devstack:nats")

    async def _supervise(self) -> None:
        backoff = 0.5
        while self.process is not None:
            started = time.monotonic()
            exited = asyncio.ensure_future(self.process.wait())
            stopping = asyncio.ensure_future(self._stopping.wait())
            await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
            exited.cancel()
            stopping.cancel()
            if self._stopping.is_set():
                return
            code = self.process.returncode
            self.pids.set("nats-server", None)
            if time.monotonic() - started > 30:
                backoff = 0.5
            self.console.say(
                f"nats-server exited unexpectedly ({describe_exit(code)}); restarting it on port "
                f"{self.server.port} with the same store in {backoff:.1f}s",
                label="nats",
            )
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                if self._stopping.is_set():
                    return
                backoff = min(backoff * 2, 5.0)
                try:
                    url = await self.start()
                except (RuntimeError, OSError) as exc:
                    self.console.say(f"nats-server did not restart: {exc}; trying again in {backoff:.1f}s", "nats")
                    continue
                self.console.say(f"nats-server restarted at {url}", label="nats")
                break

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.process is not None:
            await terminate(self.process, "nats-server", STOP_BOUND, self.console)
            self.console.say(f"stopped ({describe_exit(self.process.returncode)})", label="nats")
        self.pids.set("nats-server", None)


async def http_status(port: int, path: str, timeout: float = 2.0) -> int:
    """The status of `GET http://127.0.0.1:<port><path>`, 0 when it does not answer."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    except (OSError, TimeoutError):
        return 0
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        status_line = await asyncio.wait_for(reader.readline(), timeout)
        return int(status_line.split()[1])
    except (OSError, TimeoutError, ValueError, IndexError):
        return 0
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _wait_healthy(port: int, console: Console, started: float) -> None:
    while True:  # polled: there is no event to wait on for "every service answers"
        if await http_status(port, "/health") == 200:
            break
        await asyncio.sleep(0.25)
    console.say(
        f"Vibewave is ready in {time.monotonic() - started:.1f}s: http://localhost:{port} "
        f"(docs: http://localhost:{port}/docs). Ctrl-C stops everything."
    )


def emulator_environments(settings: StackSettings, env: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(the RunPod emulator's environment, what pod-manager gets on top): a fresh key for the two alone."""
    key = f"rpa_local_{secrets.token_hex(16)}"
    url = f"http://127.0.0.1:{settings.emulator_port}"
    emulator_env = {
        **env,
        "VIBEWAVE_RUNPOD_EMU_PORT": str(settings.emulator_port),
        "VIBEWAVE_RUNPOD_EMU_API_KEYS": key,
        "VIBEWAVE_RUNPOD_EMU_WORK_DIR": str(settings.home / "runpod-emulator"),
    }
    pod_manager_env = {
        "POD_PROVIDER": "runpod",
        "RUNPOD_API_KEY": key,
        "RUNPOD_API_BASE_URL": url,
        "RUNPOD_PROXY_URL_TEMPLATE": url + "/proxy/{pod_id}-{port}",
    }
    return emulator_env, pod_manager_env


def without_secrets(env: Mapping[str, str]) -> dict[str, str]:
    return {key: value for key, value in env.items() if key not in SECRETS}


def pod_token_key(home: Path) -> str:
    """VIBEWAVE_POD_TOKEN_KEY if set, else the home's own (made once, mode 0600), so pods adopted after a
    restart keep answering to the tokens they were created with."""
    given = os.environ.get(POD_TOKEN_KEY_ENV, "").strip()
    if given:
        return given
    path = home / "pod-token.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(new_key())
    return path.read_text().strip()


def nats_authorization(settings: StackSettings) -> str | None:
    """The embedded server's users and permissions with VIBEWAVE_NATS_AUTH (passwords of the home), else None."""
    return nats_auth.authorization_block(nats_auth.home_passwords(settings.home)) if settings.nats_auth else None


def child_environments(settings: StackSettings, nats_url: str) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """(every child's environment, what each child gets on top): secrets only where they are needed.
    With VIBEWAVE_NATS_AUTH each service gets its own NATS user and password and no other's; without,
    NATS credentials of the environment (an external NATS_URL's) go to the services, not to the others."""
    common = without_secrets(os.environ)
    common.update(NATS_URL=nats_url, VIBEWAVE_HOME=str(settings.home), API_PORT=str(settings.api_port))
    extra: dict[str, dict[str, str]] = {name: {} for name in SERVICES}
    extra["pod-manager"].update({key: os.environ[key] for key in POD_MANAGER_ONLY if key in os.environ})
    extra["api"].update({key: os.environ[key] for key in API_ONLY if key in os.environ})
    for name in STORAGE_HOLDERS:
        extra[name].update({key: os.environ[key] for key in STORAGE_CREDENTIALS if key in os.environ})
    passwords = nats_auth.home_passwords(settings.home) if settings.nats_auth else {}
    for name in SERVICES:
        if settings.nats_auth:
            extra[name].update(nats_auth.service_environment(name, passwords[name]))
        else:
            extra[name].update({key: os.environ[key] for key in NATS_CREDENTIALS if key in os.environ})
    key = pod_token_key(settings.home)
    for name in POD_TOKEN_HOLDERS:
        extra[name][POD_TOKEN_KEY_ENV] = key
    for name, port in zip(OPS_SERVICES, free_ports(len(OPS_SERVICES)), strict=True):
        extra[name]["OPS_PORT"] = str(port)  # kept across its restarts: a scraper's target stays put
    return common, extra


def metrics_urls(settings: StackSettings, extra: Mapping[str, Mapping[str, str]]) -> str:
    """Where each service's `/metrics` answers (its ops port serves `/health/live` and `/health/ready` too)."""
    urls = [f"api http://127.0.0.1:{settings.api_port}/metrics"]
    urls += [f"{name} http://127.0.0.1:{extra[name]['OPS_PORT']}/metrics" for name in OPS_SERVICES]
    return ", ".join(urls)


class Stack:
    """One `make run`: the lock on the home, the children, the order they stop in."""

    def __init__(self, settings: StackSettings, console: Console) -> None:
        self.settings = settings
        self.console = console
        self.pids = PidsFile(settings.home)
        self.stop_asked = asyncio.Event()
        self.reason = ""
        self.exit_code = 0
        self.nats: NatsProcess | None = None
        self.services: list[ServiceProcess] = []

    def ask_stop(self, reason: str, exit_code: int = 0) -> None:
        if self.stop_asked.is_set():
            if reason.startswith("SIG"):
                self.console.say(f"{reason}: already stopping (each step is bounded)")
            return
        self.reason, self.exit_code = reason, exit_code
        self.stop_asked.set()

    def _service(self, name: str, env: dict[str, str], module: str = "") -> ServiceProcess:
        return ServiceProcess(name, env, self.console, self.pids, self._fatal, module=module)

    def _fatal(self, service: ServiceProcess) -> None:
        errors = "; ".join(service.error_lines()) or "no output"
        self.console.say(f"{service.name} cannot run as configured ({describe_exit(service.exit_code)}): {errors}")
        self.ask_stop(f"{service.name} exited with EX_CONFIG", EX_CONFIG)

    async def run(self) -> int:
        started = time.monotonic()
        settings = self.settings
        leftovers = find_leftovers(settings.home, self.pids.read())
        if leftovers:
            listed = ", ".join(f"{leftover.pid} ({leftover.what})" for leftover in leftovers)
            self.console.say(f"stopping {len(leftovers)} process(es) left running on this home by an earlier stack: "
                             f"{listed}")  # fmt: skip
            await asyncio.to_thread(stop_leftovers, leftovers, self.console.say)
        self.pids.set("devstack", os.getpid())
        nats_url = settings.nats_url
        if settings.nats_auth:
            self.console.say(f"NATS users per service (VIBEWAVE_NATS_AUTH): {', '.join(nats_auth.USERS)}; "
                             f"passwords in {settings.home / 'nats-auth'}", label="nats")  # fmt: skip
        if nats_url is None:
            auth = nats_authorization(settings)
            self.nats = NatsProcess(settings.home / "nats", settings.nats_port, self.console, self.pids, auth)
            try:
                nats_url = await self.nats.start()
            except (RuntimeError, OSError) as exc:
                self.console.say(f"cannot start: {exc}", label="nats")
                self.nats = None
                return EX_SOFTWARE
            self.nats.supervise()
            self.console.say(f"embedded nats-server with JetStream at {nats_url} (store {settings.home / 'nats'})",
                             label="nats")  # fmt: skip
        if self.stop_asked.is_set():
            await self.shutdown()
            return self.exit_code
        env, extra = child_environments(settings, nats_url)
        if settings.runpod_emulator:
            emulator_env, for_pod_manager = emulator_environments(settings, env)
            extra["pod-manager"].update(for_pod_manager)
            self.services.append(self._service("runpod-emu", emulator_env, module="vibewave.runpod_emu"))
            self.console.say(f"pods come from the RunPod emulator at {for_pod_manager['RUNPOD_API_BASE_URL']}")
        for name in SERVICES:
            self.services.append(self._service(name, {**env, **extra[name]}))
        self.console.say(f"metrics: {metrics_urls(settings, extra)}")
        for service in self.services:
            service.start()
        ready = asyncio.create_task(_wait_healthy(settings.api_port, self.console, started))
        await self.stop_asked.wait()
        ready.cancel()
        await self.shutdown()
        return self.exit_code

    async def shutdown(self) -> None:
        began = time.monotonic()
        by_name = {service.name: service for service in self.services}
        order = [name for name in STOP_ORDER if name in by_name] + (["NATS"] if self.nats else [])
        self.console.say(f"stopping ({self.reason}): {', '.join(order)}")
        for name in STOP_ORDER:
            if name in by_name:
                await by_name[name].stop()
        if self.nats is not None:
            await self.nats.stop()
        self.pids.clear()
        self.console.say(f"all stopped in {time.monotonic() - began:.1f}s")


async def run_stack(settings: StackSettings, early_signals: list[int] | None = None) -> int:
    """Run the stack until a stop signal (or a service's configuration error); its exit status."""
    console = Console(settings)
    lock = HomeLock(settings.home)
    try:
        lock.acquire()
    except HomeBusy as exc:
        kill_hint = f"Ctrl-C in its terminal or `kill {exc.pid}`" if exc.pid else "Ctrl-C in its terminal"
        console.say(f"refusing to start: {exc}. Stop that stack first ({kill_hint}), or set VIBEWAVE_HOME to "
                    "another directory.")  # fmt: skip
        return EX_SOFTWARE
    console.open_log(settings.home / "logs" / "devstack.log")
    stack = Stack(settings, console)
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stack.ask_stop, sig.name)
    for signum in early_signals or []:
        stack.ask_stop(signal.Signals(signum).name)
    try:
        return await stack.run()
    finally:
        stack.pids.clear()
        console.close_log()
        lock.release()


def main() -> int:
    """`python -m vibewave.devstack`: stop gracefully when our parent (`make`) dies, whatever killed it."""
    die_with_parent()
    early: list[int] = []

    def note(signum: int, _frame: FrameType | None) -> None:
        early.append(signum)

    for sig in STOP_SIGNALS:
        signal.signal(sig, note)
    code = asyncio.run(run_stack(StackSettings.from_env(), early))
    for sig in STOP_SIGNALS:  # the loop restored the defaults as it closed: nothing may print a traceback now
        signal.signal(sig, signal.SIG_IGN)
    return code
