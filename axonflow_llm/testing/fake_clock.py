"""A virtual-time :class:`~axonflow_llm.pipeline.clock.Clock` so that no test sleeps for real."""

from __future__ import annotations

import asyncio
import heapq
import itertools

__all__ = ["FakeClock"]

_SETTLE_ROUNDS = 1000


class FakeClock:
    """Virtual time. ``now()`` starts at ``start`` and moves only when the clock is advanced.

    With ``auto_advance=True`` (the default) the clock jumps straight to the next sleeper's deadline
    whenever the event loop has nothing else ready to run, so a test of a 30-second backoff finishes in
    microseconds and its timings are exact. With ``auto_advance=False`` time moves only through
    :meth:`advance`, for tests that want to look at the state between two instants.

    Auto-advance treats "nothing ready to run" as "everyone is waiting on the clock"; a test that also
    waits on real sockets should use ``auto_advance=False`` or the real clock.

    ``sleeps`` records every positive duration passed to :meth:`sleep`, in order.
    """

    def __init__(self, start: float = 0.0, *, auto_advance: bool = True) -> None:
        self._now = float(start)
        self._auto = auto_advance
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._jumper: asyncio.Task[None] | None = None
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds != seconds:  # NaN
            raise ValueError("sleep() got NaN seconds")
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        self.sleeps.append(seconds)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), future))
        if self._auto and (self._jumper is None or self._jumper.done()):
            self._jumper = loop.create_task(self._jump_when_idle())
        try:
            await future
        finally:
            if not future.done():
                future.cancel()  # cancelled sleeper: dropped from the heap lazily

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking each sleeper at its own deadline, in order, and letting
        the tasks it wakes run before moving on."""
        if seconds < 0:
            raise ValueError("cannot advance a clock backwards")
        target = self._now + seconds
        await _settle()
        while True:
            self._drop_cancelled()
            if not self._sleepers or self._sleepers[0][0] > target:
                break
            self._now = max(self._now, self._sleepers[0][0])
            self._wake_due()
            await _settle()
        self._now = target
        await _settle()

    def pending(self) -> int:
        """How many tasks are asleep on this clock."""
        self._drop_cancelled()
        return len(self._sleepers)

    def _drop_cancelled(self) -> None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)

    def _wake_due(self) -> None:
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    async def _jump_when_idle(self) -> None:
        while True:
            await _settle()
            self._drop_cancelled()
            if not self._sleepers:
                return
            self._now = max(self._now, self._sleepers[0][0])
            self._wake_due()

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now!r}, sleeping={len(self._sleepers)})"


async def _settle() -> None:
    """Yield to the event loop until nothing else is ready to run (or a generous bound is reached)."""
    loop = asyncio.get_running_loop()
    for _ in range(_SETTLE_ROUNDS):
        await asyncio.sleep(0)
        ready = getattr(loop, "_ready", None)
        if ready is not None and not ready:
            return
    # Without a way to look at the ready queue we settle for the bound above.
