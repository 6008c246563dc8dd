"""``TimeoutMiddleware``: bounds an attempt, a stream's first chunk and the gaps between its chunks."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from types import TracebackType
from typing import Protocol

from ..pipeline.clock import Clock, SystemClock, system_clock
from ..pipeline.context import CallContext
from ..pipeline.errors import APITimeoutError
from ..pipeline.middleware import Handler, Middleware, Reply
from ..pipeline.models import CompletionRequest, CompletionResponse, StreamChunk
from ..pipeline.stream import ChunkStream

__all__ = ["TimeoutMiddleware"]


class _Scope(Protocol):
    async def __aenter__(self) -> object: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None: ...

    def expired(self) -> bool: ...


class _ClockTimeout:
    """``asyncio.timeout`` on an injected clock: a watcher task sleeps on the clock, then cancels the body.

    Mirrors asyncio's bookkeeping: only a cancellation this scope caused becomes ``TimeoutError``; a
    caller's cancellation (even one racing with the deadline) stays a cancellation.
    """

    __slots__ = ("_cancelling", "_clock", "_delay", "_expired", "_task", "_watcher")

    def __init__(self, clock: Clock, delay: float) -> None:
        self._clock = clock
        self._delay = delay
        self._expired = False

    async def __aenter__(self) -> _ClockTimeout:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a timeout needs to run inside an asyncio task")
        self._task = task
        self._cancelling = task.cancelling()
        self._watcher = asyncio.get_running_loop().create_task(self._watch())
        return self

    async def _watch(self) -> None:
        await self._clock.sleep(self._delay)
        self._expired = True
        self._task.cancel()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        self._watcher.cancel()  # before any await: the watcher cannot fire after the body is done
        if self._expired and self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc
        return None

    def expired(self) -> bool:
        return self._expired


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
        scope = mw._scope(limit)
        try:
            async with scope:
                chunk = await self._inner.__anext__()
        except TimeoutError as exc:
            if not scope.expired():
                raise
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
      when ``first_chunk_timeout`` is not set, so that a stream can never hang.

    Stream limits run only while the caller awaits a chunk, not while the caller is busy between chunks.
    At least one limit is required; each is a finite number of seconds > 0. A caller's own cancellation
    always stays a cancellation. With the system clock it uses ``asyncio.timeout``; with any other clock
    (``FakeClock``) a watcher task sleeping on that clock, so tests run in virtual time.

    Place it inside retry (each attempt gets its own limits). It keeps no state.
    """

    __slots__ = ("_first", "_first_name", "_first_value", "_idle", "_scope", "_timeout", "clock")

    _scope: Callable[[float], _Scope]  # asyncio.timeout, or a clock-driven equivalent

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
        if isinstance(self.clock, SystemClock):
            self._scope = asyncio.timeout
        else:
            clk = self.clock
            self._scope = lambda delay: _ClockTimeout(clk, delay)

    async def __call__(self, request: CompletionRequest, ctx: CallContext) -> Reply:
        if not ctx.streaming:
            if self._timeout is None:
                return await self.next(request, ctx)
            scope = self._scope(self._timeout)
            try:
                async with scope:
                    return await self.next(request, ctx)
            except TimeoutError as exc:
                if scope.expired():
                    raise APITimeoutError(
                        f"no reply within timeout={self._timeout}s", provider=ctx.provider
                    ) from exc
                raise
        return await self._stream(request, ctx)

    async def _stream(self, request: CompletionRequest, ctx: CallContext) -> Reply:
        timeout, first = self._timeout, self._first
        limit: float | None
        if first is not None and (timeout is None or first < timeout):
            limit, name = first, "first_chunk_timeout"
        else:
            limit, name = timeout, "timeout"
        start = self.clock.now() if first is not None else 0.0
        if limit is None:
            reply = await self.next(request, ctx)
        else:
            scope = self._scope(limit)
            try:
                async with scope:
                    reply = await self.next(request, ctx)
            except TimeoutError as exc:
                if scope.expired():
                    what = "reply" if name == "timeout" else "first chunk (the reply had not begun)"
                    raise APITimeoutError(f"no {what} within {name}={limit}s", provider=ctx.provider) from exc
                raise
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
