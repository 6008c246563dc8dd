"""The default order of the middleware, in one place: what the builder and the built-in providers assemble."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..pipeline.clock import Clock
from ..pipeline.models import CompletionRequest
from ..pipeline.pipeline import Layer, Pipeline
from .auth import AuthMiddleware
from .circuit_breaker import CircuitBreaker
from .circuit_breaker_middleware import CircuitBreakerMiddleware
from .cost import CostMiddleware
from .logging import LoggingMiddleware
from .multi_tenant_rate_limiter import MultiTenantRateLimiter
from .pricing import ModelPrice, PriceTable
from .rate_limit import RateLimitMiddleware
from .rate_limiter import RateLimiter
from .retry import RetryMiddleware
from .retry_config import RetryConfig
from .spending_budget import SpendingBudget
from .timeout import TimeoutMiddleware

__all__ = ["DEFAULT_ORDER", "default_pipeline"]

#: The layers ``default_pipeline`` may contain, outermost first.
DEFAULT_ORDER: tuple[type, ...] = (
    LoggingMiddleware,
    CostMiddleware,
    RetryMiddleware,
    CircuitBreakerMiddleware,
    RateLimitMiddleware,
    TimeoutMiddleware,
    AuthMiddleware,
)


def default_pipeline(
    *,
    auth: Any = None,
    rate_limiter: RateLimiter | MultiTenantRateLimiter | None = None,
    tokens_per_minute: float | None = None,
    rate_limit_key: Callable[[CompletionRequest], str] | None = None,
    block: bool = True,
    retry: RetryConfig | bool | None = True,
    circuit_breaker: CircuitBreaker | bool | None = True,
    timeout: float | None = None,
    first_chunk_timeout: float | None = None,
    idle_timeout: float | None = None,
    logging: bool = True,
    logger: Any = None,
    log_level: str = "info",
    log_content: bool = False,
    prices: PriceTable | Mapping[str, ModelPrice] | None = None,
    cost: bool = True,
    budget: SpendingBudget | None = None,
    budget_key: Callable[[CompletionRequest], str] | None = None,
    clock: Clock | None = None,
) -> Pipeline:
    """The pipeline of a built-in provider, from outside in::

        logging -> cost -> retry -> circuit breaker -> rate limit -> timeout -> auth -> provider

    Logging and cost see each *logical* call once (with its attempt count and final cost). Retry sits
    outside everything that must happen per *attempt*: each attempt is counted by the breaker, throttled,
    timed and authenticated afresh. A layer whose option is off (``retry=False``, no ``rate_limiter``,
    no timeout, no ``auth``) is left out; ``retry=True``/``circuit_breaker=True`` mean the defaults
    (a fresh breaker per call of this function: one per provider).
    """
    layers: list[Layer] = []
    if logging:
        layers.append(
            Layer(LoggingMiddleware, logger=logger, level=log_level, log_content=log_content, clock=clock)
        )
    if cost or budget is not None or prices is not None:
        layers.append(Layer(CostMiddleware, prices=prices, budget=budget, tenant=budget_key, clock=clock))
    if retry:
        config = retry if isinstance(retry, RetryConfig) else RetryConfig()
        layers.append(Layer(RetryMiddleware, config=config, clock=clock))
    if circuit_breaker:
        breaker = (
            circuit_breaker if isinstance(circuit_breaker, CircuitBreaker) else CircuitBreaker(clock=clock)
        )
        layers.append(Layer(CircuitBreakerMiddleware, breaker=breaker))
    if rate_limiter is not None or tokens_per_minute is not None:
        layers.append(
            Layer(
                RateLimitMiddleware,
                limiter=rate_limiter,
                tokens_per_minute=tokens_per_minute,
                key=rate_limit_key,
                block=block,
                clock=clock,
            )
        )
    if timeout is not None or first_chunk_timeout is not None or idle_timeout is not None:
        layers.append(
            Layer(
                TimeoutMiddleware,
                timeout=timeout,
                first_chunk_timeout=first_chunk_timeout,
                idle_timeout=idle_timeout,
                clock=clock,
            )
        )
    if auth is not None:
        layers.append(Layer(AuthMiddleware, auth=auth, clock=clock))
    return Pipeline(layers)
