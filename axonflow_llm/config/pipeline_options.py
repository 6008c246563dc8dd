"""From a provider's middleware settings to the keyword arguments of ``default_pipeline`` (and the pipeline)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..pipeline.clock import Clock
from ..pipeline.errors import ConfigError
from .schema import MiddlewareSettings

if TYPE_CHECKING:
    from ..pipeline.models import ProviderConfig
    from ..pipeline.pipeline import Pipeline

__all__ = ["build_pipeline", "pipeline_options"]


def pipeline_options(
    settings: MiddlewareSettings,
    *,
    clock: Clock | None = None,
    where: str | Callable[[str], str] = "settings",
) -> dict[str, Any]:
    """``default_pipeline`` keyword arguments for ``settings``; only what the settings name.

    ``rate_limit`` gives ``rate_limiter=RateLimiter(requests_per_second, burst)`` (burst defaults to the
    rate rounded up) and ``tokens_per_minute``; ``retry`` a ``RetryConfig`` (``True``/``False``: the
    defaults / no retry); ``circuit_breaker`` a fresh ``CircuitBreaker`` for this provider (or
    ``True``/``False``); ``timeouts`` the three timeouts; ``pricing`` a ``{model: ModelPrice}`` mapping
    laid over the shipped price table. A value the middleware refuses raises ``ConfigError`` naming
    ``<where>.<section>`` (``where`` may be a function of the section giving the whole prefix).
    """
    opts: dict[str, Any] = {}
    section = ""
    try:
        if settings.rate_limit is not None:
            section = "rate_limit"
            rl = settings.rate_limit
            if rl.requests_per_second is not None:
                from ..middleware.rate_limiter import RateLimiter

                burst = rl.burst if rl.burst is not None else max(1, math.ceil(rl.requests_per_second))
                opts["rate_limiter"] = RateLimiter(rl.requests_per_second, burst, clock=clock)
            if rl.tokens_per_minute is not None:
                opts["tokens_per_minute"] = rl.tokens_per_minute
        if settings.retry is not None:
            section = "retry"
            if isinstance(settings.retry, bool):
                opts["retry"] = settings.retry
            else:
                from ..middleware.retry_config import RetryConfig

                fields = {k: v for k, v in _fields(settings.retry).items() if v is not None}
                opts["retry"] = RetryConfig(**fields)
        if settings.circuit_breaker is not None:
            section = "circuit_breaker"
            if isinstance(settings.circuit_breaker, bool):
                opts["circuit_breaker"] = settings.circuit_breaker
            else:
                from ..middleware.circuit_breaker import CircuitBreaker

                fields = {k: v for k, v in _fields(settings.circuit_breaker).items() if v is not None}
                opts["circuit_breaker"] = CircuitBreaker(**fields, clock=clock)
        if settings.timeouts is not None:
            section = "timeouts"
            t = settings.timeouts
            if t.request is not None:
                opts["timeout"] = t.request
            if t.first_chunk is not None:
                opts["first_chunk_timeout"] = t.first_chunk
            if t.idle is not None:
                opts["idle_timeout"] = t.idle
        if settings.pricing:
            section = "pricing"
            from ..middleware.pricing import ModelPrice

            opts["prices"] = {
                model: ModelPrice(input_per_1m=p.input_per_1m, output_per_1m=p.output_per_1m)
                for model, p in settings.pricing.items()
            }
    except (ValueError, TypeError) as exc:
        prefix = where(section) if callable(where) else f"{where}.{section}"
        raise ConfigError(f"{prefix}: {exc}") from None
    return opts


def build_pipeline(
    config: ProviderConfig,
    *,
    auth: Any = None,
    clock: Clock | None = None,
    settings: MiddlewareSettings | None = None,
) -> Pipeline:
    """The pipeline ``default_pipeline`` gives for ``config``'s middleware settings, this ``auth`` and
    ``clock``; ``config.timeout`` is the per-attempt timeout unless ``timeouts.request`` says otherwise."""
    from ..middleware.defaults import default_pipeline

    if settings is None:
        settings = MiddlewareSettings.of(config)
    opts = pipeline_options(settings, clock=clock, where=f"provider {config.name!r}: settings")
    if "timeout" not in opts and config.timeout is not None:
        opts["timeout"] = config.timeout
    return default_pipeline(auth=auth, clock=clock, **opts)


def _fields(struct: Any) -> dict[str, Any]:
    return {name: getattr(struct, name) for name in struct.__struct_fields__}
