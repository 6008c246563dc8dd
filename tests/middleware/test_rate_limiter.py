"""RateLimiter and MultiTenantRateLimiter: the bucket's bound, FIFO reservations, cancellation, eviction."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Coroutine
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from axonflow_llm.middleware.rate_limiter import MultiTenantRateLimiter, RateLimiter
from axonflow_llm.pipeline.errors import RateLimitExceededError
from axonflow_llm.testing import FakeClock

TOL = 1e-6


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


# -- construction and the simple cases ------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0, -1, math.nan, math.inf, True, "10"])
def test_bad_rate_is_a_value_error_at_construction_and_in_set_rate(rate: Any) -> None:
    with pytest.raises(ValueError, match="rate must be"):
        RateLimiter(rate, 1)
    limiter = RateLimiter(1, 1)
    with pytest.raises(ValueError, match="rate must be"):
        limiter.set_rate(rate)
    assert limiter.rate == 1


@pytest.mark.parametrize("burst", [0, -1, 1.5, math.nan, math.inf, True])
def test_bad_burst_is_a_value_error_at_construction_and_in_set_burst(burst: Any) -> None:
    with pytest.raises(ValueError, match="burst must be"):
        RateLimiter(1, burst)
    limiter = RateLimiter(1, 2)
    with pytest.raises(ValueError, match="burst must be"):
        limiter.set_burst(burst)
    assert limiter.burst == 2


async def test_more_tokens_than_burst_is_a_value_error_not_a_hang() -> None:
    limiter = RateLimiter(1, 5, clock=FakeClock())
    with pytest.raises(ValueError, match="burst=5"):
        await limiter.wait(6)
    with pytest.raises(ValueError, match="burst=5"):
        limiter.try_acquire(6)
    bad: Any
    for bad in (0, -1, math.nan, "x", None):
        with pytest.raises(ValueError, match="tokens must be"):
            limiter.try_acquire(bad)
        with pytest.raises(ValueError, match="tokens must be"):
            await limiter.wait(bad)
    assert limiter.available() == 5


async def test_bad_timeout_is_a_value_error() -> None:
    limiter = RateLimiter(1, 1, clock=FakeClock())
    for bad in (-1, math.nan, math.inf):
        with pytest.raises(ValueError, match="timeout"):
            await limiter.wait(timeout=bad)


def test_starts_full_and_refills_at_rate_up_to_burst() -> None:
    clock = FakeClock(auto_advance=False)
    limiter = RateLimiter(2, 4, clock=clock)
    assert limiter.available() == 4
    assert all(limiter.try_acquire() for _ in range(4))
    assert not limiter.try_acquire()
    run(clock.advance(1.0))
    assert limiter.available() == pytest.approx(2)
    run(clock.advance(100.0))
    assert limiter.available() == 4


async def test_wait_takes_free_tokens_without_sleeping() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, 3, clock=clock)
    await limiter.wait(2)
    await limiter.wait()
    assert clock.sleeps == []
    assert limiter.available() == 0


async def test_wait_sleeps_exactly_until_its_tokens_are_due() -> None:
    clock = FakeClock()
    limiter = RateLimiter(4, 4, clock=clock)
    await limiter.wait(4)
    await limiter.wait(2)
    assert clock.now() == pytest.approx(0.5)
    assert clock.sleeps == [pytest.approx(0.5)]


async def test_waiters_are_served_first_come_first_served() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, 3, clock=clock)
    assert limiter.try_acquire(3)
    done: list[tuple[str, float]] = []

    async def waiter(name: str, n: int) -> None:
        await limiter.wait(n)
        done.append((name, clock.now()))

    await asyncio.gather(waiter("a", 3), waiter("b", 1), waiter("c", 2))
    assert [name for name, _ in done] == ["a", "b", "c"]
    assert [at for _, at in done] == pytest.approx([3, 4, 6])


async def test_try_acquire_never_jumps_ahead_of_a_queued_waiter() -> None:
    clock = FakeClock(auto_advance=False)
    limiter = RateLimiter(1, 2, clock=clock)
    assert limiter.try_acquire(2)
    task = asyncio.create_task(limiter.wait(2))
    await clock.advance(1.5)
    assert not task.done()
    assert not limiter.try_acquire(1)  # 1.5 tokens have accrued, but they are the waiter's
    assert limiter.available() == 0
    await clock.advance(0.5)
    assert task.done()
    assert not limiter.try_acquire(1)
    await clock.advance(1.0)
    assert limiter.try_acquire(1)


async def test_waiters_made_due_together_by_a_refund_still_proceed_in_arrival_order() -> None:
    clock = FakeClock(auto_advance=False)
    limiter = RateLimiter(2, 5, clock=clock)
    await limiter.wait(5)
    done: list[int] = []

    async def waiter(i: int) -> None:
        await limiter.wait(1)
        done.append(i)

    tasks = [asyncio.create_task(waiter(i)) for i in range(4)]
    await clock.advance(0)
    limiter.refund(5)  # every reservation is covered at once
    await clock.advance(0)
    assert done == [0, 1, 2, 3]
    assert clock.now() == 0
    await asyncio.gather(*tasks)


async def test_a_wait_that_cannot_be_served_in_time_fails_at_once_holding_nothing() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2, 4, clock=clock)
    assert limiter.try_acquire(4)
    with pytest.raises(RateLimitExceededError) as info:
        await limiter.wait(3, timeout=1.0)
    assert info.value.retry_after == pytest.approx(1.5)
    assert info.value.retryable
    assert clock.sleeps == []
    assert clock.now() == 0
    assert limiter.wait_time(3) == pytest.approx(1.5)  # nothing was kept reserved
    await limiter.wait(2, timeout=1.0)  # due in exactly 1 s: within the timeout
    assert clock.now() == pytest.approx(1.0)


async def test_timeout_zero_means_only_if_free_now() -> None:
    limiter = RateLimiter(1, 1, clock=FakeClock())
    await limiter.wait(timeout=0)
    with pytest.raises(RateLimitExceededError):
        await limiter.wait(timeout=0)


async def test_cancelled_waiter_gives_its_reservation_back_and_moves_the_queue_up() -> None:
    clock = FakeClock(auto_advance=False)
    limiter = RateLimiter(1, 2, clock=clock)
    assert limiter.try_acquire(2)
    first = asyncio.create_task(limiter.wait(2))  # due at 2
    second = asyncio.create_task(limiter.wait(1))  # due at 3
    await clock.advance(0.5)
    first.cancel()
    await clock.advance(0)
    assert first.cancelled()
    await clock.advance(0.5)  # t = 1: as if ``first`` had never queued
    assert second.done()
    assert clock.now() == 1.0
    await clock.advance(10)
    assert limiter.available() == 2
    assert limiter.waiting == 0


async def test_the_last_waiter_cancelled_leaves_the_bucket_as_it_would_be_without_it() -> None:
    clock = FakeClock(auto_advance=False)
    limiter = RateLimiter(1, 2, clock=clock)
    assert limiter.try_acquire(1)
    task = asyncio.create_task(limiter.wait(2))
    await clock.advance(0.25)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert limiter.waiting == 0
    assert limiter.available() == pytest.approx(1.25)


async def test_a_slower_rate_past_a_waiters_timeout_fails_it_and_frees_its_place() -> None:
    clock = FakeClock(auto_advance=False)
    limiter = RateLimiter(1, 1, clock=clock)
    assert limiter.try_acquire()
    task = asyncio.create_task(limiter.wait(1, timeout=2.0))
    await clock.advance(0.5)
    limiter.set_rate(0.1)  # now due at 0.5 + 5 s, beyond the deadline at 2 s
    await clock.advance(0)
    with pytest.raises(RateLimitExceededError, match="slowed down"):
        await task
    assert limiter.waiting == 0
    assert clock.now() == 0.5


async def test_a_faster_rate_brings_waiters_forward() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, 1, clock=clock)
    assert limiter.try_acquire()
    task = asyncio.create_task(limiter.wait())
    await asyncio.sleep(0)
    limiter.set_rate(10)
    await task
    assert clock.now() == pytest.approx(0.1)


def test_refund_is_capped_at_burst_and_charge_may_go_negative() -> None:
    clock = FakeClock(auto_advance=False)
    limiter = RateLimiter(1, 10, clock=clock)
    limiter.refund(5)
    assert limiter.available() == 10
    limiter.charge(15)
    assert limiter.available() == 0
    assert limiter.wait_time(1) == pytest.approx(6)
    for bad in (-1, math.nan, math.inf):
        with pytest.raises(ValueError):
            limiter.refund(bad)
        with pytest.raises(ValueError):
            limiter.charge(bad)


def test_set_burst_lower_drops_the_excess() -> None:
    limiter = RateLimiter(1, 10, clock=FakeClock())
    limiter.set_burst(3)
    assert limiter.available() == 3
    limiter.set_burst(20)
    assert limiter.available() == 3


def test_repr_shows_the_settings() -> None:
    assert repr(RateLimiter(2.5, 5, clock=FakeClock())) == (
        "RateLimiter(rate=2.5, burst=5, available=5.000, waiting=0)"
    )


async def test_with_the_system_clock_a_short_wait_really_waits() -> None:
    limiter = RateLimiter(200, 1)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await limiter.wait()
    await limiter.wait()
    assert loop.time() - start >= 0.004


# -- properties ---------------------------------------------------------------------------------------

ops = st.lists(
    st.one_of(
        st.tuples(st.just("try"), st.integers(1, 5)),
        st.tuples(st.just("drain"), st.just(1)),
        st.tuples(st.just("wait"), st.integers(1, 5)),
        st.tuples(st.just("cancel"), st.integers(0, 20)),
        st.tuples(st.just("advance"), st.sampled_from([0.0, 0.25, 0.5, 1.0, 3.0])),
    ),
    max_size=40,
)


@settings(deadline=None, max_examples=250)
@given(rate=st.sampled_from([0.5, 1.0, 2.0]), burst=st.integers(1, 5), program=ops)
def test_no_interval_of_length_t_admits_more_than_burst_plus_rate_t(
    rate: float, burst: int, program: list[tuple[str, Any]]
) -> None:
    admitted: list[tuple[float, int]] = []

    async def scenario() -> None:
        clock = FakeClock(auto_advance=False)
        limiter = RateLimiter(rate, burst, clock=clock)
        tasks: list[asyncio.Task[None]] = []

        async def waiter(n: int) -> None:
            await limiter.wait(n)
            admitted.append((clock.now(), n))

        for op, arg in program:
            if op in ("try", "wait") and arg > burst:
                continue
            if op == "try":
                if limiter.try_acquire(arg):
                    admitted.append((clock.now(), arg))
            elif op == "drain":  # a greedy caller: everything free right now
                while limiter.try_acquire(arg):
                    admitted.append((clock.now(), arg))
            elif op == "wait":
                tasks.append(asyncio.create_task(waiter(arg)))
                await clock.advance(0)
            elif op == "cancel":
                pending = [t for t in tasks if not t.done()]
                if pending:
                    pending[arg % len(pending)].cancel()
                    await clock.advance(0)
            else:
                await clock.advance(arg)
            assert 0 <= limiter.available() <= burst
        await clock.advance(1000)
        assert all(t.done() for t in tasks)

    run(scenario())
    admitted.sort()
    for i, (start, _) in enumerate(admitted):
        total = 0
        for end, n in admitted[i:]:
            total += n
            assert total <= burst + rate * (end - start) + TOL, (start, end, total)


@settings(deadline=None, max_examples=100)
@given(sizes=st.lists(st.integers(1, 5), min_size=1, max_size=12), rate=st.sampled_from([0.5, 2.0, 7.0]))
def test_waiters_finish_in_arrival_order_each_exactly_when_due(sizes: list[int], rate: float) -> None:
    async def scenario() -> list[tuple[int, float]]:
        clock = FakeClock()
        limiter = RateLimiter(rate, 5, clock=clock)
        assert limiter.try_acquire(5)
        done: list[tuple[int, float]] = []

        async def waiter(i: int, n: int) -> None:
            await limiter.wait(n)
            done.append((i, clock.now()))

        await asyncio.gather(*(waiter(i, n) for i, n in enumerate(sizes)))
        return done

    done = run(scenario())
    assert [i for i, _ in done] == list(range(len(sizes)))
    cumulative = 0
    for (_, at), n in zip(done, sizes, strict=True):
        cumulative += n
        assert at == pytest.approx(cumulative / rate)


@settings(deadline=None, max_examples=100)
@given(
    sizes=st.lists(st.integers(1, 5), min_size=2, max_size=8),
    victim=st.integers(0, 6),
    cancel_at=st.sampled_from([0.0, 0.3, 1.0, 2.5]),
    rate=st.sampled_from([1.0, 4.0]),
)
def test_a_cancelled_waiter_delays_no_later_waiter(
    sizes: list[int], victim: int, cancel_at: float, rate: float
) -> None:
    victim %= len(sizes) - 1  # never the last, so someone queues behind it

    async def finish_times(cancel: bool, skip_victim: bool) -> dict[int, float]:
        clock = FakeClock(auto_advance=False)
        limiter = RateLimiter(rate, 5, clock=clock)
        assert limiter.try_acquire(5)
        done: dict[int, float] = {}

        async def waiter(i: int, n: int) -> None:
            await limiter.wait(n)
            done[i] = clock.now()

        tasks = {
            i: asyncio.create_task(waiter(i, n))
            for i, n in enumerate(sizes)
            if not (skip_victim and i == victim)
        }
        await clock.advance(cancel_at)
        if cancel and not tasks[victim].done():
            tasks[victim].cancel()
        await clock.advance(1000)
        return done

    baseline = run(finish_times(cancel=False, skip_victim=False))
    if baseline[victim] <= cancel_at:
        return  # it finished before the cancel came
    without = run(finish_times(cancel=False, skip_victim=True))
    cancelled = run(finish_times(cancel=True, skip_victim=False))
    assert victim not in cancelled
    for i in range(victim + 1, len(sizes)):
        assert cancelled[i] <= baseline[i] + TOL
        assert cancelled[i] == pytest.approx(max(cancel_at, without[i]))


class BucketMachine(RuleBasedStateMachine):
    """Any sequence of set_rate/set_burst/acquires/waits/cancels/refunds/charges/time keeps the bucket sane."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = FakeClock(auto_advance=False)
        self.limiter = RateLimiter(2, 5, clock=self.clock)
        self.tasks: list[asyncio.Task[None]] = []
        self.finished: list[int] = []

    def teardown(self) -> None:
        for t in self.tasks:
            t.cancel()

        async def drain() -> None:
            await asyncio.gather(*self.tasks, return_exceptions=True)

        self.loop.run_until_complete(drain())
        self.loop.close()

    def settle(self, seconds: float = 0.0) -> None:
        self.loop.run_until_complete(self.clock.advance(seconds))

    @rule(rate=st.sampled_from([0.1, 1.0, 2.0, 50.0]))
    def set_rate(self, rate: float) -> None:
        self.limiter.set_rate(rate)
        self.settle()

    @rule(burst=st.integers(1, 8))
    def set_burst(self, burst: int) -> None:
        self.limiter.set_burst(burst)

    @rule(n=st.integers(1, 8))
    def try_acquire(self, n: int) -> None:
        if n <= self.limiter.burst:
            self.limiter.try_acquire(n)

    @rule(n=st.integers(1, 8), timeout=st.sampled_from([None, 0.0, 1.0, 10.0]))
    def wait(self, n: int, timeout: float | None) -> None:
        if n > self.limiter.burst:
            return
        index = len(self.tasks)

        async def waiter() -> None:
            try:
                await self.limiter.wait(n, timeout=timeout)
            except RateLimitExceededError:
                return
            self.finished.append(index)

        self.tasks.append(self.loop.create_task(waiter()))
        self.settle()

    @precondition(lambda self: any(not t.done() for t in self.tasks))
    @rule(pick=st.integers(0, 50))
    def cancel(self, pick: int) -> None:
        pending = [t for t in self.tasks if not t.done()]
        pending[pick % len(pending)].cancel()
        self.settle()

    @rule(n=st.sampled_from([0, 1, 2.5, 40]))
    def refund(self, n: float) -> None:
        self.limiter.refund(n)
        self.settle()

    @rule(n=st.sampled_from([0, 1, 2.5, 40]))
    def charge(self, n: float) -> None:
        self.limiter.charge(n)
        self.settle()

    @rule(seconds=st.sampled_from([0.01, 0.5, 2.0, 30.0]))
    def advance(self, seconds: float) -> None:
        self.settle(seconds)

    @invariant()
    def available_stays_within_zero_and_burst(self) -> None:
        assert 0 <= self.limiter.available() <= self.limiter.burst

    @invariant()
    def waiters_finish_in_arrival_order(self) -> None:
        assert self.finished == sorted(self.finished)

    @invariant()
    def the_queue_counts_only_live_waiters(self) -> None:
        assert self.limiter.waiting <= sum(not t.done() for t in self.tasks)


TestBucketMachine = BucketMachine.TestCase
TestBucketMachine.settings = settings(deadline=None, max_examples=60, stateful_step_count=30)


# -- MultiTenantRateLimiter ---------------------------------------------------------------------------


def test_multi_tenant_validates_its_arguments() -> None:
    with pytest.raises(TypeError, match="factory"):
        MultiTenantRateLimiter(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="idle_timeout"):
        MultiTenantRateLimiter(lambda: RateLimiter(1, 1), idle_timeout=0)
    with pytest.raises(ValueError, match="max_tenants"):
        MultiTenantRateLimiter(lambda: RateLimiter(1, 1), max_tenants=0)
    bad = MultiTenantRateLimiter(lambda: "nope")  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="must return a RateLimiter"):
        bad.try_acquire("t")


def test_each_tenant_gets_its_own_bucket() -> None:
    clock = FakeClock(auto_advance=False)
    mt = MultiTenantRateLimiter(lambda: RateLimiter(1, 2, clock=clock), clock=clock)
    assert mt.try_acquire("a", 2)
    assert not mt.try_acquire("a")
    assert mt.try_acquire("b")
    assert mt.available("a") == 0
    assert mt.available("b") == 1
    assert mt.available("unknown") == 2
    assert len(mt) == 2
    assert "unknown" not in mt
    assert mt.limiter("a") is mt.limiter("a")


async def test_multi_tenant_wait_waits_on_the_tenants_bucket() -> None:
    clock = FakeClock()
    mt = MultiTenantRateLimiter(lambda: RateLimiter(2, 1, clock=clock), clock=clock)
    await mt.wait("a")
    await mt.wait("b")
    assert clock.now() == 0
    await mt.wait("a")
    assert clock.now() == pytest.approx(0.5)
    assert mt.try_acquire("b")  # refilled meanwhile
    with pytest.raises(RateLimitExceededError):
        await mt.wait("b", timeout=0.1)


def test_remove_tenant_forgets_it_and_ignores_unknown_tenants() -> None:
    clock = FakeClock(auto_advance=False)
    mt = MultiTenantRateLimiter(lambda: RateLimiter(1, 1, clock=clock), clock=clock)
    assert mt.try_acquire("a")
    mt.remove_tenant("a")
    mt.remove_tenant("never-seen")
    assert len(mt) == 0
    assert mt.try_acquire("a")  # a fresh, full bucket


def test_max_tenants_bounds_memory_over_ten_thousand_tenants_dropping_the_least_recently_used() -> None:
    clock = FakeClock(auto_advance=False)
    mt = MultiTenantRateLimiter(lambda: RateLimiter(1, 1, clock=clock), max_tenants=100, clock=clock)
    for i in range(10_000):
        mt.try_acquire(f"tenant-{i}")
        if i % 7 == 0:
            mt.try_acquire("hot")  # kept recent, so never the one dropped
        assert len(mt) <= 100
    assert "hot" in mt
    assert "tenant-9999" in mt
    assert "tenant-0" not in mt


def test_idle_tenants_with_full_buckets_are_evicted_on_access() -> None:
    clock = FakeClock(auto_advance=False)
    mt = MultiTenantRateLimiter(lambda: RateLimiter(1, 1, clock=clock), idle_timeout=10, clock=clock)
    for i in range(1000):
        mt.try_acquire(i)
    assert len(mt) == 1000
    run(clock.advance(10))
    mt.try_acquire("new")
    assert len(mt) == 1
    assert list(mt._tenants) == ["new"]


def test_an_idle_tenant_still_refilling_is_kept() -> None:
    clock = FakeClock(auto_advance=False)
    mt = MultiTenantRateLimiter(lambda: RateLimiter(0.01, 1, clock=clock), idle_timeout=10, clock=clock)
    assert mt.try_acquire("slow")
    run(clock.advance(20))  # 0.2 tokens back: forgetting it would hand out a full bucket
    mt.try_acquire("other")
    assert "slow" in mt
    run(clock.advance(100))
    mt.try_acquire("other")
    assert "slow" not in mt


async def test_a_tenant_with_waiters_is_never_evicted() -> None:
    clock = FakeClock(auto_advance=False)
    mt = MultiTenantRateLimiter(
        lambda: RateLimiter(0.001, 1, clock=clock), idle_timeout=1, max_tenants=2, clock=clock
    )
    assert mt.try_acquire("busy")
    task = asyncio.create_task(mt.wait("busy"))
    await clock.advance(5)
    for i in range(50):
        mt.try_acquire(f"t{i}")
        assert "busy" in mt
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_multi_tenant_repr() -> None:
    mt = MultiTenantRateLimiter(lambda: RateLimiter(1, 1), max_tenants=5)
    assert repr(mt) == "MultiTenantRateLimiter(tenants=0, idle_timeout=300.0, max_tenants=5)"
