"""Drive a live ComfyUI-compatible server (a real ComfyUI or the simulator) through fixed scenarios.

    python -m tests.conformance.live --url http://127.0.0.1:8190 [--against http://127.0.0.1:8191]
                                      [--scenario NAME ...] [--json FILE]

With one URL it prints what the server did in each scenario (observations) and how long its nodes took.
With `--against` it runs the same scenarios on the second server too and reports every difference in the
observations, plus node times whose ratio is outside 0.5..2; the exit code is 1 if anything differs. Use it
to check the simulator against a real ComfyUI (simulator README, "Checked against a real ComfyUI 0.3.64"):
start both on loopback, e.g. the simulator with `python -m vibewave.comfyui_sim --port 8191
--comfyui-version 0.3.64` (models absent, node costs at 1.0), and give both URLs. Every scenario uses fresh
colours, seeds and file prefixes, so servers that already ran other work can be compared; it does not
install, start or stop any server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import struct
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

GRAPHS = Path(__file__).parents[1] / "unit" / "comfyui_sim" / "graphs"
TRANSCRIPTS = Path(__file__).parent / "transcripts"
UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
TEMP_RE = re.compile(r"ComfyUI_temp_[a-z]{5}_")
TIMEOUT = 120.0


@dataclass
class Result:
    """What one scenario saw: comparable observations and node times (ms, by label)."""

    observations: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class Frames:
    """A WebSocket client recording (receive time, frame) for text frames and binary headers."""

    ws: aiohttp.ClientWebSocketResponse
    seen: list[tuple[float, dict[str, Any]]] = field(default_factory=list)

    async def next(self) -> dict[str, Any]:
        while True:
            msg = await self.ws.receive(timeout=TIMEOUT)
            now = time.monotonic()
            if msg.type == aiohttp.WSMsgType.TEXT:
                frame: dict[str, Any] = json.loads(msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                frame = {"type": f"binary:{struct.unpack('>I', msg.data[:4])[0]}", "data": {}}
            else:
                raise ConnectionError(f"socket closed ({msg.type})")
            self.seen.append((now, frame))
            return frame

    async def until(self, match: Callable[[dict[str, Any]], bool]) -> float:
        while True:
            frame = await self.next()
            if match(frame):
                return self.seen[-1][0]

    async def until_done(self, prompt_id: str) -> list[tuple[float, dict[str, Any]]]:
        start = len(self.seen)
        await self.until(lambda f: f["type"] == "executing" and f["data"] == {"node": None, "prompt_id": prompt_id})
        return self.seen[start:]


class Client:
    def __init__(self, url: str, http: aiohttp.ClientSession) -> None:
        self.url = url.rstrip("/")
        self.http = http
        self.token = uuid.uuid4().hex[:8]

    async def socket(self) -> tuple[str, Frames]:
        client_id = f"live-{uuid.uuid4().hex[:10]}"
        frames = Frames(await self.http.ws_connect(f"{self.url}/ws?clientId={client_id}"))
        await frames.next()
        return client_id, frames

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, str], bytes]:
        kwargs: dict[str, Any] = {} if body is None else {"json": body}
        async with self.http.request(method, self.url + path, **kwargs) as resp:
            return resp.status, dict(resp.headers), await resp.read()

    async def json(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        status, _, data = await self.request(method, path, body)
        try:
            return status, json.loads(data) if data else None
        except ValueError:
            return status, data.decode(errors="replace")

    async def prompt(self, prompt: dict[str, Any], client_id: str | None = None, **extra: Any) -> tuple[int, Any]:
        body: dict[str, Any] = {"prompt": prompt, **extra}
        if client_id is not None:
            body["client_id"] = client_id
        return await self.json("POST", "/prompt", body)

    async def drain(self) -> None:
        """Wait (bounded) until the server's queue is empty."""
        for _ in range(int(TIMEOUT / 0.05)):
            if not (await self.json("GET", "/prompt"))[1]["exec_info"]["queue_remaining"]:
                return
            await asyncio.sleep(0.05)

    async def run(self, prompt: dict[str, Any]) -> tuple[str, list[tuple[float, dict[str, Any]]]]:
        client_id, frames = await self.socket()
        try:
            status, body = await self.prompt(prompt, client_id)
            if status != 200:
                raise AssertionError(f"prompt rejected: {status} {body}")
            return body["prompt_id"], await frames.until_done(body["prompt_id"])
        finally:
            await frames.ws.close()


def color() -> int:
    return random.randrange(1, 0xFFFFFF)


def empty(width: int, height: int, batch: int = 1) -> dict[str, Any]:
    return {
        "class_type": "EmptyImage",
        "inputs": {"width": width, "height": height, "batch_size": batch, "color": color()},
    }


def node_times(prompt: dict[str, Any], frames: list[tuple[float, dict[str, Any]]]) -> dict[str, float]:
    """ms per executed node, from its `executing` frame to the progress_state that marks it finished."""
    started: dict[str, float] = {}
    finished: dict[str, float] = {}
    for at, frame in frames:
        data = frame["data"]
        if frame["type"] == "executing" and data.get("node") is not None:
            started[data["node"]] = at
        if frame["type"] == "progress_state":
            for node, state in data["nodes"].items():
                if state["state"] == "finished":
                    finished.setdefault(node, at)
    return {
        f"{node}:{prompt[node]['class_type']}": round((finished[node] - started[node]) * 1000, 1)
        for node in started
        if node in finished
    }


def kinds(frames: list[tuple[float, dict[str, Any]]]) -> list[str]:
    return [f["type"] for _, f in frames if f["type"] not in ("status", "progress_state")]


def header_names(headers: dict[str, str]) -> list[str]:
    volatile = {"date", "server", "content-length", "transfer-encoding", "etag", "last-modified", "connection"}
    return sorted(k.lower() for k in headers if k.lower() not in volatile)


# --- scenarios ------------------------------------------------------------------------------------------


async def introspection(c: Client) -> Result:
    r = Result()
    _, stats = await c.json("GET", "/system_stats")
    system = stats["system"]
    r.observations["system_stats"] = {
        "keys": sorted(system),
        "comfyui_version": system["comfyui_version"],
        "os": system["os"],
        "device_keys": sorted(stats["devices"][0]),
    }
    r.observations["features"] = (await c.json("GET", "/features"))[1]
    r.observations["models"] = (await c.json("GET", "/models"))[1]
    for method, path in (("GET", "/nonexistent"), ("POST", "/nonexistent"), ("GET", "/api/jobs")):
        status, headers, body = await c.request(method, path)
        r.observations[f"{method} {path}"] = {
            "status": status,
            "content_type": headers.get("Content-Type"),
            "body": body.decode(errors="replace")[:80],
        }
    _, info = await c.json("GET", "/object_info/SaveAnimatedWEBP")
    r.observations["object_info SaveAnimatedWEBP"] = info
    return r


async def wording(c: Client) -> Result:
    r = Result()
    base = {"1": empty(64, 64), "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}}}
    base["2"]["inputs"]["filename_prefix"] = f"live_{c.token}"
    unknown = {**base, "3": {"class_type": "NoSuchNodeClass", "inputs": {}}}
    untyped = {**base, "3": {"inputs": {}}}
    for label, prompt in (("unknown class", unknown), ("missing class_type", untyped)):
        status, body = await c.prompt(prompt)
        r.observations[label] = {"status": status, "body": body}
    for label, prompt_id in (("prompt_id my-job", f"my-job-{c.token}"), ("prompt_id null", None)):
        status, body = await c.prompt({**base, "1": empty(64, 64)}, prompt_id=prompt_id)
        r.observations[label] = {
            "status": status,
            "prompt_id": body.get("prompt_id") if isinstance(body, dict) else None,
            "error": body.get("error") if isinstance(body, dict) else body,
        }
    await c.drain()
    return r


async def models_absent(c: Client) -> Result:
    r = Result()
    for name in ("qwen_image_api.json", "qwen_image_lightning4_api.json", "wan22_t2v_5b_api.json"):
        status, body = await c.prompt(json.loads((GRAPHS / name).read_text()))
        r.observations[name] = {"status": status, "body": body}
    r.observations["/models/diffusion_models"] = (await c.json("GET", "/models/diffusion_models"))[1]
    return r


async def basic(c: Client) -> Result:
    r = Result()
    prompt = {
        "1": empty(512, 512),
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": f"live_{c.token}"}},
    }
    prompt_id, frames = await c.run(prompt)
    r.observations["frames"] = kinds(frames)
    _, history = await c.json("GET", f"/history/{prompt_id}")
    entry = history[prompt_id]
    r.observations["history keys"] = list(entry)
    r.observations["history extra_data keys"] = sorted(entry["prompt"][3])
    r.observations["history outputs"] = entry["outputs"]
    r.observations["history messages"] = [m[0] for m in entry["status"]["messages"]]
    image = entry["outputs"]["2"]["images"][0]
    status, headers, _ = await c.request("GET", f"/view?filename={image['filename']}&subfolder=&type=output")
    r.observations["/view"] = {"status": status, "headers": header_names(headers)}
    r.timings.update(node_times(prompt, frames))
    return r


async def cache(c: Client) -> Result:
    """A, B, A: 0.3.64's classic cache runs A again, 0.33's keeps it."""
    r = Result()
    a = {"1": empty(64, 64), "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    b = {"1": empty(64, 64), "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    cached = []
    for prompt in (a, b, a, a):
        _, frames = await c.run(prompt)
        cached.append(next(f["data"]["nodes"] for _, f in frames if f["type"] == "execution_cached"))
    r.observations["execution_cached A,B,A,A"] = cached
    ids = []
    for node_id in ("2", "7"):
        prompt = {
            "1": empty(96, 64),
            node_id: {"class_type": "GetImageSize", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "PreviewAny", "inputs": {"source": [node_id, 0]}},
        }
        prompt["1"]["inputs"]["color"] = 0x4242 + len(c.token)
        _, frames = await c.run(prompt)
        ids.append(next(f["data"]["nodes"] for _, f in frames if f["type"] == "execution_cached"))
    r.observations["GetImageSize under ids 2 then 7: cached"] = ids
    return r


def blur_chain() -> dict[str, Any]:
    events = json.loads((TRANSCRIPTS / "10_interrupt_running.json").read_text())["events"]
    post = next(e for e in events if e["kind"] == "http" and e["request"]["path"] == "/prompt")
    prompt: dict[str, Any] = post["request"]["json"]["prompt"]
    prompt["1"]["inputs"]["color"] = color()
    prompt["2"]["inputs"]["filename_prefix"] = "live_long"
    return prompt


async def interrupt(c: Client) -> Result:
    """Transcript 10: interrupt once the 2nd blur starts; the running blur finishes first."""
    r = Result()
    client_id, frames = await c.socket()
    try:
        prompt = blur_chain()
        _, body = await c.prompt(prompt, client_id)
        prompt_id = body["prompt_id"]
        first = await frames.until(lambda f: f["type"] == "executing" and f["data"].get("node") == "10")
        second = await frames.until(lambda f: f["type"] == "executing" and f["data"].get("node") == "11")
        await c.request("POST", "/interrupt", {"prompt_id": prompt_id})
        sent = time.monotonic()
        stopped = await frames.until(lambda f: f["type"] == "execution_interrupted")
        await frames.until(lambda f: f["type"] == "executing" and f["data"].get("node") is None)
        interrupted = next(f for _, f in frames.seen if f["type"] == "execution_interrupted")["data"]
        r.observations["interrupted"] = {
            "node_id": interrupted["node_id"],
            "node_type": interrupted["node_type"],
            "executed": sorted(interrupted["executed"]),
        }
        r.observations["last frames"] = kinds(frames.seen)[-3:]
        r.timings["blur 10 (1536x1536, r31)"] = round((second - first) * 1000, 1)
        r.timings["interrupt -> execution_interrupted"] = round((stopped - sent) * 1000, 1)
    finally:
        await frames.ws.close()
    return r


def detailed(width: int, height: int, batch: int = 1) -> dict[str, Any]:
    """A noisy, slightly blurred picture (what savers are slow on), as nodes 'e', 'n', 'b'."""
    return {
        "e": empty(width, height, batch),
        "n": {"class_type": "ImageAddNoise", "inputs": {"image": ["e", 0], "seed": color(), "strength": 0.5}},
        "b": {"class_type": "ImageBlur", "inputs": {"image": ["n", 0], "blur_radius": 2, "sigma": 1.0}},
    }


def timing_graphs(token: str) -> dict[str, dict[str, Any]]:
    preview = {"class_type": "PreviewImage", "inputs": {"images": ["x", 0]}}
    graphs: dict[str, dict[str, Any]] = {}
    for size, radius in ((1536, 31), (1024, 15), (512, 7)):
        graphs[f"blur {size} r{radius}"] = {
            "e": empty(size, size),
            "x": {"class_type": "ImageBlur", "inputs": {"image": ["e", 0], "blur_radius": radius, "sigma": 2.0}},
            "p": preview,
        }
    for method in ("bilinear", "bicubic", "lanczos"):
        graphs[f"scale {method} 1536->768"] = {
            "e": empty(1536, 1536),
            "x": {
                "class_type": "ImageScale",
                "inputs": {
                    "image": ["e", 0],
                    "upscale_method": method,
                    "width": 768,
                    "height": 768,
                    "crop": "disabled",
                },
            },
            "p": preview,
        }
    graphs["save detailed 1024"] = {
        **detailed(1024, 1024),
        "s": {"class_type": "SaveImage", "inputs": {"images": ["b", 0], "filename_prefix": f"live_{token}"}},
    }
    for lossless in (True, False):
        graphs[f"webp {'lossless' if lossless else 'lossy'} 4x512"] = {
            **detailed(512, 512, 4),
            "s": {
                "class_type": "SaveAnimatedWEBP",
                "inputs": {
                    "images": ["b", 0],
                    "filename_prefix": f"live_{token}",
                    "fps": 8.0,
                    "lossless": lossless,
                    "quality": 80,
                    "method": "default",
                },
            },
        }
    graphs["apng 4x512"] = {
        **detailed(512, 512, 4),
        "s": {
            "class_type": "SaveAnimatedPNG",
            "inputs": {"images": ["b", 0], "filename_prefix": f"live_{token}", "fps": 8.0, "compress_level": 4},
        },
    }
    graphs["video 8x512"] = {
        **detailed(512, 512, 8),
        "v": {"class_type": "CreateVideo", "inputs": {"images": ["b", 0], "fps": 8.0}},
        "s": {
            "class_type": "SaveVideo",
            "inputs": {"video": ["v", 0], "filename_prefix": f"live_{token}", "format": "mp4", "codec": "h264"},
        },
    }
    return graphs


async def timing(c: Client, repeats: int = 2) -> Result:
    """Node times of model-free graphs (the cost model's calibration set, abridged); the fastest of
    `repeats` runs with fresh colours, so a GC pause or a busy second core in one run does not count."""
    r = Result()
    for _ in range(repeats):
        for label, prompt in timing_graphs(c.token).items():
            _, frames = await c.run(prompt)
            for node, ms in node_times(prompt, frames).items():
                if not node.startswith(("e:", "n:", "b:")):
                    key = f"{label} {node.split(':', 1)[1]}"
                    r.timings[key] = min(ms, r.timings.get(key, ms))
    return r


def webp_chunks(data: bytes) -> list[dict[str, Any]]:
    out = []
    pos = 12
    while pos + 8 <= len(data):
        kind = data[pos : pos + 4].decode(errors="replace")
        (size,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        payload = data[pos + 8 : pos + 8 + size]
        chunk: dict[str, Any] = {"kind": kind}
        if kind == "VP8X":
            chunk["flags"] = payload[0]
        if kind == "ANMF":
            chunk.update(duration=int.from_bytes(payload[12:15], "little"), flags=payload[15], data=payload[16:20])
        out.append(chunk)
        pos += 8 + size + (size & 1)
    for chunk in out:
        if isinstance(chunk.get("data"), bytes):
            chunk["data"] = chunk["data"].decode(errors="replace")
    return out


async def animated_webp(c: Client) -> Result:
    """Transcript 22 prompt 2's SaveAnimatedWEBP: history shape, /view headers, file layout."""
    r = Result()
    prefix = f"live_anim_{c.token}"
    prompt = {
        "0": empty(256, 192, 12),
        "1": {"class_type": "ImageAddNoise", "inputs": {"image": ["0", 0], "seed": 42, "strength": 0.5}},
        "5": {
            "class_type": "SaveAnimatedWEBP",
            "inputs": {
                "images": ["1", 0],
                "filename_prefix": prefix,
                "fps": 12.0,
                "lossless": False,
                "quality": 80,
                "method": "default",
            },
        },
        "6": {
            "class_type": "SaveAnimatedWEBP",
            "inputs": {
                "images": ["0", 0],
                "filename_prefix": prefix + "_flat",
                "fps": 6.0,
                "lossless": True,
                "quality": 80,
                "method": "default",
            },
        },
    }
    prompt_id, frames = await c.run(prompt)
    _, history = await c.json("GET", f"/history/{prompt_id}")
    r.observations["history outputs"] = history[prompt_id]["outputs"]
    executed = {f["data"]["node"] for _, f in frames if f["type"] == "executed"}
    r.observations["executed nodes"] = sorted(executed)
    for node in ("5", "6"):
        name = history[prompt_id]["outputs"][node]["images"][0]["filename"]
        status, headers, data = await c.request("GET", f"/view?filename={name}&subfolder=&type=output")
        r.observations[f"/view {node}"] = {"status": status, "headers": header_names(headers)}
        r.observations[f"file {node}"] = webp_chunks(data)
    return r


SCENARIOS: dict[str, Callable[[Client], Awaitable[Result]]] = {
    "introspection": introspection,
    "wording": wording,
    "models_absent": models_absent,
    "basic": basic,
    "cache": cache,
    "interrupt": interrupt,
    "animated_webp": animated_webp,
    "timing": timing,
}


# --- comparing ------------------------------------------------------------------------------------------

# Differences between a real ComfyUI and the simulator that are known and documented (simulator README,
# "Deliberate differences"): (scenario, regex over the difference line, why). They are listed, not counted.
KNOWN: list[tuple[str, str, str]] = [
    ("animated_webp", r'^/file \d+/\d+/data: "VP8 " != "VP8L"$', "no VP8 (lossy) encoder: frames are always VP8L"),
]


def normalise(value: Any) -> Any:
    if isinstance(value, str):
        return TEMP_RE.sub("ComfyUI_temp_<rand>_", UUID_RE.sub("<uuid>", value))
    if isinstance(value, list):
        return [normalise(v) for v in value]
    if isinstance(value, dict):
        return {normalise(k): normalise(v) for k, v in value.items() if k != "traceback"}
    return value


def differences(path: str, a: Any, b: Any) -> list[str]:
    if type(a) is not type(b):
        return [f"{path}: {json.dumps(a)[:300]} != {json.dumps(b)[:300]}"]
    if isinstance(a, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                side = "only in --url" if key in a else "only in --against"
                out.append(f"{path}/{key}: {side}: {json.dumps(a.get(key, b.get(key)))[:300]}")
            else:
                out += differences(f"{path}/{key}", a[key], b[key])
        return out
    if isinstance(a, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(f"{path}/{i}", x, y)]
    return [] if a == b else [f"{path}: {json.dumps(a)[:300]} != {json.dumps(b)[:300]}"]


async def run_all(url: str, names: list[str]) -> dict[str, Result]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as http:
        client = Client(url, http)
        results = {}
        for name in names:
            result = await SCENARIOS[name](client)
            # File prefixes carry a per-run token so runs never collide; it is not part of the comparison.
            result.observations = json.loads(json.dumps(result.observations).replace(client.token, "<token>"))
            results[name] = result
            print(f"  {url}: {name} done", file=sys.stderr)
        return results


def report(results: dict[str, Result], other: dict[str, Result] | None) -> tuple[str, int]:
    lines: list[str] = []
    problems = 0
    for name, result in results.items():
        lines.append(f"== {name}")
        observed = normalise(result.observations)
        if other is None:
            lines += [f"  {k}: {json.dumps(v)[:400]}" for k, v in observed.items()]
        else:
            diffs = differences("", observed, normalise(other[name].observations))
            for diff in diffs:
                why = next((w for n, pattern, w in KNOWN if n == name and re.match(pattern, diff)), None)
                problems += why is None
                lines.append(f"  DIFF {diff}" if why is None else f"  known: {diff} ({why})")
            if not diffs:
                lines.append("  observations: same")
        for label, ms in result.timings.items():
            if other is None:
                lines.append(f"  time {label}: {ms} ms")
                continue
            theirs = other[name].timings.get(label)
            ratio = (theirs / ms) if theirs is not None and ms > 0 else None
            close = (ratio is not None and 0.5 <= ratio <= 2) or max(ms, theirs or 0) < 20
            flag = "" if close else "  <-- differs"
            problems += bool(flag)
            ratio_text = f"{ratio:.2f}" if ratio is not None else "-"
            lines.append(f"  time {label}: {ms} ms vs {theirs} ms (x{ratio_text}){flag}")
    return "\n".join(lines), problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.conformance.live", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the server to drive (e.g. a real ComfyUI)")
    parser.add_argument("--against", help="a second server to compare with (e.g. the simulator)")
    parser.add_argument("--scenario", action="append", choices=list(SCENARIOS), help="run only these (repeatable)")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args(argv)
    names = args.scenario or list(SCENARIOS)
    results = asyncio.run(run_all(args.url, names))
    other = asyncio.run(run_all(args.against, names)) if args.against else None
    text, problems = report(results, other)
    print(text)
    if args.json:
        raw = {
            url: {n: r.__dict__ for n, r in res.items()} for url, res in ((args.url, results), (args.against, other))
        }
        args.json.write_text(json.dumps(raw, indent=1, default=str))
    if other is not None:
        print(f"\n{problems} difference(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
