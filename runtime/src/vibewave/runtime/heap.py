"""The garbage collector's settings for a long-running service.

CPython's defaults (a young-generation collection every 700 net allocations of container objects)
were the largest single cost of an accepted request: in `make bench SCENARIO=edge` the api spent about
a fifth of its CPU in the collector — mostly full collections walking every object it had ever loaded
(modules, FastStream, Litestar, pydantic; then the index of requests) — and its p99 latency was those
pauses. Reference counting frees almost everything a request allocates; the collector is only needed
for reference cycles, which are rare and small here. So, once a service has started:

- everything alive at that point is frozen (`gc.freeze`): it lives as long as the process, and the
  collector no longer walks it;
- the young generation is collected after `YOUNG_THRESHOLD` net allocations instead of 700, so a
  collection is rare and walks only what survived since the last one.

Memory stays bounded: cycles are still collected, only less often (at most `YOUNG_THRESHOLD` container
objects wait for the next collection).
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000
OLDER_THRESHOLDS = (20, 10)  # young collections per middle one; middle ones per full one


def settle_after_start() -> None:
    """Freeze what start-up left alive and collect less often (see the module's docstring)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
