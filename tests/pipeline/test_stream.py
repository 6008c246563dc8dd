"""A stream finalises every middleware exactly once, however it ends."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from axonflow_llm import (
    BaseProvider,
    CallContext,
    CompletionRequest,
    CompletionResponse,
    Layer,
    Middleware,
    Pipeline,
    ProviderType,
    Reply,
    StreamChunk,
    StreamEnd,
    StreamOutcome,
    UsageStats,
    hook,
    observe_stream,
)
from axonflow_llm.testing import ScriptedHandler, ScriptedStream, stream

REQ = CompletionRequest(prompt="hi")


class Observer(Middleware):
    __slots__ = ("ends", "tag")

    def __init__(self, next_handler: Any, /, *, tag: str, ends: list[tuple[str, StreamOutcome]]) -> None:
        super().__init__(next_handler)
        self.tag = tag
        self.ends = ends

    async def __call__(self, request: CompletionRequest, ctx: CallContext) -> Reply:
        reply = await self.next(request, ctx)
        if isinstance(reply, CompletionResponse):
            return reply
        return observe_stream(reply, lambda outcome: self.ends.append((self.tag, outcome)))


class Leaf(BaseProvider):
    def __init__(self, handler: ScriptedHandler, pipeline: Pipeline) -> None:
        super().__init__(name="leaf", type=ProviderType.CUSTOM, pipeline=pipeline)
        self.handler = handler

    async def send(self, request: CompletionRequest, ctx: CallContext) -> Reply:
        return await self.handler(request, ctx)


def make(*script: Any) -> tuple[Leaf, ScriptedHandler, list[tuple[str, StreamOutcome]]]:
    ends: list[tuple[str, StreamOutcome]] = []
    pipeline = Pipeline([Layer(Observer, name=t, tag=t, ends=ends) for t in ("outer", "middle", "inner")])
    handler = ScriptedHandler(*script)
    return Leaf(handler, pipeline), handler, ends


def assert_each_once(ends: list[tuple[str, StreamOutcome]], end: StreamEnd) -> None:
    assert sorted(tag for tag, _ in ends) == ["inner", "middle", "outer"]
    assert {o.end for _, o in ends} == {end}


async def test_exhausted_stream_finalises_each_once_with_usage() -> None:
    usage = UsageStats(prompt_tokens=1, completion_tokens=2, total_tokens=3)
    provider, handler, ends = make(stream("a", "b", usage=usage))
    chunks = [c async for c in provider.stream(REQ)]
    assert [c.content for c in chunks] == ["a", "b"]
    assert chunks[-1].done
    assert_each_once(ends, StreamEnd.COMPLETED)
    assert all(o.usage == usage and o.chunks == 2 for _, o in ends)
    assert handler.streams[0].closed


async def test_closed_early_by_the_caller_finalises_each_once() -> None:
    provider, handler, ends = make(stream("a", "b", "c"))
    async with provider.stream(REQ) as s:
        async for chunk in s:
            assert chunk.content == "a"
            break
    assert_each_once(ends, StreamEnd.CLOSED)
    assert ends[0][1].chunks == 1
    assert handler.streams[0].closed


async def test_closed_after_the_done_chunk_counts_as_completed() -> None:
    usage = UsageStats(prompt_tokens=1, completion_tokens=2, total_tokens=3)
    provider, handler, ends = make(stream("a", usage=usage))
    async with provider.stream(REQ) as s:
        async for chunk in s:
            if chunk.done:
                break  # the whole answer is in: closing now is not cutting it short
    assert_each_once(ends, StreamEnd.COMPLETED)
    assert all(o.usage == usage for _, o in ends)
    assert handler.streams[0].closed


async def test_cancelled_reader_finalises_each_once() -> None:
    gate = asyncio.Event()

    class Hanging(ScriptedStream):
        async def __anext__(self) -> StreamChunk:
            if self.yielded == 1:
                await gate.wait()  # never set: the reader is cancelled here
            return await super().__anext__()

    provider, handler, ends = make(lambda r, c: Hanging([StreamChunk(content="a"), StreamChunk(content="b")]))
    got: list[str] = []

    async def read() -> None:
        async with provider.stream(REQ) as s:
            async for chunk in s:
                got.append(chunk.content)

    task = asyncio.create_task(read())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert got == ["a"]
    assert_each_once(ends, StreamEnd.CANCELLED)
    assert handler.streams[0].closed


async def test_failed_stream_finalises_each_once_and_raises() -> None:
    provider, _, ends = make(stream("a", error=RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        async for _ in provider.stream(REQ):
            pass
    assert_each_once(ends, StreamEnd.FAILED)
    assert all(isinstance(o.error, RuntimeError) for _, o in ends)


async def test_closed_before_the_first_chunk_still_finalises() -> None:
    ends: list[tuple[str, StreamOutcome]] = []
    inner = ScriptedStream([StreamChunk(content="a")])
    observed = observe_stream(inner, lambda o: ends.append(("x", o)))
    await observed.aclose()
    await observed.aclose()  # idempotent
    assert [o.end for _, o in ends] == [StreamEnd.CLOSED]
    assert inner.closed


async def test_abandoned_stream_is_finalised_when_collected() -> None:
    provider, handler, ends = make(stream("a", "b", "c"))
    s = provider.stream(REQ)
    assert (await s.__anext__()).content == "a"
    del s
    gc.collect()
    for _ in range(5):  # the loop's async-generator finaliser runs aclose() as a task
        await asyncio.sleep(0)
    assert_each_once(ends, StreamEnd.CLOSED)
    assert handler.streams[0].closed


async def test_never_iterated_stream_sends_nothing() -> None:
    provider, handler, ends = make(stream("a"))
    s = provider.stream(REQ)
    await s.aclose()
    assert handler.call_count == 0
    assert ends == []


async def test_a_response_reply_to_a_stream_call_arrives_as_one_final_chunk() -> None:
    async def cache(request: CompletionRequest, ctx: CallContext, call_next: Any) -> Reply:
        return CompletionResponse(content="whole", usage=UsageStats(total_tokens=5))

    handler = ScriptedHandler()
    provider = Leaf(handler, Pipeline([hook(cache)]))
    chunks = [c async for c in provider.stream(REQ)]
    assert len(chunks) == 1
    assert chunks[0].content == "whole" and chunks[0].done
    assert chunks[0].usage == UsageStats(total_tokens=5)
    assert handler.call_count == 0


async def test_a_failed_stream_raises_its_own_error_even_when_closing_the_inner_stream_fails_too() -> None:
    class BrokenClose(ScriptedStream):
        async def aclose(self) -> None:
            raise RuntimeError("close failed as well")

    ends: list[tuple[str, StreamOutcome]] = []
    cause = ConnectionResetError("peer reset")
    observed = observe_stream(BrokenClose([StreamChunk(content="a")], error=cause), lambda o: ends.append(("x", o)))
    assert (await observed.__anext__()).content == "a"
    with pytest.raises(ConnectionResetError):  # the stream's error, which retry and the breaker judge
        await observed.__anext__()
    assert [(o.end, o.error) for _, o in ends] == [(StreamEnd.FAILED, cause)]


async def test_closing_by_the_caller_still_reports_a_failing_inner_close() -> None:
    class BrokenClose(ScriptedStream):
        async def aclose(self) -> None:
            raise RuntimeError("close failed")

    ends: list[tuple[str, StreamOutcome]] = []
    observed = observe_stream(BrokenClose([StreamChunk(content="a")]), lambda o: ends.append(("x", o)))
    with pytest.raises(RuntimeError, match="close failed"):
        await observed.aclose()
    assert [o.end for _, o in ends] == [StreamEnd.CLOSED]
