"""A scripted handler: returns, streams or raises what the test says, and records every call it sees."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from ..pipeline.clock import Clock, system_clock
from ..pipeline.context import CallContext
from ..pipeline.middleware import Reply
from ..pipeline.models import CompletionRequest, CompletionResponse, FinishReason, StreamChunk, UsageStats

__all__ = ["RecordedCall", "ScriptedHandler", "ScriptedStream", "delay", "response", "stream"]


class RecordedCall:
    """One call the scripted handler saw: the request, and the context's attempt/streaming/auth then."""

    __slots__ = ("attempt", "auth", "ctx", "request", "streaming")

    def __init__(self, request: CompletionRequest, ctx: CallContext) -> None:
        self.request = request
        self.ctx = ctx
        self.attempt = ctx.attempt
        self.streaming = ctx.streaming
        self.auth = ctx.auth

    def __repr__(self) -> str:
        return f"RecordedCall(attempt={self.attempt}, streaming={self.streaming})"


class ScriptedStream:
    """A stream that yields ``chunks``, then raises ``error`` if given. Knows whether it was closed.

    ``chunk_delay`` (seconds on ``clock``) is slept before each chunk.
    """

    def __init__(
        self,
        chunks: Iterable[StreamChunk],
        *,
        error: BaseException | None = None,
        chunk_delay: float = 0.0,
        clock: Clock | None = None,
    ) -> None:
        self._chunks = list(chunks)
        self._error = error
        self._delay = chunk_delay
        self._clock = clock or system_clock
        self._i = 0
        self.closed = False
        self.yielded = 0

    def __aiter__(self) -> ScriptedStream:
        return self

    async def __anext__(self) -> StreamChunk:
        if self.closed:
            raise StopAsyncIteration
        if self._i >= len(self._chunks):
            if self._error is not None:
                self.closed = True
                raise self._error
            self.closed = True
            raise StopAsyncIteration
        if self._delay:
            await self._clock.sleep(self._delay)
        chunk = self._chunks[self._i]
        self._i += 1
        self.yielded += 1
        return chunk

    async def aclose(self) -> None:
        self.closed = True


class _Delay:
    __slots__ = ("item", "seconds")

    def __init__(self, seconds: float, item: Any) -> None:
        self.seconds = seconds
        self.item = item


def delay(seconds: float, item: Any) -> Any:
    """Script ``item`` to be produced after ``seconds`` on the handler's clock."""
    return _Delay(seconds, item)


def response(content: str = "ok", **fields: Any) -> CompletionResponse:
    """A ``CompletionResponse`` with sensible defaults (finish reason ``stop``)."""
    fields.setdefault("finish_reason", FinishReason.STOP)
    return CompletionResponse(content=content, **fields)


def stream(
    *contents: str,
    usage: UsageStats | None = None,
    error: BaseException | None = None,
    chunk_delay: float = 0.0,
    clock: Clock | None = None,
) -> Callable[[], ScriptedStream]:
    """Script a stream of these texts; the last one is marked ``done`` (unless ``error`` follows it).

    ``chunk_delay`` is slept on ``clock``; without one, on the clock of the handler that plays the script
    (its ``clock=``), so a ``FakeClock`` handed to the handler is enough. Returns a factory, so the same
    script entry can be replayed by ``then=``.
    """

    def make(handler_clock: Clock | None = None) -> ScriptedStream:
        chunks = [StreamChunk(content=c) for c in contents]
        if error is None:
            last = chunks[-1] if chunks else StreamChunk()
            chunks[-1:] = [
                StreamChunk(content=last.content, done=True, finish_reason=FinishReason.STOP, usage=usage)
            ]
        return ScriptedStream(chunks, error=error, chunk_delay=chunk_delay, clock=clock or handler_clock)

    make.is_stream_script = True  # type: ignore[attr-defined]
    return make


class ScriptedHandler:
    """A leaf handler for tests. Each call takes the next item of the script:

    - a ``CompletionResponse``: returned (for a streamed call: delivered as one final chunk);
    - an exception instance: raised;
    - ``stream("a", "b")``: a stream, for streamed calls;
    - ``delay(seconds, item)``: ``item`` after ``seconds`` on ``clock``;
    - a callable ``f(request, ctx)``: its (awaited, if need be) result is used as above.

    When the script runs out, ``then`` is used for every further call (by default: ``response("ok")``).
    ``calls`` records every call; ``requests`` just the requests; ``streams`` every stream handed out.
    """

    def __init__(self, *script: Any, then: Any = None, clock: Clock | None = None) -> None:
        self._script = list(script)
        self._then = then if then is not None else response("ok")
        self._clock = clock or system_clock
        self.calls: list[RecordedCall] = []
        self.streams: list[ScriptedStream] = []

    @property
    def requests(self) -> list[CompletionRequest]:
        return [c.request for c in self.calls]

    @property
    def call_count(self) -> int:
        return len(self.calls)

    async def __call__(self, request: CompletionRequest, ctx: CallContext) -> Reply:
        self.calls.append(RecordedCall(request, ctx))
        item = self._script.pop(0) if self._script else self._then
        return await self._produce(item, request, ctx)

    async def _produce(self, item: Any, request: CompletionRequest, ctx: CallContext) -> Reply:
        if isinstance(item, _Delay):
            await self._clock.sleep(item.seconds)
            item = item.item
        if isinstance(item, BaseException):
            raise item
        if isinstance(item, type) and issubclass(item, BaseException):
            raise item()
        if getattr(item, "is_stream_script", False):
            made = item(self._clock)
            self.streams.append(made)
            return made  # type: ignore[no-any-return]
        if callable(item) and not isinstance(item, CompletionResponse):
            result = item(request, ctx)
            if asyncio.iscoroutine(result):
                result = await result
            return await self._produce(result, request, ctx)
        if isinstance(item, CompletionResponse):
            if ctx.streaming:
                made = ScriptedStream(
                    [StreamChunk(content=item.content, done=True, finish_reason=item.finish_reason,
                                 usage=item.usage)]
                )
                self.streams.append(made)
                return made
            return item
        if isinstance(item, ScriptedStream):
            self.streams.append(item)
            return item
        raise TypeError(f"ScriptedHandler cannot produce {item!r}")
