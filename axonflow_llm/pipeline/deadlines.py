"""Deadlines of one fixed delay on one event loop, served by a single loop timer (timeouts on the per-call path)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

__all__ = ["SameDelayDeadlines"]

_monotonic = time.monotonic


class SameDelayDeadlines:
    """Deadlines that all lie one fixed ``delay`` after they are set, on one event loop.

    Such deadlines expire in the order they were set, so one loop timer serves them all: arming is an
    insertion into an ordered dict (task -> monotonic deadline) and disarming a deletion, where
    ``loop.call_at`` per call would create, heap-push and cancel a timer handle (several times the cost,
    and cancelled handles linger in the loop's heap until they would have expired). An expired deadline
    cancels its task, as ``asyncio.timeout`` does, and the same bookkeeping tells the deadline's own
    cancellation from anyone else's::

        cancelling = task.cancelling()
        if not deadlines.arm(task):
            ...                                  # the task has a deadline here already: use a timer of its own
        try:
            return await work()
        except asyncio.CancelledError as exc:
            if deadlines.caused(task, cancelling):
                raise TimeoutError from exc      # this deadline, and nobody else, cancelled the work
            raise                                # the caller's cancellation stays a cancellation
        finally:
            deadlines.disarm(task)               # before any await: it cannot fire once the work is done

    Used by ``TimeoutMiddleware`` (a ``complete()`` attempt) and the aiohttp transport (the wait for a
    non-streamed answer). Times are read from ``time.monotonic``, the event loop's default clock.
    """

    __slots__ = ("delay", "entries", "fired", "loop", "timer")

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        self.loop = loop
        self.delay = delay
        self.entries: dict[asyncio.Task[Any], float] = {}  # insertion order == expiry order
        self.fired: set[asyncio.Task[Any]] = set()  # cancelled by this queue, not yet seen by their call
        self.timer: asyncio.TimerHandle | None = None

    def arm(self, task: asyncio.Task[Any]) -> bool:
        """Give ``task`` a deadline ``delay`` from now; ``False`` (nothing armed) if it has one here already."""
        entries = self.entries
        if task in entries:
            return False
        when = _monotonic() + self.delay
        entries[task] = when
        if self.timer is None:
            self.start_timer(when)
        return True

    def caused(self, task: asyncio.Task[Any], cancelling: int) -> bool:
        """In ``except CancelledError``: whether this queue's deadline, and no other cancellation, cancelled
        ``task`` (``cancelling`` is ``task.cancelling()`` from before :meth:`arm`). Withdraws the deadline's
        cancel request either way."""
        fired = self.fired
        if task not in fired:
            return False
        fired.discard(task)
        return task.uncancel() <= cancelling

    def disarm(self, task: asyncio.Task[Any]) -> None:
        """Remove ``task``'s deadline; if it fired but the work ended some other way, withdraw its cancel."""
        if self.entries.pop(task, None) is None and task in self.fired:
            self.fired.discard(task)
            task.uncancel()

    def start_timer(self, when: float) -> None:
        self.timer = self.loop.call_later(max(0.0, when - _monotonic()), self._expire)

    def close(self) -> None:
        """Stop the loop timer (the queue is not used again)."""
        timer, self.timer = self.timer, None
        if timer is not None:
            timer.cancel()

    def _expire(self) -> None:
        self.timer = None
        entries = self.entries
        now = _monotonic()
        while entries:
            task, when = next(iter(entries.items()))
            if when > now:
                self.start_timer(when)
                return
            del entries[task]
            self.fired.add(task)
            task.cancel()
