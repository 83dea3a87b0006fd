import asyncio

import pytest

from vibewave.runtime.broker import cancel_tasks

pytestmark = pytest.mark.unit


async def test_a_task_that_lost_a_cancel_is_cancelled_again_within_the_bound():
    """As a loop whose cancel Python 3.11's wait_for swallowed: it goes on unless cancelled once more."""
    swallowed = asyncio.Event()

    async def loop_that_loses_one_cancel() -> None:
        lost = False
        while True:
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                if lost:
                    raise
                lost = True
                swallowed.set()

    async def plain() -> None:
        await asyncio.sleep(3600)

    tasks = [asyncio.create_task(loop_that_loses_one_cancel()), asyncio.create_task(plain())]
    await asyncio.sleep(0)
    started = asyncio.get_running_loop().time()
    await cancel_tasks(tasks, timeout=2.0)
    assert swallowed.is_set() and all(t.done() for t in tasks)
    assert asyncio.get_running_loop().time() - started < 2.0


async def test_a_task_that_never_ends_is_left_after_the_bound(caplog):
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    await cancel_tasks([task], timeout=0.5)
    assert not task.done() and "stubborn" in caplog.text
    release.set()
    await asyncio.wait_for(task, 2)
