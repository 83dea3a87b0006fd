"""HTTP surface: RunPod's `POST /graphql`, REST v2 (`rest_routes`), the pod proxy, and the emulator-only
control routes.

Request path for /graphql, in the order RunPod's stack applies it: injected latency → Cloudflare (403
`error code: 1010`) → API key (401) → body/parse (400) → the call is counted per root field and may be
rate-limited (429) → load balancer (HTML 502) → GraphQL validation (400) → execution (200, domain errors
inside). Control routes live under `/emulator/...` and are not RunPod's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import platform
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from graphql import OperationDefinitionNode, OperationType

from vibewave.runpod_emu import api, edge, proxy, rest_routes
from vibewave.runpod_emu.config import EmuConfig
from vibewave.runpod_emu.service import EMULATOR_KEY, EMULATOR_NAME, Emulator

log = logging.getLogger("vibewave.runpod_emu")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
EMULATOR_HEADER = "X-Vibewave-Emulator"


def emulator(request: web.Request) -> Emulator:
    return request.app[EMULATOR_KEY]


def _api_key(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.query.get("api_key") or None


async def graphql(request: web.Request) -> web.Response:
    emu = emulator(request)
    faults = emu.faults
    if faults.latency > 0:
        await asyncio.sleep(faults.latency)
    if edge.cloudflare_refuses(emu, request):
        return edge.cloudflare_403()
    key = _api_key(request)
    if key is None or key not in (*emu.config.api_keys, *emu.config.pod_scoped_keys):
        return web.Response(status=401, text="Unauthorized")
    try:
        body: Any = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    parsed = api.parse_request(body)
    if isinstance(parsed, api.Outcome):
        return web.json_response(parsed.body, status=parsed.status)
    document, variables, operation_name = parsed
    roots = api.root_fields(document, operation_name)
    operation = roots[0] if roots else None
    emu.sync()
    verdict = emu.world.admit(key, roots)
    if not verdict.allowed:
        return edge.too_many_requests(verdict)
    bad_gateway = faults.fire("http_502", operation)
    if bad_gateway is not None and not bad_gateway.after_action:
        return proxy.bad_gateway()
    emu.sync()
    outcome = api.run(emu.world, document, variables, operation_name, scoped=key in emu.config.pod_scoped_keys)
    emu.sync()
    mutation = any(
        isinstance(d, OperationDefinitionNode) and d.operation == OperationType.MUTATION for d in document.definitions
    )
    log.log(logging.INFO if mutation else logging.DEBUG, "graphql %s → HTTP %s", ",".join(roots), outcome.status)
    if bad_gateway is not None:
        return proxy.bad_gateway()
    return web.json_response(outcome.body, status=outcome.status, headers=verdict.headers)


async def index(request: web.Request) -> web.Response:
    emu = emulator(request)
    return web.json_response(
        {
            "emulator": EMULATOR_NAME,
            "note": "an offline EMULATOR of RunPod's pod API, not RunPod",
            "graphql": f"{emu.public_url}/graphql",
            "rest": f"{emu.public_url}/v2",
            "proxy": f"{emu.public_url}/proxy/{{podId}}-{{port}}/",
            "control": [f"{emu.public_url}/emulator/{name}" for name in ("state", "faults", "reset", "account")],
        }
    )


# --- control routes (emulator-only) --------------------------------------------------------------


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        raise ValueError("the body must be a JSON object")
    return data


def _error(message: str, status: int = 400) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def get_state(request: web.Request) -> web.Response:
    return web.json_response(emulator(request).state_json())


async def get_faults(request: web.Request) -> web.Response:
    return web.json_response(emulator(request).faults.to_json())


async def post_faults(request: web.Request) -> web.Response:
    emu = emulator(request)
    try:
        update = await _json_object(request)
        model_host = update.pop("model_host", None)
        if model_host is not None:
            if not isinstance(model_host, dict):
                raise ValueError("model_host: an object of fault switches (corrupt, drop, fail, ignore_range)")
            emu.model_host.configure(model_host)
        emu.faults.update(update)
    except ValueError as exc:
        return _error(str(exc))
    log.warning("faults now %s", emu.faults.to_json())
    return web.json_response(emu.faults.to_json())


async def delete_faults(request: web.Request) -> web.Response:
    emu = emulator(request)
    emu.config.faults = emu.initial_faults.copy()
    emu.model_host.reset()
    return web.json_response(emu.faults.to_json())


async def post_reset(request: web.Request) -> web.Response:
    emu = emulator(request)
    emu.reset()
    await emu.settle()  # containers gone, volumes emptied: the next test starts clean
    return web.json_response(emu.state_json())


async def post_account(request: web.Request) -> web.Response:
    emu = emulator(request)
    try:
        emu.update_account(await _json_object(request))
    except ValueError as exc:
        return _error(str(exc))
    return web.json_response(emu.state_json()["account"])


async def post_gpu_types(request: web.Request) -> web.Response:
    emu = emulator(request)
    try:
        emu.update_gpu_types(await _json_object(request))
    except ValueError as exc:
        return _error(str(exc))
    return web.json_response([g.to_json() for g in emu.world.gpu_types])


async def patch_pod(request: web.Request) -> web.Response:
    emu = emulator(request)
    try:
        emu.update_pod(request.match_info["pod_id"], await _json_object(request))
    except KeyError:
        return _error("pod not found", 404)
    except ValueError as exc:
        return _error(str(exc))
    return web.json_response(_pod_state(emu, request.match_info["pod_id"]))


async def post_pod_exit(request: web.Request) -> web.Response:
    """A platform-initiated stop ("Exited by Runpod"), as after a host failure."""
    emu = emulator(request)
    pod_id = request.match_info["pod_id"]
    if pod_id not in emu.world.pods:
        return _error("pod not found", 404)
    emu.world.platform_stop(pod_id)
    emu.sync()
    return web.json_response(_pod_state(emu, pod_id))


async def post_kill_comfyui(request: web.Request) -> web.Response:
    """Crash what serves the pod's 8188 (SIGKILL). If that is the container's main process, the container is
    restarted (unless disabled); a process the main process started is the main process's business."""
    emu = emulator(request)
    pod_id = request.match_info["pod_id"]
    pid = await emu.fleet.kill(pod_id)
    if pid is None:
        return _error(f"nothing listens on {emu.config.comfyui_port} in this pod's container", 404)
    return web.json_response({"killed": pod_id, "pid": pid})


async def post_kill_container(request: web.Request) -> web.Response:
    """Crash the pod's whole container (SIGKILL to its process group); it is restarted unless disabled."""
    emu = emulator(request)
    pod_id = request.match_info["pod_id"]
    pid = await emu.fleet.crash(pod_id)
    if pid is None:
        return _error("this pod's container is not running", 404)
    return web.json_response({"killed": pod_id, "pid": pid})


def _pod_state(emu: Emulator, pod_id: str) -> dict[str, Any]:
    return next(p for p in emu.state_json()["pods"] if p["id"] == pod_id)


# --- application ---------------------------------------------------------------------------------


async def _label(request: web.Request, response: web.StreamResponse) -> None:
    response.headers[EMULATOR_HEADER] = "runpod"


def create_app(config: EmuConfig) -> web.Application:
    """The aiohttp application; the emulator's ticker starts with it and its processes stop on cleanup."""
    owns_work_dir = config.work_dir is None
    config.resolve_work_dir()
    emu = Emulator(config, owns_work_dir=owns_work_dir)
    app = web.Application(client_max_size=512 * 1024 * 1024)
    app[EMULATOR_KEY] = emu
    app.on_response_prepare.append(_label)
    app.router.add_get("/", index)
    app.router.add_post("/graphql", graphql)
    app.router.add_post("//graphql", graphql)
    rest_routes.add_routes(app)
    emu.model_host.add_routes(app)
    app.router.add_route("*", "/proxy/{target}", proxy.handle)
    app.router.add_route("*", "/proxy/{target}{tail:/.*}", proxy.handle)
    app.router.add_get("/emulator/state", get_state)
    app.router.add_get("/emulator/faults", get_faults)
    app.router.add_post("/emulator/faults", post_faults)
    app.router.add_delete("/emulator/faults", delete_faults)
    app.router.add_post("/emulator/reset", post_reset)
    app.router.add_post("/emulator/account", post_account)
    app.router.add_post("/emulator/gpu-types", post_gpu_types)
    app.router.add_patch("/emulator/pods/{pod_id}", patch_pod)
    app.router.add_post("/emulator/pods/{pod_id}/exit", post_pod_exit)
    app.router.add_post("/emulator/pods/{pod_id}/kill-comfyui", post_kill_comfyui)
    app.router.add_post("/emulator/pods/{pod_id}/kill-container", post_kill_container)

    async def on_startup(app: web.Application) -> None:
        await emu.start()

    async def on_cleanup(app: web.Application) -> None:
        await emu.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


@dataclass
class RunningEmulator:
    """An emulator serving in the current event loop (tests, embedding)."""

    app: web.Application
    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def emulator(self) -> Emulator:
        return self.app[EMULATOR_KEY]

    def proxy_url(self, pod_id: str, port: int = 8188) -> str:
        return f"{self.url}/proxy/{pod_id}-{port}"

    async def close(self) -> None:
        await self.runner.cleanup()


def log_banner(config: EmuConfig, port: int) -> None:
    log.warning(
        "%s: an EMULATOR of RunPod's pod API (GraphQL, REST v2 + HTTP proxy; not RunPod, no GPUs, pods run their "
        "start command or their image's emulated CMD) listening on http://%s:%s (python %s on %s, work dir %s)",
        EMULATOR_NAME,
        config.host,
        port,
        platform.python_version(),
        sys.platform,
        config.work_dir,
    )
    log.info(  # how many keys, never the keys: one of them is the RUNPOD_API_KEY pod-manager holds
        "%d api key(s); boot delay %.1fs; containers %s; proxy URL template http://%s:%s/proxy/{pod_id}-{port}",
        len(config.api_keys),
        config.faults.boot_delay,
        f"serve port {config.comfyui_port}" if config.comfyui else "disabled",
        config.host,
        port,
    )


async def serve(config: EmuConfig) -> RunningEmulator:
    """Start serving (port 0 picks a free port) and return once the socket is bound."""
    started = time.monotonic()
    app = create_app(config)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    port = int(runner.addresses[0][1]) if runner.addresses else config.port
    app[EMULATOR_KEY].public_url = f"http://{config.host}:{port}"
    log_banner(config, port)
    log.info("started in %.3fs", time.monotonic() - started)
    return RunningEmulator(app, runner, config.host, port)


async def run(config: EmuConfig) -> None:
    """Serve until cancelled or SIGTERM/SIGINT; pod processes are stopped on the way out."""
    running = await serve(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.warning("%s: shutting down", EMULATOR_NAME)
        await running.close()
