"""CircuitBreakerMiddleware: failing fast, which errors count, and never leaving a probe permit stuck."""

from __future__ import annotations

import asyncio
import logging

import pytest

from axonflow_llm.middleware.circuit_breaker import CircuitBreaker, CircuitState
from axonflow_llm.middleware.circuit_breaker_middleware import CircuitBreakerMiddleware, default_is_failure
from axonflow_llm.middleware.retry import RetryMiddleware
from axonflow_llm.middleware.retry_config import RetryConfig
from axonflow_llm.pipeline.context import CallContext, ProviderInfo
from axonflow_llm.pipeline.errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    BudgetExceededError,
    CircuitOpenError,
    ConfigError,
    OverloadedError,
    RateLimitError,
    RateLimitExceededError,
    ServerError,
    StreamInterruptedError,
)
from axonflow_llm.pipeline.models import CompletionRequest
from axonflow_llm.pipeline.stream import ChunkStream
from axonflow_llm.testing import FakeClock, ScriptedHandler, delay, response, stream

REQUEST = CompletionRequest(prompt="hi")
CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN


def ctx(streaming: bool = False) -> CallContext:
    return CallContext(ProviderInfo(name="acme", type="custom"), streaming=streaming)


def server_error() -> ServerError:
    return ServerError("down", status_code=503)


async def half_open(clock: FakeClock, **kw: object) -> CircuitBreaker:
    breaker = CircuitBreaker(1, 10.0, clock=clock, **kw)  # type: ignore[arg-type]
    breaker.record_failure()
    await clock.advance(10.0)
    assert breaker.state is HALF_OPEN
    return breaker


async def test_it_fails_fast_while_open_naming_the_provider_and_when_to_come_back() -> None:
    clock = FakeClock()
    handler = ScriptedHandler(server_error(), server_error(), clock=clock)
    breaker = CircuitBreaker(2, 30.0, clock=clock)
    mw = CircuitBreakerMiddleware(handler, breaker=breaker)
    for _ in range(2):
        with pytest.raises(ServerError):
            await mw(REQUEST, ctx())
    await clock.advance(5.0)
    with pytest.raises(CircuitOpenError) as info:
        await mw(REQUEST, ctx())
    assert handler.call_count == 2
    assert info.value.retry_after == 25.0 and info.value.provider == "acme"
    assert str(info.value).startswith("acme: the circuit breaker is open") and "25s" in str(info.value)


async def test_the_open_error_names_the_last_failure_without_secrets() -> None:
    clock = FakeClock()
    leaked = ServerError("upstream said: bad key sk-proj-abcdefghijklmnopqrstuvwxyz0123", status_code=502)
    handler = ScriptedHandler(server_error(), leaked, clock=clock)
    mw = CircuitBreakerMiddleware(handler, breaker=CircuitBreaker(2, 30.0, clock=clock))
    for _ in range(2):
        with pytest.raises(ServerError):
            await mw(REQUEST, ctx())
    with pytest.raises(CircuitOpenError, match=r"\(last failure: ServerError: .*upstream said: bad key \*\*\*\)"):
        await mw(REQUEST, ctx())


@pytest.mark.parametrize(
    "error",
    [
        BadRequestError("bad", status_code=400),
        AuthenticationError("no", status_code=401),
        AuthenticationError("no", status_code=403),
        BadRequestError("missing", status_code=404),
        BadRequestError("invalid", status_code=422),
        BudgetExceededError("spent"),
        RateLimitExceededError("local", retry_after=1.0),
        CircuitOpenError("inner breaker"),
        ValueError("a bug of ours"),
    ],
)
async def test_errors_that_say_nothing_about_the_provider_do_not_count(error: Exception) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(1, 10.0, clock=clock)
    mw = CircuitBreakerMiddleware(ScriptedHandler(error, error, clock=clock), breaker=breaker)
    for _ in range(2):
        with pytest.raises(type(error)):
            await mw(REQUEST, ctx())
    assert breaker.state is CLOSED and breaker.failure_count == 0


@pytest.mark.parametrize(
    "error",
    [
        ServerError("x", status_code=500),
        ServerError("x", status_code=502),
        OverloadedError("x", status_code=529),
        RateLimitError("x", status_code=429),
        APIConnectionError("refused"),
        APITimeoutError("slow"),
        StreamInterruptedError("cut"),
        TimeoutError(),
    ],
)
async def test_provider_health_failures_count(error: Exception) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(1, 10.0, clock=clock)
    mw = CircuitBreakerMiddleware(ScriptedHandler(error, clock=clock), breaker=breaker)
    with pytest.raises(type(error)):
        await mw(REQUEST, ctx())
    assert breaker.state is OPEN


def test_default_is_failure_looks_through_a_wrapper() -> None:
    outer = RuntimeError("wrapped")
    outer.__cause__ = server_error()
    assert default_is_failure(outer)
    outer.__cause__ = BadRequestError("bad", status_code=400)
    assert not default_is_failure(outer)
    assert not default_is_failure(ConfigError("bad config"))


async def test_a_cancelled_half_open_probe_releases_its_permit() -> None:
    clock = FakeClock(auto_advance=False)
    breaker = await half_open(clock)
    handler = ScriptedHandler(delay(60.0, response("slow")), clock=clock)
    mw = CircuitBreakerMiddleware(handler, breaker=breaker)
    task = asyncio.create_task(mw(REQUEST, ctx()))
    while clock.pending() == 0:
        await asyncio.sleep(0)
    with pytest.raises(CircuitOpenError, match="half-open"):  # the one probe slot is taken
        await mw(REQUEST, ctx())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.state is HALF_OPEN  # neither a success nor a failure
    assert await mw(REQUEST, ctx()) == response("ok")  # the next call is let through as the probe
    assert breaker.state is CLOSED


async def test_an_abandoned_stream_releases_its_probe_permit() -> None:
    clock = FakeClock()
    breaker = await half_open(clock)
    handler = ScriptedHandler(stream("a", "b"), stream("c"), clock=clock)
    mw = CircuitBreakerMiddleware(handler, breaker=breaker)
    reply = await mw(REQUEST, ctx(streaming=True))
    assert isinstance(reply, ChunkStream)
    with pytest.raises(CircuitOpenError):
        await mw(REQUEST, ctx(streaming=True))
    await reply.aclose()  # closed before its end
    assert breaker.state is HALF_OPEN and handler.streams[0].closed
    second = await mw(REQUEST, ctx(streaming=True))
    assert [c.content async for c in second] == ["c"]  # type: ignore[union-attr]
    assert breaker.state is CLOSED


async def test_a_stream_closed_after_some_chunks_is_no_verdict() -> None:
    clock = FakeClock()
    breaker = await half_open(clock)
    mw = CircuitBreakerMiddleware(ScriptedHandler(stream("a", "b"), clock=clock), breaker=breaker)
    reply = await mw(REQUEST, ctx(streaming=True))
    assert isinstance(reply, ChunkStream)
    await reply.__anext__()
    await reply.aclose()
    assert breaker.state is HALF_OPEN and breaker.allow()


async def test_a_completed_stream_is_a_success_and_a_failed_one_is_judged_by_its_error() -> None:
    clock = FakeClock()
    breaker = await half_open(clock)
    handler = ScriptedHandler(
        stream("a", error=server_error()),
        stream("b", error=BadRequestError("bad", status_code=400)),
        stream("c"),
        clock=clock,
    )
    mw = CircuitBreakerMiddleware(handler, breaker=breaker)

    async def drain() -> None:
        reply = await mw(REQUEST, ctx(streaming=True))
        assert isinstance(reply, ChunkStream)
        async for _ in reply:
            pass

    with pytest.raises(ServerError):
        await drain()
    assert breaker.state is OPEN  # the failed probe reopened it
    await clock.advance(10.0)
    with pytest.raises(BadRequestError):
        await drain()
    assert breaker.state is HALF_OPEN  # a 400 says nothing: the permit was released
    await drain()
    assert breaker.state is CLOSED


async def test_failure_rate_mode_opens_as_specified() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(None, 10.0, clock=clock, failure_rate_threshold=0.5, window=60.0, minimum_calls=6)
    handler = ScriptedHandler(
        response("1"), server_error(), response("2"), server_error(), response("3"), server_error(),
        clock=clock,
    )
    mw = CircuitBreakerMiddleware(handler, breaker=breaker)
    for i in range(6):
        if i % 2 == 0:
            await mw(REQUEST, ctx())
        else:
            with pytest.raises(ServerError):
                await mw(REQUEST, ctx())
        assert breaker.state is (OPEN if i == 5 else CLOSED)
    with pytest.raises(CircuitOpenError):
        await mw(REQUEST, ctx())


async def test_a_custom_is_failure_decides_and_one_that_raises_counts_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(1, 10.0, clock=clock)
    mw = CircuitBreakerMiddleware(
        ScriptedHandler(ValueError("x"), clock=clock), breaker=breaker, is_failure=lambda e: 1 / 0 > 0
    )
    with caplog.at_level(logging.WARNING), pytest.raises(ValueError, match="x"):
        await mw(REQUEST, ctx())
    assert breaker.state is CLOSED and "is_failure predicate raised" in caplog.text
    mw = CircuitBreakerMiddleware(
        ScriptedHandler(ValueError("y"), clock=clock), breaker=breaker, is_failure=lambda e: True
    )
    with pytest.raises(ValueError, match="y"):
        await mw(REQUEST, ctx())
    assert breaker.state is OPEN


async def test_retry_outside_the_breaker_does_not_retry_circuit_open() -> None:
    clock = FakeClock()
    handler = ScriptedHandler(server_error(), then=server_error(), clock=clock)
    breaker = CircuitBreaker(2, 30.0, clock=clock)
    chain = RetryMiddleware(CircuitBreakerMiddleware(handler, breaker=breaker), config=RetryConfig(), clock=clock)
    with pytest.raises(CircuitOpenError) as info:
        await chain(REQUEST, ctx())
    assert handler.call_count == 2  # the third attempt failed fast and was not retried
    assert "gave up after 3 attempts" in info.value.__notes__[0]


def test_options_are_validated_and_a_default_breaker_is_made() -> None:
    handler = ScriptedHandler()
    clock = FakeClock()
    mw = CircuitBreakerMiddleware(handler, clock=clock)
    assert isinstance(mw.breaker, CircuitBreaker) and mw.breaker is not CircuitBreakerMiddleware(handler).breaker
    with pytest.raises(TypeError, match="pass clock= to CircuitBreaker"):
        CircuitBreakerMiddleware(handler, breaker=CircuitBreaker(), clock=clock)
    with pytest.raises(TypeError, match="must be a CircuitBreaker"):
        CircuitBreakerMiddleware(handler, breaker="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="is_failure"):
        CircuitBreakerMiddleware(handler, is_failure=3)  # type: ignore[arg-type]


async def test_two_middlewares_sharing_a_breaker_share_its_state() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(1, 10.0, clock=clock)
    first = CircuitBreakerMiddleware(ScriptedHandler(server_error(), clock=clock), breaker=breaker)
    second_handler = ScriptedHandler(clock=clock)
    second = CircuitBreakerMiddleware(second_handler, breaker=breaker)
    with pytest.raises(ServerError):
        await first(REQUEST, ctx())
    with pytest.raises(CircuitOpenError):
        await second(REQUEST, ctx())
    assert second_handler.call_count == 0
