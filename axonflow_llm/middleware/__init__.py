"""One module per concern: each a primitive usable on its own, plus the middleware class that drives it."""

from .auth import AuthMiddleware
from .circuit_breaker import CircuitBreaker, CircuitState, Permit
from .circuit_breaker_middleware import CircuitBreakerMiddleware, default_is_failure
from .cost import CostMiddleware
from .defaults import DEFAULT_ORDER, default_pipeline
from .logging import LoggingMiddleware
from .multi_tenant_rate_limiter import MultiTenantRateLimiter
from .pricing import ModelPrice, PriceTable, TokenCounter, cost_of, estimate_cost, estimate_tokens
from .rate_limit import RateLimitMiddleware
from .rate_limiter import RateLimiter
from .retry import RetryMiddleware, retry_with_backoff
from .retry_config import RetryConfig, default_retry_config, default_retryable
from .spending_budget import SpendingBudget
from .timeout import TimeoutMiddleware

__all__ = [
    "DEFAULT_ORDER",
    "AuthMiddleware",
    "CircuitBreaker",
    "CircuitBreakerMiddleware",
    "CircuitState",
    "CostMiddleware",
    "LoggingMiddleware",
    "ModelPrice",
    "MultiTenantRateLimiter",
    "Permit",
    "PriceTable",
    "RateLimitMiddleware",
    "RateLimiter",
    "RetryConfig",
    "RetryMiddleware",
    "SpendingBudget",
    "TimeoutMiddleware",
    "TokenCounter",
    "cost_of",
    "default_is_failure",
    "default_pipeline",
    "default_retry_config",
    "default_retryable",
    "estimate_cost",
    "estimate_tokens",
    "retry_with_backoff",
]
