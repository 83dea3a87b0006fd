"""The per-key minute quota and its RateLimit headers, on a stepped clock."""

from __future__ import annotations

import pytest

from vibewave.runpod_emu.ratelimit import RateLimiter

pytestmark = pytest.mark.unit


def test_off_sends_nothing_and_allows_everything() -> None:
    limiter = RateLimiter(0)
    assert all(limiter.take("k", float(t)).allowed for t in range(1000))
    assert limiter.take("k", 0).headers == {} and limiter.refused(3).headers == {}


def test_headers_count_down_then_refuse_until_the_window_ends() -> None:
    limiter = RateLimiter(3)
    first = limiter.take("k", 100.0)
    assert first.headers == {"RateLimit": '"minute";r=2;t=60', "RateLimit-Policy": '"minute";q=3;w=60'}
    assert limiter.take("k", 100.5).headers["RateLimit"] == '"minute";r=1;t=60'
    assert limiter.take("k", 130.0).headers["RateLimit"] == '"minute";r=0;t=30'
    refused = limiter.take("k", 159.2)
    assert not refused.allowed and refused.retry_after == 1 and refused.headers["RateLimit"] == '"minute";r=0;t=1'
    fresh = limiter.take("k", 160.0)
    assert fresh.allowed and fresh.headers["RateLimit"] == '"minute";r=2;t=60'
    limiter.clear()
    assert limiter.take("k", 161.0).headers["RateLimit"] == '"minute";r=2;t=60'


def test_refused_by_fault_reads_as_spent() -> None:
    verdict = RateLimiter(10).refused(4)
    assert not verdict.allowed and verdict.retry_after == 4
    assert verdict.headers["RateLimit"] == '"minute";r=0;t=4'
