"""RetryConfig: validation, the backoff maths, Retry-After, deadlines, and which errors are retryable."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from axonflow_llm.middleware.retry_config import (
    RetryConfig,
    default_retry_config,
    default_retryable,
    retry_after_of,
)
from axonflow_llm.pipeline.errors import (
    APIConnectionError,
    APIError,
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
)


def api_error(status: int, **kw: object) -> APIError:
    from axonflow_llm.pipeline.errors import error_class_for_status

    return error_class_for_status(status)("boom", status_code=status, **kw)  # type: ignore[arg-type]


# -- validation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"max_retries": -1}, "max_retries must be >= 0"),
        ({"initial_backoff": -0.1}, "initial_backoff"),
        ({"initial_backoff": math.nan}, "initial_backoff"),
        ({"max_backoff": math.inf}, "max_backoff"),
        ({"backoff_factor": 0.5}, "backoff_factor must be a finite number >= 1"),
        ({"jitter": 1.5}, "jitter must be between 0 and 1"),
        ({"jitter": -0.1}, "jitter must be between 0 and 1"),
        ({"initial_backoff": 5.0, "max_backoff": 1.0}, "raise max_backoff or lower initial_backoff"),
        ({"max_retry_after": -1.0}, "max_retry_after"),
        ({"deadline": 0}, "deadline must be > 0"),
        ({"deadline": math.nan}, "deadline"),
    ],
)
def test_bad_values_raise_value_error_naming_the_fix(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        RetryConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [{"max_retries": 2.5}, {"max_retries": True}, {"jitter": "0.1"}, {"retry_if": 3}, {"full_jitter": 1}],
)
def test_wrong_types_raise_type_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(TypeError, match="RetryConfig"):
        RetryConfig(**kwargs)  # type: ignore[arg-type]


def test_config_is_frozen_and_defaults_match_the_seed() -> None:
    config = default_retry_config()
    assert config == RetryConfig()
    assert (config.max_retries, config.initial_backoff, config.max_backoff) == (3, 0.1, 30.0)
    assert (config.backoff_factor, config.jitter, config.max_retry_after) == (2.0, 0.1, 60.0)
    assert config.retry_if is default_retryable and config.deadline is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.max_retries = 5  # type: ignore[misc]


def test_unlimited_max_retry_after_is_allowed() -> None:
    assert RetryConfig(max_retry_after=math.inf).max_retry_after == math.inf


# -- the backoff maths --------------------------------------------------------------------------------


def test_fractional_factor_is_not_truncated() -> None:
    config = RetryConfig(initial_backoff=1.0, backoff_factor=1.5, jitter=0)
    assert [config.nominal_backoff(n) for n in range(3)] == [1.0, 1.5, 2.25]


def test_huge_retry_numbers_do_not_overflow() -> None:
    config = RetryConfig(initial_backoff=0.1, max_backoff=30.0, backoff_factor=10.0)
    for n in (1000, 10**6, 10**12):
        assert config.nominal_backoff(n) == 30.0
        assert 27.0 <= config.backoff(n, random.Random(n)) <= 30.0


def test_zero_initial_backoff_waits_nothing() -> None:
    config = RetryConfig(initial_backoff=0.0, max_backoff=0.0)
    assert config.backoff(0) == 0.0 and config.backoff(10**9) == 0.0


def test_jitter_at_the_cap_spreads_below_it_rather_than_piling_on_it() -> None:
    config = RetryConfig(initial_backoff=1.0, max_backoff=4.0, jitter=0.5)
    rng = random.Random(7)
    waits = [config.backoff(10, rng) for _ in range(1000)]
    assert min(waits) >= 2.0 and max(waits) <= 4.0
    assert sum(w == 4.0 for w in waits) <= 1


def _nominal(config: RetryConfig, n: int) -> float:
    if config.initial_backoff == 0:
        return 0.0
    try:
        value = config.initial_backoff * config.backoff_factor**n
    except OverflowError:
        value = math.inf
    return min(value, config.max_backoff)


configs = st.builds(
    lambda initial, extra, factor, jitter, full: RetryConfig(
        initial_backoff=initial,
        max_backoff=initial + extra,
        backoff_factor=factor,
        jitter=jitter,
        full_jitter=full,
    ),
    st.floats(0, 5),
    st.floats(0, 100),
    st.floats(1, 10),
    st.floats(0, 1),
    st.booleans(),
)


@settings(deadline=None, max_examples=300)
@given(configs, st.integers(0, 2000), st.integers(0, 2**32))
def test_every_wait_is_within_max_backoff_and_the_jitter_band(config: RetryConfig, n: int, seed: int) -> None:
    wait = config.backoff(n, random.Random(seed))
    nominal = _nominal(config, n)
    eps = 1e-9 * max(1.0, nominal)
    assert 0.0 <= wait <= config.max_backoff
    if config.full_jitter:
        assert wait <= nominal + eps
    else:
        assert nominal * (1 - config.jitter) - eps <= wait <= nominal * (1 + config.jitter) + eps


@settings(deadline=None)
@given(st.floats(0, 1e4), st.floats(0, 1), st.integers(0, 2**32))
def test_server_wait_gets_only_positive_jitter(retry_after: float, jitter: float, seed: int) -> None:
    config = RetryConfig(jitter=jitter)
    wait = config.server_wait(retry_after, random.Random(seed))
    assert retry_after <= wait <= retry_after * (1 + jitter)


# -- decide: the whole policy after one failure -------------------------------------------------------


def test_retry_after_replaces_backoff_even_above_max_backoff() -> None:
    config = RetryConfig(max_backoff=1.0, jitter=0)
    assert config.decide(api_error(429, retry_after=7.0), 2) == 7.0


def test_retry_after_above_max_retry_after_gives_up_at_once() -> None:
    config = RetryConfig(max_retry_after=60.0)
    decision = config.decide(api_error(429, retry_after=61.0), 0)
    assert isinstance(decision, str) and "max_retry_after" in decision


def test_retries_exhausted_and_not_retryable_are_reasons() -> None:
    config = RetryConfig(max_retries=2)
    assert config.decide(api_error(503), 2) == "retries exhausted"
    assert config.decide(api_error(400), 0) == "not retryable"


def test_a_wait_ending_past_the_deadline_is_not_started() -> None:
    config = RetryConfig(deadline=10.0, jitter=0, initial_backoff=2.0)
    assert config.decide(api_error(503), 0, elapsed=8.0) == 2.0
    decision = config.decide(api_error(503), 0, elapsed=8.5)
    assert isinstance(decision, str) and "deadline" in decision


def test_retry_if_may_return_the_wait_itself() -> None:
    config = RetryConfig(retry_if=lambda exc: 12.5, max_backoff=1.0)
    assert config.decide(ValueError("x"), 0) == 12.5
    assert config.decide(ValueError("x"), 3) == "retries exhausted"
    zero = RetryConfig(retry_if=lambda exc: 0.0)
    assert zero.decide(ValueError("x"), 0) == 0.0  # 0.0 means "retry now", not "give up"


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, "soon", None])
def test_retry_if_returning_nonsense_is_a_clear_error(bad: object) -> None:
    config = RetryConfig(retry_if=lambda exc: bad)  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError, match="return True/False, or a finite wait"):
        config.decide(ValueError("x"), 0)


def test_decide_never_retries_base_exceptions() -> None:
    config = RetryConfig(retry_if=lambda exc: True)
    assert isinstance(config.decide(asyncio.CancelledError(), 0), str)
    assert isinstance(config.decide(KeyboardInterrupt(), 0), str)


# -- default_retryable --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 529])
def test_transient_statuses_are_retryable(status: int) -> None:
    assert default_retryable(api_error(status))


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_are_never_retryable(status: int) -> None:
    assert not default_retryable(api_error(status))


def test_the_servers_should_retry_header_wins() -> None:
    assert not default_retryable(ServerError("x", status_code=503, should_retry=False))
    assert default_retryable(BadRequestError("x", status_code=400, should_retry=True))


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (APIConnectionError("down"), True),
        (APITimeoutError("slow"), True),
        (ConnectionResetError(), True),
        (TimeoutError(), True),
        (OverloadedError("x", status_code=529), True),
        (RateLimitExceededError("local", retry_after=1.0), True),
        (RateLimitExceededError("local", retry_after=None), False),
        (CircuitOpenError("open", retry_after=3.0), False),
        (BudgetExceededError("spent"), False),
        (ConfigError("bad"), False),
        (AuthenticationError("no", status_code=401), False),
        (ValueError("bug"), False),
        (asyncio.CancelledError(), False),
        (KeyboardInterrupt(), False),
    ],
)
def test_default_retryable_table(exc: BaseException, expected: bool) -> None:
    assert default_retryable(exc) is expected


def test_a_users_wrapper_is_judged_by_the_error_it_wraps() -> None:
    class MyError(Exception):
        pass

    def wrapped(inner: BaseException) -> MyError:
        try:
            raise MyError("wrapped") from inner
        except MyError as exc:
            return exc

    assert default_retryable(wrapped(api_error(503)))
    assert not default_retryable(wrapped(api_error(401)))
    assert not default_retryable(wrapped(ValueError("x")))


def test_retry_after_is_found_on_the_error_or_its_cause() -> None:
    assert retry_after_of(RateLimitError("x", status_code=429, retry_after=3.0)) == 3.0
    assert retry_after_of(RateLimitExceededError("x", retry_after=0.5)) == 0.5
    assert retry_after_of(ServerError("x", status_code=503)) is None
    outer = RuntimeError("outer")
    outer.__cause__ = RateLimitError("x", status_code=429, retry_after=2.0)
    assert retry_after_of(outer) == 2.0


def test_a_cyclic_cause_chain_does_not_hang() -> None:
    a, b = RuntimeError("a"), RuntimeError("b")
    a.__cause__, b.__cause__ = b, a
    assert default_retryable(a) is False
    assert retry_after_of(a) is None
