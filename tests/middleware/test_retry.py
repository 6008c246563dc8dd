"""retry_with_backoff and RetryMiddleware (non-streamed calls), in virtual time."""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from axonflow_llm.middleware.retry import RetryMiddleware, retry_with_backoff
from axonflow_llm.middleware.retry_config import RetryConfig
from axonflow_llm.pipeline.context import CallContext, ProviderInfo
from axonflow_llm.pipeline.errors import (
    BadRequestError,
    CircuitOpenError,
    RateLimitError,
    ServerError,
)
from axonflow_llm.pipeline.models import CompletionRequest
from axonflow_llm.testing import FakeClock, ScriptedHandler, response

REQUEST = CompletionRequest(prompt="hi")


def ctx() -> CallContext:
    return CallContext(ProviderInfo(name="acme", type="custom"))


def server_error() -> ServerError:
    return ServerError("unavailable", status_code=503)


class Flaky:
    """An async callable failing with ``errors`` in turn, then returning ``"ok"``; records call times."""

    def __init__(self, clock: FakeClock, errors: Sequence[BaseException], attempt_time: float = 0.0) -> None:
        self.clock = clock
        self.errors = list(errors)
        self.attempt_time = attempt_time
        self.call_times: list[float] = []

    async def __call__(self) -> str:
        self.call_times.append(self.clock.now())
        if self.attempt_time:
            await self.clock.sleep(self.attempt_time)
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def _nominal(config: RetryConfig, n: int) -> float:
    if config.initial_backoff == 0:
        return 0.0
    try:
        return min(config.initial_backoff * config.backoff_factor**n, config.max_backoff)
    except OverflowError:
        return config.max_backoff


# -- properties of retry_with_backoff -----------------------------------------------------------------


@settings(deadline=None, max_examples=150)
@given(
    failures=st.integers(0, 12),
    max_retries=st.integers(0, 8),
    initial=st.floats(0, 2),
    extra=st.floats(0, 20),
    factor=st.floats(1, 4),
    jitter=st.floats(0, 1),
    full_jitter=st.booleans(),
    seed=st.integers(0, 2**32),
)
def test_calls_and_waits_follow_the_policy(
    failures: int,
    max_retries: int,
    initial: float,
    extra: float,
    factor: float,
    jitter: float,
    full_jitter: bool,
    seed: int,
) -> None:
    config = RetryConfig(
        max_retries=max_retries,
        initial_backoff=initial,
        max_backoff=initial + extra,
        backoff_factor=factor,
        jitter=jitter,
        full_jitter=full_jitter,
    )

    async def run() -> None:
        clock = FakeClock()
        fn = Flaky(clock, [server_error() for _ in range(failures)])
        waits: list[float] = []
        listener = lambda attempt, error, wait: waits.append(wait)  # noqa: E731
        if failures <= max_retries:
            assert await retry_with_backoff(config, fn, clock=clock, rng=random.Random(seed), on_retry=listener)
        else:
            with pytest.raises(ServerError):
                await retry_with_backoff(config, fn, clock=clock, rng=random.Random(seed), on_retry=listener)
        assert len(fn.call_times) == min(failures, max_retries) + 1
        assert len(waits) == len(fn.call_times) - 1  # no wait after the last failure
        assert clock.sleeps == [w for w in waits if w > 0]
        for n, wait in enumerate(waits):
            nominal = _nominal(config, n)
            eps = 1e-9 * max(1.0, nominal)
            assert 0.0 <= wait <= config.max_backoff
            low = 0.0 if full_jitter else nominal * (1 - jitter)
            high = nominal if full_jitter else nominal * (1 + jitter)
            assert low - eps <= wait <= high + eps

    asyncio.run(run())


@settings(deadline=None, max_examples=150)
@given(
    retry_afters=st.lists(st.floats(0, 120), min_size=1, max_size=6),
    max_retry_after=st.floats(0, 100),
    jitter=st.floats(0, 1),
    seed=st.integers(0, 2**32),
)
def test_retry_after_is_honoured_on_every_retry_and_capped(
    retry_afters: list[float], max_retry_after: float, jitter: float, seed: int
) -> None:
    config = RetryConfig(max_retries=10, max_backoff=1.0, jitter=jitter, max_retry_after=max_retry_after)

    async def run() -> None:
        clock = FakeClock()
        errors = [RateLimitError("slow down", status_code=429, retry_after=ra) for ra in retry_afters]
        fn = Flaky(clock, errors)
        waits: list[float] = []
        listener = lambda attempt, error, wait: waits.append(wait)  # noqa: E731
        too_long = next((i for i, ra in enumerate(retry_afters) if ra > max_retry_after), None)
        if too_long is None:
            assert await retry_with_backoff(config, fn, clock=clock, rng=random.Random(seed), on_retry=listener)
            assert len(waits) == len(retry_afters)
        else:
            with pytest.raises(RateLimitError) as info:
                await retry_with_backoff(config, fn, clock=clock, rng=random.Random(seed), on_retry=listener)
            assert info.value is errors[too_long]  # raised at once, not waited out
            assert len(waits) == too_long
            assert any("max_retry_after" in note for note in info.value.__notes__)
        for ra, wait in zip(retry_afters, waits, strict=False):
            assert ra <= wait <= ra * (1 + jitter) * (1 + 1e-12)

    asyncio.run(run())


@settings(deadline=None, max_examples=150)
@given(
    deadline=st.floats(0.01, 50),
    attempt_time=st.floats(0, 5),
    initial=st.floats(0, 3),
    seed=st.integers(0, 2**32),
)
def test_no_wait_runs_past_the_deadline(deadline: float, attempt_time: float, initial: float, seed: int) -> None:
    config = RetryConfig(
        max_retries=50, initial_backoff=initial, max_backoff=initial * 4, jitter=0.5, deadline=deadline
    )

    async def run() -> None:
        clock = FakeClock(start=1000.0)
        fn = Flaky(clock, [server_error() for _ in range(60)], attempt_time=attempt_time)
        ends: list[float] = []
        listener = lambda attempt, error, wait: ends.append(clock.now() + wait)  # noqa: E731
        with pytest.raises(ServerError) as info:
            await retry_with_backoff(config, fn, clock=clock, rng=random.Random(seed), on_retry=listener)
        assert all(end <= 1000.0 + deadline + 1e-9 for end in ends)
        assert all(t <= 1000.0 + deadline + 1e-9 for t in fn.call_times)  # no attempt starts past it
        if len(fn.call_times) < config.max_retries + 1:
            assert any("deadline" in note for note in info.value.__notes__)

    asyncio.run(run())


# -- retry_with_backoff: specific behaviour -----------------------------------------------------------


async def test_the_last_error_itself_is_raised_with_a_note() -> None:
    clock = FakeClock()
    errors = [server_error() for _ in range(4)]
    fn = Flaky(clock, errors)
    with pytest.raises(ServerError) as info:
        await retry_with_backoff(RetryConfig(max_retries=3, jitter=0), fn, clock=clock)
    assert info.value is errors[-1]
    (note,) = info.value.__notes__
    assert "gave up after 4 attempts over 0.700s" in note and "retries exhausted" in note
    assert clock.sleeps == [0.1, 0.2, 0.4]


async def test_a_non_retryable_error_is_raised_at_once_without_a_note() -> None:
    clock = FakeClock()
    error = BadRequestError("bad", status_code=400)
    fn = Flaky(clock, [error])
    with pytest.raises(BadRequestError) as info:
        await retry_with_backoff(RetryConfig(), fn, clock=clock)
    assert info.value is error and not getattr(error, "__notes__", None)
    assert len(fn.call_times) == 1 and clock.sleeps == []


async def test_a_non_retryable_error_after_retries_says_how_many_attempts() -> None:
    clock = FakeClock()
    fn = Flaky(clock, [server_error(), BadRequestError("bad", status_code=400)])
    with pytest.raises(BadRequestError) as info:
        await retry_with_backoff(RetryConfig(jitter=0), fn, clock=clock)
    assert "gave up after 2 attempts" in info.value.__notes__[0]


async def test_cancellation_during_a_wait_propagates_at_once() -> None:
    clock = FakeClock(auto_advance=False)
    fn = Flaky(clock, [server_error() for _ in range(5)])
    task = asyncio.create_task(retry_with_backoff(RetryConfig(initial_backoff=10.0), fn, clock=clock))
    while clock.pending() == 0:
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert clock.pending() == 0
    assert len(fn.call_times) == 1
    assert clock.now() == 0.0


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, asyncio.CancelledError, SystemExit])
async def test_base_exceptions_are_never_retried(exc_type: type[BaseException]) -> None:
    clock = FakeClock()
    fn = Flaky(clock, [exc_type()])
    config = RetryConfig(retry_if=lambda exc: True)
    with pytest.raises(exc_type):
        await retry_with_backoff(config, fn, clock=clock)
    assert len(fn.call_times) == 1


async def test_retry_if_returning_a_number_sets_the_wait() -> None:
    clock = FakeClock()
    fn = Flaky(clock, [ValueError("flaky"), ValueError("flaky")])
    config = RetryConfig(retry_if=lambda exc: 42.0 if isinstance(exc, ValueError) else False)
    assert await retry_with_backoff(config, fn, clock=clock) == "ok"
    assert clock.sleeps == [42.0, 42.0]


async def test_retry_with_backoff_rejects_a_non_config() -> None:
    async def fn() -> None:
        return None

    with pytest.raises(TypeError, match="needs a RetryConfig"):
        await retry_with_backoff({"max_retries": 3}, fn)  # type: ignore[arg-type]


# -- RetryMiddleware ----------------------------------------------------------------------------------


async def test_middleware_sets_the_attempt_and_returns_the_first_success() -> None:
    clock = FakeClock()
    handler = ScriptedHandler(server_error(), server_error(), response("done"), clock=clock)
    retry = RetryMiddleware(handler, config=RetryConfig(jitter=0), clock=clock)
    c = ctx()
    reply = await retry(REQUEST, c)
    assert reply == response("done")
    assert [call.attempt for call in handler.calls] == [1, 2, 3]
    assert c.attempt == 3
    assert clock.sleeps == [0.1, 0.2]


async def test_middleware_success_path_does_not_wait_or_read_the_clock() -> None:
    class NoClock:
        def now(self) -> float:
            raise AssertionError("the success path read the clock")

        async def sleep(self, seconds: float) -> None:
            raise AssertionError("the success path slept")

    handler = ScriptedHandler(response("ok"))
    retry = RetryMiddleware(handler, clock=NoClock())
    assert await retry(REQUEST, ctx()) == response("ok")


async def test_middleware_calls_the_on_retry_listener_before_each_wait() -> None:
    clock = FakeClock()
    errors = [server_error(), RateLimitError("slow", status_code=429, retry_after=5.0)]
    handler = ScriptedHandler(*errors, clock=clock)
    retry = RetryMiddleware(handler, config=RetryConfig(jitter=0), clock=clock)
    seen: list[tuple[int, BaseException, float, float]] = []
    c = ctx()
    c.state["retry.on_retry"] = lambda attempt, error, wait: seen.append((attempt, error, wait, clock.now()))
    await retry(REQUEST, c)
    assert seen == [(1, errors[0], 0.1, 0.0), (2, errors[1], 5.0, 0.1)]


async def test_a_raising_listener_does_not_break_the_retry(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    handler = ScriptedHandler(server_error(), clock=clock)
    retry = RetryMiddleware(handler, clock=clock)
    c = ctx()
    c.state["retry.on_retry"] = lambda attempt, error, wait: 1 / 0
    with caplog.at_level(logging.WARNING):
        assert await retry(REQUEST, c) == response("ok")
    assert "retry listener raised" in caplog.text


async def test_middleware_raises_the_last_error_with_a_note_when_exhausted() -> None:
    clock = FakeClock()
    errors = [server_error() for _ in range(3)]
    handler = ScriptedHandler(*errors, clock=clock)
    retry = RetryMiddleware(handler, config=RetryConfig(max_retries=2, jitter=0), clock=clock)
    with pytest.raises(ServerError) as info:
        await retry(REQUEST, ctx())
    assert info.value is errors[-1]
    assert "gave up after 3 attempts over 0.300s (timed from the first failure)" in info.value.__notes__[0]
    assert handler.call_count == 3


async def test_middleware_deadline_counts_from_the_first_call() -> None:
    clock = FakeClock()
    from axonflow_llm.testing import delay

    handler = ScriptedHandler(delay(8.0, server_error()), then=server_error(), clock=clock)
    config = RetryConfig(initial_backoff=1.0, max_backoff=1.0, jitter=0, deadline=9.5, max_retries=10)
    retry = RetryMiddleware(handler, config=config, clock=clock)
    with pytest.raises(ServerError) as info:
        await retry(REQUEST, ctx())
    # 8 s first attempt, 1 s wait, instant second attempt at 9 s; the next 1 s wait would end at 10 > 9.5.
    assert handler.call_count == 2 and clock.now() == 9.0
    assert "deadline" in info.value.__notes__[0] and "over 9.000s" in info.value.__notes__[0]


async def test_middleware_cancellation_during_a_wait_leaves_no_sleeper() -> None:
    clock = FakeClock(auto_advance=False)
    handler = ScriptedHandler(server_error(), clock=clock)
    retry = RetryMiddleware(handler, config=RetryConfig(initial_backoff=5.0), clock=clock)
    task = asyncio.create_task(retry(REQUEST, ctx()))
    while clock.pending() == 0:
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert clock.pending() == 0 and handler.call_count == 1


async def test_circuit_open_error_from_inside_is_not_retried() -> None:
    clock = FakeClock()
    handler = ScriptedHandler(CircuitOpenError("open", retry_after=30.0), clock=clock)
    retry = RetryMiddleware(handler, clock=clock)
    with pytest.raises(CircuitOpenError):
        await retry(REQUEST, ctx())
    assert handler.call_count == 1


def test_middleware_validates_its_options() -> None:
    handler = ScriptedHandler()
    with pytest.raises(TypeError, match="config= must be a RetryConfig"):
        RetryMiddleware(handler, config={"max_retries": 1})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"rng= must be a random\.Random"):
        RetryMiddleware(handler, rng=42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="next handler"):
        RetryMiddleware(None)  # type: ignore[arg-type]
    assert math.isclose(RetryMiddleware(handler)._config.initial_backoff, 0.1)
