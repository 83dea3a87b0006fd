"""A per-key request quota with RunPod's REST v2 rate-limit headers (reference-v2 §1.5).

RunPod counts per user in `minute`, `hour` and `day` windows and reports them in `RateLimit-Policy`
(`"minute";q=60;w=60`) and `RateLimit` (`"minute";r=<remaining>;t=<seconds to reset>`). The emulator models the
minute window only, which is the one a test can exhaust; its headers list just that window, which a client that
reads every listed window handles unchanged. A quota of 0 turns limiting off, and then no header is sent, as
RunPod does for rate-limit-exempt callers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

WINDOW = "minute"
WINDOW_SECONDS = 60


@dataclass
class Verdict:
    """Whether a call may go ahead, the headers to send either way, and how long to wait when it may not."""

    allowed: bool
    headers: dict[str, str]
    retry_after: int | None = None


@dataclass
class RateLimiter:
    """Fixed minute windows per API key, each starting at the key's first call after the last one ended."""

    per_minute: int = 0
    windows: dict[str, tuple[float, int]] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    def take(self, key: str, now: float) -> Verdict:
        """Count one call against `key`'s window, or refuse it once the quota is used up."""
        if not self.enabled:
            return Verdict(True, {})
        start, used = self.windows.get(key, (now, 0))
        if now >= start + WINDOW_SECONDS:
            start, used = now, 0
        reset = max(1, math.ceil(start + WINDOW_SECONDS - now))
        if used >= self.per_minute:
            self.windows[key] = (start, used)
            return Verdict(False, self.headers(0, reset), retry_after=reset)
        used += 1
        self.windows[key] = (start, used)
        return Verdict(True, self.headers(self.per_minute - used, reset))

    def refused(self, retry_after: int) -> Verdict:
        """A refusal decided elsewhere (the `rate_limit` fault): the window reads as spent until the retry."""
        headers = self.headers(0, retry_after) if self.enabled else {}
        return Verdict(False, headers, retry_after=retry_after)

    def headers(self, remaining: int, reset: int) -> dict[str, str]:
        return {
            "RateLimit": f'"{WINDOW}";r={remaining};t={reset}',
            "RateLimit-Policy": f'"{WINDOW}";q={self.per_minute};w={WINDOW_SECONDS}',
        }

    def clear(self) -> None:
        self.windows.clear()
