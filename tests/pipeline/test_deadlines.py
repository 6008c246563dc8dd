"""SameDelayDeadlines: one loop timer for many same-delay deadlines, with asyncio.timeout's bookkeeping."""

from __future__ import annotations

import asyncio

import pytest

from axonflow_llm.pipeline.deadlines import SameDelayDeadlines


async def bounded(deadlines: SameDelayDeadlines, seconds: float) -> str:
    """Sleep ``seconds`` under a deadline: "done", or "expired" when the deadline cut it short."""
    task = asyncio.current_task()
    assert task is not None
    cancelling = task.cancelling()
    assert deadlines.arm(task)
    try:
        await asyncio.sleep(seconds)
        return "done"
    except asyncio.CancelledError:
        if deadlines.caused(task, cancelling):
            return "expired"
        raise
    finally:
        deadlines.disarm(task)


async def test_deadlines_expire_in_order_on_one_timer() -> None:
    deadlines = SameDelayDeadlines(asyncio.get_running_loop(), 0.05)
    tasks = [asyncio.create_task(bounded(deadlines, s)) for s in (1.0, 0.0, 1.0)]
    await asyncio.sleep(0)  # every task has armed
    assert len(deadlines.entries) == 3 and deadlines.timer is not None
    late = asyncio.create_task(bounded(deadlines, 1.0))
    assert await asyncio.gather(*tasks) == ["expired", "done", "expired"]
    assert await late == "expired"  # armed later, so the timer was re-armed for it
    assert not deadlines.entries and not deadlines.fired and deadlines.timer is None


async def test_a_task_has_one_deadline_per_queue() -> None:
    deadlines = SameDelayDeadlines(asyncio.get_running_loop(), 10.0)
    task = asyncio.current_task()
    assert task is not None
    assert deadlines.arm(task)
    assert not deadlines.arm(task)  # re-entered: the caller needs a timer of its own
    deadlines.disarm(task)
    assert not deadlines.entries
    deadlines.close()
    assert deadlines.timer is None


async def test_the_callers_cancellation_stays_a_cancellation() -> None:
    deadlines = SameDelayDeadlines(asyncio.get_running_loop(), 10.0)
    task = asyncio.create_task(bounded(deadlines, 5.0))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not deadlines.entries
    deadlines.close()


async def test_a_deadline_and_the_callers_cancel_together_stay_a_cancellation() -> None:
    deadlines = SameDelayDeadlines(asyncio.get_running_loop(), 10.0)
    task = asyncio.create_task(bounded(deadlines, 5.0))
    await asyncio.sleep(0)  # armed
    deadlines.entries[task] = 0.0  # due now
    deadlines._expire()  # the timer fires: the task is cancelled but has not run yet ...
    task.cancel()  # ... and the caller cancels it too
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not deadlines.fired and not deadlines.entries


async def test_work_that_ends_as_the_deadline_fires_withdraws_the_cancel_request() -> None:
    deadlines = SameDelayDeadlines(asyncio.get_running_loop(), 10.0)
    counts: list[int] = []

    async def work() -> None:
        task = asyncio.current_task()
        assert task is not None
        counts.append(task.cancelling())
        assert deadlines.arm(task)
        deadlines.entries[task] = 0.0
        deadlines._expire()  # the timer runs just as the work ends, before disarm
        deadlines.disarm(task)
        counts.append(task.cancelling())

    child = asyncio.create_task(work())
    await asyncio.gather(child, return_exceptions=True)  # (3.11 still delivers the cancel, as asyncio.timeout)
    assert counts == [0, 0] and not deadlines.fired
