"""CostMiddleware and SpendingBudget: cost attached, streams priced at their end, budgets enforced."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from axonflow_llm.middleware.cost import (
    COST_STATE_KEY,
    GLOBAL_TENANT,
    CostMiddleware,
    SpendingBudget,
)
from axonflow_llm.middleware.pricing import ModelPrice, PriceTable
from axonflow_llm.pipeline.context import CallContext, ProviderInfo
from axonflow_llm.pipeline.errors import BudgetExceededError, ServerError
from axonflow_llm.pipeline.models import CompletionRequest, CompletionResponse, UsageStats
from axonflow_llm.pipeline.stream import ChunkStream
from axonflow_llm.testing import FakeClock, ScriptedHandler, delay, response, stream

# $1 per 1M input tokens, $2 per 1M output tokens: 1M prompt + 1M completion tokens cost $3.
PRICE = ModelPrice(input_per_1m=1.0, output_per_1m=2.0)
PRICES = PriceTable({"m-1": PRICE})
USAGE = UsageStats(prompt_tokens=1_000_000, completion_tokens=1_000_000, total_tokens=2_000_000)


def ctx(*, streaming: bool = False, model: str | None = "m-1", type: str = "custom") -> CallContext:
    return CallContext(ProviderInfo(name="acme", type=type, model=model), streaming=streaming)


def req(max_tokens: int = 1_000_000, tenant: str = "t1", model: str | None = None) -> CompletionRequest:
    # The counter below makes every prompt 1M tokens: the estimate is $1 + max_tokens * $2/1M.
    return CompletionRequest(prompt="hi", max_tokens=max_tokens, model=model, metadata={"tenant": tenant})


def one_million(request: CompletionRequest) -> int:
    return 1_000_000


def by_tenant(request: CompletionRequest) -> str:
    return str(request.metadata["tenant"])


def cost_mw(handler: ScriptedHandler, **options: object) -> CostMiddleware:
    options.setdefault("prices", PRICES)
    options.setdefault("counter", one_million)
    return CostMiddleware(handler, **options)  # type: ignore[arg-type]


async def drain(reply: object) -> list[str]:
    assert isinstance(reply, ChunkStream)
    return [chunk.content async for chunk in reply]


# -- pricing ------------------------------------------------------------------------------------------


async def test_the_cost_is_attached_to_the_response_and_left_in_the_context() -> None:
    c = ctx()
    reply = await cost_mw(ScriptedHandler(response("hi", model="m-1", usage=USAGE)))(req(), c)
    assert isinstance(reply, CompletionResponse)
    assert reply.cost == pytest.approx(3.0)
    assert c.state[COST_STATE_KEY] == pytest.approx(3.0)
    assert reply.content == "hi" and reply.usage == USAGE


async def test_the_model_comes_from_the_response_then_the_request_then_the_provider() -> None:
    prices = PriceTable({"resp": PRICE, "asked": ModelPrice(input_per_1m=10, output_per_1m=10)})
    usage = UsageStats(prompt_tokens=1_000_000, completion_tokens=0, total_tokens=1_000_000)
    mw = CostMiddleware(ScriptedHandler(then=response("x", model="resp", usage=usage)), prices=prices)
    reply = await mw(req(model="asked"), ctx(model=None))
    assert isinstance(reply, CompletionResponse) and reply.cost == pytest.approx(1.0)
    mw = CostMiddleware(ScriptedHandler(then=response("x", model="unknown", usage=usage)), prices=prices)
    reply = await mw(req(model="asked"), ctx(model=None))
    assert isinstance(reply, CompletionResponse) and reply.cost == pytest.approx(10.0)
    mw = CostMiddleware(ScriptedHandler(then=response("x", usage=usage)), prices=prices)
    reply = await mw(req(), ctx(model="resp-20250101"))
    assert isinstance(reply, CompletionResponse) and reply.cost == pytest.approx(1.0)


async def test_an_unknown_model_leaves_the_cost_none() -> None:
    c = ctx(model=None)
    reply = await cost_mw(ScriptedHandler(response("hi", model="mystery", usage=USAGE)))(req(), c)
    assert isinstance(reply, CompletionResponse) and reply.cost is None
    assert COST_STATE_KEY not in c.state


async def test_no_reported_usage_leaves_the_cost_none() -> None:
    reply = await cost_mw(ScriptedHandler(response("hi", model="m-1")))(req(), ctx())
    assert isinstance(reply, CompletionResponse) and reply.cost is None


async def test_a_cost_the_provider_reported_is_kept() -> None:
    c = ctx()
    reply = await cost_mw(ScriptedHandler(response("hi", model="m-1", usage=USAGE, cost=0.5)))(req(), c)
    assert isinstance(reply, CompletionResponse) and reply.cost == 0.5
    assert c.state[COST_STATE_KEY] == 0.5


async def test_the_default_table_prices_built_in_models_and_overrides_price_custom_ones() -> None:
    usage = UsageStats(prompt_tokens=1000, completion_tokens=1000, total_tokens=2000)
    reply = await CostMiddleware(ScriptedHandler(response(model="gpt-4o-2024-08-06", usage=usage)))(req(), ctx())
    assert isinstance(reply, CompletionResponse) and reply.cost == pytest.approx(0.0125)
    mw = CostMiddleware(
        ScriptedHandler(response(model="my-model-v1", usage=usage)),
        prices={"my-model-v1": ModelPrice(input_per_1m=1.0, output_per_1m=1.0)},
    )
    reply = await mw(req(), ctx())
    assert isinstance(reply, CompletionResponse) and reply.cost == pytest.approx(0.002)


async def test_models_of_a_local_ollama_provider_cost_nothing() -> None:
    mw = CostMiddleware(ScriptedHandler(response(model="llama3.1:8b", usage=USAGE)))
    reply = await mw(req(), ctx(type="ollama", model="llama3.1:8b"))
    assert isinstance(reply, CompletionResponse) and reply.cost == 0.0


async def test_a_stream_is_priced_when_it_ends_from_the_last_usage_seen() -> None:
    c = ctx(streaming=True)
    reply = await cost_mw(ScriptedHandler(stream("a", "b", usage=USAGE)))(req(), c)
    assert COST_STATE_KEY not in c.state
    assert await drain(reply) == ["a", "b"]
    assert c.state[COST_STATE_KEY] == pytest.approx(3.0)


async def test_a_stream_without_usage_or_of_an_unknown_model_has_no_cost() -> None:
    c = ctx(streaming=True)
    await drain(await cost_mw(ScriptedHandler(stream("a")))(req(), c))
    assert COST_STATE_KEY not in c.state
    c = ctx(streaming=True, model="mystery")
    await drain(await cost_mw(ScriptedHandler(stream("a", usage=USAGE)))(req(), c))
    assert COST_STATE_KEY not in c.state


def test_bad_options_are_rejected_with_the_fix() -> None:
    leaf = ScriptedHandler()
    with pytest.raises(TypeError, match="SpendingBudget"):
        CostMiddleware(leaf, budget=10.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="PriceTable or a mapping"):
        CostMiddleware(leaf, prices=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="tenant must be a function"):
        CostMiddleware(leaf, tenant="t1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="counter must be a function"):
        CostMiddleware(leaf, counter=4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="default_output_tokens"):
        CostMiddleware(leaf, default_output_tokens=-1)
    with pytest.raises(ValueError, match="limit_usd"):
        SpendingBudget(-1)
    with pytest.raises(ValueError, match="window"):
        SpendingBudget(1, window=0)
    with pytest.raises(ValueError, match="max_tenants"):
        SpendingBudget(1, max_tenants=0)


# -- budgets ------------------------------------------------------------------------------------------


async def test_the_budget_blocks_the_call_that_would_go_over_before_it_is_sent() -> None:
    clock = FakeClock()
    budget = SpendingBudget(5.0, window=3600, clock=clock)
    handler = ScriptedHandler(then=response(model="m-1", usage=USAGE))  # each call costs $3
    mw = cost_mw(handler, budget=budget, tenant=by_tenant)
    await mw(req(), ctx())  # estimate $3, actual $3
    assert budget.spent("t1") == pytest.approx(3.0)
    with pytest.raises(BudgetExceededError) as info:
        await mw(req(), ctx())  # $3 + $3 > $5
    assert handler.call_count == 1  # never sent
    message = str(info.value)
    for part in ("'t1'", "$3.000000 spent", "$5.00", "3600s", "estimated at $3.000000", "limit_usd"):
        assert part in message
    assert not info.value.retryable
    err = info.value
    assert (err.tenant, err.limit_usd, err.in_flight_usd) == ("t1", 5.0, 0.0)
    assert err.spent_usd == pytest.approx(3.0) and err.estimate_usd == pytest.approx(3.0)
    assert err.retry_after == pytest.approx(3600 + 60, abs=61)  # when the $3 leaves the rolling window
    await mw(req(max_tokens=0), ctx())  # a $1 estimate still fits: $3 + $1 <= $5
    assert handler.call_count == 2


async def test_budgets_are_per_tenant() -> None:
    budget = SpendingBudget(3.0, clock=FakeClock())
    mw = cost_mw(ScriptedHandler(then=response(model="m-1", usage=USAGE)), budget=budget, tenant=by_tenant)
    await mw(req(tenant="a"), ctx())
    with pytest.raises(BudgetExceededError, match="'a'"):
        await mw(req(tenant="a"), ctx())
    await mw(req(tenant="b"), ctx())
    assert budget.spent("a") == budget.spent("b") == pytest.approx(3.0)
    assert budget.remaining("a") == 0.0 and budget.remaining("nobody") == 3.0


async def test_without_a_tenant_function_every_call_shares_one_budget() -> None:
    budget = SpendingBudget(3.0, clock=FakeClock())
    mw = cost_mw(ScriptedHandler(then=response(model="m-1", usage=USAGE)), budget=budget)
    await mw(req(tenant="a"), ctx())
    with pytest.raises(BudgetExceededError):
        await mw(req(tenant="b"), ctx())
    assert budget.spent(GLOBAL_TENANT) == pytest.approx(3.0)


async def test_the_window_rolls_over_and_spending_leaves_it() -> None:
    clock = FakeClock(auto_advance=False)
    budget = SpendingBudget(3.0, window=600, clock=clock)
    mw = cost_mw(ScriptedHandler(then=response(model="m-1", usage=USAGE)), budget=budget, tenant=by_tenant)
    await mw(req(), ctx())
    await clock.advance(300)
    with pytest.raises(BudgetExceededError, match="in about 310s") as info:
        await mw(req(), ctx())
    assert info.value.retry_after == pytest.approx(310)
    await clock.advance(300)  # 600s after: the spending is still in its last 10s slice
    with pytest.raises(BudgetExceededError):
        await mw(req(), ctx())
    await clock.advance(10)
    assert budget.spent("t1") == 0.0
    await mw(req(), ctx())
    assert budget.spent("t1") == pytest.approx(3.0)


async def test_concurrent_calls_cannot_overspend() -> None:
    clock = FakeClock()
    budget = SpendingBudget(10.0, clock=clock)
    handler = ScriptedHandler(then=delay(1.0, response(model="m-1", usage=USAGE)), clock=clock)
    mw = cost_mw(handler, budget=budget, tenant=by_tenant)
    results = await asyncio.gather(*(mw(req(), ctx()) for _ in range(10)), return_exceptions=True)
    sent = [r for r in results if isinstance(r, CompletionResponse)]
    refused = [r for r in results if isinstance(r, BudgetExceededError)]
    assert len(sent) == 3 and len(refused) == 7  # 3 x $3 fit in $10; the 4th reservation would not
    assert handler.call_count == 3
    assert budget.spent("t1") == pytest.approx(9.0) and budget.in_flight("t1") == 0.0


async def test_a_reservation_is_released_when_the_call_fails() -> None:
    budget = SpendingBudget(3.0, clock=FakeClock())
    handler = ScriptedHandler(ServerError("down", status_code=503), then=response(model="m-1", usage=USAGE))
    mw = cost_mw(handler, budget=budget)
    with pytest.raises(ServerError):
        await mw(req(), ctx())
    assert budget.spent(GLOBAL_TENANT) == 0.0 and budget.in_flight(GLOBAL_TENANT) == 0.0
    await mw(req(), ctx())


async def test_a_reservation_is_released_when_the_call_is_cancelled() -> None:
    clock = FakeClock(auto_advance=False)
    budget = SpendingBudget(3.0, clock=clock)
    mw = cost_mw(ScriptedHandler(delay(10, response(model="m-1", usage=USAGE)), clock=clock), budget=budget)
    task = asyncio.create_task(mw(req(), ctx()))
    await asyncio.sleep(0)
    assert budget.in_flight(GLOBAL_TENANT) == pytest.approx(3.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert budget.in_flight(GLOBAL_TENANT) == 0.0


async def test_a_response_without_usage_is_counted_at_its_estimate() -> None:
    budget = SpendingBudget(10.0, clock=FakeClock())
    await cost_mw(ScriptedHandler(response(model="m-1")), budget=budget)(req(max_tokens=0), ctx())
    assert budget.spent(GLOBAL_TENANT) == pytest.approx(1.0)


async def test_streams_hold_their_reservation_until_they_end_then_count_the_actual_cost() -> None:
    budget = SpendingBudget(4.0, clock=FakeClock())
    small = UsageStats(prompt_tokens=500_000, completion_tokens=0, total_tokens=500_000)
    mw = cost_mw(ScriptedHandler(stream("a", "b", usage=small), then=stream("c")), budget=budget)
    c = ctx(streaming=True)
    reply = await mw(req(), c)
    assert budget.in_flight(GLOBAL_TENANT) == pytest.approx(3.0)
    with pytest.raises(BudgetExceededError, match="once the calls in flight finish"):
        await mw(req(), ctx(streaming=True))
    await drain(reply)
    assert budget.in_flight(GLOBAL_TENANT) == 0.0
    assert budget.spent(GLOBAL_TENANT) == pytest.approx(0.5) == c.state[COST_STATE_KEY]


async def test_a_stream_closed_early_without_usage_counts_its_estimate_and_one_never_started_nothing() -> None:
    budget = SpendingBudget(10.0, clock=FakeClock())
    mw = cost_mw(ScriptedHandler(then=stream("a", "b", "c")), budget=budget)
    reply = await mw(req(max_tokens=0), ctx(streaming=True))
    assert isinstance(reply, ChunkStream)
    await reply.aclose()
    assert budget.spent(GLOBAL_TENANT) == 0.0 and budget.in_flight(GLOBAL_TENANT) == 0.0
    reply = await mw(req(max_tokens=0), ctx(streaming=True))
    assert isinstance(reply, ChunkStream)
    await reply.__anext__()
    await reply.aclose()
    assert budget.spent(GLOBAL_TENANT) == pytest.approx(1.0)


async def test_calls_to_models_without_a_price_are_neither_counted_nor_refused() -> None:
    budget = SpendingBudget(0.0, clock=FakeClock())
    mw = cost_mw(ScriptedHandler(then=response(model="mystery", usage=USAGE)), budget=budget)
    await mw(req(), ctx(model=None))
    await mw(req(), ctx(model=None))
    assert budget.spent(GLOBAL_TENANT) == 0.0


async def test_a_call_too_big_for_the_whole_budget_says_so() -> None:
    budget = SpendingBudget(2.0, clock=FakeClock())
    with pytest.raises(BudgetExceededError, match="alone costs more than the whole budget"):
        await cost_mw(ScriptedHandler(), budget=budget)(req(), ctx())


async def test_a_tenant_function_must_return_a_string() -> None:
    mw = cost_mw(ScriptedHandler(), budget=SpendingBudget(1.0), tenant=lambda r: 42)
    with pytest.raises(TypeError, match="must return a str"):
        await mw(req(), ctx())


def test_memory_is_bounded_by_forgetting_the_least_recent_idle_tenant() -> None:
    budget = SpendingBudget(10.0, max_tenants=3, clock=FakeClock())
    budget.reserve("busy", 1.0)
    for name in ("a", "b", "c", "d"):
        budget.record(name, 1.0)
    assert len(budget._ledgers) == 3
    assert budget.in_flight("busy") == 1.0  # a tenant with a call in flight is never forgotten
    assert budget.spent("a") == 0.0 and budget.spent("d") == 1.0


class BudgetMachine(RuleBasedStateMachine):
    """Whatever the interleaving of reservations, settlements and time, spending stays accounted."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(auto_advance=False)
        self.budget = SpendingBudget(10.0, window=100.0, clock=self.clock)
        self.open: list[float] = []

    @rule(amount=st.floats(0.0, 6.0))
    def reserve(self, amount: float) -> None:
        before = self.budget.spent("t") + self.budget.in_flight("t")
        try:
            self.budget.reserve("t", amount)
        except BudgetExceededError:
            assert before + amount > 10.0
        else:
            self.open.append(amount)

    @precondition(lambda self: bool(self.open))
    @rule(factor=st.floats(0.0, 1.5))
    def settle(self, factor: float) -> None:
        amount = self.open.pop(0)
        self.budget.settle("t", amount, amount * factor)

    @rule(seconds=st.floats(0.0, 60.0))
    def wait(self, seconds: float) -> None:
        self.clock._now += seconds

    @invariant()
    def reservations_are_tracked_and_never_negative(self) -> None:
        assert self.budget.in_flight("t") == pytest.approx(sum(self.open), abs=1e-9)
        assert self.budget.spent("t") >= -1e-9

    @invariant()
    def reserved_never_passes_the_limit(self) -> None:
        assert self.budget.in_flight("t") <= 10.0 + 1e-9


BudgetMachine.TestCase.settings = settings(deadline=None, max_examples=60)
TestBudgetMachine = BudgetMachine.TestCase
