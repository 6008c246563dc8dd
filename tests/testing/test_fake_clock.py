from __future__ import annotations

import asyncio

import pytest

from axonflow_llm import Clock, system_clock
from axonflow_llm.testing import FakeClock


def test_both_clocks_satisfy_the_protocol() -> None:
    assert isinstance(FakeClock(), Clock)
    assert isinstance(system_clock, Clock)


async def test_auto_advance_jumps_to_each_deadline_in_order() -> None:
    clock = FakeClock(start=100.0)
    order: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        order.append((name, clock.now()))

    await asyncio.gather(sleeper("slow", 30), sleeper("fast", 1), sleeper("mid", 5))
    assert order == [("fast", 101.0), ("mid", 105.0), ("slow", 130.0)]
    assert clock.sleeps == [30, 1, 5]


async def test_manual_clock_moves_only_on_advance() -> None:
    clock = FakeClock(auto_advance=False)
    done = asyncio.Event()

    async def sleeper() -> None:
        await clock.sleep(10)
        done.set()

    task = asyncio.create_task(sleeper())
    await clock.advance(9.5)
    assert not done.is_set() and clock.now() == 9.5
    assert clock.pending() == 1
    await clock.advance(0.5)
    assert done.is_set() and clock.now() == 10
    await task


async def test_cancelled_sleeper_leaves_nothing_pending() -> None:
    clock = FakeClock(auto_advance=False)
    task = asyncio.create_task(clock.sleep(5))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert clock.pending() == 0


async def test_zero_sleep_yields_without_moving_time() -> None:
    clock = FakeClock()
    await clock.sleep(0)
    await clock.sleep(-1)
    assert clock.now() == 0 and clock.sleeps == []


async def test_advance_rejects_going_backwards_and_sleep_rejects_nan() -> None:
    clock = FakeClock()
    with pytest.raises(ValueError, match="backwards"):
        await clock.advance(-1)
    with pytest.raises(ValueError, match="NaN"):
        await clock.sleep(float("nan"))
