"""HTTP and WebSocket routes of the simulator (PROTOCOL.md §2), each served at `/x` and `/api/x`.

Handlers follow ComfyUI 0.33's server.py closely, including the awkward parts clients depend on: empty
200 bodies on POST /queue, /interrupt, /history and /free; 500 text/plain on a non-JSON body; the prompt
counter that also advances on rejected prompts; /view's 400/403/404 cases; the frontend's static route that
answers every other GET with an empty 404 and every other method with 405. Where the claimed release
differs (`--comfyui-version`), handlers ask its `Dialect`. Simulator-only control lives under
`/vibewave-sim/...` and is never part of ComfyUI's API.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import mimetypes
import os
import platform
import sys
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from vibewave.comfyui_sim import jobs, render, webp
from vibewave.comfyui_sim.catalogue import Catalogue
from vibewave.comfyui_sim.config import Faults, SimConfig
from vibewave.comfyui_sim.hub import Hub
from vibewave.comfyui_sim.state import PromptQueue, QueueItem
from vibewave.comfyui_sim.validation import validate_prompt
from vibewave.comfyui_sim.versions import Dialect, dialect
from vibewave.comfyui_sim.worker import Worker, now_ms

log = logging.getLogger("vibewave.comfyui_sim")

SIM_NAME = "vibewave-comfyui-simulator"
SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")
FORCE_DOWNLOAD = {"text/html", "text/html-sandboxed", "application/xhtml+xml", "text/javascript", "text/css"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Simulator:
    """All state of one simulator instance, reachable from every handler."""

    config: SimConfig
    catalogue: Catalogue
    hub: Hub
    queue: PromptQueue
    worker: Worker
    initial_faults: Faults
    initial_models_present: bool
    number: int = 0
    last_create_time: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def create_time(self) -> int:
        """ms epoch, strictly increasing: /api/jobs sorts on it, and a fast client can post several prompts
        within one millisecond (the real server, slower per request, never showed ties)."""
        self.last_create_time = max(now_ms(), self.last_create_time + 1)
        return self.last_create_time

    @property
    def faults(self) -> Faults:
        return self.config.faults

    @property
    def dialect(self) -> Dialect:
        return self.worker.dialect

    def control_state(self) -> dict[str, Any]:
        """What GET/POST/DELETE /vibewave-sim/faults answer: the fault switches plus models_present."""
        return {**self.faults.to_json(), "models_present": self.config.models_present}

    def features(self) -> dict[str, Any]:
        return features(self.config)

    def status(self) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": self.queue.remaining()}}

    def broadcast_status(self) -> None:
        self.hub.send("status", {"status": self.status()})


SIM_KEY = web.AppKey("vibewave_comfyui_sim", Simulator)


def features(config: SimConfig) -> dict[str, Any]:
    if not dialect(config.comfyui_version).full_features:
        return {"supports_preview_metadata": True, "max_upload_size": config.max_upload_size}
    return {
        "supports_preview_metadata": True,
        "supports_model_type_tags": True,
        "max_upload_size": config.max_upload_size,
        "extension": {"manager": {"supports_v4": True}},
        "node_replacements": True,
        "assets": False,
    }


def sim(request: web.Request) -> Simulator:
    return request.app[SIM_KEY]


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@web.middleware
async def origin_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """ComfyUI's anti-CSRF check: loopback Host with a foreign Origin gets an empty 403."""
    host, origin = request.headers.get("Host"), request.headers.get("Origin")
    if host is not None and origin is not None:
        host_domain = host.lower()
        parsed = urllib.parse.urlparse(origin)
        origin_domain: str | None = parsed.netloc.lower()
        host_parsed = urllib.parse.urlsplit("//" + host_domain)
        if parsed.port is None:
            host_domain = host_parsed.hostname or ""
        if host_parsed.port is None:
            origin_domain = parsed.hostname
        if _is_loopback(host_parsed.hostname) and host_domain and origin_domain and host_domain != origin_domain:
            log.warning("request with non matching host and origin %s != %s, returning 403", host_domain, origin_domain)
            return web.Response(status=403)
    return await handler(request)


@web.middleware
async def delay_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Fault switch `http_delay`: every HTTP answer (not the control route) waits this long."""
    delay = sim(request).faults.http_delay
    if delay > 0 and not request.path.startswith("/vibewave-sim"):
        await asyncio.sleep(delay)
    return await handler(request)


# --- prompts -------------------------------------------------------------------------------------


def _canonical_uuid(value: Any) -> bool:
    try:
        return isinstance(value, str) and str(uuid.UUID(value)) == value
    except ValueError:
        return False


async def post_prompt(request: web.Request) -> web.Response:
    s = sim(request)
    log.info("got prompt")
    data = await request.json()
    if isinstance(data, dict) and "number" in data:
        number: float | int = float(data["number"])
    else:
        number = s.number
        if isinstance(data, dict) and data.get("front"):
            number = -number
        s.number += 1
    if not isinstance(data, dict) or "prompt" not in data:
        error = {
            "type": "no_prompt",
            "message": "No prompt provided",
            "details": "No prompt provided",
            "extra_info": {},
        }
        return web.json_response({"error": error, "node_errors": {}}, status=400)

    prompt = data["prompt"]
    prompt_id = data.get("prompt_id")
    if not s.dialect.strict_prompt_id:
        # 0.3.64: str(json_data.get("prompt_id", uuid.uuid4())), so null becomes "None".
        prompt_id = str(prompt_id) if "prompt_id" in data else str(uuid.uuid4())
    elif prompt_id is None:
        prompt_id = str(uuid.uuid4())
    elif not _canonical_uuid(prompt_id):
        error = {
            "type": "invalid_prompt_id",
            "message": "prompt_id must be a valid UUID",
            "details": "prompt_id must be a UUID string in canonical lowercase hyphenated form; "
            "omit it to let the server generate one",
            "extra_info": {},
        }
        return web.json_response({"error": error, "node_errors": {}}, status=400)

    result = validate_prompt(s.catalogue, prompt, data.get("partial_execution_targets"), s.dialect)
    extra_data = data.get("extra_data", {})
    if not isinstance(extra_data, dict):
        extra_data = {}
    if "client_id" in data:
        extra_data["client_id"] = data["client_id"]
    usage = request.headers.get("Comfy-Usage-Source") if s.dialect.usage_source_header else None
    if usage:
        extra_data["comfy_usage_source"] = usage
    if not result.ok:
        log.warning("invalid prompt: %s", result.error)
        return web.json_response({"error": result.error, "node_errors": result.node_errors}, status=400)
    sensitive = {k: extra_data.pop(k) for k in SENSITIVE_EXTRA_DATA_KEYS if k in extra_data}
    if s.dialect.create_time:
        extra_data["create_time"] = s.create_time()
    s.queue.put(QueueItem(number, prompt_id, prompt, extra_data, result.outputs, sensitive))
    return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": result.node_errors})


async def get_prompt(request: web.Request) -> web.Response:
    return web.json_response(sim(request).status())


async def get_queue(request: web.Request) -> web.Response:
    s = sim(request)
    shown = not s.dialect.queue_hides_sensitive
    return web.json_response(
        {
            "queue_running": [item.as_list(shown) for item in s.queue.running.values()],
            "queue_pending": [item.as_list(shown) for item in s.queue.pending()],
        }
    )


async def post_queue(request: web.Request) -> web.Response:
    s = sim(request)
    data = await request.json()
    if data.get("clear"):
        s.queue.wipe()
    for prompt_id in data.get("delete", []):
        s.queue.delete(prompt_id, s.dialect.double_status_on_last_delete)
    return web.Response(status=200)


async def post_interrupt(request: web.Request) -> web.Response:
    try:
        data = await request.json()
    except ValueError:
        data = {}
    prompt_id = data.get("prompt_id") if isinstance(data, dict) else None
    sim(request).worker.interrupt(prompt_id if isinstance(prompt_id, str) else None)
    return web.Response(status=200)


async def post_free(request: web.Request) -> web.Response:
    data = await request.json()
    if data.get("unload_models") or data.get("free_memory"):
        log.info("free requested (nothing to unload in the simulator)")
    return web.Response(status=200)


async def get_history(request: web.Request) -> web.Response:
    query = request.rel_url.query
    max_items = int(query["max_items"]) if "max_items" in query else None
    offset = int(query["offset"]) if "offset" in query else -1
    return web.json_response(sim(request).queue.get_history(max_items, offset))


async def get_history_item(request: web.Request) -> web.Response:
    return web.json_response(sim(request).queue.history_item(request.match_info["prompt_id"]))


async def post_history(request: web.Request) -> web.Response:
    s = sim(request)
    data = await request.json()
    if data.get("clear"):
        s.queue.history.clear()
    for prompt_id in data.get("delete", []):
        s.queue.history.pop(prompt_id, None)
    return web.Response(status=200)


# --- files ---------------------------------------------------------------------------------------


def _dir_by_type(config: SimConfig, kind: str | None) -> Path | None:
    return {"output": config.out, "input": config.inp, "temp": config.tmp}.get(kind or "output")


def _locate(config: SimConfig, query: Mapping[str, str]) -> Path | int:
    """The file /view should serve, or the status code ComfyUI answers instead (400/403/404)."""
    if "filename" not in query:
        return 404
    filename = query["filename"]
    base: Path | None = None
    for kind in ("output", "input", "temp"):
        if filename.endswith(f" [{kind}]"):
            filename, base = filename[: -len(kind) - 3], _dir_by_type(config, kind)
    if not filename or filename[0] == "/" or ".." in filename:
        return 400
    if base is None:
        base = _dir_by_type(config, query.get("type", "output"))
    if base is None:
        return 400
    folder = base
    if "subfolder" in query:
        folder = base / query["subfolder"]
        if os.path.commonpath((os.path.abspath(folder), str(base))) != str(base):
            return 403
    path = folder / os.path.basename(filename)
    return path if path.is_file() else 404


def _reencoded(path: Path, preview: str | None, channel: str | None) -> tuple[bytes, str]:
    """`preview=` / `channel=` answers (body, content type).

    `preview=webp;Q` gives a WebP (lossless VP8L where ComfyUI writes lossy VP8; see webp.py). `jpeg;Q` would
    need a JPEG encoder the simulator does not have: the PNG is returned instead. Our files are opaque RGB
    PNGs, so the RGB channel view is the file itself and the alpha view is a flat white greyscale PNG.
    """
    data = path.read_bytes()
    size = render.png_size(data)
    if size is None:
        raise ValueError(f"cannot identify image file {path.name!r}")
    if channel == "a":
        return render.encode_gray_png(size[0], size[1], 255), "image/png"
    if preview is not None and preview.split(";")[0] == "webp":
        return webp.png_to_webp(data), "image/webp"
    return data, "image/png"


async def view(request: web.Request) -> web.StreamResponse:
    query = request.rel_url.query
    s = sim(request)
    located = _locate(s.config, query)
    if isinstance(located, int):
        return web.Response(status=located)
    name = located.name
    disposition = f'filename="{name}"'
    if "preview" in query or query.get("channel", "rgba") != "rgba":
        data, content_type = await asyncio.to_thread(_reencoded, located, query.get("preview"), query.get("channel"))
        return web.Response(body=data, content_type=content_type, headers={"Content-Disposition": disposition})
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if content_type in FORCE_DOWNLOAD:
        content_type = "application/octet-stream"
        disposition = f'attachment; filename="{name}"'
    headers = {"Content-Disposition": disposition, "Content-Type": content_type}
    if s.dialect.nosniff:
        headers["X-Content-Type-Options"] = "nosniff"
    return web.FileResponse(located, headers=headers)


def _store_upload(upload_dir: Path, subfolder: str, filename: str, content: bytes, overwrite: bool) -> str | None:
    """Port of server.image_upload's file handling; returns the stored name, or None if the path escapes."""
    folder = Path(os.path.join(upload_dir, os.path.normpath(subfolder)))
    filepath = Path(os.path.abspath(folder / filename))
    if os.path.commonpath((str(upload_dir), str(filepath))) != str(upload_dir):
        return None
    folder.mkdir(parents=True, exist_ok=True)
    if not overwrite:
        stem, ext = os.path.splitext(filename)
        digest = hashlib.sha256(content).digest()
        i = 1
        while filepath.exists():
            if hashlib.sha256(filepath.read_bytes()).digest() == digest:
                return filename
            filename = f"{stem} ({i}){ext}"
            filepath = folder / filename
            i += 1
    filepath.write_bytes(content)
    return filename


async def upload_image(request: web.Request) -> web.Response:
    s = sim(request)
    post = await request.post()
    image = post.get("image")
    kind = post.get("type")
    kind_name = str(kind) if kind in ("output", "temp") else "input"
    upload_dir = _dir_by_type(s.config, kind_name) or s.config.inp
    if not isinstance(image, web.FileField) or not image.filename:
        return web.Response(status=400)
    subfolder = str(post.get("subfolder", ""))
    overwrite = post.get("overwrite") in ("true", "1")
    content = image.file.read()
    stored = await asyncio.to_thread(_store_upload, upload_dir, subfolder, image.filename, content, overwrite)
    if stored is None:
        return web.Response(status=400)
    return web.json_response({"name": stored, "subfolder": subfolder, "type": kind_name})


# --- introspection -------------------------------------------------------------------------------


def _memory() -> tuple[int, int]:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        return int(total), int(free)
    except (ValueError, OSError):
        return 0, 0


async def system_stats(request: web.Request) -> web.Response:
    ram_total, ram_free = _memory()
    vram_total = 24 * 1024**3
    d = sim(request).dialect
    system: dict[str, Any] = {
        "os": sys.platform if d.os_from_platform else os.name,
        "ram_total": ram_total,
        "ram_free": ram_free,
        "comfyui_version": d.version,
        "required_frontend_version": d.frontend_version,
        "installed_templates_version": d.templates_version,
        "required_templates_version": d.templates_version,
    }
    if d.package_versions is not None:
        system["comfy_package_versions"] = [
            {"name": name, "installed": version, "required": version} for name, version in d.package_versions
        ]
    system.update({"python_version": sys.version, "pytorch_version": f"none ({SIM_NAME})", "embedded_python": False})
    if d.package_versions is not None:
        system["deploy_environment"] = SIM_NAME
    system["argv"] = sys.argv
    device = {
        "name": f"cuda:0 Simulated GPU ({SIM_NAME}) : native",
        "type": "cuda",
        "index": 0,
        "vram_total": vram_total,
        "vram_free": vram_total,
        "torch_vram_total": vram_total,
        "torch_vram_free": vram_total,
    }
    return web.json_response({"system": system, "devices": [device]})


async def get_features(request: web.Request) -> web.Response:
    return web.json_response(sim(request).features())


async def object_info(request: web.Request) -> web.Response:
    return web.json_response(sim(request).catalogue.object_info())


async def object_info_one(request: web.Request) -> web.Response:
    catalogue = sim(request).catalogue
    name = request.match_info["node_class"]
    return web.json_response({name: catalogue.info(name)} if name in catalogue else {})


async def embeddings(request: web.Request) -> web.Response:
    return web.json_response([])


async def extensions(request: web.Request) -> web.Response:
    return web.json_response([])


async def models(request: web.Request) -> web.Response:
    return web.json_response(list(sim(request).dialect.model_folders))


async def models_folder(request: web.Request) -> web.Response:
    s = sim(request)
    folder = request.match_info["folder"]
    if folder not in s.dialect.model_folders:
        return web.Response(status=404)
    return web.json_response(s.catalogue.folders.files(folder))


async def index(request: web.Request) -> web.Response:
    """GET /: ComfyUI serves its frontend here (200 text/html, what some readiness checks probe); the
    simulator serves a page that says what it is."""
    s = sim(request)
    title = f"{SIM_NAME}: a simulator of ComfyUI {s.dialect.version}"
    body = f"<!doctype html><html><head><title>{title}</title></head><body><p>{title}; no frontend.</p></body></html>"
    return web.Response(text=body, content_type="text/html")


async def static_fallback(request: web.Request) -> web.StreamResponse:
    """The frontend's `web.static('/')` route: any other GET/HEAD is an empty 404 (application/octet-stream,
    chunked), and since that route matches every path, any other method is a 405 with `Allow: GET,HEAD`."""
    response = web.StreamResponse(status=404)
    response.content_type = "application/octet-stream"
    await response.prepare(request)
    await response.write_eof()
    return response


async def websocket(request: web.Request) -> web.StreamResponse:
    s = sim(request)

    def hello(sid: str) -> list[tuple[str, dict[str, Any]]]:
        frames: list[tuple[str, dict[str, Any]]] = [("status", {"status": s.status(), "sid": sid})]
        if s.worker.client_id == sid and s.worker.last_node_id is not None:
            frames.append(("executing", {"node": s.worker.last_node_id}))
        return frames

    return await s.hub.handle(request, hello)


# --- jobs ----------------------------------------------------------------------------------------


async def list_jobs(request: web.Request) -> web.Response:
    status, body = jobs.list_jobs(sim(request), request.rel_url.query)
    return web.json_response(body, status=status)


async def get_job(request: web.Request) -> web.Response:
    job = jobs.find_job(sim(request), request.match_info["job_id"])
    if job is None:
        return web.json_response({"error": "Job not found"}, status=404)
    return web.json_response(job)


async def cancel_job(request: web.Request) -> web.Response:
    return web.json_response({"cancelled": jobs.cancel(sim(request), request.match_info["job_id"])})


async def cancel_jobs(request: web.Request) -> web.Response:
    data = await request.json()
    ids = data.get("job_ids", []) if isinstance(data, dict) else []
    status, body = jobs.cancel_many(sim(request), ids if isinstance(ids, list) else [])
    return web.json_response(body, status=status)


# --- simulator-only control ----------------------------------------------------------------------


async def get_faults(request: web.Request) -> web.Response:
    return web.json_response(sim(request).control_state())


async def post_faults(request: web.Request) -> web.Response:
    s = sim(request)
    try:
        data = await request.json()
        if not isinstance(data, dict):
            raise ValueError("body must be a JSON object")
        data = dict(data)
        present = data.pop("models_present", None)
        if present is not None and not isinstance(present, bool):
            raise ValueError("models_present must be true or false")
        s.faults.update(data)
    except ValueError as ex:
        return web.json_response({"error": str(ex)}, status=400)
    if present is not None:
        s.config.models_present = present
    log.info("fault switches now %s", s.control_state())
    return web.json_response(s.control_state())


async def delete_faults(request: web.Request) -> web.Response:
    s = sim(request)
    initial = s.initial_faults.copy()
    for name in (*Faults.NUMBER_FIELDS, *Faults.FAULT_FIELDS):
        setattr(s.faults, name, getattr(initial, name))
    s.config.models_present = s.initial_models_present
    return web.json_response(s.control_state())


async def sim_info(request: web.Request) -> web.Response:
    s = sim(request)
    return web.json_response(
        {
            "simulator": SIM_NAME,
            "emulates": f"ComfyUI {s.dialect.version}",
            "output_dir": str(s.config.out),
            "input_dir": str(s.config.inp),
            "temp_dir": str(s.config.tmp),
            "models": s.config.models,
            "models_present": s.config.models_present,
            "models_dir": None if s.config.models_dir is None else str(s.config.models_dir),
            "faults": s.faults.to_json(),
            "pid": os.getpid(),
        }
    )


async def clear_cache(request: web.Request) -> web.Response:
    sim(request).worker.cache.clear()
    return web.Response(status=200)


ROUTES: list[tuple[str, str, Handler]] = [
    ("POST", "/prompt", post_prompt),
    ("GET", "/prompt", get_prompt),
    ("GET", "/queue", get_queue),
    ("POST", "/queue", post_queue),
    ("POST", "/interrupt", post_interrupt),
    ("POST", "/free", post_free),
    ("GET", "/history", get_history),
    ("GET", "/history/{prompt_id}", get_history_item),
    ("POST", "/history", post_history),
    ("GET", "/view", view),
    ("POST", "/upload/image", upload_image),
    ("GET", "/system_stats", system_stats),
    ("GET", "/features", get_features),
    ("GET", "/object_info", object_info),
    ("GET", "/object_info/{node_class}", object_info_one),
    ("GET", "/embeddings", embeddings),
    ("GET", "/extensions", extensions),
    ("GET", "/models", models),
    ("GET", "/models/{folder}", models_folder),
    ("GET", "/ws", websocket),
    ("GET", "/vibewave-sim/info", sim_info),
    ("GET", "/vibewave-sim/faults", get_faults),
    ("POST", "/vibewave-sim/faults", post_faults),
    ("DELETE", "/vibewave-sim/faults", delete_faults),
    ("POST", "/vibewave-sim/clear-cache", clear_cache),
]
# Declared as /api/jobs... upstream (so also served as /api/api/jobs...); only from 0.33 on.
JOBS_ROUTES: list[tuple[str, str, Handler]] = [
    ("GET", "/jobs", list_jobs),
    ("GET", "/jobs/{job_id}", get_job),
    ("POST", "/jobs/cancel", cancel_jobs),
    ("POST", "/jobs/{job_id}/cancel", cancel_job),
]


def create_app(config: SimConfig) -> web.Application:
    """Build the aiohttp application; the worker starts with the app and stops on cleanup."""
    config.resolve_dirs()
    version = dialect(config.comfyui_version)
    catalogue = Catalogue(config.models, config.inp, version.version, lambda: config.models_present, config.models_dir)
    hub = Hub(features(config))
    holder: list[Simulator] = []
    queue = PromptQueue(lambda: holder[0].broadcast_status(), config.history_size)
    worker = Worker(config, catalogue, queue, hub)
    simulator = Simulator(config, catalogue, hub, queue, worker, config.faults.copy(), config.models_present)
    holder.append(simulator)

    app = web.Application(client_max_size=config.max_upload_size, middlewares=[origin_middleware, delay_middleware])
    app[SIM_KEY] = simulator
    routes = [*ROUTES, *((m, "/api" + p, h) for m, p, h in JOBS_ROUTES if version.jobs_api)]
    for method, path, handler in routes:
        for prefix in ("", "/api"):
            if method == "GET":
                app.router.add_get(prefix + path, handler)
            else:
                app.router.add_route(method, prefix + path, handler)
    app.router.add_get("/", index)
    app.router.add_get("/{tail:.*}", static_fallback)

    async def start_worker(app: web.Application) -> None:
        simulator.tasks.append(asyncio.create_task(worker.run_forever(), name="comfyui-sim-worker"))

    async def stop_worker(app: web.Application) -> None:
        for task in simulator.tasks:
            task.cancel()
        await asyncio.gather(*simulator.tasks, return_exceptions=True)
        await hub.close_all()

    app.on_startup.append(start_worker)
    app.on_shutdown.append(stop_worker)
    return app


@dataclass
class RunningSimulator:
    """A simulator serving in the current event loop (tests, embedding)."""

    app: web.Application
    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def simulator(self) -> Simulator:
        return self.app[SIM_KEY]

    async def close(self) -> None:
        await self.runner.cleanup()


def log_banner(config: SimConfig, port: int) -> None:
    log.warning(
        "%s: a SIMULATOR of the ComfyUI %s HTTP/WebSocket API (no GPU, no models, generated pictures; "
        "model files %s) listening on http://%s:%s (python %s on %s, output %s)",
        SIM_NAME,
        config.comfyui_version,
        f"listed from {config.models_dir}" if config.models_dir else "present" if config.models_present else "absent",
        config.host,
        port,
        platform.python_version(),
        sys.platform,
        config.out,
    )


async def serve(config: SimConfig) -> RunningSimulator:
    """Start serving (port 0 picks a free port) and return once the socket is bound."""
    started = time.monotonic()
    if config.startup_delay > 0:
        log.warning("%s: simulated slow start, not listening for %.1fs", SIM_NAME, config.startup_delay)
        await asyncio.sleep(config.startup_delay)
    app = create_app(config)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    port = int(runner.addresses[0][1]) if runner.addresses else config.port
    log_banner(config, port)
    log.info("started in %.3fs", time.monotonic() - started)
    return RunningSimulator(app, runner, config.host, port)


async def run(config: SimConfig) -> None:
    """Serve until cancelled."""
    running = await serve(config)
    try:
        await asyncio.Event().wait()
    finally:
        await running.close()
