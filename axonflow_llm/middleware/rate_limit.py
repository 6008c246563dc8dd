"""``RateLimitMiddleware``: throttles requests, and LLM tokens per minute, before a call reaches the provider."""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable

from ..pipeline.clock import Clock, system_clock
from ..pipeline.context import CallContext
from ..pipeline.errors import RateLimitExceededError
from ..pipeline.middleware import Handler, Middleware, Reply
from ..pipeline.models import CompletionRequest, CompletionResponse, UsageStats
from ..pipeline.stream import StreamOutcome, observe_stream
from .multi_tenant_rate_limiter import MultiTenantRateLimiter
from .rate_limiter import RateLimiter

__all__ = ["RateLimitMiddleware", "estimate_prompt_tokens"]

Limiter = RateLimiter | MultiTenantRateLimiter


def estimate_prompt_tokens(request: CompletionRequest) -> int:
    """A cheap estimate of the prompt's tokens: about 4 characters a token, plus 4 per chat message."""
    chars = len(request.prompt or "") + len(request.system_prompt or "")
    messages = request.messages
    if not messages:
        return (chars + 3) // 4
    for m in messages:
        chars += len(m.content)
    return (chars + 3) // 4 + 4 * len(messages)


def _used(usage: UsageStats | None) -> int:
    if usage is None:
        return 0
    return usage.total_tokens or usage.prompt_tokens + usage.completion_tokens


def _reconcile(bucket: RateLimiter, reserved: int, estimate: int, usage: UsageStats | None) -> None:
    actual = _used(usage)
    if actual <= 0:
        actual = estimate  # no usage reported: the estimate stands
    if actual != reserved:
        bucket._adjust(reserved - actual)  # refund the excess, or charge the extra


class RateLimitMiddleware(Middleware):
    """Waits for (or, with ``block=False``, demands at once) a request slot and/or LLM tokens before a call.

    - ``limiter``: a :class:`RateLimiter` (one request per call) or a :class:`MultiTenantRateLimiter`.
    - ``tokens_per_minute``: builds one shared token bucket (the provider's quota); or pass ``token_limiter``
      (a ``RateLimiter`` or ``MultiTenantRateLimiter``) yourself. Before the call it reserves an estimate:
      ``token_counter(request)`` (default :func:`estimate_prompt_tokens`) plus ``request.max_tokens`` (or
      ``default_max_tokens``), at most the bucket's burst. Afterwards it reconciles with the usage reported,
      giving back the excess or charging the extra (which may drive the bucket negative, so later calls
      wait); for a stream, when the stream ends, with the last usage seen. With no usage reported (a failed
      call, a stream cut short before its usage) the estimate stands.
    - ``key(request) -> str``: the tenant, required with a multi-tenant limiter.
    - ``block``: wait (up to ``timeout`` seconds in all, if given), or reject at once with
      :class:`RateLimitExceededError` carrying ``retry_after``. A request slot taken before a token
      rejection is given back.

    Limiters are shared on purpose: pass the same one to several providers to share a quota. Place it inside
    retry so that each attempt is counted. ``clock`` serves ``tokens_per_minute`` and the overall timeout.
    """

    __slots__ = (
        "_block",
        "_clock",
        "_counter",
        "_default_max",
        "_key",
        "_limiter",
        "_req_multi",
        "_simple",
        "_timeout",
        "_tok_multi",
        "_tokens",
    )

    def __init__(
        self,
        next_handler: Handler,
        /,
        *,
        limiter: Limiter | None = None,
        tokens_per_minute: float | None = None,
        token_limiter: Limiter | None = None,
        key: Callable[[CompletionRequest], Hashable] | None = None,
        block: bool = True,
        timeout: float | None = None,
        token_counter: Callable[[CompletionRequest], int] | None = None,
        default_max_tokens: int = 1024,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(next_handler)
        name = "RateLimitMiddleware"
        for opt, value in (("limiter", limiter), ("token_limiter", token_limiter)):
            if value is not None and not isinstance(value, RateLimiter | MultiTenantRateLimiter):
                raise TypeError(f"{name}: {opt} must be a RateLimiter or MultiTenantRateLimiter, got {value!r}")
        clock = system_clock if clock is None else clock
        if tokens_per_minute is not None:
            if token_limiter is not None:
                raise ValueError(f"{name}: give tokens_per_minute= or token_limiter=, not both")
            if (
                isinstance(tokens_per_minute, bool)
                or not isinstance(tokens_per_minute, int | float)
                or not 0 < tokens_per_minute < math.inf
            ):
                raise ValueError(f"{name}: tokens_per_minute must be a number > 0, got {tokens_per_minute!r}")
            token_limiter = RateLimiter(
                tokens_per_minute / 60.0, max(1, math.ceil(tokens_per_minute)), clock=clock
            )
        if limiter is None and token_limiter is None:
            raise ValueError(f"{name} needs limiter= (requests), tokens_per_minute= or token_limiter= (LLM tokens)")
        self._req_multi = isinstance(limiter, MultiTenantRateLimiter)
        self._tok_multi = isinstance(token_limiter, MultiTenantRateLimiter)
        if key is None and (self._req_multi or self._tok_multi):
            raise ValueError(f"{name}: a MultiTenantRateLimiter needs key=, a function request -> tenant id")
        if key is not None and not (self._req_multi or self._tok_multi):
            raise ValueError(f"{name}: key= picks a tenant, so it needs a MultiTenantRateLimiter; drop key=")
        if key is not None and not callable(key):
            raise TypeError(f"{name}: key must be a function request -> tenant id, got {key!r}")
        if not isinstance(block, bool):
            raise TypeError(f"{name}: block must be True or False, got {block!r}")
        if timeout is not None:
            if not block:
                raise ValueError(f"{name}: timeout= applies only when block=True; block=False never waits")
            if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 <= timeout < math.inf:
                raise ValueError(f"{name}: timeout must be None or a finite number of seconds >= 0, got {timeout!r}")
        if token_counter is not None:
            if token_limiter is None:
                raise ValueError(f"{name}: token_counter= needs tokens_per_minute= or token_limiter=")
            if not callable(token_counter):
                raise TypeError(f"{name}: token_counter must be a function request -> int, got {token_counter!r}")
        if isinstance(default_max_tokens, bool) or not isinstance(default_max_tokens, int) or default_max_tokens < 0:
            raise ValueError(f"{name}: default_max_tokens must be an integer >= 0, got {default_max_tokens!r}")
        self._limiter = limiter
        self._tokens = token_limiter
        self._simple = limiter if isinstance(limiter, RateLimiter) and token_limiter is None else None
        self._key = key
        self._block = block
        self._timeout = timeout
        self._counter = estimate_prompt_tokens if token_counter is None else token_counter
        self._default_max = default_max_tokens
        self._clock = clock

    async def __call__(self, request: CompletionRequest, ctx: CallContext) -> Reply:
        simple = self._simple
        if simple is not None:  # one shared request bucket, no token budget: the common case, kept short
            if not simple.try_acquire(1):
                await self._acquire(simple, 1, self._timeout, ctx, "a request slot")
            return await self.next(request, ctx)
        tenant = self._key(request) if self._key is not None else None
        deadline: float | None = None
        limiter = self._limiter
        slot: RateLimiter | None = None
        if limiter is not None:
            slot = limiter.limiter(tenant) if isinstance(limiter, MultiTenantRateLimiter) else limiter
            if not slot.try_acquire(1):
                if self._timeout is not None:
                    deadline = self._clock.now() + self._timeout
                await self._acquire(slot, 1, self._timeout, ctx, "a request slot")
        tokens = self._tokens
        if tokens is None:
            return await self.next(request, ctx)

        bucket = tokens.limiter(tenant) if isinstance(tokens, MultiTenantRateLimiter) else tokens
        max_tokens = request.max_tokens
        estimate = max(1, int(self._counter(request)) + (self._default_max if max_tokens is None else max_tokens))
        reserved = min(estimate, bucket.burst)
        if not bucket.try_acquire(reserved):
            timeout = self._timeout
            if deadline is not None:
                timeout = max(0.0, deadline - self._clock.now())
            try:
                await self._acquire(bucket, reserved, timeout, ctx, f"{reserved} LLM tokens")
            except BaseException:
                if slot is not None:
                    slot.refund(1)
                raise
        try:
            reply = await self.next(request, ctx)
        except BaseException:
            _reconcile(bucket, reserved, estimate, None)
            raise
        if isinstance(reply, CompletionResponse):
            _reconcile(bucket, reserved, estimate, reply.usage)
            return reply

        def on_end(outcome: StreamOutcome) -> None:
            _reconcile(bucket, reserved, estimate, outcome.usage)

        return observe_stream(reply, on_end)

    async def _acquire(
        self, bucket: RateLimiter, n: int, within: float | None, ctx: CallContext, what: str
    ) -> None:
        if self._block:
            await bucket.wait(n, timeout=within)
            return
        retry_after = bucket.wait_time(n)
        raise RateLimitExceededError(
            f"{ctx.provider}: rate limited locally: {what} not free now (block=False); "
            f"retry in {retry_after:.3f}s",
            retry_after=retry_after,
        )

    def __repr__(self) -> str:
        return (
            f"RateLimitMiddleware(limiter={self._limiter!r}, token_limiter={self._tokens!r}, "
            f"block={self._block})"
        )
