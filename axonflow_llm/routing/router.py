"""A provider that routes each call to one of several providers, failing over and cooling down bad ones."""

from __future__ import annotations

import asyncio
import math
import random
import weakref
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from ..pipeline.clock import Clock
from ..pipeline.context import CallContext
from ..pipeline.middleware import Reply
from ..pipeline.models import (
    Capability,
    CompletionRequest,
    CompletionResponse,
    CostEstimate,
    HealthCheckResult,
    ProviderType,
    StreamChunk,
)
from ..pipeline.pipeline import Pipeline
from ..pipeline.provider import BaseProvider, Provider
from .failover import describe, failover_reason, retry_after
from .health import check_members, health_loop, summarize
from .route_log import log, route_log
from .routed_stream import RoutedStream
from .strategies import Member, RoutingStrategy, estimated_cost, make_strategy

if TYPE_CHECKING:
    from ..middleware.pricing import ModelPrice
    from ..registry.registry import Registry

__all__ = ["RoutedStream", "Router"]

#: ``on_route(route)``: called with every routing decision (the dict also put in ``metadata["route"]``).
RouteCallback = Callable[[dict[str, Any]], None]


class Router(BaseProvider):
    """Several providers behind one: each call goes to the best available, failing over on errors.

    Arguments: ``strategy`` (``"priority"``, ``"weighted"``, ``"round_robin"``, ``"lowest_cost"``, or an
    object with ``order(members, request)``; see ``strategies``), ``max_fallbacks`` (other providers to
    try after the first fails), ``cooldown`` (seconds a failing provider is skipped),
    ``health_check_interval`` (seconds between background health checks; ``None``: none),
    ``health_check_timeout``, ``clock``, ``rng`` (a ``random.Random`` for ``weighted``), ``name``,
    ``on_route`` (called with every decision) and ``pipeline`` (middleware around the *router*: empty by
    default, since each provider runs its own pipeline once, inside).

    A retryable error (``exc.retryable``: 429, 5xx, connection errors, timeouts), a ``CircuitOpenError``
    or a ``RateLimitExceededError`` moves on to the next provider and cools the failed one down for
    ``cooldown`` seconds (or the ``retry_after`` the error carries: when its circuit half-opens). Any
    other error (400, 401, ``BudgetExceededError``) is the request's and is raised at once. When every
    candidate fails, the last error is raised with a note listing what was tried. Streams fail over only
    until their first chunk; after it, errors reach the caller.

    Providers cooling down are skipped; if *all* are cooling down they are tried anyway, in order
    (``route["forced"]``), rather than failing without trying. The decision is in
    ``response.metadata["route"]``, in ``RoutedStream.route`` for streams, passed to ``on_route`` and
    logged (``route.chosen`` at debug, ``route.failover`` at info, ``route.failed`` at warning).

    The router does not own its providers: ``aclose()`` stops its health checks but leaves them open
    (close the registry, or the providers, yourself).
    """

    def __init__(
        self,
        *,
        strategy: str | RoutingStrategy = "priority",
        max_fallbacks: int = 2,
        cooldown: float = 30.0,
        health_check_interval: float | None = None,
        health_check_timeout: float = 10.0,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        name: str = "router",
        on_route: RouteCallback | None = None,
        pipeline: Pipeline | None = None,
    ) -> None:
        if isinstance(max_fallbacks, bool) or not isinstance(max_fallbacks, int) or max_fallbacks < 0:
            raise ValueError(f"max_fallbacks must be an integer >= 0 (0 = no failover), got {max_fallbacks!r}")
        _check_seconds("cooldown", cooldown, allow_zero=True)
        if health_check_interval is not None:
            _check_seconds("health_check_interval", health_check_interval)
        _check_seconds("health_check_timeout", health_check_timeout)
        if on_route is not None and not callable(on_route):
            raise TypeError(f"on_route must be a callable taking the route dict, got {on_route!r}")
        super().__init__(name=name, type=ProviderType.CUSTOM, clock=clock, pipeline=pipeline, capabilities=())
        self._strategy = make_strategy(strategy, rng=rng)
        self._strategy_name: str = getattr(self._strategy, "name", type(self._strategy).__name__)
        self._max_attempts = 1 + max_fallbacks
        self._cooldown = float(cooldown)
        self._interval = health_check_interval
        self._health_timeout = float(health_check_timeout)
        self._on_route = on_route
        self._members: list[Member] = []
        self._health_task: asyncio.Task[None] | None = None

    # -- members --------------------------------------------------------------------------------------

    def add(
        self,
        provider: Provider,
        *,
        priority: int = 0,
        weight: float = 1.0,
        prices: Mapping[str, ModelPrice] | None = None,
    ) -> Router:
        """Route to ``provider`` too; higher ``priority`` is tried first, ``weight`` is its share under
        ``weighted`` (and breaks priority ties); ``prices`` (``{model: ModelPrice}``) override the price
        table for ``lowest_cost``. Returns the router, so calls chain."""
        if provider is self:
            raise ValueError("a router cannot route to itself")
        if not isinstance(provider, Provider):
            raise TypeError(
                f"router.add() needs a provider (complete, stream, health_check, ...), got {type(provider).__name__}"
            )
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise ValueError(f"priority must be an integer, got {priority!r}")
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not (
            math.isfinite(weight) and weight >= 0
        ):
            raise ValueError(f"weight must be a finite number >= 0, got {weight!r}")
        if any(m.name == provider.name for m in self._members):
            raise ValueError(f"the router already has a provider named {provider.name!r}")
        index = len(self._members)
        if prices is not None and not isinstance(prices, Mapping):
            raise TypeError(f"prices must be a mapping of model name to ModelPrice, got {type(prices).__name__}")
        self._members.append(
            Member(provider, priority=priority, weight=float(weight), index=index, prices=prices)
        )
        self._members.sort(key=lambda m: (-m.priority, -m.weight, m.index))
        return self

    def remove(self, name: str) -> None:
        """Stop routing to the provider called ``name`` (it is not closed)."""
        for i, m in enumerate(self._members):
            if m.name == name:
                del self._members[i]
                return
        raise KeyError(f"the router has no provider named {name!r}; it has: {', '.join(self.providers) or 'none'}")

    @classmethod
    def from_registry(cls, registry: Registry, **options: Any) -> Router:
        """A router over every enabled provider of ``registry``, with the priority and weight of each
        provider's configuration. ``options`` are the constructor's; ``clock`` defaults to the registry's."""
        if options.get("clock") is None and registry.clock is not None:
            options["clock"] = registry.clock
        router = cls(**options)
        for name, provider in registry.providers().items():
            config = registry.config(name)
            pricing = config.settings.get("pricing")
            prices = None
            if pricing:
                from ..middleware.pricing import ModelPrice

                prices = {
                    model: p if isinstance(p, ModelPrice) else ModelPrice(
                        input_per_1m=_field(p, "input_per_1m"), output_per_1m=_field(p, "output_per_1m"))
                    for model, p in pricing.items()
                }
            router.add(provider, priority=config.priority, weight=config.weight, prices=prices)
        return router

    @property
    def providers(self) -> list[str]:
        """The providers' names in priority order."""
        return [m.name for m in self._members]

    def cooling_down(self) -> dict[str, tuple[float, str]]:
        """The providers being skipped now: ``{name: (seconds left, reason)}``."""
        now = self._info.clock.now()
        return {
            m.name: (m.cool_until - now, m.cool_reason or "cooldown")
            for m in self._members
            if m.cool_until > now
        }

    # -- calls ----------------------------------------------------------------------------------------

    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        """One completion from the first provider that answers; ``metadata["route"]`` says who and why."""
        if self._closed:
            raise RuntimeError(f"router {self.name!r} is closed")
        reply = await self._chain(request, CallContext(self._info))
        if not isinstance(reply, CompletionResponse):
            await reply.aclose()
            raise TypeError(f"router {self.name!r}: its pipeline returned a stream to complete()")
        return reply

    def stream(self, request: CompletionRequest) -> RoutedStream:
        """A streamed completion; it fails over only until the first chunk. ``.route`` has the decision."""
        ctx = CallContext(self._info, streaming=True)
        return RoutedStream(self._run_routed_stream(request, ctx), ctx)

    async def _run_routed_stream(
        self, request: CompletionRequest, ctx: CallContext
    ) -> AsyncGenerator[StreamChunk, None]:
        if self._closed:
            raise RuntimeError(f"router {self.name!r} is closed")
        reply = await self._chain(request, ctx)
        if isinstance(reply, CompletionResponse):
            yield StreamChunk(content=reply.content, done=True, finish_reason=reply.finish_reason, usage=reply.usage)
            return
        try:
            async for chunk in reply:
                yield chunk
        finally:
            await reply.aclose()

    async def send(self, request: CompletionRequest, ctx: CallContext) -> Reply:
        """The router's leaf: choose, call, fail over."""
        self._start_health_checks()
        if ctx.streaming:
            return self._stream_routed(request, ctx)
        return await self._complete_routed(request, ctx)

    async def _complete_routed(self, request: CompletionRequest, ctx: CallContext) -> CompletionResponse:
        route, plan = self._plan(request)
        last: Exception | None = None
        for member in plan:
            try:
                response = await member.provider.complete(request)
            except Exception as exc:
                if not self._failed(member, exc, route):
                    self._finish(route, ctx, exc)
                    raise
                last = exc
                continue
            inner = response.metadata.get("route")
            if inner is not None:  # answered by a router in turn: keep its decision
                route["via"] = inner
            self._succeeded(member, route, ctx)
            return msgspec.structs.replace(response, metadata={**response.metadata, "route": route})
        assert last is not None
        self._finish(route, ctx, last)
        raise last

    async def _stream_routed(
        self, request: CompletionRequest, ctx: CallContext
    ) -> AsyncGenerator[StreamChunk, None]:
        route, plan = self._plan(request)
        last: Exception | None = None
        for member in plan:
            stream = member.provider.stream(request)
            first: StreamChunk | None = None
            try:
                first = await stream.__anext__()
            except StopAsyncIteration:
                pass  # an empty stream is still an answer
            except Exception as exc:
                await _close_quietly(stream)
                if not self._failed(member, exc, route):
                    self._finish(route, ctx, exc)
                    raise
                last = exc
                continue
            except BaseException:
                await _close_quietly(stream)
                raise
            inner = getattr(stream, "route", None)
            if inner is not None:  # a router in turn: keep its decision
                route["via"] = inner
            self._succeeded(member, route, ctx)
            try:
                if first is not None:
                    yield first
                    async for chunk in stream:
                        yield chunk
            except Exception as exc:
                # After the first chunk nothing is replayed; but remember the provider misbehaved.
                self._cool_for(member, exc)
                raise
            finally:
                await _close_quietly(stream)
            return
        assert last is not None
        self._finish(route, ctx, last)
        raise last

    # -- decisions ------------------------------------------------------------------------------------

    def _plan(self, request: CompletionRequest) -> tuple[dict[str, Any], list[Member]]:
        if not self._members:
            raise RuntimeError(f"router {self.name!r} has no providers; add one with router.add(provider)")
        ordered = self._strategy.order(self._members, request)
        if not ordered:  # only a custom strategy can do this
            raise RuntimeError(
                f"router {self.name!r}: strategy {self._strategy_name!r} chose no provider for this request; "
                "its order(members, request) must return at least one of the members"
            )
        now = self._info.clock.now()
        ready = [m for m in ordered if m.cool_until <= now]
        route: dict[str, Any] = {
            "router": self.name,
            "strategy": self._strategy_name,
            "provider": None,
            "attempted": [],
            "skipped": [],
            "forced": not ready,
        }
        if not ready:  # every provider is cooling down: try them anyway rather than fail untried
            return route, ordered[: self._max_attempts]
        if len(ready) < len(ordered):
            route["skipped"] = [
                {"provider": m.name, "reason": m.cool_reason or "cooldown", "retry_in": round(m.cool_until - now, 3)}
                for m in ordered
                if m.cool_until > now
            ]
        return route, ready[: self._max_attempts]

    def _failed(self, member: Member, exc: Exception, route: dict[str, Any]) -> bool:
        """Record a failed attempt; ``True`` if the router should move on to the next provider."""
        route["attempted"].append({"provider": member.name, "error": describe(exc)})
        return self._cool_for(member, exc)

    def _cool_for(self, member: Member, exc: BaseException) -> bool:
        reason = failover_reason(exc)
        if reason is None:
            return False
        wait = retry_after(exc)
        seconds = wait if wait is not None else self._cooldown
        member.cool(self._info.clock.now() + seconds, reason)
        return True

    def _succeeded(self, member: Member, route: dict[str, Any], ctx: CallContext) -> None:
        member.recover()
        route["provider"] = member.name
        route["attempted"].append({"provider": member.name})
        self._finish(route, ctx, None)

    def _finish(self, route: dict[str, Any], ctx: CallContext, error: Exception | None) -> None:
        ctx.state["route"] = route
        if error is not None:
            tried = ", ".join(f"{a['provider']} ({a.get('error', 'ok')})" for a in route["attempted"])
            skipped = ", ".join(f"{s['provider']} ({s['reason']})" for s in route["skipped"])
            note = f"router {self.name!r} tried: {tried or 'nothing'}"
            if skipped:
                note += f"; skipped: {skipped}"
            error.add_note(note)
            route_log.bound().warning("route.failed", router=self.name, attempted=route["attempted"],
                                       skipped=route["skipped"])
        elif len(route["attempted"]) > 1 or route["skipped"] or route["forced"]:
            route_log.bound().info("route.failover", router=self.name, provider=route["provider"],
                                    attempted=route["attempted"], skipped=route["skipped"], forced=route["forced"])
        elif route_log.debug_enabled():
            route_log.bound().debug("route.chosen", router=self.name, provider=route["provider"])
        if self._on_route is not None:
            try:
                self._on_route(route)
            except Exception as exc:
                log.warning("route.callback_failed", router=self.name, error=type(exc).__name__)

    # -- health ---------------------------------------------------------------------------------------

    async def health_check(self) -> HealthCheckResult:
        """Checks every provider now (updating cooldowns): healthy if all are, degraded if some are,
        unhealthy if none is."""
        started = self._info.clock.now()
        results = await self.check_providers()
        return summarize(results, latency=self._info.clock.now() - started)

    async def check_providers(self) -> dict[str, HealthCheckResult]:
        """Every provider's health, concurrently, each within ``health_check_timeout``; an unhealthy one
        cools down, a healthy one that was cooling down *because of a health check* is back at once."""
        return await check_members(
            list(self._members), limit=self._health_timeout, cooldown=self._cooldown,
            clock=self._info.clock, router=self.name,
        )

    async def start(self) -> None:
        """Start the background health checks now (they also start on the first call)."""
        self._start_health_checks()

    def _start_health_checks(self) -> None:
        task = self._health_task
        # A finished task is one whose event loop ended (asyncio.run cancels what is left): start anew.
        if self._interval is None or self._closed or (task is not None and not task.done()):
            return
        self._health_task = asyncio.get_running_loop().create_task(
            health_loop(weakref.ref(self), self._interval, self._info.clock), name=f"{self.name}-health"
        )

    async def aclose(self) -> None:
        """Stop the background health checks. The providers are not closed (the router does not own them)."""
        task, self._health_task = self._health_task, None
        self._closed = True
        if task is not None and not task.done():
            loop = task.get_loop()
            if loop is asyncio.get_running_loop():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            elif not loop.is_closed():  # started by a *_sync call: it runs on the sync bridge's loop
                loop.call_soon_threadsafe(task.cancel)

    # -- the rest of the provider interface -----------------------------------------------------------

    def capabilities(self) -> list[Capability]:
        """What any of the providers can do."""
        seen: dict[Capability, None] = {}
        for m in self._members:
            for c in m.provider.capabilities():
                seen.setdefault(c, None)
        return list(seen)

    def supports_streaming(self) -> bool:
        return any(m.provider.supports_streaming() for m in self._members)

    def estimate_cost(self, request: CompletionRequest) -> CostEstimate | None:
        """The estimate of the cheapest provider under ``lowest_cost``; otherwise of the first provider in
        priority order that can estimate."""
        members = self._members
        if self._strategy_name == "lowest_cost":
            members = sorted(members, key=lambda m: estimated_cost(m, request))
        for m in members:
            try:
                estimate = m.estimate(request)
            except Exception:
                continue
            if estimate is not None:
                return estimate
        return None

    def __repr__(self) -> str:
        return f"Router(name={self.name!r}, strategy={self._strategy_name!r}, providers={self.providers!r})"


async def _close_quietly(stream: Any) -> None:
    try:
        await stream.aclose()
    except Exception as exc:
        log.debug("route.stream_close_failed", error=type(exc).__name__)


def _field(value: Any, name: str) -> float:
    got: Any = value.get(name) if isinstance(value, Mapping) else getattr(value, name)
    return float(got)


def _check_seconds(name: str, value: object, *, allow_zero: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and (
        value >= 0 if allow_zero else value > 0
    )
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number of seconds {bound}, got {value!r}")
