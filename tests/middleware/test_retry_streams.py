"""RetryMiddleware with streamed calls: retry before the first chunk, never after it."""

from __future__ import annotations

import asyncio

import pytest

from axonflow_llm.middleware.retry import RetryMiddleware
from axonflow_llm.middleware.retry_config import RetryConfig
from axonflow_llm.pipeline.context import CallContext, ProviderInfo
from axonflow_llm.pipeline.errors import (
    APIConnectionError,
    BadRequestError,
    ServerError,
    StreamInterruptedError,
)
from axonflow_llm.pipeline.models import CompletionRequest, CompletionResponse, StreamChunk
from axonflow_llm.pipeline.stream import ChunkStream
from axonflow_llm.testing import FakeClock, ScriptedHandler, ScriptedStream, response, stream

REQUEST = CompletionRequest(prompt="hi")


def sctx() -> CallContext:
    return CallContext(ProviderInfo(name="acme", type="custom"), streaming=True)


async def contents(reply: object) -> list[str]:
    assert isinstance(reply, ChunkStream)
    return [chunk.content async for chunk in reply]


def retry(handler: ScriptedHandler, clock: FakeClock, **config: object) -> RetryMiddleware:
    return RetryMiddleware(handler, config=RetryConfig(jitter=0, **config), clock=clock)  # type: ignore[arg-type]


async def test_an_error_before_the_first_chunk_is_retried_and_the_failed_stream_closed() -> None:
    clock = FakeClock()
    handler = ScriptedHandler(stream(error=ServerError("x", status_code=503)), stream("a", "b"), clock=clock)
    c = sctx()
    reply = await retry(handler, clock)(REQUEST, c)
    assert await contents(reply) == ["a", "b"]
    assert handler.call_count == 2 and c.attempt == 2
    assert handler.streams[0].closed
    assert clock.sleeps == [0.1]


async def test_an_error_raised_before_any_stream_is_retried() -> None:
    clock = FakeClock()
    handler = ScriptedHandler(APIConnectionError("refused"), stream("a"), clock=clock)
    assert await contents(await retry(handler, clock)(REQUEST, sctx())) == ["a"]
    assert handler.call_count == 2


async def test_an_error_after_the_first_chunk_is_stream_interrupted_and_not_replayed() -> None:
    clock = FakeClock()
    cause = ServerError("broke", status_code=502)
    handler = ScriptedHandler(stream("a", "b", error=cause), then=stream("never"), clock=clock)
    reply = await retry(handler, clock)(REQUEST, sctx())
    assert isinstance(reply, ChunkStream)
    got = [(await reply.__anext__()).content, (await reply.__anext__()).content]
    with pytest.raises(StreamInterruptedError) as info:
        await reply.__anext__()
    assert got == ["a", "b"]
    assert info.value.__cause__ is cause
    assert info.value.chunks_received == 2 and info.value.provider == "acme"
    assert "nothing is replayed" in str(info.value)
    assert handler.call_count == 1
    assert clock.sleeps == []
    with pytest.raises(StopAsyncIteration):  # the stream is over
        await reply.__anext__()


async def test_a_stream_interrupted_error_after_the_first_chunk_passes_through_unchanged() -> None:
    clock = FakeClock()
    original = StreamInterruptedError("no end marker", provider="acme", chunks_received=1)
    handler = ScriptedHandler(stream("a", error=original), clock=clock)
    reply = await retry(handler, clock)(REQUEST, sctx())
    with pytest.raises(StreamInterruptedError) as info:
        await contents(reply)
    assert info.value is original


async def test_cancellation_after_the_first_chunk_is_not_wrapped() -> None:
    clock = FakeClock()
    handler = ScriptedHandler(stream("a", error=asyncio.CancelledError()), clock=clock)
    reply = await retry(handler, clock)(REQUEST, sctx())
    with pytest.raises(asyncio.CancelledError):
        await contents(reply)


async def test_closing_early_closes_the_inner_stream() -> None:
    clock = FakeClock()
    handler = ScriptedHandler(stream("a", "b", "c"), clock=clock)
    reply = await retry(handler, clock)(REQUEST, sctx())
    assert isinstance(reply, ChunkStream)
    assert (await reply.__anext__()).content == "a"
    await reply.aclose()
    assert handler.streams[0].closed
    with pytest.raises(StopAsyncIteration):
        await reply.__anext__()


async def test_closing_before_reading_closes_the_inner_stream() -> None:
    clock = FakeClock()
    handler = ScriptedHandler(stream("a", "b"), clock=clock)
    reply = await retry(handler, clock)(REQUEST, sctx())
    assert isinstance(reply, ChunkStream)
    await reply.aclose()
    assert handler.streams[0].closed
    assert handler.streams[0].yielded == 1  # only the prefetched chunk was pulled


async def test_an_empty_stream_is_returned_empty() -> None:
    clock = FakeClock()
    handler = ScriptedHandler(lambda request, ctx: ScriptedStream([]), clock=clock)
    reply = await retry(handler, clock)(REQUEST, sctx())
    assert await contents(reply) == []
    assert handler.call_count == 1


async def test_a_non_retryable_error_before_the_first_chunk_is_raised_at_once() -> None:
    clock = FakeClock()
    error = BadRequestError("bad", status_code=400)
    handler = ScriptedHandler(stream(error=error), clock=clock)
    with pytest.raises(BadRequestError) as info:
        await retry(handler, clock)(REQUEST, sctx())
    assert info.value is error and handler.call_count == 1 and handler.streams[0].closed


async def test_exhausted_stream_retries_raise_the_last_error_and_close_every_stream() -> None:
    clock = FakeClock()
    errors = [ServerError(f"x{i}", status_code=503) for i in range(3)]
    handler = ScriptedHandler(*(stream(error=e) for e in errors), clock=clock)
    with pytest.raises(ServerError) as info:
        await retry(handler, clock, max_retries=2)(REQUEST, sctx())
    assert info.value is errors[-1]
    assert "gave up after 3 attempts" in info.value.__notes__[0]
    assert all(s.closed for s in handler.streams) and len(handler.streams) == 3


async def test_cancellation_while_waiting_for_the_first_chunk_closes_the_stream() -> None:
    clock = FakeClock(auto_advance=False)
    handler = ScriptedHandler(stream("late", chunk_delay=10.0, clock=clock), clock=clock)
    task = asyncio.create_task(retry(handler, clock)(REQUEST, sctx()))
    while clock.pending() == 0:
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert handler.streams[0].closed and clock.pending() == 0


async def test_a_plain_response_to_a_streamed_call_is_passed_through() -> None:
    clock = FakeClock()

    async def cached(request: CompletionRequest, ctx: CallContext) -> CompletionResponse:
        return response("cached")

    reply = await RetryMiddleware(cached, clock=clock)(REQUEST, sctx())
    assert reply == response("cached")


async def test_the_returned_stream_works_as_an_async_context_manager() -> None:
    clock = FakeClock()
    handler = ScriptedHandler(stream("a", "b"), clock=clock)
    reply = await retry(handler, clock)(REQUEST, sctx())
    async with reply as s:  # type: ignore[union-attr]
        first: StreamChunk = await s.__anext__()
    assert first.content == "a" and handler.streams[0].closed
