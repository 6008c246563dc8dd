from __future__ import annotations

import asyncio

import pytest

from axonflow_llm import CallContext, CompletionRequest, CompletionResponse, ProviderInfo, ServerError
from axonflow_llm.testing import FakeClock, ScriptedHandler, delay, response, stream

REQ = CompletionRequest(prompt="hi")


def ctx(streaming: bool = False) -> CallContext:
    return CallContext(ProviderInfo(name="p", type="custom"), streaming=streaming)


async def test_script_is_consumed_in_order_then_the_default() -> None:
    handler = ScriptedHandler(ServerError("x", status_code=500), response("second"))
    with pytest.raises(ServerError):
        await handler(REQ, ctx())
    second = await handler(REQ, ctx())
    assert isinstance(second, CompletionResponse) and second.content == "second"
    third = await handler(REQ, ctx())
    assert isinstance(third, CompletionResponse) and third.content == "ok"
    assert handler.call_count == 3 and handler.requests == [REQ, REQ, REQ]


async def test_delay_uses_the_clock_and_callables_see_the_request() -> None:
    clock = FakeClock()
    handler = ScriptedHandler(delay(2.5, lambda r, c: response(r.prompt or "")), clock=clock)
    reply = await handler(REQ, ctx())
    assert isinstance(reply, CompletionResponse) and reply.content == "hi"
    assert clock.now() == 2.5


async def test_streams_are_recorded_and_marked_done() -> None:
    handler = ScriptedHandler(stream("a", "b"))
    reply = await handler(REQ, ctx(streaming=True))
    chunks = [c async for c in reply]  # type: ignore[union-attr]
    assert [(c.content, c.done) for c in chunks] == [("a", False), ("b", True)]
    assert handler.streams[0].closed


async def test_unscriptable_item_is_a_clear_error() -> None:
    handler = ScriptedHandler(42)
    with pytest.raises(TypeError, match="cannot produce 42"):
        await handler(REQ, ctx())


async def test_a_scripted_streams_chunk_delay_runs_on_the_handlers_clock_when_the_stream_names_none() -> None:
    clock = FakeClock()
    handler = ScriptedHandler(stream("a", "b", chunk_delay=30.0), clock=clock)
    reply = await handler(REQ, ctx(streaming=True))

    async def drain() -> list[str]:
        return [c.content async for c in reply]  # type: ignore[union-attr]

    assert await asyncio.wait_for(drain(), timeout=5.0) == ["a", "b"]  # virtual time, not 60 real seconds
    assert clock.sleeps == [30.0, 30.0] and clock.now() == 60.0
