"""RateLimitMiddleware: request slots and LLM tokens per minute, blocking or not, per tenant, reconciled."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from axonflow_llm.middleware.rate_limit import RateLimitMiddleware, estimate_prompt_tokens
from axonflow_llm.middleware.rate_limiter import MultiTenantRateLimiter, RateLimiter
from axonflow_llm.pipeline.context import CallContext, ProviderInfo
from axonflow_llm.pipeline.errors import RateLimitExceededError, ServerError
from axonflow_llm.pipeline.models import CompletionRequest, Message, UsageStats
from axonflow_llm.pipeline.stream import ChunkStream
from axonflow_llm.testing import FakeClock, ScriptedHandler, response, stream

REQUEST = CompletionRequest(prompt="hi", max_tokens=100)  # estimate: 1 + 100 tokens


def ctx(streaming: bool = False) -> CallContext:
    return CallContext(ProviderInfo(name="acme", type="custom"), streaming=streaming)


def used(total: int) -> Any:
    half = total // 2
    return response(usage=UsageStats(prompt_tokens=half, completion_tokens=total - half, total_tokens=total))


def tenant_of(request: CompletionRequest) -> str:
    return str(request.metadata["tenant"])


# -- configuration ------------------------------------------------------------------------------------


def test_configuration_errors_name_the_fix() -> None:
    h = ScriptedHandler()
    mt = MultiTenantRateLimiter(lambda: RateLimiter(1, 1))
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({}, ValueError, "needs limiter="),
        ({"limiter": mt}, ValueError, "needs key="),
        ({"limiter": RateLimiter(1, 1), "key": tenant_of}, ValueError, "drop key="),
        ({"tokens_per_minute": 10, "token_limiter": RateLimiter(1, 1)}, ValueError, "not both"),
        ({"tokens_per_minute": 0}, ValueError, "tokens_per_minute must be"),
        ({"limiter": RateLimiter(1, 1), "block": False, "timeout": 1}, ValueError, "only when block=True"),
        ({"limiter": RateLimiter(1, 1), "timeout": -1}, ValueError, "timeout must be"),
        ({"limiter": RateLimiter(1, 1), "token_counter": len}, ValueError, "token_counter= needs"),
        ({"limiter": "fast"}, TypeError, "must be a RateLimiter"),
        ({"limiter": RateLimiter(1, 1), "block": "yes"}, TypeError, "block must be"),
        ({"tokens_per_minute": 10, "default_max_tokens": -1}, ValueError, "default_max_tokens"),
    ]
    for options, error, message in cases:
        with pytest.raises(error, match=message):
            RateLimitMiddleware(h, **options)


def test_estimate_prompt_tokens_is_about_four_characters_a_token_plus_message_overhead() -> None:
    assert estimate_prompt_tokens(CompletionRequest(prompt="x" * 40)) == 10
    assert estimate_prompt_tokens(CompletionRequest(prompt="x" * 41, system_prompt="y" * 3)) == 11
    chat = CompletionRequest(messages=[Message(role="user", content="z" * 8), Message(role="assistant", content="ok")])
    assert estimate_prompt_tokens(chat) == 3 + 8


# -- request slots ------------------------------------------------------------------------------------


async def test_blocking_waits_for_a_request_slot() -> None:
    clock = FakeClock()
    handler = ScriptedHandler()
    mw = RateLimitMiddleware(handler, limiter=RateLimiter(2, 1, clock=clock), clock=clock)
    await mw(REQUEST, ctx())
    await mw(REQUEST, ctx())
    assert clock.now() == pytest.approx(0.5)
    assert handler.call_count == 2


async def test_non_blocking_rejects_at_once_with_retry_after_and_does_not_call() -> None:
    clock = FakeClock()
    handler = ScriptedHandler()
    mw = RateLimitMiddleware(handler, limiter=RateLimiter(2, 1, clock=clock), block=False, clock=clock)
    await mw(REQUEST, ctx())
    with pytest.raises(RateLimitExceededError) as info:
        await mw(REQUEST, ctx())
    assert info.value.retry_after == pytest.approx(0.5)
    assert "acme" in str(info.value) and "block=False" in str(info.value)
    assert handler.call_count == 1
    assert clock.sleeps == []


async def test_a_wait_longer_than_the_timeout_fails_at_once() -> None:
    clock = FakeClock()
    mw = RateLimitMiddleware(ScriptedHandler(), limiter=RateLimiter(0.1, 1, clock=clock), timeout=5, clock=clock)
    await mw(REQUEST, ctx())
    with pytest.raises(RateLimitExceededError) as info:
        await mw(REQUEST, ctx())
    assert info.value.retry_after == pytest.approx(10)
    assert clock.sleeps == []


async def test_a_limiter_shared_by_two_providers_is_one_quota() -> None:
    clock = FakeClock()
    shared = RateLimiter(1, 1, clock=clock)
    one = RateLimitMiddleware(ScriptedHandler(), limiter=shared, block=False, clock=clock)
    two = RateLimitMiddleware(ScriptedHandler(), limiter=shared, block=False, clock=clock)
    await one(REQUEST, ctx())
    with pytest.raises(RateLimitExceededError):
        await two(REQUEST, ctx())


async def test_tenants_picked_by_key_each_get_their_own_slots() -> None:
    clock = FakeClock()
    mt = MultiTenantRateLimiter(lambda: RateLimiter(1, 1, clock=clock), clock=clock)
    handler = ScriptedHandler()
    mw = RateLimitMiddleware(handler, limiter=mt, key=tenant_of, block=False, clock=clock)
    a = CompletionRequest(prompt="hi", metadata={"tenant": "a"})
    b = CompletionRequest(prompt="hi", metadata={"tenant": "b"})
    await mw(a, ctx())
    await mw(b, ctx())
    with pytest.raises(RateLimitExceededError):
        await mw(a, ctx())
    assert handler.call_count == 2
    assert len(mt) == 2


# -- LLM tokens per minute ----------------------------------------------------------------------------


async def test_tokens_are_reserved_before_the_call_and_the_excess_given_back_after() -> None:
    clock = FakeClock(auto_advance=False)
    seen: list[float] = []
    tokens = RateLimiter(1000 / 60, 1000, clock=clock)

    async def leaf(request: CompletionRequest, c: CallContext) -> Any:
        seen.append(tokens.available())
        return used(40)

    mw = RateLimitMiddleware(leaf, token_limiter=tokens, clock=clock)
    await mw(REQUEST, ctx())
    assert seen == [1000 - 101]
    assert tokens.available() == 1000 - 40


async def test_usage_above_the_estimate_is_charged_and_makes_later_calls_wait() -> None:
    clock = FakeClock()
    handler = ScriptedHandler(used(180), then=used(1))
    mw = RateLimitMiddleware(handler, tokens_per_minute=120, clock=clock)  # 2 tokens a second, burst 120
    await mw(REQUEST, ctx())  # reserves 101, uses 180: the bucket is at 120 - 180 = -60
    assert clock.now() == 0
    await mw(REQUEST, ctx())  # needs 101 more: (60 + 101) / 2 s
    assert clock.now() == pytest.approx(80.5)


async def test_default_max_tokens_fills_in_for_a_request_without_max_tokens() -> None:
    clock = FakeClock(auto_advance=False)
    seen: list[float] = []
    tokens = RateLimiter(1, 5000, clock=clock)

    async def leaf(request: CompletionRequest, c: CallContext) -> Any:
        seen.append(tokens.available())
        return response()  # no usage reported: the estimate stands

    mw = RateLimitMiddleware(leaf, token_limiter=tokens, default_max_tokens=300, clock=clock)
    await mw(CompletionRequest(prompt="x" * 400), ctx())
    assert seen == [5000 - 400]
    assert tokens.available() == 5000 - 400


async def test_a_custom_token_counter_is_used_for_the_prompt() -> None:
    clock = FakeClock(auto_advance=False)
    tokens = RateLimiter(1, 5000, clock=clock)
    seen: list[float] = []

    async def leaf(request: CompletionRequest, c: CallContext) -> Any:
        seen.append(tokens.available())
        return response()

    mw = RateLimitMiddleware(leaf, token_limiter=tokens, token_counter=lambda r: 1234, clock=clock)
    await mw(REQUEST, ctx())
    assert seen == [5000 - 1234 - 100]


async def test_an_estimate_above_the_burst_is_clamped_then_charged_in_full() -> None:
    clock = FakeClock(auto_advance=False)
    tokens = RateLimiter(1, 100, clock=clock)
    mw = RateLimitMiddleware(ScriptedHandler(used(250)), token_limiter=tokens, clock=clock)
    await mw(CompletionRequest(prompt="hi", max_tokens=500), ctx())  # estimate 501 > burst: never a hang
    assert tokens.wait_time(1) == pytest.approx(151)


async def test_a_failed_call_keeps_its_estimate() -> None:
    clock = FakeClock(auto_advance=False)
    tokens = RateLimiter(1, 1000, clock=clock)
    mw = RateLimitMiddleware(ScriptedHandler(ServerError("x", status_code=500)), token_limiter=tokens, clock=clock)
    with pytest.raises(ServerError):
        await mw(REQUEST, ctx())
    assert tokens.available() == 1000 - 101


async def test_a_stream_reconciles_when_it_ends_with_the_last_usage_seen() -> None:
    clock = FakeClock(auto_advance=False)
    tokens = RateLimiter(1, 1000, clock=clock)
    handler = ScriptedHandler(stream("a", "b", usage=UsageStats(total_tokens=30)))
    reply = await RateLimitMiddleware(handler, token_limiter=tokens, clock=clock)(REQUEST, ctx(streaming=True))
    assert isinstance(reply, ChunkStream)
    assert tokens.available() == 1000 - 101  # nothing known yet
    assert [c.content async for c in reply] == ["a", "b"]
    assert tokens.available() == 1000 - 30


async def test_a_stream_reporting_more_than_the_estimate_is_charged_at_its_end() -> None:
    clock = FakeClock(auto_advance=False)
    tokens = RateLimiter(1, 1000, clock=clock)
    handler = ScriptedHandler(stream("a", usage=UsageStats(prompt_tokens=100, completion_tokens=200)))
    reply = await RateLimitMiddleware(handler, token_limiter=tokens, clock=clock)(REQUEST, ctx(streaming=True))
    assert [c.content async for c in reply] == ["a"]  # type: ignore[union-attr]
    assert tokens.available() == 1000 - 300


async def test_a_stream_closed_before_any_usage_keeps_the_estimate() -> None:
    clock = FakeClock(auto_advance=False)
    tokens = RateLimiter(1, 1000, clock=clock)
    handler = ScriptedHandler(stream("a", "b", usage=UsageStats(total_tokens=5)))
    reply = await RateLimitMiddleware(handler, token_limiter=tokens, clock=clock)(REQUEST, ctx(streaming=True))
    assert (await reply.__anext__()).content == "a"  # type: ignore[union-attr]
    await reply.aclose()  # type: ignore[union-attr]
    assert handler.streams[0].closed
    assert tokens.available() == 1000 - 101


async def test_tokens_per_tenant_with_a_multi_tenant_token_limiter() -> None:
    clock = FakeClock()
    mt = MultiTenantRateLimiter(lambda: RateLimiter(1, 200, clock=clock), clock=clock)
    mw = RateLimitMiddleware(ScriptedHandler(), token_limiter=mt, key=tenant_of, block=False, clock=clock)
    a = CompletionRequest(prompt="hi", max_tokens=150, metadata={"tenant": "a"})
    b = CompletionRequest(prompt="hi", max_tokens=150, metadata={"tenant": "b"})
    await mw(a, ctx())
    await mw(b, ctx())
    with pytest.raises(RateLimitExceededError) as info:
        await mw(a, ctx())
    assert "151 LLM tokens" in str(info.value)
    assert info.value.retry_after == pytest.approx(102)


async def test_a_token_rejection_gives_the_request_slot_back() -> None:
    clock = FakeClock()
    slots = RateLimiter(1, 5, clock=clock)
    tokens = RateLimiter(1, 200, clock=clock)
    assert tokens.try_acquire(200)
    mw = RateLimitMiddleware(ScriptedHandler(), limiter=slots, token_limiter=tokens, block=False, clock=clock)
    with pytest.raises(RateLimitExceededError):
        await mw(REQUEST, ctx())
    assert slots.available() == 5


async def test_one_timeout_covers_both_waits() -> None:
    clock = FakeClock()
    slots = RateLimiter(1, 1, clock=clock)
    tokens = RateLimiter(10, 200, clock=clock)
    assert slots.try_acquire() and tokens.try_acquire(200)
    mw = RateLimitMiddleware(ScriptedHandler(), limiter=slots, token_limiter=tokens, timeout=10, clock=clock)
    with pytest.raises(RateLimitExceededError) as info:  # 1 s for the slot, then 9.1 s more for the tokens
        await mw(REQUEST, ctx())
    assert info.value.retry_after == pytest.approx(9.1)
    assert clock.now() == pytest.approx(1)
    assert slots.available() == pytest.approx(1)  # the slot it waited for was given back


async def test_a_cancelled_wait_for_tokens_gives_back_everything() -> None:
    clock = FakeClock()
    slots = RateLimiter(1, 5, clock=clock)
    tokens = RateLimiter(1, 200, clock=clock)
    assert tokens.try_acquire(200)
    mw = RateLimitMiddleware(ScriptedHandler(), limiter=slots, token_limiter=tokens, clock=clock)
    task = asyncio.create_task(mw(REQUEST, ctx()))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert slots.available() == 5
    assert tokens.waiting == 0
