"""The fleet policies' decisions on hand-made situations (no I/O: the same code pod-manager and the studio-day
benchmark run)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from vibewave.contracts.events import PodNeed, PodRecord, PodStatus
from vibewave.pod_manager.fleet import FleetLimits, FleetPlan
from vibewave.pod_manager.policy import (
    WAIT_WORTH,
    EconomicPolicy,
    FleetMemory,
    FleetSituation,
    ServerlessPolicy,
    make_policy,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PRICE = 0.69  # $/h of an RTX 4090 in Secure Cloud (the emulator's catalogue)
LIMITS = FleetLimits(max_pods=5, min_warm=0, idle_timeout_s=300.0, terminate_timeout_s=3600.0)


def pod(n: int, status: PodStatus = PodStatus.READY, price: float | None = PRICE) -> PodRecord:
    return PodRecord(
        id=f"p{n}", name=f"vibewave-p{n}", provider="runpod", status=status, cost_per_hr=price,
        created_at=T0, updated_at=T0,
    )  # fmt: skip


def situation(
    needs: list[PodNeed],
    pods: list[PodRecord],
    *,
    busy: tuple[str, ...] = (),
    idle: dict[str, float] | None = None,
    stopped: dict[str, float] | None = None,
    price: float | None = PRICE,
    stopped_price: float = 0.0,
) -> FleetSituation:
    return FleetSituation(
        needs=needs, pods=pods, busy=set(busy), idle_for=idle or {}, stopped_for=stopped or {},
        price=lambda _gpu_class: price, stopped_price=stopped_price,
    )  # fmt: skip


def fast(waiting: int = 0, running: int = 0, *, left_s: float = 0.0, oldest_s: float = 10.0) -> PodNeed:
    """Qwen `fast` requests: 45 s each by the catalogue's midpoint."""
    return PodNeed(
        waiting=waiting, running=running, waiting_work_s=45.0 * waiting, running_left_s=left_s, oldest_wait_s=oldest_s
    )


def memory(
    *, create_s: float = 75.0, resume_s: float = 75.0, gaps: tuple[float, ...] = (), level: int = 1
) -> FleetMemory:
    """A memory that has seen these boots and these quiet gaps at `level` (the k-th pod's next need)."""
    seen = FleetMemory(create_boot_s=create_s, resume_boot_s=resume_s)
    now = 0.0
    for gap in gaps:
        seen.observe(now, level, level)
        seen.observe(now + 1.0, level - 1, level)
        now += 1.0 + gap
        seen.observe(now, level, level)
    return seen


def plan(name: str, fleet: FleetSituation, seen: FleetMemory | None = None, limits: FleetLimits = LIMITS) -> FleetPlan:
    return make_policy(name).plan(fleet, seen or FleetMemory(), limits)


# ------------------------------------------------------------------------- a burst just after a pod stopped


def test_a_burst_just_after_a_pod_stopped_resumes_it_only_when_the_busy_pods_will_not_drain_it_first():
    seen = memory(create_s=75.0, resume_s=40.0)
    pods = [pod(1, PodStatus.STOPPED), pod(2), pod(3)]
    small = situation([fast(waiting=2, running=2, left_s=10.0)], pods, busy=("p2", "p3"), stopped={"p1": 20.0})
    ours = plan("economic", small, seen)
    assert ours.resume == [] and ours.create == [], (
        "two 45 s jobs, the busy pods free in 5 s: they are done before a resume (~47 s with its risk) is up"
    )
    today = plan("demand", small)
    assert today.resume == ["p1"] and today.create == [0], "today's policy: a pod per request"
    big = situation([fast(waiting=8, running=2, left_s=10.0)], pods, busy=("p2", "p3"), stopped={"p1": 20.0})
    burst = plan("economic", big, seen)
    assert burst.resume == ["p1"] and burst.create == [0, 0], "the stopped pod first (its image is cached), then new"


def test_a_pod_idle_between_bursts_that_came_back_quickly_is_kept_warm():
    fleet = situation([], [pod(1)], idle={"p1": 45.0})
    seen = memory(gaps=(60.0, 70.0, 80.0, 90.0))
    assert EconomicPolicy.hold_s(seen, 1) >= 90.0, "every gap seen was shorter than a cold start's worth"
    ours = plan("economic", fleet, seen)
    assert ours.stop == [] and ours.terminate == [], "kept: the next burst is expected within its hold"
    serverless = plan("serverless", fleet, limits=FleetLimits(5, 0, 5.0, 3600.0))
    assert serverless.terminate == ["p1"], "RunPod Serverless' 5 s idle timeout: the burst pays a cold start"


def test_a_pod_is_not_added_when_a_running_one_frees_up_before_a_new_one_could_boot():
    fleet = situation([fast(waiting=1, running=1, left_s=10.0)], [pod(1)], busy=("p1",))
    assert plan("economic", fleet).create == [], "55 s of work left, a boot takes 75 s: the waiting one waits 10 s"
    assert plan("demand", fleet).create == [0]
    first = situation([fast(waiting=1)], [])
    assert plan("economic", first).create == [0], "nothing serves: one pod is always started"


def test_a_big_batch_scales_to_the_maximum_and_never_past_it():
    fleet = situation([fast(waiting=200)], [pod(1), pod(2, PodStatus.STARTING)], busy=("p1",))
    assert plan("economic", fleet).create == [0, 0, 0], "5 pods at most, the two there included"
    assert plan("serverless", fleet).create == [0, 0, 0]


# -------------------------------------------------------------------------------------- a long quiet hour


def test_in_a_long_quiet_hour_an_idle_pod_is_let_go_at_once_and_terminated_when_a_resume_saves_nothing():
    fleet = situation([], [pod(1)], idle={"p1": 5.0})
    quiet = memory(gaps=(3600.0, 4000.0, 5000.0))
    assert EconomicPolicy.hold_s(quiet, 1) == 0.0, "an hour idle costs far more than the cold start it spares"
    ours = plan("economic", fleet, quiet)
    assert ours.terminate == ["p1"] and ours.stop == [], (
        "a resume boots as long as a create (the container disk is wiped): nothing to keep it stopped for"
    )
    assert plan("demand", fleet).stop == [], "today's policy pays 300 s of idle first"


def test_in_a_long_quiet_hour_a_pod_is_stopped_when_its_resume_is_quicker_and_seldom_fails():
    volume = 0.20 * 20 / 730  # a stopped pod's 20 GB volume disk at RunPod's $0.20/GB/month, per hour
    fleet = situation([], [pod(1)], idle={"p1": 5.0}, stopped_price=volume)
    quick = memory(create_s=100.0, resume_s=40.0, gaps=(20000.0, 30000.0, 40000.0))
    assert plan("economic", fleet, quick).stop == ["p1"]
    risky = memory(create_s=100.0, resume_s=40.0, gaps=(20000.0, 30000.0, 40000.0))
    for _ in range(20):
        risky.resume_outcome(resumed=False)
    assert risky.resume_risk > 0.8
    assert plan("economic", fleet, risky).stop == [] and plan("economic", fleet, risky).terminate == ["p1"], (
        "a stopped pod that almost never resumes is not worth its storage over the quiet hours"
    )


def test_a_stopped_pod_is_terminated_when_stopping_stops_paying_and_after_the_terminate_timeout():
    stopped = situation([], [pod(1, PodStatus.STOPPED)], stopped={"p1": 60.0})
    assert plan("economic", stopped, memory(create_s=75.0, resume_s=75.0)).terminate == ["p1"]
    quick = memory(create_s=100.0, resume_s=40.0)
    assert plan("economic", stopped, quick).terminate == [], "kept stopped: its resume saves a minute"
    late = situation([], [pod(1, PodStatus.STOPPED)], stopped={"p1": 3600.0})
    assert plan("economic", late, quick).terminate == ["p1"], "POD_TERMINATE_TIMEOUT bounds every stopped pod"


def test_with_no_history_the_hold_is_one_cold_start_worth():
    seen = memory(create_s=80.0, resume_s=80.0)
    assert EconomicPolicy.hold_s(seen, 1) == pytest.approx(80.0 * (1 + WAIT_WORTH)), "the boot billed and waited"
    fleet = situation([], [pod(1)], idle={"p1": 400.0})
    assert plan("economic", fleet, seen).terminate == []
    assert plan("economic", situation([], [pod(1)], idle={"p1": 570.0}), seen).terminate == ["p1"]


# ---------------------------------------------------------------------------------------- a spend cap


def test_a_spend_cap_reached_holds_new_pods_and_says_why():
    capped = FleetLimits(max_pods=5, min_warm=0, idle_timeout_s=300.0, terminate_timeout_s=3600.0, max_hourly_spend=1.5)
    fleet = situation([fast(waiting=6, running=2)], [pod(1), pod(2)], busy=("p1", "p2"))
    for name in ("demand", "serverless", "economic"):
        held = plan(name, fleet, limits=capped)
        assert held.create == [] and held.resume == [], f"{name}: 2 x $0.69 = $1.38/h; a third would make $2.07/h"
        assert held.held is not None and "MAX_HOURLY_SPEND" in held.held and "$1.50/h" in held.held, name
    roomier = FleetLimits(
        max_pods=5, min_warm=0, idle_timeout_s=300.0, terminate_timeout_s=3600.0, max_hourly_spend=2.1
    )
    one_more = plan("demand", fleet, limits=roomier)
    assert one_more.create == [0] and one_more.held is not None, "one more fits ($2.07/h), the rest wait"


def test_a_spend_cap_counts_a_resumed_pod_at_its_own_price():
    fleet = situation([fast(waiting=2, running=1)], [pod(1), pod(2, PodStatus.STOPPED, price=0.43)], busy=("p1",))
    capped = FleetLimits(max_pods=5, min_warm=0, idle_timeout_s=300.0, terminate_timeout_s=3600.0, max_hourly_spend=1.2)
    result = plan("demand", fleet, limits=capped)
    assert result.resume == ["p2"] and result.create == [], "$0.69 + $0.43 fits $1.20; another $0.69 does not"
    assert result.held is not None and "1 more pod waits" in result.held
    tighter = FleetLimits(
        max_pods=5, min_warm=0, idle_timeout_s=300.0, terminate_timeout_s=3600.0, max_hourly_spend=1.0
    )
    assert plan("demand", fleet, limits=tighter).resume == []


def test_without_a_cap_nothing_is_held():
    assert plan("economic", situation([fast(waiting=2)], [])).held is None


# -------------------------------------------------------------------------------------------- serverless


def test_serverless_scales_only_once_the_oldest_request_waited_past_the_queue_delay():
    assert plan("serverless", situation([fast(waiting=3, oldest_s=2.0)], [])).create == []
    assert plan("serverless", situation([fast(waiting=3, oldest_s=4.5)], [])).create == [0, 0, 0]
    assert ServerlessPolicy(queue_delay_s=0.04).queue_delay_s == 0.04


def test_serverless_never_stops_a_pod():
    fleet = situation([], [pod(1), pod(2, PodStatus.STOPPED)], idle={"p1": 6.0}, stopped={"p2": 1.0})
    result = plan("serverless", fleet, limits=FleetLimits(5, 0, 5.0, 3600.0))
    assert result.stop == [] and sorted(result.terminate) == ["p1", "p2"]


# -------------------------------------------------------------------------------------------- the memory


def test_the_memory_learns_boots_resume_failures_and_gaps_per_level():
    seen = FleetMemory()
    seen.booted(40.0, resumed=False)
    assert seen.create_boot_s == 40.0, "the first boot replaces the prior"
    seen.booted(100.0, resumed=False)
    assert 40.0 < seen.create_boot_s < 100.0
    assert seen.resume_risk == pytest.approx(0.2), "a prior of 1 in 5 before any resume"
    seen.resume_outcome(resumed=True)
    seen.resume_outcome(resumed=False)
    assert seen.resume_risk == pytest.approx(2 / 7)
    seen.observe(0.0, 2, 5)
    seen.observe(10.0, 1, 5)
    seen.observe(70.0, 0, 5)
    seen.observe(100.0, 2, 5)
    assert seen.gaps(1) == [30.0] and seen.gaps(2) == [90.0] and seen.gaps(3) == []


def test_time_scale_divides_the_fixed_durations():
    scaled = make_policy("serverless", time_scale=60.0)
    assert isinstance(scaled, ServerlessPolicy) and scaled.queue_delay_s == pytest.approx(4.0 / 60)
    assert plan("serverless", situation([fast(waiting=1, oldest_s=0.1)], [])).create == []
    assert scaled.plan(situation([fast(waiting=1, oldest_s=0.1)], []), FleetMemory(), LIMITS).create == [0]
    with pytest.raises(ValueError, match="unknown fleet policy"):
        make_policy("cheapest")


def test_a_higher_wait_worth_holds_idle_pods_longer_and_adds_pods_sooner():
    """FLEET_WAIT_WORTH: the price of a second waited. The same idle pod and the same queue, at 1, 6 and 20."""
    seen = memory(gaps=(100.0, 150.0, 300.0, 1200.0))
    holds = [EconomicPolicy.hold_s(seen, 1, wait_worth=w) for w in (1.0, 6.0, 20.0)]
    assert holds == [0.0, 300.0, 1200.0], "a cold start's worth 150, 525, 1575 s: each covers more of the gaps"
    fleet = situation([], [pod(1)], idle={"p1": 450.0})
    let_go = [make_policy("economic", wait_worth=w).plan(fleet, seen, LIMITS) for w in (1.0, 20.0)]
    assert let_go[0].terminate + let_go[0].stop == ["p1"] and let_go[1].terminate + let_go[1].stop == [], let_go
    # One pod busy with 30 s left, one 45 s job waiting, a boot 75 s: 75 - 75 = 0 s of work for a second pod.
    queue = situation([fast(waiting=1, running=1, left_s=30.0)], [pod(1)], busy=("p1",))
    assert make_policy("economic", wait_worth=6.0).plan(queue, FleetMemory(), LIMITS).create == []
    assert make_policy("economic", wait_worth=1000.0).plan(queue, FleetMemory(), LIMITS).create == [], (
        "a pod that would find the queue drained is never worth adding"
    )
    longer = situation([fast(waiting=1, running=1, left_s=45.0)], [pod(1)], busy=("p1",))  # 15 s of work left
    assert make_policy("economic", wait_worth=6.0).plan(longer, FleetMemory(), LIMITS).create == [0]
    assert make_policy("economic", wait_worth=3.0).plan(longer, FleetMemory(), LIMITS).create == [], (
        "15 s of work pays a boot only when waiting is dear: 75/(1+6) < 15 < 75/(1+3)"
    )
