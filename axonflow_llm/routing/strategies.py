"""Routing strategies: the order in which a router tries its providers for one request (pure, synchronous)."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from ..pipeline.models import CompletionRequest, CostEstimate
from ..pipeline.provider import Provider

__all__ = [
    "STRATEGIES",
    "LowestCostStrategy",
    "Member",
    "PriorityStrategy",
    "RoundRobinStrategy",
    "RoutingStrategy",
    "WeightedStrategy",
    "make_strategy",
]


class Member:
    """One provider as a router sees it: its priority, weight, and whether it is cooling down.

    ``cool_until`` is a time on the router's clock before which the member is skipped; ``cool_reason``
    says why (``"circuit_open"``, ``"rate_limited"``, ``"unhealthy"``, ``"error: ServerError"``).
    """

    __slots__ = ("_table", "cool_reason", "cool_until", "index", "name", "prices", "priority", "provider", "weight")

    def __init__(
        self,
        provider: Provider,
        *,
        priority: int,
        weight: float,
        index: int,
        prices: Mapping[str, Any] | None = None,
    ) -> None:
        self.provider = provider
        self.name = provider.name
        self.priority = priority
        self.weight = weight
        self.index = index
        self.prices = prices
        # Built (and validated) once: a bad price fails here, at router.add(), not as "cannot estimate"
        # on every call; and the table memoises its lookups.
        self._table: Any = None
        if prices:
            from ..middleware.pricing import PriceTable

            self._table = PriceTable(prices)
        self.cool_until = -math.inf
        self.cool_reason: str | None = None

    def estimate(self, request: CompletionRequest) -> CostEstimate | None:
        """The provider's cost estimate for ``request``; with ``prices`` (``{model: ModelPrice}``, e.g. the
        ``pricing`` of its configuration), those prices win for the models they name."""
        table = self._table
        if table is not None:
            model = request.model or getattr(self.provider, "model", None)
            if model and table.get(model) is not None:
                from ..middleware.pricing import estimate_cost

                result: CostEstimate | None = estimate_cost(request, model=model, prices=table)
                return result
        return self.provider.estimate_cost(request)

    def cool(self, until: float, reason: str) -> None:
        self.cool_until = until
        self.cool_reason = reason

    def recover(self) -> None:
        self.cool_until = -math.inf
        self.cool_reason = None

    def __repr__(self) -> str:
        return f"Member({self.name!r}, priority={self.priority}, weight={self.weight})"


@runtime_checkable
class RoutingStrategy(Protocol):
    """``order(members, request)``: the members in the order to try them, best first.

    ``members`` come in priority order (higher ``priority`` first, then higher ``weight``, then the
    order they were added). The router then skips those cooling down and keeps ``1 + max_fallbacks``.
    Called once per call, on the event loop: keep it cheap and never block.
    """

    def order(self, members: Sequence[Member], request: CompletionRequest) -> list[Member]: ...


class PriorityStrategy:
    """Failover: always the highest priority first (ties broken by weight, then by order added)."""

    __slots__ = ()
    name = "priority"

    def order(self, members: Sequence[Member], request: CompletionRequest) -> list[Member]:
        return list(members)


class WeightedStrategy:
    """Random by weight: a member is tried first with probability ``weight / sum(weights)``; the others
    follow as fallbacks, also drawn by weight (weighted sampling without replacement). Members of weight
    0 are never first (unless every weight is 0) and come last, in priority order."""

    __slots__ = ("_rng",)
    name = "weighted"

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng if rng is not None else random.Random()

    def order(self, members: Sequence[Member], request: CompletionRequest) -> list[Member]:
        rand = self._rng.random
        keyed: list[tuple[float, Member]] = []
        zero: list[Member] = []
        for m in members:
            if m.weight > 0:
                # Efraimidis-Spirakis: sorting by u ** (1 / w) is sampling without replacement by weight.
                keyed.append((rand() ** (1.0 / m.weight), m))
            else:
                zero.append(m)
        keyed.sort(key=lambda pair: pair[0], reverse=True)
        return [m for _, m in keyed] + zero


class RoundRobinStrategy:
    """Each call starts one further along the priority order, wrapping around; the rest follow in order."""

    __slots__ = ("_next",)
    name = "round_robin"

    def __init__(self) -> None:
        self._next = 0

    def order(self, members: Sequence[Member], request: CompletionRequest) -> list[Member]:
        n = len(members)
        if n == 0:
            return []
        start = self._next % n
        self._next = start + 1
        return [*members[start:], *members[:start]]


class LowestCostStrategy:
    """Cheapest first, by ``provider.estimate_cost(request).total_estimate`` (or the member's own
    ``prices``); a provider that cannot estimate (``None``, or its estimator raised) goes last. Ties keep
    priority order."""

    __slots__ = ()
    name = "lowest_cost"

    def order(self, members: Sequence[Member], request: CompletionRequest) -> list[Member]:
        return sorted(members, key=lambda m: estimated_cost(m, request))


def estimated_cost(member: Member, request: CompletionRequest) -> float:
    """The member's estimated cost of ``request`` in USD, or ``inf`` when it cannot say."""
    try:
        estimate = member.estimate(request)
    except Exception:
        return math.inf
    if estimate is None:
        return math.inf
    total = estimate.total_estimate
    return total if isinstance(total, int | float) and math.isfinite(total) and total >= 0 else math.inf


#: The strategies a router knows by name.
STRATEGIES = ("priority", "weighted", "round_robin", "lowest_cost")


def make_strategy(strategy: str | RoutingStrategy, *, rng: random.Random | None = None) -> RoutingStrategy:
    """The strategy called ``strategy``, or ``strategy`` itself when it already has an ``order`` method."""
    if isinstance(strategy, str):
        key = strategy.strip().lower().replace("-", "_")
        if key == "priority":
            return PriorityStrategy()
        if key == "weighted":
            return WeightedStrategy(rng)
        if key == "round_robin":
            return RoundRobinStrategy()
        if key == "lowest_cost":
            return LowestCostStrategy()
        raise ValueError(f"unknown routing strategy {strategy!r}; use one of: {', '.join(STRATEGIES)}, "
                         "or an object with an order(members, request) method")
    if isinstance(strategy, RoutingStrategy):
        return strategy
    raise TypeError(f"strategy must be a name ({', '.join(STRATEGIES)}) or an object with "
                    f"order(members, request), got {type(strategy).__name__}")
