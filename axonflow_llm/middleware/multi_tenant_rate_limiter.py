"""MultiTenantRateLimiter: one token bucket per tenant, made on first use; memory bounded by idle and LRU eviction."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING

from ..pipeline.clock import Clock, system_clock

if TYPE_CHECKING:
    from .rate_limiter import RateLimiter

__all__ = ["MultiTenantRateLimiter"]


class _Tenant:
    __slots__ = ("last_used", "limiter")

    def __init__(self, limiter: RateLimiter, last_used: float) -> None:
        self.limiter = limiter
        self.last_used = last_used


class MultiTenantRateLimiter:
    """One :class:`RateLimiter` per tenant, made by ``factory()`` on the tenant's first use.

    Memory stays bounded however many tenants pass through: a tenant unused for ``idle_timeout`` seconds
    whose bucket is full again (so forgetting it changes nothing) is evicted, and past ``max_tenants`` the
    least recently used tenant goes (its next call starts from a full bucket). Eviction happens on access,
    amortised O(1), with no background task. A tenant with callers waiting is never evicted (so
    ``max_tenants`` may be exceeded while every tenant has waiters). ``idle_timeout=None`` disables idle
    eviction. ``clock`` times idleness; the buckets use whatever clock ``factory`` gives them.
    """

    __slots__ = ("_clock", "_factory", "_idle", "_max", "_tenants")

    def __init__(
        self,
        factory: Callable[[], RateLimiter],
        *,
        idle_timeout: float | None = 300.0,
        max_tenants: int | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not callable(factory):
            raise TypeError(
                "MultiTenantRateLimiter needs a factory returning a RateLimiter, e.g. "
                f"lambda: RateLimiter(10, 10); got {factory!r}"
            )
        if idle_timeout is not None and (
            isinstance(idle_timeout, bool)
            or not isinstance(idle_timeout, int | float)
            or not 0 < idle_timeout < math.inf
        ):
            raise ValueError(f"idle_timeout must be None or a finite number of seconds > 0, got {idle_timeout!r}")
        if max_tenants is not None and (
            isinstance(max_tenants, bool) or not isinstance(max_tenants, int) or max_tenants < 1
        ):
            raise ValueError(f"max_tenants must be None or an integer >= 1, got {max_tenants!r}")
        self._factory = factory
        self._idle = idle_timeout
        self._max = max_tenants
        self._clock = system_clock if clock is None else clock
        self._tenants: OrderedDict[Hashable, _Tenant] = OrderedDict()

    def limiter(self, tenant: Hashable) -> RateLimiter:
        """The tenant's bucket (made now if new); counts as a use."""
        now = self._clock.now()
        tenants = self._tenants
        entry = tenants.get(tenant)
        if entry is not None:
            entry.last_used = now
            tenants.move_to_end(tenant)
            self._evict(now)
            return entry.limiter
        made = self._factory()
        from .rate_limiter import RateLimiter  # here, not at the top: rate_limiter re-exports this module

        if not isinstance(made, RateLimiter):
            raise TypeError(f"the MultiTenantRateLimiter factory must return a RateLimiter, got {made!r}")
        self._evict(now)
        tenants[tenant] = _Tenant(made, now)
        if self._max is not None and len(tenants) > self._max:
            self._evict_lru()
        return made

    def _evict(self, now: float) -> None:
        idle = self._idle
        if idle is None:
            return
        tenants = self._tenants
        while tenants:  # ends: each step evicts a tenant, or refreshes one, or returns
            key = next(iter(tenants))
            entry = tenants[key]
            if now - entry.last_used < idle:
                return
            if entry.limiter.waiting:
                entry.last_used = now  # busy: counts as in use
                tenants.move_to_end(key)
            elif entry.limiter.is_full():
                del tenants[key]
            else:
                return  # still refilling; it will be looked at again on a later access

    def _evict_lru(self) -> None:
        tenants = self._tenants
        for _ in range(len(tenants) - 1):  # never the tenant just added (it is last)
            key = next(iter(tenants))
            if not tenants[key].limiter.waiting:
                del tenants[key]
                return
            tenants.move_to_end(key)

    async def wait(
        self, tenant: Hashable, tokens: float = 1, *, timeout: float | None = None  # noqa: ASYNC109
    ) -> None:
        """:meth:`RateLimiter.wait` on the tenant's bucket."""
        await self.limiter(tenant).wait(tokens, timeout=timeout)

    def try_acquire(self, tenant: Hashable, tokens: float = 1) -> bool:
        """:meth:`RateLimiter.try_acquire` on the tenant's bucket."""
        return self.limiter(tenant).try_acquire(tokens)

    def available(self, tenant: Hashable) -> float:
        """Tokens free for ``tenant`` now (a new tenant's full bucket if unknown); not a use."""
        entry = self._tenants.get(tenant)
        return (entry.limiter if entry is not None else self._factory()).available()

    def remove_tenant(self, tenant: Hashable) -> None:
        """Forget a tenant now; its callers already waiting keep their places. Unknown tenants are ignored."""
        self._tenants.pop(tenant, None)

    def __len__(self) -> int:
        return len(self._tenants)

    def __contains__(self, tenant: object) -> bool:
        return tenant in self._tenants

    def __repr__(self) -> str:
        return (
            f"MultiTenantRateLimiter(tenants={len(self._tenants)}, idle_timeout={self._idle!r}, "
            f"max_tenants={self._max!r})"
        )
