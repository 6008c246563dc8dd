"""How a streamed reply travels through the onion, and how a middleware learns that it ended."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol, runtime_checkable

from .models import FinishReason, StreamChunk, UsageStats

__all__ = ["ChunkStream", "ObservedStream", "StreamEnd", "StreamOutcome", "observe_stream"]


@runtime_checkable
class ChunkStream(Protocol):
    """An async iterator of :class:`StreamChunk` that can be closed early. Async generators qualify.

    Whoever holds a stream either exhausts it or ``aclose()``\\ s it; that is what releases the
    connection and lets every middleware finalise.
    """

    def __aiter__(self) -> AsyncIterator[StreamChunk]: ...

    def __anext__(self) -> Awaitable[StreamChunk]: ...

    def aclose(self) -> Awaitable[None]: ...


class StreamEnd(enum.Enum):
    """How a stream ended."""

    COMPLETED = "completed"  #: the provider sent its end marker: exhausted, or closed after the ``done`` chunk
    FAILED = "failed"  #: an exception came out of it
    CLOSED = "closed"  #: the caller closed it before the ``done`` chunk (``aclose()``, leaving ``async with``)
    CANCELLED = "cancelled"  #: the task reading it was cancelled


class StreamOutcome:
    """What an observer learns when a stream ends: how, the error, chunk count, usage and finish reason."""

    __slots__ = ("chunks", "end", "error", "finish_reason", "usage")

    def __init__(
        self,
        end: StreamEnd,
        error: BaseException | None,
        chunks: int,
        usage: UsageStats | None,
        finish_reason: FinishReason | None,
    ) -> None:
        self.end = end
        self.error = error
        self.chunks = chunks
        self.usage = usage
        self.finish_reason = finish_reason

    def __repr__(self) -> str:
        return f"StreamOutcome(end={self.end.name}, chunks={self.chunks}, error={self.error!r})"


class ObservedStream:
    """Wraps a :class:`ChunkStream`, calling ``on_chunk(chunk)`` for each chunk and ``on_end(outcome)``
    exactly once, however the stream ends: exhausted, failed, closed by the caller (even before the first
    chunk) or cancelled. Closing it closes the inner stream.

    Use :func:`observe_stream` to make one.
    """

    __slots__ = ("_chunks", "_done", "_ended", "_finish", "_inner", "_on_chunk", "_on_end", "_usage")

    def __init__(
        self,
        inner: ChunkStream,
        on_end: Callable[[StreamOutcome], None],
        on_chunk: Callable[[StreamChunk], None] | None = None,
    ) -> None:
        self._inner = inner
        self._on_end = on_end
        self._on_chunk = on_chunk
        self._chunks = 0
        self._usage: UsageStats | None = None
        self._finish: FinishReason | None = None
        self._done = False
        self._ended = False

    def __aiter__(self) -> ObservedStream:
        return self

    async def __anext__(self) -> StreamChunk:
        if self._ended:
            raise StopAsyncIteration
        try:
            chunk = await self._inner.__anext__()
        except StopAsyncIteration:
            self._end(StreamEnd.COMPLETED, None)
            raise
        except asyncio.CancelledError as exc:
            await self._close_inner_then_end(StreamEnd.CANCELLED, exc, quiet=True)
            raise
        except BaseException as exc:
            await self._close_inner_then_end(StreamEnd.FAILED, exc, quiet=True)
            raise
        self._chunks += 1
        if chunk.usage is not None:
            self._usage = chunk.usage
        if chunk.finish_reason is not None:
            self._finish = chunk.finish_reason
        if chunk.done:
            self._done = True
        if self._on_chunk is not None:
            self._on_chunk(chunk)
        return chunk

    async def aclose(self) -> None:
        if self._ended:
            return
        # Closed after the final (done) chunk: the caller has the whole answer, so the call completed.
        await self._close_inner_then_end(StreamEnd.COMPLETED if self._done else StreamEnd.CLOSED, None)

    async def _close_inner_then_end(self, end: StreamEnd, error: BaseException | None, quiet: bool = False) -> None:
        """Close the inner stream, then finalise. ``quiet``: the stream already failed, and that error (not
        one from closing it) is what the caller must see."""
        try:
            await self._inner.aclose()
        except asyncio.CancelledError as exc:
            # Cancelled while closing: still finalise, as cancelled, then let it propagate.
            self._end(StreamEnd.CANCELLED, exc)
            raise
        except Exception:
            if not quiet:
                raise
        finally:
            self._end(end, error)

    def _end(self, end: StreamEnd, error: BaseException | None) -> None:
        if self._ended:
            return
        self._ended = True
        self._on_end(StreamOutcome(end, error, self._chunks, self._usage, self._finish))

    async def __aenter__(self) -> ObservedStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def observe_stream(
    stream: ChunkStream,
    on_end: Callable[[StreamOutcome], None],
    *,
    on_chunk: Callable[[StreamChunk], None] | None = None,
) -> ObservedStream:
    """Return ``stream`` wrapped so that ``on_end`` runs exactly once when it ends, however it ends.

    This is the one place a middleware finalises a streamed call (logging, cost, breaker outcome)::

        reply = await self.next(request, ctx)
        if isinstance(reply, CompletionResponse):
            self._record(reply.usage)
            return reply
        return observe_stream(reply, lambda outcome: self._record(outcome.usage))

    The callbacks are synchronous and must not raise.
    """
    return ObservedStream(stream, on_end, on_chunk)
