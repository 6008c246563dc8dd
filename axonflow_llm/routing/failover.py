"""Which errors move a router on to the next provider, and for how long the failed one is skipped."""

from __future__ import annotations

import math

from ..pipeline.errors import CircuitOpenError, RateLimitExceededError, redact

__all__ = ["describe", "failover_reason", "retry_after"]


def failover_reason(exc: BaseException) -> str | None:
    """Why ``exc`` sends the router to the next provider, or ``None`` if it is the request's fault."""
    if isinstance(exc, CircuitOpenError):
        return "circuit_open"
    if isinstance(exc, RateLimitExceededError):
        return "rate_limited"
    if not isinstance(exc, Exception):
        return None
    retryable = getattr(exc, "retryable", None)
    if retryable is True or (retryable is None and isinstance(exc, ConnectionError | TimeoutError)):
        return f"error: {type(exc).__name__}"
    return None


def retry_after(exc: BaseException) -> float | None:
    """The wait the error itself asks for (``Retry-After``, a breaker's time to half-open), if any."""
    ra = getattr(exc, "retry_after", None)
    if isinstance(ra, int | float) and not isinstance(ra, bool) and math.isfinite(ra) and ra >= 0:
        return float(ra)
    return None


def describe(exc: BaseException) -> str:
    """``"ErrorType: message"``, redacted and cut to 200 characters, for ``route["attempted"]``."""
    text = redact(str(exc))
    if len(text) > 200:
        text = text[:197] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
