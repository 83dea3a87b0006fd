"""tests/conformance/live.py keeps working: two simulators of the same version agree, two versions do not."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conformance import live
from vibewave.comfyui_sim import Faults, SimConfig, serve

pytestmark = pytest.mark.integration

QUICK = ["introspection", "wording", "models_absent", "basic", "cache", "animated_webp"]


async def test_same_version_agrees_and_versions_differ(tmp_path: Path) -> None:
    sims = [
        await serve(SimConfig(port=0, base_dir=tmp_path / name, comfyui_version=version, faults=Faults(step_time=0.01)))
        for name, version in (("a", "0.3.64"), ("b", "0.3.64"), ("c", "0.33.0"))
    ]
    try:
        a, b, c = [await live.run_all(sim.url, QUICK) for sim in sims]
    finally:
        for sim in sims:
            await sim.close()
    text, problems = live.report(a, b)
    assert problems == 0, text
    text, problems = live.report(a, c)
    assert "DIFF /unknown class/body/error/type" in text
    assert 'DIFF /execution_cached A,B,A,A/2: [] != ["1", "2"]' in text
    assert problems > 0
