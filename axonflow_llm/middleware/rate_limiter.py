"""The token bucket: ``RateLimiter`` (one bucket, first come first served); re-exports ``MultiTenantRateLimiter``."""

from __future__ import annotations

import asyncio
import math
from collections import deque

from ..pipeline.clock import Clock, SystemClock, system_clock
from ..pipeline.errors import RateLimitExceededError
from .multi_tenant_rate_limiter import MultiTenantRateLimiter

__all__ = ["MultiTenantRateLimiter", "RateLimiter"]

_EPS = 1e-9  # float slack when comparing token balances and due times


def _check_rate(rate: float) -> float:
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not (0 < rate < math.inf):
        raise ValueError(f"rate must be a finite number of tokens per second > 0, got {rate!r}")
    return float(rate)


def _check_burst(burst: int) -> int:
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
        raise ValueError(f"burst must be an integer >= 1 (the bucket's capacity), got {burst!r}")
    return burst


def _check_amount(n: float, what: str) -> None:
    try:
        ok = 0 <= n < math.inf
    except TypeError:
        ok = False
    if not ok or isinstance(n, bool):
        raise ValueError(f"{what} needs a finite number of tokens >= 0, got {n!r}")


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _Waiter:
    __slots__ = ("deadline", "due", "tokens", "wake")

    def __init__(self, due: float, tokens: float, deadline: float | None) -> None:
        self.due = due
        self.tokens = tokens
        self.deadline = deadline
        self.wake: asyncio.Future[None] | None = None


class RateLimiter:
    """A token bucket: holds up to ``burst`` tokens, starts full and refills at ``rate`` tokens a second.

    ``await wait(n)`` never polls. It *reserves* its tokens at once (the balance may go negative: a queue
    of reservations) and sleeps exactly until they are due, so waiters proceed first come, first served and
    ``try_acquire`` never jumps ahead of them. Counting each grant when its caller proceeds, the bucket
    admits at most ``burst + rate * t`` tokens over any interval of length ``t``.

    A waiter that is cancelled (or gives up at its ``timeout``) hands its reservation back at once, and
    every waiter queued behind it is moved up by the same amount: each then proceeds exactly when it would
    have had the cancelled one never queued (never later than first computed). ``refund``, ``charge`` and
    ``set_rate`` reschedule the queue the same way. A wait that cannot be served within its ``timeout``
    raises :class:`RateLimitExceededError` (with ``retry_after``) at once rather than sleeping in vain.

    Shared on purpose between tasks of one event loop (not between threads); it holds no task of its own.
    """

    __slots__ = ("_burst", "_clock", "_last", "_now", "_queue", "_rate", "_real_clock", "_tokens")

    def __init__(self, rate: float, burst: int, *, clock: Clock | None = None) -> None:
        self._rate = _check_rate(rate)
        self._burst = _check_burst(burst)
        self._clock = system_clock if clock is None else clock
        self._now = self._clock.now  # looked up once: the per-call path asks for the time
        self._real_clock = isinstance(self._clock, SystemClock)
        self._tokens = float(self._burst)
        self._last = self._now()
        self._queue: deque[_Waiter] = deque()

    # -- the maths (sync) ------------------------------------------------------------------------------

    def _refill(self) -> float:
        now = self._now()
        if now > self._last:
            balance = self._tokens + (now - self._last) * self._rate
            self._tokens = balance if balance < self._burst else float(self._burst)
            self._last = now
        return now

    def _check_tokens(self, tokens: float) -> None:
        if isinstance(tokens, bool) or not isinstance(tokens, int | float) or not tokens > 0:
            raise ValueError(f"tokens must be a number > 0, got {tokens!r}")
        if tokens > self._burst:
            raise ValueError(
                f"asked for {tokens} tokens but the bucket holds at most burst={self._burst}: "
                "it could never be granted; raise the burst or ask for fewer"
            )

    def try_acquire(self, tokens: float = 1) -> bool:
        """Take ``tokens`` now if they are free beyond every queued reservation; never waits."""
        try:
            fits = 0 < tokens <= self._burst
        except TypeError:
            fits = False
        if not fits:
            self._check_tokens(tokens)
        # _refill(), inlined: this is the per-call path.
        now = self._now()
        balance = self._tokens
        if now > self._last:
            balance += (now - self._last) * self._rate
            if balance > self._burst:
                balance = self._burst
            self._last = now
        if balance + _EPS >= tokens:
            self._tokens = balance - tokens
            return True
        self._tokens = balance
        return False

    def available(self) -> float:
        """Tokens free right now, within ``[0, burst]`` (0 while any reservation is outstanding)."""
        if self._queue:
            return 0.0
        self._refill()
        return max(0.0, min(float(self._burst), self._tokens))

    def wait_time(self, tokens: float = 1) -> float:
        """Seconds until ``tokens`` could be granted, behind the current queue (0 if now)."""
        self._check_tokens(tokens)
        self._refill()
        return max(0.0, (tokens - self._tokens) / self._rate)

    def refund(self, tokens: float) -> None:
        """Give back ``tokens`` taken but not used (the balance never exceeds ``burst``)."""
        _check_amount(tokens, "refund")
        self._adjust(tokens)

    def charge(self, tokens: float) -> None:
        """Take ``tokens`` already spent, even if that drives the balance negative (later calls wait)."""
        _check_amount(tokens, "charge")
        self._adjust(-tokens)

    def _adjust(self, delta: float) -> None:
        """``refund(delta)`` if positive, ``charge(-delta)`` if negative; unchecked."""
        self._refill()
        balance = self._tokens + delta
        self._tokens = balance if balance < self._burst else float(self._burst)
        if self._queue:
            self._reschedule()

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def burst(self) -> int:
        return self._burst

    @property
    def waiting(self) -> int:
        """How many callers are queued in :meth:`wait`."""
        return len(self._queue)

    def set_rate(self, rate: float) -> None:
        """Change the refill rate from now on; queued waiters are rescheduled."""
        rate = _check_rate(rate)
        self._refill()  # what accrued so far accrued at the old rate
        self._rate = rate
        self._reschedule()

    def set_burst(self, burst: int) -> None:
        """Change the capacity; a lower one drops the tokens above it. Queued reservations stand."""
        burst = _check_burst(burst)
        self._refill()
        self._burst = burst
        self._tokens = min(self._tokens, burst)

    def is_full(self) -> bool:
        """No waiter and a full bucket: the state a fresh limiter starts in."""
        if self._queue:
            return False
        self._refill()
        return self._tokens + _EPS >= self._burst

    def _reschedule(self) -> None:
        """Recompute every waiter's due time from the balance; wake those due earlier, or past their deadline.

        Wakes in queue order, so waiters that became due together still proceed first come, first served.
        """
        queue = self._queue
        if not queue:
            return
        now = self._now()
        behind = -self._tokens  # the deficit that the last waiter waits out
        dues = []
        for w in reversed(queue):
            dues.append(now + behind / self._rate)
            behind -= w.tokens
        for w, due in zip(queue, reversed(dues), strict=True):
            if w.wake is not None and (
                due < w.due - _EPS or (w.deadline is not None and due > w.deadline + _EPS)
            ):
                _wake(w.wake)
            w.due = due

    # -- the waiting (async) ---------------------------------------------------------------------------

    # ASYNC109: the timeout is part of the limiter's answer (refuse at once), not a cancel scope.
    async def wait(self, tokens: float = 1, *, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Wait until ``tokens`` are granted, first come first served.

        ``timeout`` (seconds): if the tokens cannot be granted within it, raise
        :class:`RateLimitExceededError` at once, holding nothing. ``timeout=0`` means "only if free now".
        """
        try:
            fits = 0 < tokens <= self._burst
        except TypeError:
            fits = False
        if not fits:
            self._check_tokens(tokens)
        if timeout is not None and not 0 <= timeout < math.inf:
            raise ValueError(f"timeout must be None or a finite number of seconds >= 0, got {timeout!r}")
        now = self._refill()
        self._tokens -= tokens
        if self._tokens + _EPS >= 0:
            return
        delay = -self._tokens / self._rate
        if timeout is not None and delay > timeout + _EPS:
            self._tokens += tokens
            raise RateLimitExceededError(
                f"rate limiter: {tokens} token(s) would be free in {delay:.3f}s, "
                f"beyond the timeout of {timeout}s",
                retry_after=delay,
            )
        waiter = _Waiter(now + delay, tokens, None if timeout is None else now + timeout)
        self._queue.append(waiter)
        try:
            await self._sleep_until_due(waiter)
        except BaseException:
            self._leave(waiter)
            self._refill()
            self._tokens = min(self._burst, self._tokens + tokens)
            self._reschedule()
            raise
        self._leave(waiter)

    def _leave(self, waiter: _Waiter) -> None:
        queue = self._queue
        if queue and queue[0] is waiter:
            queue.popleft()
        else:
            queue.remove(waiter)

    async def _sleep_until_due(self, waiter: _Waiter) -> None:
        loop = asyncio.get_running_loop()
        while True:
            delay = waiter.due - self._now()
            if delay <= _EPS:
                return
            if waiter.deadline is not None and waiter.due > waiter.deadline + _EPS:
                raise RateLimitExceededError(
                    f"rate limiter: the bucket was slowed down and {waiter.tokens} token(s) are now "
                    f"{delay:.3f}s away, beyond this wait's timeout",
                    retry_after=delay,
                )
            wake: asyncio.Future[None] = loop.create_future()
            waiter.wake = wake
            if self._real_clock:
                handle = loop.call_later(delay, _wake, wake)
                try:
                    await wake
                finally:
                    handle.cancel()
            else:
                alarm = loop.create_task(self._alarm(delay, wake))
                try:
                    await wake
                finally:
                    alarm.cancel()

    async def _alarm(self, delay: float, wake: asyncio.Future[None]) -> None:
        await self._clock.sleep(delay)
        _wake(wake)

    def __repr__(self) -> str:
        return (
            f"RateLimiter(rate={self._rate!r}, burst={self._burst}, available={self.available():.3f}, "
            f"waiting={len(self._queue)})"
        )
