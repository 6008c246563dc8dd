"""Injected time: every time-dependent component takes ``clock=`` and asks it, and nothing else, for time."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "SystemClock", "system_clock"]


@runtime_checkable
class Clock(Protocol):
    """A source of monotonic time and of sleeping.

    ``now()`` is monotonic seconds (any origin); ``sleep(seconds)`` suspends the caller for that long on
    this clock. ``axonflow_llm.testing.FakeClock`` implements it in virtual time.
    """

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock: ``time.monotonic`` and ``asyncio.sleep``."""

    __slots__ = ()

    now = staticmethod(time.monotonic)
    sleep = staticmethod(asyncio.sleep)

    def __repr__(self) -> str:
        return "SystemClock()"


#: The shared default clock.
system_clock = SystemClock()
