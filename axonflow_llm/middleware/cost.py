"""Cost of each call from its token usage, and a per-tenant spending budget enforced before the call."""

from __future__ import annotations

import collections
import math
import threading
from collections.abc import Callable, Mapping

import msgspec

from ..pipeline.clock import Clock, system_clock
from ..pipeline.context import CallContext
from ..pipeline.errors import BudgetExceededError
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

__all__ = ["COST_STATE_KEY", "GLOBAL_TENANT", "CostMiddleware", "SpendingBudget"]

#: ``ctx.state`` key where the cost middleware leaves a call's cost in USD (read by the logging middleware).
COST_STATE_KEY = "cost.usd"
#: The tenant every call belongs to when the cost middleware has no ``tenant`` function.
GLOBAL_TENANT = "*"

_SLICES = 60  # a budget window is tracked in 1/60ths
_EPSILON = 1e-9  # USD; float noise never blocks a call that fits exactly


class _Ledger:
    __slots__ = ("reserved", "slices", "spent")

    def __init__(self) -> None:
        self.slices: collections.deque[tuple[int, float]] = collections.deque()  # (slice index, USD)
        self.spent = 0.0
        self.reserved = 0.0


class SpendingBudget:
    """At most ``limit_usd`` of spending per tenant over a rolling ``window`` of seconds (default a day).

    Shared state: hand one budget to every provider whose calls should count against it. The cost
    middleware *reserves* each call's estimated cost before the call (raising
    :class:`BudgetExceededError` if spent + reserved + estimate would pass the limit) and *settles* it
    after, replacing the estimate with the actual cost; so concurrent calls cannot all slip under the
    limit. A call whose actual cost exceeds its estimate can take spending past the limit by the
    difference; the next call is then refused.

    The window rolls: spending is recorded in slices of ``window / 60`` and leaves the window between
    ``window`` and ``window * 61/60`` after it was recorded (never early). Memory is bounded: at most
    ``max_tenants`` tenants are tracked; past that the least recently seen tenant with nothing in flight
    is forgotten (its past spending with it), so size ``max_tenants`` above your active tenants per window.
    Thread-safe; time comes from ``clock`` (monotonic seconds).
    """

    __slots__ = ("_clock", "_ledgers", "_limit", "_lock", "_max_tenants", "_slice", "_window")

    def __init__(
        self,
        limit_usd: float,
        window: float = 86400.0,
        *,
        clock: Clock | None = None,
        max_tenants: int = 10_000,
    ) -> None:
        if isinstance(limit_usd, bool) or not isinstance(limit_usd, int | float) or not (
            math.isfinite(limit_usd) and limit_usd >= 0
        ):
            raise ValueError(f"SpendingBudget limit_usd must be a finite number of USD >= 0, got {limit_usd!r}")
        if isinstance(window, bool) or not isinstance(window, int | float) or not (
            math.isfinite(window) and window > 0
        ):
            raise ValueError(f"SpendingBudget window must be a positive number of seconds, got {window!r}")
        if isinstance(max_tenants, bool) or not isinstance(max_tenants, int) or max_tenants < 1:
            raise ValueError(f"SpendingBudget max_tenants must be a positive integer, got {max_tenants!r}")
        self._limit = float(limit_usd)
        self._window = float(window)
        self._slice = self._window / _SLICES
        self._clock = clock if clock is not None else system_clock
        self._max_tenants = max_tenants
        self._ledgers: collections.OrderedDict[str, _Ledger] = collections.OrderedDict()
        self._lock = threading.Lock()

    @property
    def limit_usd(self) -> float:
        return self._limit

    @property
    def window(self) -> float:
        return self._window

    def reserve(self, tenant: str, amount: float) -> None:
        """Hold ``amount`` USD for a call about to start, or raise :class:`BudgetExceededError`."""
        with self._lock:
            ledger, now_slice = self._ledger(tenant)
            if ledger.spent + ledger.reserved + amount > self._limit + _EPSILON:
                raise self._refusal(tenant, ledger, amount, now_slice)
            ledger.reserved += amount

    def settle(self, tenant: str, reserved: float, actual: float) -> None:
        """Release a reservation made by :meth:`reserve` and record what the call really cost."""
        with self._lock:
            ledger, now_slice = self._ledger(tenant)
            ledger.reserved = max(0.0, ledger.reserved - reserved)
            if actual > 0:
                slices = ledger.slices
                if slices and slices[-1][0] == now_slice:
                    slices[-1] = (now_slice, slices[-1][1] + actual)
                else:
                    slices.append((now_slice, actual))
                ledger.spent += actual

    def record(self, tenant: str, amount: float) -> None:
        """Count ``amount`` USD of spending that was not reserved (made outside the middleware)."""
        self.settle(tenant, 0.0, amount)

    def spent(self, tenant: str) -> float:
        """USD settled for ``tenant`` within the current window."""
        with self._lock:
            return self._ledger(tenant, create=False)[0].spent

    def in_flight(self, tenant: str) -> float:
        """USD reserved for ``tenant``'s calls that have not finished."""
        with self._lock:
            return self._ledger(tenant, create=False)[0].reserved

    def remaining(self, tenant: str) -> float:
        """USD ``tenant`` may still reserve now."""
        with self._lock:
            ledger = self._ledger(tenant, create=False)[0]
            return max(0.0, self._limit - ledger.spent - ledger.reserved)

    def __repr__(self) -> str:
        return f"SpendingBudget(limit_usd={self._limit}, window={self._window}, tenants={len(self._ledgers)})"

    # -- internals (under the lock) -------------------------------------------------------------------

    def _ledger(self, tenant: str, *, create: bool = True) -> tuple[_Ledger, int]:
        now_slice = int(self._clock.now() // self._slice)
        ledgers = self._ledgers
        ledger = ledgers.get(tenant)
        if ledger is None:
            ledger = _Ledger()
            if not create:
                return ledger, now_slice
            if len(ledgers) >= self._max_tenants:
                self._evict()
            ledgers[tenant] = ledger
        else:
            ledgers.move_to_end(tenant)
        slices = ledger.slices
        oldest_kept = now_slice - _SLICES  # the current slice plus 60 whole ones: never leaves early
        while slices and slices[0][0] < oldest_kept:
            ledger.spent -= slices.popleft()[1]
        if not slices:
            ledger.spent = 0.0  # no float drift survives an empty window
        return ledger, now_slice

    def _evict(self) -> None:
        for name, ledger in self._ledgers.items():  # least recently seen first
            if ledger.reserved <= 0:
                del self._ledgers[name]
                return
        # Every tracked tenant has a call in flight: go over the bound until one settles.

    def _refusal(self, tenant: str, ledger: _Ledger, amount: float, now_slice: int) -> BudgetExceededError:
        over = ledger.spent + ledger.reserved + amount - self._limit
        retry_after: float | None = None
        if amount > self._limit:
            when = "this call alone costs more than the whole budget"
        elif ledger.reserved + amount > self._limit:
            when = "it may fit once the calls in flight finish"
        else:
            freed, wait = 0.0, 0.0
            for index, usd in ledger.slices:
                freed += usd
                if freed >= over - _EPSILON:
                    wait = (index + _SLICES + 1) * self._slice - self._clock.now()
                    break
            retry_after = max(wait, 0.0)
            when = f"enough earlier spending leaves the window in about {retry_after:.0f}s"
        return BudgetExceededError(
            f"spending budget exceeded for tenant {tenant!r}: ${ledger.spent:.6f} spent and "
            f"${ledger.reserved:.6f} in flight of ${self._limit:.2f} per {self._window:g}s window; "
            f"this call is estimated at ${amount:.6f}; {when}. Raise SpendingBudget(limit_usd=...), "
            "lower the request's max_tokens, or wait.",
            tenant=tenant,
            limit_usd=self._limit,
            spent_usd=ledger.spent,
            in_flight_usd=ledger.reserved,
            estimate_usd=amount,
            retry_after=retry_after,
        )


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
            price = self.middleware._price(self.model, None, ctx)
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
        price = self._price(request.model, None, ctx)
        if price is None:
            return 0.0
        prompt_tokens = self._counter(request)
        if isinstance(prompt_tokens, bool) or not isinstance(prompt_tokens, int) or prompt_tokens < 0:
            raise ValueError(f"the token counter must return a non-negative int, got {prompt_tokens!r}")
        output = request.max_tokens if request.max_tokens is not None else self._default_output
        return price.cost(prompt_tokens, output)

    def _price(self, request_model: str | None, reply_model: str | None, ctx: CallContext) -> ModelPrice | None:
        get = self._prices.get
        kind = ctx.info.type
        for model in (reply_model, request_model, ctx.info.model):
            if model:
                price = get(model)
                if price is not None:
                    return price
        return get(None, provider_type=kind)

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
            price = self._price(request.model, None, ctx)
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
