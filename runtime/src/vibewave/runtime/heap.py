"""The garbage collector's settings for a long-running service.

With CPython's defaults the collector was the largest single cost of an accepted request: in
`make bench SCENARIO=edge` (a `gc.callbacks` probe) the api spent about a fifth of its CPU in
collections — mostly full ones, each walking every object the process had ever loaded (modules,
FastStream, Litestar, pydantic; then the index of requests) — and its p99 latency was those pauses.
Reference counting frees almost everything a request allocates; the collector is there for reference
cycles, which are rare and small here. So, once a service has started:

- everything alive at that point is frozen (`gc.freeze`): it lives as long as the process, and no
  collection walks it again;
- full collections are ten times rarer (after 100 middle-generation collections, not 10), and young
  ones rarer (after 10,000 net allocations of containers, not 700: a fifth of the young collections'
  total time). Young and middle collections walk only what is new since the last one, so they stay
  short (a few ms at most) and reads keep their latency; a young threshold of 50,000 was faster still
  but paused for ~15 ms.

Memory stays bounded: cycles are still collected, only later.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000
OLDER_THRESHOLDS = (10, 100)  # young collections per middle one; middle ones per full one


def settle_after_start() -> None:
    """Freeze what start-up left alive and collect less often (see the module's docstring)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
