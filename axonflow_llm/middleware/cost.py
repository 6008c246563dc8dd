"""Cost of each call from its token usage, and a per-tenant spending budget enforced before the call."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import msgspec

from ..pipeline.clock import Clock
from ..pipeline.context import CallContext
from ..pipeline.middleware import Handler, Middleware, Reply
from ..pipeline.models import CompletionRequest, CompletionResponse, UsageStats
from ..pipeline.stream import StreamOutcome, observe_stream
from .pricing import (
    DEFAULT_OUTPUT_TOKENS,
    ModelPrice,
    PriceTable,
    TokenCounter,
    as_price_table,
    cost_of,
    estimate_tokens,
    usage_known,
)
from .spending_budget import SpendingBudget

__all__ = ["COST_STATE_KEY", "GLOBAL_TENANT", "CostMiddleware", "SpendingBudget"]

#: ``ctx.state`` key where the cost middleware leaves a call's cost in USD (read by the logging middleware).
COST_STATE_KEY = "cost.usd"
#: The tenant every call belongs to when the cost middleware has no ``tenant`` function.
GLOBAL_TENANT = "*"


class _StreamCost:
    """Per-call state for pricing a stream when it ends."""

    __slots__ = ("ctx", "middleware", "model", "reserved", "tenant")

    def __init__(self, middleware: CostMiddleware, model: str | None, ctx: CallContext, tenant: str,
                 reserved: float) -> None:
        self.middleware = middleware
        self.model = model
        self.ctx = ctx
        self.tenant = tenant
        self.reserved = reserved

    def on_end(self, outcome: StreamOutcome) -> None:
        ctx = self.ctx
        cost: float | None = None
        usage = outcome.usage
        if usage is not None and usage_known(usage):
            price = self.middleware._price(self.model, ctx)
            if price is not None:
                cost = cost_of(usage, price)
                ctx.state[COST_STATE_KEY] = cost
        budget = self.middleware._budget
        if budget is not None:
            # Unknown usage after output was produced: count the estimate rather than nothing.
            actual = cost if cost is not None else (self.reserved if outcome.chunks else 0.0)
            budget.settle(self.tenant, self.reserved, actual)


class CostMiddleware(Middleware):
    """Prices every call and, with a ``budget``, refuses a call that would overspend.

    After a completion, sets ``CompletionResponse.cost`` (USD, from its usage) when the model's price is
    known: the response's model, else ``request.model``, else the provider's model, the first with a
    price (a cost the provider already reported is kept). For a stream, the cost is computed when the
    stream ends, from the last usage seen, and left in ``ctx.state["cost.usd"]`` (:data:`COST_STATE_KEY`),
    where the logging middleware reads it; completions leave it there too. No usage, no cost.

    With ``budget`` (a shared :class:`SpendingBudget`), each call's cost is estimated first (``counter``
    for the prompt, ``max_tokens`` or ``default_output_tokens`` for the output) and reserved under the
    tenant ``tenant(request)`` (default: one tenant, ``"*"``); the call is refused with
    :class:`BudgetExceededError` before anything is sent if it would go over, and the reservation is
    settled with the actual cost when the call or its stream ends. Calls to models without a known price
    are neither counted nor refused. Place it outside retry to reserve once per logical call.

    Arguments: ``prices`` (a :class:`PriceTable`, or a mapping of overrides to the default table),
    ``budget``, ``tenant``, ``counter``, ``default_output_tokens``; ``clock`` is accepted for uniformity
    and unused (the budget keeps its own clock).
    """

    __slots__ = ("_budget", "_counter", "_default_output", "_prices", "_tenant")

    def __init__(
        self,
        next_handler: Handler,
        /,
        *,
        prices: PriceTable | Mapping[str, ModelPrice] | None = None,
        budget: SpendingBudget | None = None,
        tenant: Callable[[CompletionRequest], str] | None = None,
        counter: TokenCounter | None = None,
        clock: Clock | None = None,
        default_output_tokens: int = DEFAULT_OUTPUT_TOKENS,
    ) -> None:
        super().__init__(next_handler)
        self._prices = as_price_table(prices)
        if budget is not None and not isinstance(budget, SpendingBudget):
            raise TypeError(f"budget must be a SpendingBudget, got {type(budget).__name__}")
        if tenant is not None and not callable(tenant):
            raise TypeError(f"tenant must be a function request -> tenant id (str), got {tenant!r}")
        if counter is not None and not callable(counter):
            raise TypeError(f"counter must be a function request -> prompt token count, got {counter!r}")
        if isinstance(default_output_tokens, bool) or not isinstance(default_output_tokens, int) or (
            default_output_tokens < 0
        ):
            raise ValueError(f"default_output_tokens must be an integer >= 0, got {default_output_tokens!r}")
        self._budget = budget
        self._tenant = tenant
        self._counter: TokenCounter = counter or estimate_tokens
        self._default_output = default_output_tokens

    async def __call__(self, request: CompletionRequest, ctx: CallContext) -> Reply:
        if self._budget is not None:
            return await self._call_within_budget(request, ctx)
        reply = await self.next(request, ctx)
        if isinstance(reply, CompletionResponse):
            return self._priced(reply, request, ctx)
        return observe_stream(reply, _StreamCost(self, request.model, ctx, GLOBAL_TENANT, 0.0).on_end)

    async def _call_within_budget(self, request: CompletionRequest, ctx: CallContext) -> Reply:
        budget = self._budget
        assert budget is not None
        tenant = GLOBAL_TENANT if self._tenant is None else self._tenant(request)
        if not isinstance(tenant, str):
            raise TypeError(f"the tenant function must return a str, got {type(tenant).__name__}")
        reserved = self.estimate(request, ctx)
        if reserved > 0:
            budget.reserve(tenant, reserved)
        try:
            reply = await self.next(request, ctx)
        except BaseException:
            budget.settle(tenant, reserved, 0.0)
            raise
        if isinstance(reply, CompletionResponse):
            try:
                priced = self._priced(reply, request, ctx)
            except BaseException:
                budget.settle(tenant, reserved, reserved)
                raise
            # No usage reported: count the estimate rather than nothing.
            budget.settle(tenant, reserved, priced.cost if priced.cost is not None else reserved)
            return priced
        return observe_stream(reply, _StreamCost(self, request.model, ctx, tenant, reserved).on_end)

    def estimate(self, request: CompletionRequest, ctx: CallContext) -> float:
        """The USD this call is expected to cost (0.0 when the model's price is unknown)."""
        price = self._price(request.model, ctx)
        if price is None:
            return 0.0
        prompt_tokens = self._counter(request)
        if isinstance(prompt_tokens, bool) or not isinstance(prompt_tokens, int) or prompt_tokens < 0:
            raise ValueError(f"the token counter must return a non-negative int, got {prompt_tokens!r}")
        output = request.max_tokens if request.max_tokens is not None else self._default_output
        return price.cost(prompt_tokens, output)

    def _price(self, request_model: str | None, ctx: CallContext) -> ModelPrice | None:
        """The price of the request's model, else the provider's, else the provider type's (free for Ollama)."""
        get = self._prices.get
        for model in (request_model, ctx.info.model):
            if model:
                price = get(model)
                if price is not None:
                    return price
        return get(None, provider_type=ctx.info.type)

    def _priced(self, reply: CompletionResponse, request: CompletionRequest, ctx: CallContext) -> CompletionResponse:
        if reply.cost is not None:
            ctx.state[COST_STATE_KEY] = reply.cost
            return reply
        usage: UsageStats = reply.usage
        prompt, completion = usage.prompt_tokens, usage.completion_tokens
        if not (prompt or completion or usage.total_tokens):
            return reply  # no usage reported: no cost
        price = self._prices.get(reply.model) if reply.model else None  # the common case, first
        if price is None:
            price = self._price(request.model, ctx)
            if price is None:
                return reply
        cost = (
            (prompt * price.input_per_1m + completion * price.output_per_1m) / 1_000_000
            if prompt or completion
            else cost_of(usage, price)
        )
        ctx.state[COST_STATE_KEY] = cost
        return msgspec.structs.replace(reply, cost=cost)

    def __repr__(self) -> str:
        return f"CostMiddleware(budget={self._budget!r})"
