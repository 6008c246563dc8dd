"""CircuitBreaker: the state machine against a model, the half-open probe limit, stale results, rate mode."""

from __future__ import annotations

import asyncio
import logging
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from axonflow_llm.middleware.circuit_breaker import CircuitBreaker, CircuitState, Permit
from axonflow_llm.testing import FakeClock

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN


def advance(clock: FakeClock, seconds: float) -> None:
    asyncio.run(clock.advance(seconds))


# -- the state machine against a model ----------------------------------------------------------------


class BreakerMachine(RuleBasedStateMachine):
    """Drives a real breaker and a small model of it with the same steps and compares them."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = FakeClock(auto_advance=False)
        self.seen: list[tuple[CircuitState, CircuitState]] = []
        self.expected: list[tuple[CircuitState, CircuitState]] = []
        self.permits: list[tuple[Permit, int, bool]] = []  # (permit, generation it was for, probe?)
        self.settled: set[int] = set()  # indexes of probe permits handed back
        self.m_state = CLOSED
        self.m_gen = 0
        self.m_failures = 0
        self.m_probes = 0
        self.m_opened_at = 0.0

    @initialize(threshold=st.integers(1, 4), reset=st.sampled_from([0.0, 1.0, 10.0]), probes=st.integers(1, 3))
    def build(self, threshold: int, reset: float, probes: int) -> None:
        self.threshold, self.reset_timeout, self.max_probes = threshold, reset, probes
        self.cb = CircuitBreaker(threshold, reset, half_open_max_calls=probes, clock=self.clock)
        self.cb.on_state_change(lambda old, new: self.seen.append((old, new)))

    def teardown(self) -> None:
        self.loop.close()

    # the model

    def m_move(self, new: CircuitState) -> None:
        if new is not self.m_state:
            self.expected.append((self.m_state, new))
        self.m_state = new
        self.m_gen += 1
        self.m_failures = 0
        self.m_probes = 0
        if new is OPEN:
            self.m_opened_at = self.clock.now()

    def m_refresh(self) -> None:
        if self.m_state is OPEN and self.clock.now() - self.m_opened_at >= self.reset_timeout:
            self.m_move(HALF_OPEN)

    def m_closed_failure(self) -> None:
        self.m_failures += 1
        if self.m_failures >= self.threshold:
            self.m_move(OPEN)

    # the rules

    @rule()
    def acquire(self) -> None:
        self.m_refresh()
        permit = self.cb.acquire()
        if self.m_state is CLOSED:
            assert permit is not None and not permit.probe
        elif self.m_state is OPEN:
            assert permit is None
        elif self.m_probes < self.max_probes:
            assert permit is not None and permit.probe
            self.m_probes += 1
        else:
            assert permit is None  # the half-open probe limit
        if permit is not None:
            self.permits.append((permit, self.m_gen, permit.probe))

    @precondition(lambda self: self.permits)
    @rule(how=st.sampled_from(["success", "failure", "release"]), data=st.data())
    def hand_back(self, how: str, data: st.DataObject) -> None:
        i = len(self.permits) - 1 - data.draw(st.integers(0, len(self.permits) - 1))  # shrinks to the newest
        permit, gen, probe = self.permits[i]
        # A stale result (an earlier generation, or a probe already handed back) must change nothing.
        current = gen == self.m_gen and not (probe and i in self.settled)
        getattr(self.cb, how)(permit)
        if not current:
            return
        if probe:
            self.settled.add(i)
        if how == "success":
            if probe:
                self.m_move(CLOSED)
            else:
                self.m_failures = 0
        elif how == "failure":
            if probe:
                self.m_move(OPEN)
            else:
                self.m_closed_failure()
        elif probe:
            self.m_probes -= 1

    @rule(seconds=st.sampled_from([0.0, 0.5, 1.0, 5.0, 10.0, 11.0]))
    def advance_time(self, seconds: float) -> None:
        self.loop.run_until_complete(self.clock.advance(seconds))

    @rule()
    def allow(self) -> None:
        self.m_refresh()
        allowed = self.cb.allow()
        assert allowed is (
            self.m_state is CLOSED or (self.m_state is HALF_OPEN and self.m_probes < self.max_probes)
        )
        if allowed and self.m_state is HALF_OPEN:
            self.m_probes += 1  # the simple API takes a probe slot; its result comes by record_*()

    @rule()
    def reset(self) -> None:
        self.cb.reset()
        self.m_move(CLOSED)

    @rule()
    def record_success(self) -> None:
        self.m_refresh()
        self.cb.record_success()
        if self.m_state is CLOSED:
            self.m_failures = 0
        elif self.m_state is HALF_OPEN:
            self.m_move(CLOSED)

    @rule()
    def trip(self) -> None:
        """Enough failures through the simple API to open a closed breaker (a shortcut to the rest)."""
        for _ in range(self.threshold):
            self.record_failure()

    @rule()
    def record_failure(self) -> None:
        self.m_refresh()
        self.cb.record_failure()
        if self.m_state is CLOSED:
            self.m_closed_failure()
        elif self.m_state is HALF_OPEN:
            self.m_move(OPEN)

    # the invariants

    @invariant()
    def agrees_with_the_model(self) -> None:
        self.m_refresh()
        assert self.cb.state is self.m_state
        assert self.cb.failure_count == self.m_failures
        assert self.seen == self.expected
        assert 0 <= self.m_probes <= self.max_probes
        expected_wait = self.m_opened_at + self.reset_timeout - self.clock.now() if self.m_state is OPEN else 0
        assert math.isclose(self.cb.retry_after(), expected_wait, abs_tol=1e-9)

    @invariant()
    def allow_agrees_without_taking_a_probe(self) -> None:
        # allow() takes a probe slot while half-open, so look through acquire/release instead.
        permit = self.cb.acquire()
        expected = self.m_state is CLOSED or (self.m_state is HALF_OPEN and self.m_probes < self.max_probes)
        assert (permit is not None) is expected
        if permit is not None:
            self.cb.release(permit)


TestBreakerStateMachine = BreakerMachine.TestCase
TestBreakerStateMachine.settings = settings(deadline=None, max_examples=200, stateful_step_count=40)


# -- specific behaviour -------------------------------------------------------------------------------


def opened(clock: FakeClock, **kw: object) -> CircuitBreaker:
    cb = CircuitBreaker(2, 10.0, clock=clock, **kw)  # type: ignore[arg-type]
    cb.record_failure()
    cb.record_failure()
    assert cb.state is OPEN
    return cb


def test_consecutive_failures_open_it_and_a_success_resets_the_count() -> None:
    cb = CircuitBreaker(3, 10.0, clock=FakeClock())
    cb.record_failure()
    cb.record_failure()
    cb.record_success()
    cb.record_failure()
    cb.record_failure()
    assert cb.state is CLOSED and cb.failure_count == 2
    cb.record_failure()
    assert cb.state is OPEN and not cb.allow()


def test_open_reads_half_open_after_the_reset_timeout_and_says_when() -> None:
    clock = FakeClock()
    cb = opened(clock)
    assert cb.retry_after() == 10.0
    advance(clock, 4.0)
    assert cb.retry_after() == 6.0 and cb.state is OPEN
    advance(clock, 6.0)
    assert cb.state is HALF_OPEN and cb.retry_after() == 0.0


def test_half_open_lets_through_at_most_half_open_max_calls_probes_at_a_time() -> None:
    clock = FakeClock()
    cb = opened(clock, half_open_max_calls=2)
    advance(clock, 10.0)
    first, second = cb.acquire(), cb.acquire()
    assert first is not None and second is not None and first.probe and second.probe
    assert cb.acquire() is None
    cb.release(first)
    third = cb.acquire()
    assert third is not None and third.probe


def test_a_probe_success_closes_it_and_a_probe_failure_reopens_with_a_fresh_timer() -> None:
    clock = FakeClock()
    cb = opened(clock)
    advance(clock, 10.0)
    probe = cb.acquire()
    assert probe is not None
    cb.failure(probe)
    assert cb.state is OPEN and cb.retry_after() == 10.0
    advance(clock, 10.0)
    probe = cb.acquire()
    assert probe is not None
    cb.success(probe)
    assert cb.state is CLOSED and cb.failure_count == 0


def test_results_of_probes_from_an_earlier_state_are_ignored() -> None:
    clock = FakeClock()
    cb = opened(clock, half_open_max_calls=2)
    advance(clock, 10.0)
    late, winner = cb.acquire(), cb.acquire()
    assert late is not None and winner is not None
    cb.success(winner)
    assert cb.state is CLOSED
    cb.failure(late)  # arrives after the breaker closed: ignored
    assert cb.state is CLOSED and cb.failure_count == 0
    cb.record_failure()
    cb.record_failure()
    advance(clock, 10.0)
    assert cb.state is HALF_OPEN
    probe = cb.acquire()
    assert probe is not None
    cb.release(late)  # a stale release must not free the current probe's slot
    cb.release(late)
    assert cb.acquire() is not None  # the second of two slots
    assert cb.acquire() is None


def test_a_probe_handed_back_twice_counts_once() -> None:
    clock = FakeClock()
    cb = opened(clock)
    advance(clock, 10.0)
    probe = cb.acquire()
    assert probe is not None
    cb.release(probe)
    cb.success(probe)  # already handed back: ignored
    cb.failure(probe)
    assert cb.state is HALF_OPEN
    again = cb.acquire()
    assert again is not None
    cb.release(probe)  # must not free the new probe's slot
    assert cb.acquire() is None


def test_closed_state_results_from_before_it_opened_are_ignored() -> None:
    clock = FakeClock()
    cb = CircuitBreaker(1, 10.0, clock=clock)
    before = cb.acquire()
    assert before is not None
    cb.record_failure()
    advance(clock, 10.0)
    probe = cb.acquire()
    assert probe is not None
    cb.success(before)  # from the closed state that has since opened: must not close it
    assert cb.state is HALF_OPEN


def test_reset_closes_and_forgets() -> None:
    clock = FakeClock()
    cb = opened(clock)
    cb.reset()
    assert cb.state is CLOSED and cb.failure_count == 0 and cb.allow()


def test_listeners_see_every_change_and_one_that_raises_breaks_nothing(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    cb = CircuitBreaker(1, 5.0, clock=clock)
    seen: list[tuple[CircuitState, CircuitState]] = []

    @cb.on_state_change
    def boom(old: CircuitState, new: CircuitState) -> None:
        raise RuntimeError("listener bug")

    cb.on_state_change(lambda old, new: seen.append((old, new)))
    with caplog.at_level(logging.WARNING):
        cb.record_failure()
        advance(clock, 5.0)
        assert cb.state is HALF_OPEN
        cb.record_success()
        cb.reset()  # already closed: no change to announce
    assert seen == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]
    assert "state listener raised" in caplog.text
    with pytest.raises(TypeError, match="callable"):
        cb.on_state_change(42)  # type: ignore[arg-type]


def test_the_simple_api_ignores_results_while_open() -> None:
    clock = FakeClock()
    cb = opened(clock)
    cb.record_success()
    cb.record_failure()
    assert cb.state is OPEN and cb.retry_after() == 10.0


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"failure_threshold": 0}, "failure_threshold must be an integer >= 1"),
        ({"failure_threshold": None}, "needs failure_threshold= or failure_rate_threshold="),
        ({"reset_timeout": -1}, "reset_timeout"),
        ({"reset_timeout": math.nan}, "reset_timeout"),
        ({"half_open_max_calls": 0}, "half_open_max_calls"),
        ({"failure_rate_threshold": 0.0}, r"failure_rate_threshold must be in \(0, 1\]"),
        ({"failure_rate_threshold": 1.5}, r"failure_rate_threshold must be in \(0, 1\]"),
        ({"failure_rate_threshold": 0.5, "window": 0}, "window must be"),
        ({"window": 10.0}, "only applies with failure_rate_threshold"),
        ({"failure_rate_threshold": 0.5, "minimum_calls": 0}, "minimum_calls"),
    ],
)
def test_bad_settings_raise_value_error_naming_the_fix(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]


# -- failure-rate mode --------------------------------------------------------------------------------


def test_failure_rate_opens_once_minimum_calls_are_seen_and_the_ratio_is_reached() -> None:
    clock = FakeClock()
    cb = CircuitBreaker(None, 10.0, clock=clock, failure_rate_threshold=0.5, window=10.0, minimum_calls=4)
    for ok in (True, False, True):
        p = cb.acquire()
        assert p is not None
        cb.success(p) if ok else cb.failure(p)
    assert cb.state is CLOSED  # 1 of 3: below minimum_calls anyway
    p = cb.acquire()
    assert p is not None
    cb.failure(p)  # 2 of 4 = 50%
    assert cb.state is OPEN


def test_failure_rate_forgets_calls_older_than_the_window() -> None:
    clock = FakeClock()
    cb = CircuitBreaker(None, 10.0, clock=clock, failure_rate_threshold=0.5, window=10.0, minimum_calls=2)
    cb.record_failure()
    advance(clock, 11.0)  # that failure has left the window
    cb.record_success()
    cb.record_success()
    cb.record_failure()  # 1 of 3
    assert cb.state is CLOSED


def test_both_modes_together_open_on_whichever_trips_first() -> None:
    cb = CircuitBreaker(3, 10.0, clock=FakeClock(), failure_rate_threshold=0.9, minimum_calls=100)
    for _ in range(3):
        cb.record_failure()
    assert cb.state is OPEN


@settings(deadline=None, max_examples=200)
@given(
    steps=st.lists(st.tuples(st.floats(0, 4), st.booleans()), max_size=60),
    rate=st.floats(0.05, 1.0),
    minimum=st.integers(1, 8),
)
def test_failure_rate_matches_a_brute_force_count_over_the_buckets(
    steps: list[tuple[float, bool]], rate: float, minimum: int
) -> None:
    clock = FakeClock()
    cb = CircuitBreaker(None, 10.0, clock=clock, failure_rate_threshold=rate, window=10.0, minimum_calls=minimum)
    history: list[tuple[int, bool]] = []  # (bucket, failed): ten buckets of one second each
    for dt, failed in steps:
        advance(clock, dt)
        bucket = math.floor(clock.now() / 1.0)
        history.append((bucket, failed))
        cb.record_failure() if failed else cb.record_success()
        recent = [f for b, f in history if b > bucket - 10]
        should_open = failed and len(recent) >= minimum and sum(recent) >= rate * len(recent)
        assert (cb.state is OPEN) is should_open
        if should_open:
            break
