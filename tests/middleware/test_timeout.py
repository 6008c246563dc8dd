"""TimeoutMiddleware: the attempt, first-chunk and idle limits, in virtual time; cancellation stays cancellation."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from axonflow_llm.middleware.timeout import TimeoutMiddleware
from axonflow_llm.pipeline.context import CallContext, ProviderInfo
from axonflow_llm.pipeline.errors import APITimeoutError
from axonflow_llm.pipeline.models import CompletionRequest, CompletionResponse, StreamChunk
from axonflow_llm.pipeline.stream import ChunkStream
from axonflow_llm.testing import FakeClock, ScriptedHandler, delay, response, stream

REQUEST = CompletionRequest(prompt="hi")


def ctx(streaming: bool = False) -> CallContext:
    return CallContext(ProviderInfo(name="acme", type="custom"), streaming=streaming)


class GappedStream:
    """Yields one chunk after each gap (seconds on the clock); records whether it was closed."""

    def __init__(self, clock: FakeClock, *gaps: float) -> None:
        self.clock = clock
        self.gaps = list(gaps)
        self.closed = False
        self.cancelled = False

    def __aiter__(self) -> GappedStream:
        return self

    async def __anext__(self) -> StreamChunk:
        if self.closed or not self.gaps:
            raise StopAsyncIteration
        try:
            await self.clock.sleep(self.gaps.pop(0))
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return StreamChunk(content=str(len(self.gaps)))

    async def aclose(self) -> None:
        self.closed = True


def returns(reply: Any, *, after: float = 0.0, clock: FakeClock | None = None) -> Any:
    """A leaf that returns ``reply`` (after ``after`` seconds on ``clock``)."""

    async def leaf(request: CompletionRequest, c: CallContext) -> Any:
        if after:
            assert clock is not None
            await clock.sleep(after)
        return reply

    return leaf


async def drain(reply: Any) -> list[str]:
    assert isinstance(reply, ChunkStream)
    return [c.content async for c in reply]


# -- configuration ------------------------------------------------------------------------------------


def test_at_least_one_limit_is_required() -> None:
    with pytest.raises(ValueError, match="at least one of timeout="):
        TimeoutMiddleware(ScriptedHandler())


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf, True, "5"])
@pytest.mark.parametrize("name", ["timeout", "first_chunk_timeout", "idle_timeout"])
def test_each_limit_must_be_a_positive_finite_number(name: str, bad: Any) -> None:
    with pytest.raises(ValueError, match=f"{name} must be a finite number of seconds > 0"):
        TimeoutMiddleware(ScriptedHandler(), **{name: bad})


def test_repr_lists_the_limits() -> None:
    mw = TimeoutMiddleware(ScriptedHandler(), timeout=30, idle_timeout=5)
    assert repr(mw) == "TimeoutMiddleware(timeout=30, first_chunk_timeout=None, idle_timeout=5)"


# -- complete() ---------------------------------------------------------------------------------------


async def test_a_reply_within_the_timeout_passes_through() -> None:
    clock = FakeClock()
    mw = TimeoutMiddleware(ScriptedHandler(delay(4.9, response("fine")), clock=clock), timeout=5, clock=clock)
    reply = await mw(REQUEST, ctx())
    assert isinstance(reply, CompletionResponse) and reply.content == "fine"


async def test_a_slow_reply_raises_api_timeout_naming_limit_value_and_provider_and_cancels_the_work() -> None:
    clock = FakeClock()
    seen: list[str] = []

    async def slow(request: CompletionRequest, c: CallContext) -> CompletionResponse:
        try:
            await clock.sleep(60)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        return response()

    mw = TimeoutMiddleware(slow, timeout=5, clock=clock)
    with pytest.raises(APITimeoutError) as info:
        await mw(REQUEST, ctx())
    assert str(info.value) == "acme: no reply within timeout=5s"
    assert info.value.provider == "acme"
    assert info.value.retryable
    assert isinstance(info.value.__cause__, TimeoutError)
    assert seen == ["cancelled"]
    assert clock.now() == 5


async def test_complete_without_a_call_limit_is_not_timed() -> None:
    clock = FakeClock()
    mw = TimeoutMiddleware(ScriptedHandler(delay(100, response()), clock=clock), idle_timeout=1, clock=clock)
    assert isinstance(await mw(REQUEST, ctx()), CompletionResponse)


async def test_a_timeout_error_raised_by_the_handler_itself_is_not_ours_and_passes_unchanged() -> None:
    clock = FakeClock()
    mw = TimeoutMiddleware(ScriptedHandler(TimeoutError("socket")), timeout=5, clock=clock)
    with pytest.raises(TimeoutError, match="socket") as info:
        await mw(REQUEST, ctx())
    assert not isinstance(info.value, APITimeoutError)


@pytest.mark.parametrize("system", [False, True])
async def test_the_callers_cancellation_stays_a_cancellation(system: bool) -> None:
    clock = None if system else FakeClock()
    started = asyncio.Event()

    async def slow(request: CompletionRequest, c: CallContext) -> CompletionResponse:
        started.set()
        await asyncio.sleep(3600) if clock is None else await clock.sleep(3600)
        return response()

    mw = TimeoutMiddleware(slow, timeout=60, clock=clock)
    task = asyncio.create_task(mw(REQUEST, ctx()))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def test_a_cancellation_racing_with_the_deadline_stays_a_cancellation() -> None:
    clock = FakeClock(auto_advance=False)
    mw = TimeoutMiddleware(ScriptedHandler(delay(10, response()), clock=clock), timeout=1, clock=clock)
    task = asyncio.create_task(mw(REQUEST, ctx()))
    await clock.advance(0)

    async def caller_cancels_at_the_deadline() -> None:
        await clock.sleep(1)  # woken right after the timeout's watcher, before the task runs again
        task.cancel()

    canceller = asyncio.create_task(caller_cancels_at_the_deadline())
    await clock.advance(0)
    await clock.advance(1)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    await canceller


async def test_with_the_system_clock_a_tiny_real_timeout_works() -> None:
    async def slow(request: CompletionRequest, c: CallContext) -> CompletionResponse:
        await asyncio.sleep(5)
        return response()

    mw = TimeoutMiddleware(slow, timeout=0.01)
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(APITimeoutError, match=r"timeout=0\.01s"):
        await mw(REQUEST, ctx())
    assert loop.time() - start < 1.0


async def test_with_the_system_clock_idle_timeout_bounds_a_stalled_stream() -> None:
    async def gen() -> Any:
        yield StreamChunk(content="a")
        await asyncio.sleep(5)
        yield StreamChunk(content="b")

    async def leaf(request: CompletionRequest, c: CallContext) -> Any:
        return gen()

    reply = await TimeoutMiddleware(leaf, idle_timeout=0.01)(REQUEST, ctx(streaming=True))
    assert (await reply.__anext__()).content == "a"  # type: ignore[union-attr]
    with pytest.raises(APITimeoutError, match=r"idle_timeout=0\.01s"):
        await reply.__anext__()  # type: ignore[union-attr]


# -- streams ------------------------------------------------------------------------------------------


async def test_timeout_bounds_getting_a_streams_reply() -> None:
    clock = FakeClock()
    handler = ScriptedHandler(delay(10, stream("a")), clock=clock)
    with pytest.raises(APITimeoutError, match=r"^acme: no reply within timeout=3s$"):
        await TimeoutMiddleware(handler, timeout=3, clock=clock)(REQUEST, ctx(streaming=True))


async def test_timeout_alone_does_not_bound_the_chunks() -> None:
    clock = FakeClock()
    gapped = GappedStream(clock, 10, 10)
    mw = TimeoutMiddleware(returns(gapped), timeout=3, clock=clock)
    reply = await mw(REQUEST, ctx(streaming=True))
    assert reply is gapped
    assert await drain(reply) == ["1", "0"]


async def test_first_chunk_timeout_raises_and_closes_the_stream() -> None:
    clock = FakeClock()
    gapped = GappedStream(clock, 5, 1)
    mw = TimeoutMiddleware(returns(gapped), first_chunk_timeout=2, clock=clock)
    reply = await mw(REQUEST, ctx(streaming=True))
    with pytest.raises(APITimeoutError) as info:
        await drain(reply)
    assert str(info.value) == "acme: no first chunk within first_chunk_timeout=2s"
    assert gapped.cancelled and gapped.closed
    assert clock.now() == 2
    with pytest.raises(StopAsyncIteration):
        await reply.__anext__()  # type: ignore[union-attr]


async def test_first_chunk_timeout_counts_from_the_start_of_the_attempt() -> None:
    clock = FakeClock()
    gapped = GappedStream(clock, 1.0)
    mw = TimeoutMiddleware(returns(gapped, after=1.5, clock=clock), first_chunk_timeout=2, clock=clock)
    reply = await mw(REQUEST, ctx(streaming=True))
    with pytest.raises(APITimeoutError, match="first_chunk_timeout=2s"):
        await drain(reply)
    assert clock.now() == 2


async def test_first_chunk_timeout_covers_a_reply_that_never_begins() -> None:
    clock = FakeClock()
    handler = ScriptedHandler(delay(10, stream("a")), clock=clock)
    mw = TimeoutMiddleware(handler, timeout=30, first_chunk_timeout=2, clock=clock)
    with pytest.raises(APITimeoutError) as info:
        await mw(REQUEST, ctx(streaming=True))
    assert str(info.value) == "acme: no first chunk (the reply had not begun) within first_chunk_timeout=2s"
    assert clock.now() == 2


async def test_idle_timeout_bounds_each_gap_between_chunks() -> None:
    clock = FakeClock()
    gapped = GappedStream(clock, 0.5, 0.9, 0.9, 1.5, 0.1)
    mw = TimeoutMiddleware(returns(gapped), idle_timeout=1, clock=clock)
    reply = await mw(REQUEST, ctx(streaming=True))
    got = [(await reply.__anext__()).content for _ in range(3)]  # type: ignore[union-attr]
    assert got == ["4", "3", "2"]
    with pytest.raises(APITimeoutError) as info:
        await reply.__anext__()  # type: ignore[union-attr]
    assert str(info.value) == "acme: no chunk since the last one within idle_timeout=1s"
    assert gapped.closed
    assert clock.now() == pytest.approx(3.3)


async def test_idle_timeout_also_bounds_the_first_chunk_when_first_chunk_timeout_is_unset() -> None:
    clock = FakeClock()
    gapped = GappedStream(clock, 3)
    mw = TimeoutMiddleware(returns(gapped), idle_timeout=1, clock=clock)
    with pytest.raises(APITimeoutError, match="no first chunk within idle_timeout=1s"):
        await drain(await mw(REQUEST, ctx(streaming=True)))


async def test_idle_timeout_alone_also_bounds_waiting_for_a_streamed_reply() -> None:
    clock = FakeClock()
    handler = ScriptedHandler(delay(5, stream("late")), clock=clock)
    mw = TimeoutMiddleware(handler, idle_timeout=1, clock=clock)
    with pytest.raises(APITimeoutError, match=r"acme: no reply within idle_timeout=1s"):
        await mw(REQUEST, ctx(streaming=True))
    assert clock.now() == pytest.approx(1)


async def test_stream_limits_do_not_count_time_the_caller_spends_between_chunks() -> None:
    clock = FakeClock()
    gapped = GappedStream(clock, 0.5, 0.5, 0.5)
    mw = TimeoutMiddleware(returns(gapped), first_chunk_timeout=1, idle_timeout=1, clock=clock)
    reply = await mw(REQUEST, ctx(streaming=True))
    got = []
    async for chunk in reply:  # type: ignore[union-attr]
        got.append(chunk.content)
        await clock.sleep(30)  # the caller is busy
    assert got == ["2", "1", "0"]


async def test_a_stream_within_every_limit_is_delivered_whole_and_closes_its_inner_stream() -> None:
    clock = FakeClock()
    handler = ScriptedHandler(stream("a", "b", "c", chunk_delay=0.5, clock=clock), clock=clock)
    mw = TimeoutMiddleware(handler, timeout=1, first_chunk_timeout=1, idle_timeout=1, clock=clock)
    reply = await mw(REQUEST, ctx(streaming=True))
    assert await drain(reply) == ["a", "b", "c"]
    await reply.aclose()  # type: ignore[union-attr]
    assert handler.streams[0].closed


async def test_a_completion_answering_a_stream_call_is_returned_as_is() -> None:
    clock = FakeClock()

    async def cached(request: CompletionRequest, c: CallContext) -> CompletionResponse:
        return response("cached")

    mw = TimeoutMiddleware(cached, first_chunk_timeout=1, idle_timeout=1, clock=clock)
    reply = await mw(REQUEST, ctx(streaming=True))
    assert isinstance(reply, CompletionResponse)


async def test_the_callers_cancellation_while_awaiting_a_chunk_stays_a_cancellation() -> None:
    clock = FakeClock()
    gapped = GappedStream(clock, 100)
    mw = TimeoutMiddleware(returns(gapped), idle_timeout=50, clock=clock)
    reply = await mw(REQUEST, ctx(streaming=True))
    task = asyncio.create_task(drain(reply))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("system", [False, True])
async def test_work_that_swallows_the_timeouts_cancellation_leaves_no_cancel_request_behind(system: bool) -> None:
    clock = None if system else FakeClock()

    async def stubborn(request: CompletionRequest, c: CallContext) -> CompletionResponse:
        try:
            await (asyncio.sleep(5) if clock is None else clock.sleep(5))
        except asyncio.CancelledError:
            return response("swallowed")
        return response("slept")

    reply = await TimeoutMiddleware(stubborn, timeout=0.01, clock=clock)(REQUEST, ctx())
    assert isinstance(reply, CompletionResponse) and reply.content == "swallowed"
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0)  # and no cancellation is still pending for this task


@pytest.mark.parametrize("system", [False, True])
async def test_after_a_timeout_the_task_carries_no_leftover_cancel_request(system: bool) -> None:
    clock = None if system else FakeClock()

    async def slow(request: CompletionRequest, c: CallContext) -> CompletionResponse:
        await (asyncio.sleep(5) if clock is None else clock.sleep(5))
        return response()

    with pytest.raises(APITimeoutError):
        await TimeoutMiddleware(slow, timeout=0.01, clock=clock)(REQUEST, ctx())
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0)


async def test_system_clock_deadlines_share_one_timer_and_expire_only_the_slow_calls() -> None:
    gates = {"slow": asyncio.Event(), "fast": asyncio.Event()}

    async def leaf(request: CompletionRequest, c: CallContext) -> CompletionResponse:
        await gates[request.prompt or ""].wait()
        return response(request.prompt or "")

    mw = TimeoutMiddleware(leaf, timeout=0.05)
    loop = asyncio.get_running_loop()
    start = loop.time()
    slow = [asyncio.create_task(mw(CompletionRequest(prompt="slow"), ctx())) for _ in range(3)]
    await asyncio.sleep(0.02)
    fast = [asyncio.create_task(mw(CompletionRequest(prompt="fast"), ctx())) for _ in range(3)]
    await asyncio.sleep(0)
    gates["fast"].set()
    for task in fast:
        assert (await task).content == "fast"  # type: ignore[union-attr]
    for task in slow:
        with pytest.raises(APITimeoutError):
            await task
    assert 0.04 <= loop.time() - start < 1.0
    # The queue is empty again and the next call gets a fresh, full deadline.
    gates["slow"].set()
    assert (await mw(CompletionRequest(prompt="slow"), ctx())).content == "slow"  # type: ignore[union-attr]
    assert mw._deadlines is not None and not mw._deadlines.entries


async def test_system_clock_deadline_of_a_later_call_is_its_own() -> None:
    """A call started after others must not inherit their (earlier) deadline."""
    release = asyncio.Event()

    async def leaf(request: CompletionRequest, c: CallContext) -> CompletionResponse:
        if request.prompt == "first":
            return response("first")
        await asyncio.wait_for(release.wait(), 1.0)
        return response("late")

    mw = TimeoutMiddleware(leaf, timeout=0.08)
    await mw(CompletionRequest(prompt="first"), ctx())  # arms the shared timer for t+0.08
    await asyncio.sleep(0.05)
    late = asyncio.create_task(mw(CompletionRequest(prompt="late"), ctx()))  # deadline t+0.13
    await asyncio.sleep(0.05)  # past the first call's deadline, before the late one's
    assert not late.done()
    release.set()
    assert (await late).content == "late"  # type: ignore[union-attr]


async def test_system_clock_caller_cancellation_stays_a_cancellation() -> None:
    async def leaf(request: CompletionRequest, c: CallContext) -> CompletionResponse:
        await asyncio.sleep(5)
        return response()

    mw = TimeoutMiddleware(leaf, timeout=1.0)
    task = asyncio.create_task(mw(REQUEST, ctx()))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert mw._deadlines is not None and not mw._deadlines.entries


async def test_system_clock_a_nested_call_in_the_same_task_keeps_both_deadlines() -> None:
    async def leaf(request: CompletionRequest, c: CallContext) -> CompletionResponse:
        if request.prompt == "outer":
            inner = await mw(CompletionRequest(prompt="inner"), ctx())  # same middleware, same task
            assert inner.content == "inner"  # type: ignore[union-attr]
            await asyncio.sleep(5)
        return response(request.prompt or "")

    mw = TimeoutMiddleware(leaf, timeout=0.05)
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(APITimeoutError):
        await mw(CompletionRequest(prompt="outer"), ctx())
    assert loop.time() - start < 1.0
    assert mw._deadlines is not None and not mw._deadlines.entries and not mw._deadlines.fired
