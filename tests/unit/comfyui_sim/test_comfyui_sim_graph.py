"""Execution order and cache keys follow ComfyUI's graph.py (orders seen in the transcripts)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vibewave.comfyui_sim.catalogue import Catalogue
from vibewave.comfyui_sim.config import DEFAULT_MODELS
from vibewave.comfyui_sim.graph import ExecutionList, OutputCache, signatures

pytestmark = pytest.mark.unit

GRAPHS = Path(__file__).parent / "graphs"


def order(prompt: dict[str, Any], outputs: list[str], cached: frozenset[str] = frozenset()) -> list[str]:
    catalogue = Catalogue(DEFAULT_MODELS, Path("/nonexistent"))
    ex = ExecutionList(prompt, lambda n: catalogue.is_output(prompt[n]["class_type"]), lambda n: n in cached)
    for o in outputs:
        ex.add_node(o)
    out = []
    while not ex.is_empty():
        node = ex.stage()
        out.append(node)
        ex.complete(node)
    return out


def image(color: int, batch: int = 1) -> dict[str, Any]:
    return {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": batch, "color": color}}


def test_colortransfer_order_matches_scenario_06() -> None:
    prompt = {
        "1": image(1, 8),
        "2": image(2),
        "3": {
            "class_type": "ColorTransfer",
            "inputs": {"image_target": ["1", 0], "image_ref": ["2", 0], "method": "reinhard_lab"},
        },
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "x"}},
    }
    assert order(prompt, ["4"]) == ["2", "1", "3", "4"]


def test_qwen_graph_runs_vae_loader_first() -> None:
    prompt = json.loads((GRAPHS / "qwen_image_api.json").read_text())
    assert order(prompt, ["60"])[0] == "39"
    assert order(prompt, ["60"])[-3:] == ["3", "8", "60"]


def test_several_outputs_are_picked_first_when_ready() -> None:
    prompt = {
        "0": image(1, 12),
        "1": {"class_type": "ImageAddNoise", "inputs": {"image": ["0", 0], "seed": 42, "strength": 0.5}},
        "2": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 12.0}},
        "3": {"class_type": "SaveVideo", "inputs": {"video": ["2", 0], "filename_prefix": "v"}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}},
        "5": {"class_type": "SaveAnimatedPNG", "inputs": {"images": ["1", 0]}},
        "6": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    assert order(prompt, ["4", "3", "6", "5"]) == ["0", "1", "4", "6", "5", "2", "3"]


def test_cached_inputs_are_not_scheduled() -> None:
    prompt = {
        "1": image(1),
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    assert order(prompt, ["2"], frozenset({"1", "2"})) == ["2"]


def test_signatures_ignore_ids_but_follow_inputs() -> None:
    a = {"1": image(5), "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}
    b = {"7": image(5), "9": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "x"}}}
    c = {"1": image(6), "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}
    sa, sb, sc = (signatures(p, lambda n: None) for p in (a, b, c))
    assert sa["2"] == sb["9"]
    assert sa["2"] != sc["2"]


def test_output_cache_is_lru() -> None:
    cache = OutputCache(2)
    cache.put("a", (1,), None)
    cache.put("b", (2,), None)
    assert cache.get("a") == ((1,), None)
    cache.put("c", (3,), None)
    assert cache.get("b") is None
    assert cache.get("a") is not None
