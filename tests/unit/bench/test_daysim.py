"""The studio-day simulation: its traces are the generator's, its runs are deterministic, and its books balance
(every request served, every billed second on some pod, never more than MAX_PODS live)."""

from __future__ import annotations

import math

import pytest

from bench.daysim.engine import MAX_PODS, Model, RunResult, simulate, variants
from bench.daysim.report import metrics
from bench.daysim.traces import DAY_S, QWEN, TRACES, WAN, Request, Trace, dumps, generate, load, path, presets

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def bursty_runs() -> dict[str, RunResult]:
    trace = load("bursty")
    return {variant.name: simulate(trace, variant) for variant in variants()}


@pytest.mark.parametrize("name", TRACES)
def test_committed_traces_are_the_generators_output(name: str) -> None:
    generated = generate(name)
    assert path(name).read_text() == dumps(generated)
    assert load(name) == generated


@pytest.mark.parametrize("name", TRACES)
def test_traces_are_a_studio_day(name: str) -> None:
    trace = load(name)
    assert 0 < len(trace.requests) <= 1500
    catalogue = presets()
    for request in trace.requests:
        preset = catalogue[(request.workflow, request.preset)]
        assert 0 <= request.t < DAY_S
        assert preset.low_s <= request.run_s <= preset.high_s
        assert request.video_s == (
            {"preview": 2.0, "standard": 5.0}[request.preset] if request.workflow == WAN else None
        )
    night = [r for r in trace.requests if r.t < 7 * 3600]
    assert len(night) <= 0.05 * len(trace.requests)
    batches = {r.batch for r in trace.requests if r.batch}
    if name == "big_batch":
        assert max(sum(r.batch == b for r in trace.requests) for b in batches) >= 200
    if name == "bursty":
        assert len(batches) >= 4
        assert all(8 <= sum(r.batch == b for r in trace.requests) <= 24 for b in batches)


def test_same_seed_same_day(bursty_runs: dict[str, RunResult]) -> None:
    again = simulate(load("bursty"), variants()[2])
    first = bursty_runs["economic"]
    assert again.waits == first.waits
    assert again.samples == first.samples
    assert [(p.id, p.running_s, p.stopped_s, p.cost) for p in again.pods] == [
        (p.id, p.running_s, p.stopped_s, p.cost) for p in first.pods
    ]
    assert metrics(again) == metrics(first)


def test_memoised_hold_changes_nothing(bursty_runs: dict[str, RunResult]) -> None:
    plain = simulate(load("bursty"), variants()[2], Model(memo=False))
    assert metrics(plain) == metrics(bursty_runs["economic"])


def test_the_books_balance(bursty_runs: dict[str, RunResult]) -> None:
    trace = load("bursty")
    for result in bursty_runs.values():
        assert not any(math.isnan(w) for w in result.waits), "every request is served"
        assert all(w >= 0 for w in result.waits)
        for request, wait, finished in zip(trace.requests, result.waits, result.finished_at, strict=True):
            assert finished == pytest.approx(request.t + wait + request.run_s)
        assert result.busy_s == pytest.approx(sum(r.run_s for r in trace.requests))
        assert result.images + sum(1 for r in trace.requests if r.video_s is not None) == len(trace.requests)
        assert result.end_s >= DAY_S and result.end_s >= max(result.finished_at)
        stopped_price, price = result.model.stopped_price_per_hr, result.variant.price_per_hr
        for pod in result.pods:
            assert pod.busy_s <= pod.running_s + 1e-6
            assert pod.running_s + pod.stopped_s <= result.end_s - pod.created_at + 1e-6, "billing stops at the end"
            assert pod.cost == pytest.approx((pod.running_s * price + pod.stopped_s * stopped_price) / 3600)
        assert result.max_live <= MAX_PODS
        assert all(s.starting + s.busy + s.idle <= MAX_PODS for s in result.samples)
        assert all(a.cost <= b.cost + 1e-9 for a, b in zip(result.samples, result.samples[1:], strict=False))
        assert result.samples[-1].cost <= result.cost + 1e-9
        assert len(result.samples) == math.floor(result.end_s / 60) + 1


def test_one_request_waits_one_boot_and_the_probe() -> None:
    """Demand creates a pod for the request at once; it is ready at the first 2 s probe tick after its boot."""
    trace = Trace("one", 0, "one request", (Request(100.0, QWEN, "fast", 40.0, None, None),))
    model = Model()
    result = simulate(trace, variants()[0], model)
    boot = result.pods[0]
    assert len(result.pods) == 1 and boot.created_at == 100.0
    ready = result.waits[0] + 100.0
    assert ready % model.probe_interval_s == 0
    assert 100.0 + model.create_boot_s[0] <= ready <= 100.0 + model.create_boot_s[1] + model.probe_interval_s
    assert boot.busy_s == 40.0
    # idle timeout 300 s, then stopped until the terminate timeout (3600 s): billed accordingly
    assert boot.running_s == pytest.approx(ready - 100.0 + 40.0 + 300.0, abs=model.probe_interval_s)
    assert boot.stopped_s == pytest.approx(3600.0, abs=model.probe_interval_s)
    assert boot.status.value == "terminated"


def test_the_weight_sweep_runs_economic_at_each_weight_and_its_default_is_the_main_run(
    bursty_runs: dict[str, RunResult],
) -> None:
    from bench.scenarios.day import WEIGHTS, weight_sweep
    from vibewave.pod_manager.policy import WAIT_WORTH

    main = {name: metrics(run) for name, run in bursty_runs.items()}
    rows = weight_sweep({"bursty": {"policies": main}}, Model())["bursty"]
    assert [r["wait_worth"] for r in rows] == list(WEIGHTS)
    default = next(r for r in rows if r["wait_worth"] == WAIT_WORTH)
    assert (default["wait_p95_s"], default["cost_usd"]) == (
        main["economic"]["wait_p95_s"],
        main["economic"]["cost_usd"],
    )
    costs = [r["cost_usd"] for r in rows]
    assert costs == sorted(costs) and costs[0] < costs[-1], "a dearer wait buys warmer pods: the bill grows with it"
    assert default["cost_vs_serverless_pct"] == pytest.approx(
        100 * (main["economic"]["cost_usd"] / main["serverless"]["cost_usd"] - 1), abs=0.1
    )
