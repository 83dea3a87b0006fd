"""Seeded arrival traces of a studio day: `python -m bench.daysim.traces` rewrites `bench/daysim/traces/*.jsonl`.

A studio works ~09:00-19:00 with a lunch lull at 12:30-13:30 and is near silent at night. Three days:

- `steady`: Poisson arrivals following that day's shape, singles of every preset.
- `bursty`: storyboard sessions — a batch of 8-24 images at once, then a few Wan clips 10-30 min later —
  with quiet hours between the bursts and a trickle of singles.
- `big_batch`: one batch of a few hundred images in the morning plus some clips, near nothing otherwise.

Each request's run time is drawn uniformly from its preset's `expected_seconds` in the workflow catalogue
(the API document's generation-time table); a Wan clip's length is its frames less one over 24 fps (Wan's
frame counts are 4n+1: 49 → 2 s, 121 → 5 s). The files are committed so a result names the exact day it
replayed; the tests check that regenerating them gives the same bytes.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

from vibewave.contracts.workflows import load_catalog

DAY_S = 86_400.0
FPS = 24
QWEN = "comfyui_image_qwen"
WAN = "comfyui_video_wan22"
TRACE_DIR = Path(__file__).resolve().parent / "traces"
MAX_REQUESTS = 1500

# Relative arrival rate by hour of the day (start hour, rate): a studio's working day with a lunch lull.
DAY_SHAPE = (
    (0.0, 0.01), (7.0, 0.1), (8.0, 0.4), (9.0, 1.0), (12.5, 0.3), (13.5, 1.0), (18.0, 0.6), (19.0, 0.15),
    (21.0, 0.03),
)  # fmt: skip


@dataclass(frozen=True)
class Preset:
    """What a preset costs a pod: the catalogue's expected run range, and the video seconds a clip yields."""

    workflow: str
    name: str
    low_s: float
    high_s: float
    video_s: float | None

    @property
    def midpoint_s(self) -> float:
        """What the scheduler expects of a request of this preset (it knows the catalogue, not the real run)."""
        return (self.low_s + self.high_s) / 2


@dataclass(frozen=True)
class Request:
    t: float  # arrival, seconds after midnight
    workflow: str
    preset: str
    run_s: float  # how long it really runs on a pod
    video_s: float | None  # seconds of video a Wan clip yields (None: an image)
    batch: str | None


@dataclass(frozen=True)
class Trace:
    name: str
    seed: int
    description: str
    requests: tuple[Request, ...]


@cache
def presets() -> dict[tuple[str, str], Preset]:
    """The presets the traces use, read from the shipped workflow catalogue."""
    catalog = load_catalog()
    found: dict[tuple[str, str], Preset] = {}
    for workflow in (QWEN, WAN):
        definition = catalog[workflow].definition
        for name, preset in definition.presets.items():
            if preset.expected_seconds is None:
                raise ValueError(f"{workflow} preset {name!r} has no expected_seconds")
            low, high = preset.expected_seconds
            length = preset.inputs.get("length")
            video = (int(length) - 1) / FPS if definition.kind == "video" and length is not None else None
            found[(workflow, name)] = Preset(workflow, name, float(low), float(high), video)
    return found


def rate_at(t: float) -> float:
    """The day's relative arrival rate at second `t` (1.0 at the busiest hours)."""
    hour = (t % DAY_S) / 3600
    rate = DAY_SHAPE[0][1]
    for start, value in DAY_SHAPE:
        if hour >= start:
            rate = value
    return rate


def _request(rng: random.Random, t: float, workflow: str, preset: str, batch: str | None = None) -> Request:
    found = presets()[(workflow, preset)]
    run_s = round(rng.uniform(found.low_s, found.high_s), 1)
    return Request(round(t, 3), workflow, preset, run_s, found.video_s, batch)


def _pick(rng: random.Random, mix: tuple[tuple[str, str, float], ...]) -> tuple[str, str]:
    workflow, preset, _ = rng.choices(mix, weights=[w for *_, w in mix])[0]
    return workflow, preset


SINGLES = ((QWEN, "fast", 0.35), (QWEN, "quality", 0.35), (QWEN, "ultra", 0.10), (WAN, "preview", 0.12),
           (WAN, "standard", 0.08))  # fmt: skip
STORYBOARD = ((QWEN, "fast", 0.6), (QWEN, "quality", 0.4))
CLIPS = ((WAN, "preview", 0.6), (WAN, "standard", 0.4))


def _poisson(rng: random.Random, per_day: float) -> list[float]:
    """Arrival times of a Poisson process shaped like the day, `per_day` expected (thinning a flat one)."""
    area = sum(
        (end - start) * rate for (start, rate), (end, _) in zip(DAY_SHAPE, (*DAY_SHAPE[1:], (24.0, 0.0)), strict=True)
    )
    peak = per_day / (area * 3600)
    times: list[float] = []
    t = rng.expovariate(peak)
    while t < DAY_S:
        if rng.random() < rate_at(t):
            times.append(t)
        t += rng.expovariate(peak)
    return times


def steady(rng: random.Random) -> list[Request]:
    return [_request(rng, t, *_pick(rng, SINGLES)) for t in _poisson(rng, 650)]


def bursty(rng: random.Random) -> list[Request]:
    requests = [_request(rng, t, *_pick(rng, SINGLES)) for t in _poisson(rng, 20)]
    t = 9 * 3600 + rng.uniform(0, 1800)
    number = 0
    while t < 19 * 3600:
        if 12.5 * 3600 <= t < 13.5 * 3600:
            t = 13.5 * 3600 + rng.uniform(0, 900)
        number += 1
        batch = f"storyboard-{number:02d}"
        requests += [_request(rng, t, *_pick(rng, STORYBOARD), batch) for _ in range(rng.randint(8, 24))]
        requests += [_request(rng, t + rng.uniform(600, 1800), *_pick(rng, CLIPS)) for _ in range(rng.randint(2, 5))]
        t += rng.uniform(45 * 60, 150 * 60)
    return requests


def big_batch(rng: random.Random) -> list[Request]:
    requests = [_request(rng, t, *_pick(rng, SINGLES)) for t in _poisson(rng, 15)]
    t = 9.5 * 3600 + rng.uniform(0, 900)
    requests += [_request(rng, t, *_pick(rng, STORYBOARD), "music-video") for _ in range(rng.randint(250, 350))]
    requests += [
        _request(rng, rng.uniform(10 * 3600, 12 * 3600), *_pick(rng, CLIPS)) for _ in range(rng.randint(15, 25))
    ]
    return requests


GENERATORS: dict[str, tuple[int, str, Callable[[random.Random], list[Request]]]] = {
    "steady": (1101, "Poisson singles through the working day (~650), quiet night, lunch lull", steady),
    "bursty": (2202, "storyboard bursts (8-24 images at once, then 2-5 Wan clips 10-30 min later), quiet hours "
               "between, a trickle of singles", bursty),
    "big_batch": (3303, "one music-video batch of 250-350 images at ~09:30, 15-25 clips 10:00-12:00, "
                  "near nothing otherwise", big_batch),
}  # fmt: skip
TRACES = tuple(GENERATORS)


def generate(name: str) -> Trace:
    seed, description, make = GENERATORS[name]
    requests = sorted(make(random.Random(seed)), key=lambda r: r.t)
    if len(requests) > MAX_REQUESTS or not all(0 <= r.t < DAY_S for r in requests):
        raise ValueError(f"trace {name}: {len(requests)} requests, or one outside the day")
    return Trace(name, seed, description, tuple(requests))


def dumps(trace: Trace) -> str:
    """The trace as JSON lines: a header (name, seed, description, count), then one request per line."""
    header = {"trace": trace.name, "seed": trace.seed, "description": trace.description,
              "requests": len(trace.requests)}  # fmt: skip
    return "".join(json.dumps(line) + "\n" for line in (header, *(asdict(r) for r in trace.requests)))


def path(name: str) -> Path:
    return TRACE_DIR / f"{name}.jsonl"


def load(name_or_path: str | Path) -> Trace:
    """A committed trace, by name (`steady`) or path."""
    file = path(name_or_path) if isinstance(name_or_path, str) and name_or_path in GENERATORS else Path(name_or_path)
    header, *lines = file.read_text().splitlines()
    head = json.loads(header)
    requests = tuple(Request(**json.loads(line)) for line in lines)
    if len(requests) != head["requests"] or any(not math.isfinite(r.t) for r in requests):
        raise ValueError(f"{file}: header says {head['requests']} requests, found {len(requests)}")
    return Trace(head["trace"], head["seed"], head["description"], requests)


def main() -> None:
    TRACE_DIR.mkdir(parents=True, exist_ok=True)
    for name in TRACES:
        trace = generate(name)
        path(name).write_text(dumps(trace))
        print(f"{path(name)}: {len(trace.requests)} requests (seed {trace.seed})")


if __name__ == "__main__":
    main()
