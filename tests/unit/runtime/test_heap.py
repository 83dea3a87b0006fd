"""The collector's settings once a service has started (`runtime.heap`)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from vibewave.runtime.heap import OLDER_THRESHOLDS, YOUNG_THRESHOLD, settle_after_start


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_collector")
def test_what_start_up_left_alive_is_frozen_and_collections_are_rarer() -> None:
    frozen_before = gc.get_freeze_count()
    alive_at_start = [[] for _ in range(1000)]  # containers: what the collector would walk
    settle_after_start()
    assert gc.get_freeze_count() >= frozen_before + len(alive_at_start)
    assert gc.get_threshold() == (YOUNG_THRESHOLD, *OLDER_THRESHOLDS)


@pytest.mark.usefixtures("restored_collector")
def test_cycles_made_after_start_are_still_collected() -> None:
    settle_after_start()

    class Node:
        partner: object

    a, b = Node(), Node()
    a.partner, b.partner = b, a
    del a, b
    assert gc.collect() >= 2
