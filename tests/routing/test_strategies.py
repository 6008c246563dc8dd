"""Routing strategies: priority order, weighted draws within statistical bounds, round robin, lowest cost."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from axonflow_llm.middleware.pricing import ModelPrice
from axonflow_llm.pipeline.context import CallContext
from axonflow_llm.pipeline.middleware import Reply
from axonflow_llm.pipeline.models import CompletionRequest, CostEstimate, ProviderType
from axonflow_llm.pipeline.provider import BaseProvider
from axonflow_llm.routing import (
    LowestCostStrategy,
    Member,
    PriorityStrategy,
    RoundRobinStrategy,
    WeightedStrategy,
)
from axonflow_llm.routing.strategies import make_strategy
from axonflow_llm.testing import response

REQUEST = CompletionRequest(prompt="hello")


class Stub(BaseProvider):
    def __init__(self, name: str, cost: float | None = None, model: str | None = None) -> None:
        def estimator(request: CompletionRequest) -> CostEstimate | None:
            if cost is None:
                return None
            if cost < 0:
                raise RuntimeError("estimator broke")
            return CostEstimate(input_cost_per_1k=0, output_cost_per_1k=0, estimated_input_tokens=1,
                                estimated_output_tokens=1, total_estimate=cost)

        super().__init__(name=name, type=ProviderType.CUSTOM, model=model, cost_estimator=estimator)

    async def send(self, request: CompletionRequest, ctx: CallContext) -> Reply:
        return response("ok")


def members(*specs: tuple[str, int, float]) -> list[Member]:
    out = [Member(Stub(n), priority=p, weight=w, index=i) for i, (n, p, w) in enumerate(specs)]
    out.sort(key=lambda m: (-m.priority, -m.weight, m.index))
    return out


def names(ms: list[Member]) -> list[str]:
    return [m.name for m in ms]


def test_priority_keeps_the_priority_order() -> None:
    ms = members(("low", 1, 1.0), ("high", 10, 0.1), ("mid-heavy", 5, 2.0), ("mid-light", 5, 0.5))
    assert names(PriorityStrategy().order(ms, REQUEST)) == ["high", "mid-heavy", "mid-light", "low"]


def test_weighted_first_choice_follows_the_weights() -> None:
    ms = members(("a", 0, 1.0), ("b", 0, 2.0), ("c", 0, 7.0))
    strategy = WeightedStrategy(random.Random(1234))
    n = 20_000
    firsts = Counter(strategy.order(ms, REQUEST)[0].name for _ in range(n))
    expected = {"a": 0.1 * n, "b": 0.2 * n, "c": 0.7 * n}
    chi_square = sum((firsts[k] - e) ** 2 / e for k, e in expected.items())
    # 2 degrees of freedom: P(chi2 > 13.8) = 0.001
    assert chi_square < 13.8, (firsts, chi_square)


def test_weighted_fallbacks_are_the_others_and_zero_weight_comes_last() -> None:
    ms = members(("a", 3, 1.0), ("b", 2, 1.0), ("never", 9, 0.0), ("c", 1, 1.0))
    strategy = WeightedStrategy(random.Random(7))
    for _ in range(200):
        order = names(strategy.order(ms, REQUEST))
        assert sorted(order) == ["a", "b", "c", "never"]
        assert order[-1] == "never"


def test_weighted_with_every_weight_zero_is_priority_order() -> None:
    ms = members(("a", 1, 0.0), ("b", 5, 0.0))
    assert names(WeightedStrategy(random.Random(0)).order(ms, REQUEST)) == ["b", "a"]


def test_seeded_weighted_strategy_is_reproducible() -> None:
    ms = members(("a", 0, 1.0), ("b", 0, 1.0), ("c", 0, 1.0))
    one, two = WeightedStrategy(random.Random(42)), WeightedStrategy(random.Random(42))
    assert [names(one.order(ms, REQUEST)) for _ in range(20)] == [names(two.order(ms, REQUEST)) for _ in range(20)]


def test_round_robin_starts_one_further_each_call() -> None:
    ms = members(("a", 3, 1.0), ("b", 2, 1.0), ("c", 1, 1.0))
    strategy = RoundRobinStrategy()
    firsts = [strategy.order(ms, REQUEST)[0].name for _ in range(7)]
    assert firsts == ["a", "b", "c", "a", "b", "c", "a"]
    assert names(strategy.order(ms, REQUEST)) == ["b", "c", "a"]
    assert strategy.order([], REQUEST) == []


def test_lowest_cost_orders_by_estimate_unknown_last() -> None:
    ms = [
        Member(Stub("dear", 3.0), priority=9, weight=1, index=0),
        Member(Stub("unknown", None), priority=8, weight=1, index=1),
        Member(Stub("cheap", 1.0), priority=7, weight=1, index=2),
        Member(Stub("broken", -1.0), priority=6, weight=1, index=3),
        Member(Stub("mid", 2.0), priority=5, weight=1, index=4),
        Member(Stub("free-tie", 1.0), priority=4, weight=1, index=5),
    ]
    assert names(LowestCostStrategy().order(ms, REQUEST)) == ["cheap", "free-tie", "mid", "dear", "unknown", "broken"]


def test_member_prices_override_the_providers_estimate_for_their_models() -> None:
    priced = Member(Stub("p", 5.0, model="my-model"), priority=0, weight=1, index=0,
                    prices={"my-model": ModelPrice(input_per_1m=0.0, output_per_1m=0.0)})
    assert priced.estimate(REQUEST).total_estimate == 0.0  # type: ignore[union-attr]
    other = CompletionRequest(prompt="x", model="another")
    assert priced.estimate(other).total_estimate == 5.0  # type: ignore[union-attr]


def test_member_prices_that_are_not_model_prices_fail_when_added_not_on_every_call() -> None:
    with pytest.raises(TypeError, match="must be a ModelPrice"):
        Member(Stub("p", 5.0, model="my-model"), priority=0, weight=1, index=0,
               prices={"my-model": {"input_per_1m": 1.0, "output_per_1m": 2.0}})


def test_make_strategy_by_name_or_object() -> None:
    assert isinstance(make_strategy("round-robin"), RoundRobinStrategy)
    custom = PriorityStrategy()
    assert make_strategy(custom) is custom
    with pytest.raises(ValueError, match="unknown routing strategy 'fastest'"):
        make_strategy("fastest")
    with pytest.raises(TypeError, match="strategy must be a name"):
        make_strategy(3)  # type: ignore[arg-type]


@settings(deadline=None, max_examples=100)
@given(
    weights=st.lists(st.floats(min_value=0, max_value=100), min_size=1, max_size=8),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_every_strategy_returns_a_permutation(weights: list[float], seed: int) -> None:
    ms = members(*((f"p{i}", i % 3, w) for i, w in enumerate(weights)))
    for strategy in (PriorityStrategy(), WeightedStrategy(random.Random(seed)), RoundRobinStrategy(),
                     LowestCostStrategy()):
        order = strategy.order(ms, REQUEST)
        assert sorted(names(order)) == sorted(names(ms))
