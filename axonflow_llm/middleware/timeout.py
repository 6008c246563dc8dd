"""``TimeoutMiddleware``: bounds an attempt, a stream's first chunk and the gaps between its chunks."""

from __future__ import annotations

import asyncio
import contextlib
import math
import weakref
from collections.abc import Awaitable
from typing import Any, TypeVar

from ..pipeline.clock import Clock, SystemClock, system_clock
from ..pipeline.context import CallContext
from ..pipeline.deadlines import SameDelayDeadlines
from ..pipeline.errors import APITimeoutError
from ..pipeline.middleware import Handler, Middleware, Reply
from ..pipeline.models import CompletionRequest, CompletionResponse, StreamChunk
from ..pipeline.stream import ChunkStream

__all__ = ["TimeoutMiddleware"]

T = TypeVar("T")



class _Expired(TimeoutError):
    """Raised by :func:`_bounded` when *its* deadline cut the work short (never for a foreign TimeoutError)."""


class _Deadline:
    __slots__ = ("cancelling", "fired", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.cancelling = task.cancelling()
        self.fired = False

    def fire(self) -> None:
        self.fired = True
        self.task.cancel()


async def _watch(clock: Clock, delay: float, deadline: _Deadline) -> None:
    await clock.sleep(delay)
    deadline.fire()


async def _bounded(aw: Awaitable[T], delay: float, clock: Clock | None) -> T:
    """Await ``aw``, cancelling it after ``delay`` seconds and raising :class:`_Expired` if so.

    ``clock=None`` means the event loop's own timer (``loop.call_at``); otherwise a watcher task sleeps on
    ``clock``. The bookkeeping mirrors ``asyncio.timeout``: only a cancellation this deadline caused becomes
    ``_Expired``; a caller's cancellation, even one racing with the deadline, stays a cancellation.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    if task is None:  # pragma: no cover - a coroutine awaited outside any task
        return await aw
    deadline = _Deadline(task)
    disarm = (
        loop.call_at(loop.time() + delay, deadline.fire).cancel
        if clock is None
        else loop.create_task(_watch(clock, delay, deadline)).cancel
    )
    try:
        return await aw
    except asyncio.CancelledError as exc:
        if deadline.fired:
            deadline.fired = False  # handled here
            if task.uncancel() <= deadline.cancelling:
                raise _Expired from exc
        raise
    finally:
        disarm()  # before any await: the deadline cannot fire after the work is done
        if deadline.fired:  # it fired, but the work ended some other way: withdraw our cancel request
            task.uncancel()


class _TimedStream:
    """The stream the caller gets: each wait for a chunk is bounded; a timeout closes the inner stream."""

    __slots__ = ("_done", "_first", "_inner", "_mw", "_provider")

    def __init__(self, inner: ChunkStream, mw: TimeoutMiddleware, provider: str, first: float | None) -> None:
        self._inner = inner
        self._mw = mw
        self._provider = provider
        self._first = first  # the first chunk's remaining budget; None once it has come
        self._done = False

    def __aiter__(self) -> _TimedStream:
        return self

    async def __anext__(self) -> StreamChunk:
        if self._done:
            raise StopAsyncIteration
        mw = self._mw
        first = self._first
        if first is not None:
            limit, name, value, what = first, mw._first_name, mw._first_value, "first chunk"
        elif mw._idle is not None:
            limit, name, value, what = mw._idle, "idle_timeout", mw._idle, "chunk since the last one"
        else:
            return await self._inner.__anext__()
        try:
            chunk = await _bounded(self._inner.__anext__(), limit, mw._timer)
        except _Expired as exc:
            self._done = True
            with contextlib.suppress(Exception):
                await self._inner.aclose()
            raise APITimeoutError(f"no {what} within {name}={value}s", provider=self._provider) from exc
        self._first = None
        return chunk

    async def aclose(self) -> None:
        self._done = True
        await self._inner.aclose()


class TimeoutMiddleware(Middleware):
    """Per-attempt time limits; each raises :class:`APITimeoutError` naming the limit, its value and the
    provider, after cancelling (or closing) the work it cut short. Retry, outside it, may try again.

    - ``timeout``: the whole ``complete()`` attempt; for a stream, getting the reply (up to the response
      headers).
    - ``first_chunk_timeout``: a stream's time to first chunk, counted from the start of the attempt.
    - ``idle_timeout``: each wait for a stream's next chunk; also the first chunk's once the reply is in,
      when ``first_chunk_timeout`` is not set, and getting the reply itself when neither ``timeout`` nor
      ``first_chunk_timeout`` is set, so that a stream can never hang.

    Stream limits run only while the caller awaits a chunk, not while the caller is busy between chunks.
    At least one limit is required; each is a finite number of seconds > 0. A caller's own cancellation
    always stays a cancellation. With the system clock, ``complete()`` deadlines (all the same
    delay, so they expire in the order they were set) share one event-loop timer, and each stream wait arms
    one timer; with any other clock (``FakeClock``) a watcher task sleeps on that clock, so tests run in
    virtual time.

    Place it inside retry (each attempt gets its own limits). It keeps no state.
    """

    __slots__ = (
        "_by_loop",
        "_deadlines",
        "_first",
        "_first_name",
        "_first_value",
        "_idle",
        "_loop",
        "_timeout",
        "_timer",
        "clock",
    )

    def __init__(
        self,
        next_handler: Handler,
        /,
        *,
        timeout: float | None = None,
        first_chunk_timeout: float | None = None,
        idle_timeout: float | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(next_handler)
        for name, value in (
            ("timeout", timeout),
            ("first_chunk_timeout", first_chunk_timeout),
            ("idle_timeout", idle_timeout),
        ):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf
            ):
                raise ValueError(
                    f"TimeoutMiddleware: {name} must be a finite number of seconds > 0 (or None), got {value!r}"
                )
        if timeout is None and first_chunk_timeout is None and idle_timeout is None:
            raise ValueError(
                "TimeoutMiddleware needs at least one of timeout=, first_chunk_timeout=, idle_timeout= (seconds)"
            )
        self._timeout = timeout
        self._first = first_chunk_timeout
        self._idle = idle_timeout
        # What bounds the first chunk once the reply is in (decided here, not per call).
        self._first_name = "first_chunk_timeout" if first_chunk_timeout is not None else "idle_timeout"
        self._first_value = first_chunk_timeout if first_chunk_timeout is not None else idle_timeout
        self.clock = system_clock if clock is None else clock
        # None: the event loop's own timer (fast path); else the clock to sleep on.
        self._timer: Clock | None = None if isinstance(self.clock, SystemClock) else self.clock
        # Per event loop, the queue of complete() deadlines (the last loop used is cached).
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SameDelayDeadlines] = (
            weakref.WeakKeyDictionary()
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deadlines: SameDelayDeadlines | None = None

    async def __call__(self, request: CompletionRequest, ctx: CallContext) -> Reply:
        if ctx.streaming:
            return await self._stream(request, ctx)
        if self._timeout is None:
            return await self.next(request, ctx)
        if self._timer is not None:  # another clock: a watcher task sleeping on it
            try:
                return await _bounded(self.next(request, ctx), self._timeout, self._timer)
            except _Expired as exc:
                raise self._expired(ctx) from exc
        # The system clock: one shared timer per loop for every call's deadline (see SameDelayDeadlines).
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - a coroutine driven outside any task
            return await self.next(request, ctx)
        loop = task.get_loop()
        deadlines = self._deadlines
        if self._loop is not loop or deadlines is None:
            deadlines = self._deadlines_for(loop)
        cancelling = task.cancelling()
        if not deadlines.arm(task):  # re-entered by the same task (a nested call): a timer of its own
            try:
                return await _bounded(self.next(request, ctx), deadlines.delay, None)
            except _Expired as exc:
                raise self._expired(ctx) from exc
        try:
            return await self.next(request, ctx)
        except asyncio.CancelledError as exc:
            if deadlines.caused(task, cancelling):
                raise self._expired(ctx) from exc
            raise
        finally:
            deadlines.disarm(task)  # before any await, so it cannot fire once the work is done

    def _expired(self, ctx: CallContext) -> APITimeoutError:
        return APITimeoutError(f"no reply within timeout={self._timeout}s", provider=ctx.provider)

    def _deadlines_for(self, loop: asyncio.AbstractEventLoop) -> SameDelayDeadlines:
        """The deadline queue of this loop (a middleware may serve a sync caller's loop and yours)."""
        assert self._timeout is not None
        deadlines = self._by_loop.get(loop)
        if deadlines is None:
            deadlines = self._by_loop[loop] = SameDelayDeadlines(loop, self._timeout)
        self._loop, self._deadlines = loop, deadlines
        return deadlines

    async def _stream(self, request: CompletionRequest, ctx: CallContext) -> Reply:
        timeout, first = self._timeout, self._first
        limit: float | None
        if first is not None and (timeout is None or first < timeout):
            limit, name = first, "first_chunk_timeout"
        elif timeout is not None:
            limit, name = timeout, "timeout"
        else:  # only idle_timeout: waiting for the reply itself is a wait with no sign of life too
            limit, name = self._idle, "idle_timeout"
        start = self.clock.now() if first is not None else 0.0
        if limit is None:
            reply = await self.next(request, ctx)
        else:
            try:
                reply = await _bounded(self.next(request, ctx), limit, self._timer)
            except _Expired as exc:
                what = "first chunk (the reply had not begun)" if name == "first_chunk_timeout" else "reply"
                raise APITimeoutError(f"no {what} within {name}={limit}s", provider=ctx.provider) from exc
        if isinstance(reply, CompletionResponse):
            return reply
        if first is not None:
            remaining: float | None = max(first - (self.clock.now() - start), 1e-9)
        else:
            remaining = self._idle
        if remaining is None:
            return reply
        return _TimedStream(reply, self, ctx.provider, remaining)

    def __repr__(self) -> str:
        return (
            f"TimeoutMiddleware(timeout={self._timeout!r}, first_chunk_timeout={self._first!r}, "
            f"idle_timeout={self._idle!r})"
        )
