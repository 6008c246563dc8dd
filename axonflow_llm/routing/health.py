"""A router's health checks: check every provider at once, cool down the unhealthy, run in the background."""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import TYPE_CHECKING

from ..pipeline.clock import Clock
from ..pipeline.models import HealthCheckResult, HealthStatus
from ..registry.registry import checked_health
from .route_log import log
from .strategies import Member

if TYPE_CHECKING:
    from .router import Router

__all__ = ["check_members", "health_loop", "summarize"]

_GOOD = (HealthStatus.HEALTHY, HealthStatus.DEGRADED)


async def check_members(
    members: list[Member], *, limit: float, cooldown: float, clock: Clock, router: str
) -> dict[str, HealthCheckResult]:
    """Each member's health, concurrently, each within ``limit`` seconds (a failure or a timeout is
    ``UNHEALTHY``). An unhealthy member cools down for ``cooldown`` seconds; a healthy one whose cooldown
    a health check started is back at once (one cooling down after an *error* is not: an open circuit
    stays skipped until it half-opens)."""
    results = await asyncio.gather(*(checked_health(m.provider, limit, clock) for m in members))
    now = clock.now()
    for member, result in zip(members, results, strict=True):
        if result.status is HealthStatus.UNHEALTHY:
            if member.cool_until <= now or member.cool_reason == "unhealthy":
                member.cool(now + cooldown, "unhealthy")
                log.info("route.unhealthy", router=router, provider=member.name, message=result.message)
        elif result.status in _GOOD and member.cool_reason == "unhealthy":
            member.recover()
            log.info("route.recovered", router=router, provider=member.name)
    return {m.name: r for m, r in zip(members, results, strict=True)}


def summarize(results: dict[str, HealthCheckResult], *, latency: float = 0.0) -> HealthCheckResult:
    """One result for them all: healthy if all are, degraded if some are, unhealthy if none is (or none)."""
    if not results:
        return HealthCheckResult(status=HealthStatus.UNHEALTHY, message="the router has no providers",
                                 checked_at=time.time())
    good = [n for n, r in results.items() if r.status in _GOOD]
    if len(good) == len(results) and all(r.status is HealthStatus.HEALTHY for r in results.values()):
        status = HealthStatus.HEALTHY
    elif good:
        status = HealthStatus.DEGRADED
    else:
        status = HealthStatus.UNHEALTHY
    detail = ", ".join(f"{n}: {r.status.value}" for n, r in results.items())
    return HealthCheckResult(status=status, message=detail, latency=latency, checked_at=time.time())


async def health_loop(ref: weakref.ReferenceType[Router], interval: float, clock: Clock) -> None:
    """Check ``ref()``'s providers every ``interval`` seconds on ``clock`` until it is closed or gone.

    Holds the router weakly: a router dropped without ``aclose()`` ends its loop at the next tick."""
    while True:
        await clock.sleep(interval)
        router = ref()
        if router is None or router._closed:
            return
        try:
            await router.check_providers()
        except Exception as exc:  # never let the loop die of one bad round
            log.warning("route.health_check_failed", router=router.name, error=type(exc).__name__)
        del router
