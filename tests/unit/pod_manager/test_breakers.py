from datetime import UTC, datetime, timedelta

import pytest

from vibewave.pod_manager.breakers import Breakers

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def book(attempts: int = 2, cooldown_s: float = 600) -> tuple[Breakers, list[datetime]]:
    now = [T0]
    return Breakers(attempts, cooldown_s, clock=lambda: now[0]), now


def test_opens_after_the_configured_failures_of_one_cause_in_a_row():
    breakers, _ = book(attempts=2)
    assert breakers.failed(0, "never_ready", "first") is None
    assert breakers.may_create(0)
    opened = breakers.failed(0, "never_ready", "no ComfyUI answered on 2 pods")
    assert opened is not None and opened.attempts == 2 and opened.diagnosis == "no ComfyUI answered on 2 pods"
    assert not breakers.may_create(0) and breakers.blocked() == {0}
    assert breakers.may_create(48), "other GPU classes are not affected"


def test_a_different_cause_starts_counting_again_and_success_closes():
    breakers, _ = book(attempts=2)
    breakers.failed(0, "never_ready", "a")
    assert breakers.failed(0, "stopped_answering", "b") is None
    breakers.succeeded(0)
    assert breakers.failed(0, "never_ready", "c") is None


def test_after_the_cooldown_one_more_try_then_open_again_for_twice_as_long():
    breakers, now = book(attempts=2, cooldown_s=600)
    breakers.failed(0, "never_ready", "a")
    first = breakers.failed(0, "never_ready", "b")
    assert first is not None and first.retry_at == T0 + timedelta(seconds=600)
    now[0] = T0 + timedelta(seconds=601)
    assert breakers.may_create(0)
    breakers.creating(0)
    assert not breakers.may_create(0), "only one trial"
    again = breakers.failed(0, "never_ready", "c")
    assert again is not None and again.retry_at == now[0] + timedelta(seconds=1200)


def test_a_refusal_opens_at_once_and_no_fitting_gpu_never_retries():
    breakers, now = book()
    refused = breakers.refused(0, "refused", "RunPod refused: insufficient balance")
    assert refused.retry_at is not None and not breakers.may_create(0)
    none_fits = breakers.refused(48, "no_gpu_type", "no GPU type has 48 GB")
    assert none_fits.retry_at is None
    now[0] = T0 + timedelta(days=30)
    assert not breakers.may_create(48)


def test_restored_breakers_stay_open():
    breakers, _ = book()
    breakers.failed(0, "never_ready", "a")
    stored = breakers.failed(0, "never_ready", "b")
    assert stored is not None
    restored, _ = book()
    restored.restore([stored])
    assert not restored.may_create(0) and restored.open_breakers() == [stored]
