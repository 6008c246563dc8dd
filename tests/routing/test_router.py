"""The router: failover order, cooldown and recovery, no failover on the request's own errors, streams,
visible decisions, background health checks."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import pytest
from structlog.testing import capture_logs

from axonflow_llm.pipeline.context import CallContext
from axonflow_llm.pipeline.errors import (
    APIConnectionError,
    AuthenticationError,
    BadRequestError,
    BudgetExceededError,
    CircuitOpenError,
    RateLimitError,
    RateLimitExceededError,
    ServerError,
)
from axonflow_llm.pipeline.middleware import Reply
from axonflow_llm.pipeline.models import (
    Capability,
    CompletionRequest,
    CostEstimate,
    HealthCheckResult,
    HealthStatus,
    ProviderConfig,
    ProviderType,
)
from axonflow_llm.pipeline.provider import BaseProvider, Provider
from axonflow_llm.pipeline.sync import run_sync
from axonflow_llm.registry import Registry
from axonflow_llm.routing import RoutedStream, Router
from axonflow_llm.testing import FakeClock, ScriptedHandler, response, stream

REQUEST = CompletionRequest(prompt="hello")


class Scripted(BaseProvider):
    """A provider whose leaf is a ScriptedHandler; answers ``from <name>`` once the script runs out."""

    def __init__(
        self,
        name: str,
        *script: Any,
        then: Any = None,
        cost: float | None = None,
        health: HealthStatus | BaseException = HealthStatus.HEALTHY,
        capabilities: tuple[Capability, ...] = (Capability.CHAT, Capability.STREAMING),
    ) -> None:
        self.handler = ScriptedHandler(*script, then=then if then is not None else response(f"from {name}"))
        self.health = health
        self.health_checks = 0

        def estimator(request: CompletionRequest) -> CostEstimate | None:
            if cost is None:
                return None
            return CostEstimate(input_cost_per_1k=0, output_cost_per_1k=0, estimated_input_tokens=1,
                                estimated_output_tokens=1, total_estimate=cost)

        super().__init__(name=name, type=ProviderType.CUSTOM, capabilities=capabilities, cost_estimator=estimator)

    @property
    def calls(self) -> int:
        return self.handler.call_count

    async def send(self, request: CompletionRequest, ctx: CallContext) -> Reply:
        return await self.handler(request, ctx)

    async def health_check(self) -> HealthCheckResult:
        self.health_checks += 1
        if isinstance(self.health, BaseException):
            raise self.health
        return HealthCheckResult(status=self.health)


def unavailable(name: str = "") -> ServerError:
    return ServerError("service unavailable", status_code=503, provider=name or None)


def router_of(*providers: tuple[Provider, int], **options: Any) -> Router:
    router = Router(**options)
    for provider, priority in providers:
        router.add(provider, priority=priority)
    return router


# -- failover -------------------------------------------------------------------------------------------


async def test_first_choice_answers_and_metadata_says_so() -> None:
    a, b = Scripted("a"), Scripted("b")
    router = router_of((a, 10), (b, 5))
    resp = await router.complete(REQUEST)
    assert resp.content == "from a"
    assert resp.metadata["route"] == {
        "router": "router", "strategy": "priority", "provider": "a",
        "attempted": [{"provider": "a"}], "skipped": [], "forced": False,
    }
    assert b.calls == 0


async def test_fails_over_in_priority_order_on_retryable_errors() -> None:
    a = Scripted("a", unavailable())
    b = Scripted("b", APIConnectionError("connection refused"))
    c = Scripted("c")
    d = Scripted("d")
    router = router_of((c, 1), (a, 10), (d, 0), (b, 5))
    resp = await router.complete(REQUEST)
    assert resp.content == "from c"
    route = resp.metadata["route"]
    assert route["provider"] == "c"
    assert route["attempted"] == [
        {"provider": "a", "error": "ServerError: HTTP 503: service unavailable"},
        {"provider": "b", "error": "APIConnectionError: connection refused"},
        {"provider": "c"},
    ]
    assert d.calls == 0


@pytest.mark.parametrize(
    "error",
    [
        RateLimitError("slow down", status_code=429),
        CircuitOpenError("circuit open", retry_after=5),
        RateLimitExceededError("local limiter", retry_after=1),
        RateLimitExceededError("never fits", retry_after=None),
        TimeoutError("took too long"),
        ConnectionResetError("reset"),
    ],
)
async def test_each_retryable_kind_fails_over(error: Exception) -> None:
    router = router_of((Scripted("a", error), 1), (Scripted("b"), 0))
    assert (await router.complete(REQUEST)).content == "from b"


@pytest.mark.parametrize(
    "error",
    [
        BadRequestError("bad request", status_code=400),
        AuthenticationError("bad key", status_code=401),
        BudgetExceededError("budget used up"),
        ValueError("a bug in the provider"),
    ],
)
async def test_the_requests_own_errors_are_raised_not_spread(error: Exception) -> None:
    clock = FakeClock()
    a, b = Scripted("a", error), Scripted("b")
    router = router_of((a, 1), (b, 0), clock=clock)
    with pytest.raises(type(error)) as info:
        await router.complete(REQUEST)
    assert info.value is error
    assert b.calls == 0
    assert router.cooling_down() == {}  # not the provider's fault: no cooldown
    assert any("router 'router' tried: a" in note for note in getattr(info.value, "__notes__", []))


async def test_when_all_fail_the_last_error_is_raised_with_what_was_tried() -> None:
    first, last = unavailable("a"), RateLimitError("quota", status_code=429, provider="b")
    router = router_of((Scripted("a", first), 1), (Scripted("b", last), 0))
    with pytest.raises(RateLimitError) as info:
        await router.complete(REQUEST)
    assert info.value is last
    assert info.value.__notes__[-1] == (
        "router 'router' tried: a (ServerError: a: HTTP 503: service unavailable), "
        "b (RateLimitError: b: HTTP 429: quota)"
    )


async def test_max_fallbacks_bounds_the_attempts() -> None:
    providers = [Scripted(f"p{i}", unavailable()) for i in range(4)]
    router = router_of(*((p, 10 - i) for i, p in enumerate(providers)), max_fallbacks=1)
    with pytest.raises(ServerError):
        await router.complete(REQUEST)
    assert [p.calls for p in providers] == [1, 1, 0, 0]
    no_failover = router_of((Scripted("x", unavailable()), 1), (Scripted("y"), 0), max_fallbacks=0)
    with pytest.raises(ServerError):
        await no_failover.complete(REQUEST)


async def test_error_text_in_the_route_is_redacted() -> None:
    router = router_of((Scripted("a", APIConnectionError("refused for sk-abcdefghijklmnop")), 1), (Scripted("b"), 0))
    resp = await router.complete(REQUEST)
    assert resp.metadata["route"]["attempted"][0]["error"] == "APIConnectionError: refused for ***"


# -- cooldown -------------------------------------------------------------------------------------------


async def test_a_failed_provider_cools_down_then_is_tried_again() -> None:
    clock = FakeClock(auto_advance=False)
    a, b = Scripted("a", unavailable()), Scripted("b")
    router = router_of((a, 1), (b, 0), clock=clock, cooldown=30)
    assert (await router.complete(REQUEST)).content == "from b"
    assert router.cooling_down() == {"a": (30.0, "error: ServerError")}

    await clock.advance(10)
    resp = await router.complete(REQUEST)
    assert resp.content == "from b"
    assert resp.metadata["route"]["skipped"] == [{"provider": "a", "reason": "error: ServerError", "retry_in": 20.0}]
    assert a.calls == 1

    await clock.advance(20)
    resp = await router.complete(REQUEST)
    assert resp.content == "from a"  # recovered: back in front
    assert a.calls == 2
    assert router.cooling_down() == {}


async def test_an_open_circuit_is_skipped_until_it_half_opens() -> None:
    clock = FakeClock(auto_advance=False)
    a = Scripted("a", CircuitOpenError("open", retry_after=12.5))
    router = router_of((a, 1), (Scripted("b"), 0), clock=clock, cooldown=30)
    await router.complete(REQUEST)
    assert router.cooling_down() == {"a": (12.5, "circuit_open")}
    await clock.advance(12.5)
    assert (await router.complete(REQUEST)).content == "from a"


async def test_a_servers_retry_after_sets_the_cooldown() -> None:
    clock = FakeClock(auto_advance=False)
    router = router_of(
        (Scripted("a", RateLimitError("quota", status_code=429, retry_after=3)), 1), (Scripted("b"), 0),
        clock=clock,
    )
    await router.complete(REQUEST)
    assert router.cooling_down() == {"a": (3.0, "error: RateLimitError")}


async def test_when_every_provider_is_cooling_down_they_are_tried_anyway_in_order() -> None:
    clock = FakeClock(auto_advance=False)
    a = Scripted("a", unavailable(), unavailable())
    b = Scripted("b", unavailable())
    router = router_of((a, 1), (b, 0), clock=clock)
    with pytest.raises(ServerError):
        await router.complete(REQUEST)
    assert set(router.cooling_down()) == {"a", "b"}
    await clock.advance(1)
    resp = await router.complete(REQUEST)  # both cooling: tried anyway, in order; a fails again, b answers
    assert resp.content == "from b"
    route = resp.metadata["route"]
    assert route["forced"] is True
    assert route["skipped"] == []
    assert [x["provider"] for x in route["attempted"]] == ["a", "b"]
    assert router.cooling_down() == {"a": (30.0, "error: ServerError")}


async def test_cooldown_zero_never_skips() -> None:
    a = Scripted("a", unavailable())
    router = router_of((a, 1), (Scripted("b"), 0), cooldown=0)
    await router.complete(REQUEST)
    assert (await router.complete(REQUEST)).content == "from a"


# -- strategies through the router ------------------------------------------------------------------------


async def test_weighted_routing_distributes_by_weight() -> None:
    router = Router(strategy="weighted", rng=random.Random(2024))
    providers = {name: Scripted(name) for name in ("a", "b", "c")}
    for name, weight in (("a", 1.0), ("b", 3.0), ("c", 6.0)):
        router.add(providers[name], weight=weight)
    n = 4000
    chosen = Counter()
    for _ in range(n):
        chosen[(await router.complete(REQUEST)).metadata["route"]["provider"]] += 1
    expected = {"a": 0.1 * n, "b": 0.3 * n, "c": 0.6 * n}
    chi_square = sum((chosen[k] - e) ** 2 / e for k, e in expected.items())
    assert chi_square < 13.8, chosen  # 2 degrees of freedom, p = 0.001


async def test_weighted_routing_fails_over_to_the_others() -> None:
    router = Router(strategy="weighted", rng=random.Random(1))
    router.add(Scripted("a", then=unavailable()), weight=1)
    router.add(Scripted("b", then=unavailable()), weight=1)
    router.add(Scripted("c"), weight=1)
    for _ in range(20):
        assert (await router.complete(REQUEST)).content == "from c"
        for member in ("a", "b"):
            router._members[[m.name for m in router._members].index(member)].recover()


async def test_round_robin_through_the_router() -> None:
    router = router_of((Scripted("a"), 0), (Scripted("b"), 0), (Scripted("c"), 0), strategy="round_robin")
    got = [(await router.complete(REQUEST)).content for _ in range(6)]
    assert got == ["from a", "from b", "from c"] * 2


async def test_lowest_cost_through_the_router_and_its_estimate() -> None:
    router = Router(strategy="lowest_cost")
    router.add(Scripted("dear", cost=0.02), priority=9)
    router.add(Scripted("cheap", unavailable(), cost=0.001))
    router.add(Scripted("unknown"), priority=5)
    router.add(Scripted("mid", cost=0.01))
    resp = await router.complete(REQUEST)
    assert [a["provider"] for a in resp.metadata["route"]["attempted"]] == ["cheap", "mid"]
    assert router.estimate_cost(REQUEST).total_estimate == 0.001  # type: ignore[union-attr]


# -- streams --------------------------------------------------------------------------------------------


async def collect(s: RoutedStream) -> list[str]:
    return [chunk.content async for chunk in s]


async def test_stream_fails_over_before_the_first_chunk() -> None:
    a = Scripted("a", unavailable())
    b = Scripted("b", stream(error=unavailable()))  # fails on the first chunk
    c = Scripted("c", stream("x", "y", "z"))
    router = router_of((a, 3), (b, 2), (c, 1))
    s = router.stream(REQUEST)
    assert s.route is None
    assert await collect(s) == ["x", "y", "z"]
    assert s.route is not None
    assert s.route["provider"] == "c"
    assert [x["provider"] for x in s.route["attempted"]] == ["a", "b", "c"]
    assert b.handler.streams[0].closed


async def test_stream_route_is_known_once_the_first_chunk_arrives() -> None:
    router = router_of((Scripted("a", unavailable()), 1), (Scripted("b", stream("x", "y")), 0))
    async with router.stream(REQUEST) as s:
        first = await s.__anext__()
        assert first.content == "x"
        assert s.route is not None and s.route["provider"] == "b"


async def test_stream_does_not_fail_over_after_the_first_chunk() -> None:
    clock = FakeClock(auto_advance=False)
    a = Scripted("a", stream("x", "y", error=unavailable()))
    b = Scripted("b", stream("never"))
    router = router_of((a, 1), (b, 0), clock=clock)
    got: list[str] = []

    async def read() -> None:
        async for chunk in router.stream(REQUEST):
            got.append(chunk.content)

    with pytest.raises(ServerError):
        await read()
    assert got == ["x", "y"]
    assert b.calls == 0
    assert "a" in router.cooling_down()  # but the next call will avoid it


async def test_stream_request_errors_are_not_spread() -> None:
    b = Scripted("b", stream("x"))
    router = router_of((Scripted("a", BadRequestError("bad", status_code=400)), 1), (b, 0))
    with pytest.raises(BadRequestError):
        await collect(router.stream(REQUEST))
    assert b.calls == 0


async def test_closing_a_routed_stream_early_closes_the_providers_stream() -> None:
    a = Scripted("a", stream("x", "y", "z"))
    router = router_of((a, 0),)
    async with router.stream(REQUEST) as s:
        await s.__anext__()
    assert a.handler.streams[0].closed
    assert a.handler.streams[0].yielded < 3


async def test_stream_when_all_fail_raises_the_last_error_with_a_note() -> None:
    last = unavailable("b")
    router = router_of((Scripted("a", unavailable("a")), 1), (Scripted("b", last), 0))
    with pytest.raises(ServerError) as info:
        await collect(router.stream(REQUEST))
    assert info.value is last
    assert "router 'router' tried: a" in info.value.__notes__[-1]


async def test_stream_of_a_provider_without_a_stream_gives_one_final_chunk() -> None:
    router = router_of((Scripted("a"), 0),)
    chunks = [c async for c in router.stream(REQUEST)]
    assert len(chunks) == 1
    assert (chunks[0].content, chunks[0].done) == ("from a", True)


# -- visibility -----------------------------------------------------------------------------------------


async def test_on_route_sees_every_decision_and_logs_name_them() -> None:
    seen: list[dict[str, Any]] = []
    router = router_of((Scripted("a", unavailable()), 1), (Scripted("b"), 0), on_route=seen.append)
    with capture_logs() as logs:
        await router.complete(REQUEST)
        await router.complete(REQUEST)
    assert [r["provider"] for r in seen] == ["b", "b"]
    assert seen[1]["skipped"][0]["provider"] == "a"
    events = [(e["event"], e.get("provider")) for e in logs]
    assert events == [("route.failover", "b"), ("route.failover", "b")]


async def test_a_failing_on_route_callback_does_not_break_calls() -> None:
    def broken(route: dict[str, Any]) -> None:
        raise RuntimeError("oops")

    router = router_of((Scripted("a"), 0), on_route=broken)
    assert (await router.complete(REQUEST)).content == "from a"


async def test_plain_success_logs_at_debug() -> None:
    router = router_of((Scripted("a"), 0),)
    with capture_logs() as logs:
        await router.complete(REQUEST)
    assert logs == [{"event": "route.chosen", "router": "router", "provider": "a", "log_level": "debug"}]


# -- health checks --------------------------------------------------------------------------------------


async def test_background_health_checks_cool_down_and_recover_then_stop_on_close() -> None:
    clock = FakeClock(auto_advance=False)
    a, b = Scripted("a", health=HealthStatus.UNHEALTHY), Scripted("b")
    router = router_of((a, 1), (b, 0), clock=clock, health_check_interval=10, cooldown=60)
    assert (await router.complete(REQUEST)).content == "from a"  # starts the checks lazily
    await clock.advance(10)
    assert a.health_checks == 1
    assert router.cooling_down() == {"a": (60.0, "unhealthy")}
    assert (await router.complete(REQUEST)).content == "from b"

    a.health = HealthStatus.HEALTHY
    await clock.advance(10)
    assert router.cooling_down() == {}
    assert (await router.complete(REQUEST)).content == "from a"

    a.health = ConnectionError("down")  # a check that raises counts as unhealthy
    await clock.advance(10)
    assert router.cooling_down()["a"][1] == "unhealthy"

    task = router._health_task
    assert task is not None
    await router.aclose()
    assert task.done()
    assert clock.pending() == 0
    checks = a.health_checks
    await clock.advance(100)
    assert a.health_checks == checks


async def test_health_checks_start_explicitly_and_unhealthy_does_not_shorten_an_error_cooldown() -> None:
    clock = FakeClock(auto_advance=False)
    a = Scripted("a", CircuitOpenError("open", retry_after=100), health=HealthStatus.HEALTHY)
    router = router_of((a, 1), (Scripted("b"), 0), clock=clock, health_check_interval=5)
    await router.start()
    await router.complete(REQUEST)
    await clock.advance(5)
    assert router.cooling_down()["a"] == (95.0, "circuit_open")  # a healthy check does not cut it short
    await router.aclose()


async def test_router_health_check_aggregates_and_never_raises() -> None:
    healthy = router_of((Scripted("a"), 0), (Scripted("b"), 0))
    assert (await healthy.health_check()).status is HealthStatus.HEALTHY
    mixed = router_of((Scripted("a"), 0), (Scripted("b", health=RuntimeError("boom")), 0))
    result = await mixed.health_check()
    assert result.status is HealthStatus.DEGRADED
    assert result.message == "a: healthy, b: unhealthy"
    down = router_of((Scripted("a", health=HealthStatus.UNHEALTHY), 0),)
    assert (await down.health_check()).status is HealthStatus.UNHEALTHY
    assert (await Router().health_check()).status is HealthStatus.UNHEALTHY


async def test_health_check_of_a_hanging_provider_times_out() -> None:
    clock = FakeClock()

    class Hangs(Scripted):
        async def health_check(self) -> HealthCheckResult:
            await asyncio.Event().wait()
            raise AssertionError

    router = router_of((Hangs("a"), 0), clock=clock, health_check_timeout=2)
    results = await router.check_providers()
    assert results["a"].message == "health check timed out after 2s"
    assert clock.now() == 2


# -- the provider interface -----------------------------------------------------------------------------


async def test_router_is_a_provider() -> None:
    a = Scripted("a", capabilities=(Capability.CHAT,))
    b = Scripted("b", capabilities=(Capability.CHAT, Capability.STREAMING, Capability.VISION))
    router = router_of((a, 1), (b, 0), name="front")
    assert isinstance(router, Provider)
    assert (router.name, router.type) == ("front", ProviderType.CUSTOM)
    assert router.capabilities() == [Capability.CHAT, Capability.STREAMING, Capability.VISION]
    assert router.supports_streaming()
    assert router.providers == ["a", "b"]
    assert repr(router) == "Router(name='front', strategy='priority', providers=['a', 'b'])"
    await router.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await router.complete(REQUEST)


async def test_a_router_can_route_to_another_router() -> None:
    inner = router_of((Scripted("x", unavailable()), 1), (Scripted("y"), 0), name="tier-1")
    outer = router_of((inner, 10), (Scripted("z"), 0), name="front")
    resp = await outer.complete(REQUEST)
    assert resp.content == "from y"
    route = resp.metadata["route"]
    assert route["provider"] == "tier-1"
    assert route["via"]["router"] == "tier-1"  # the inner decision, kept
    assert [a["provider"] for a in route["via"]["attempted"]] == ["x", "y"]

    s = outer.stream(REQUEST)
    assert [c.content async for c in s] == ["from y"]
    assert s.route is not None and s.route["via"]["provider"] == "y"


def test_sync_calls_start_and_close_stop_the_health_checks() -> None:
    router = router_of((Scripted("a"), 0), health_check_interval=3600)
    assert router.complete_sync(REQUEST).content == "from a"
    task = router._health_task
    assert task is not None and not task.done()
    asyncio.run(router.aclose())  # from another loop: cancelled on its own loop

    async def settled() -> None:
        await asyncio.gather(task, return_exceptions=True)

    run_sync(settled())
    assert task.cancelled()


def test_health_checks_start_again_on_a_new_event_loop() -> None:
    router = router_of((Scripted("a"), 0), health_check_interval=3600)

    async def call() -> asyncio.Task[None] | None:
        await router.complete(REQUEST)
        return router._health_task

    first = asyncio.run(call())  # asyncio.run cancels the health task as its loop ends
    assert first is not None and first.cancelled()
    second = asyncio.run(call())
    assert second is not None and second is not first


def test_router_works_from_sync_code() -> None:
    router = router_of((Scripted("a", unavailable()), 1), (Scripted("b", response("from b"), stream("p", "q")), 0))
    assert router.complete_sync(REQUEST).content == "from b"  # a is cooling down now
    assert [c.content for c in router.stream_sync(REQUEST)] == ["p", "q"]


async def test_a_custom_strategy_that_chooses_nobody_is_a_clear_error() -> None:
    class Nobody:
        def order(self, members: Any, request: CompletionRequest) -> list[Any]:
            return []

    router = router_of((Scripted("a"), 0), strategy=Nobody())
    with pytest.raises(RuntimeError, match="strategy 'Nobody' chose no provider"):
        await router.complete(REQUEST)
    with pytest.raises(RuntimeError, match="strategy 'Nobody' chose no provider"):
        [c async for c in router.stream(REQUEST)]


async def test_router_without_providers_says_so() -> None:
    with pytest.raises(RuntimeError, match=r"has no providers; add one with router\.add"):
        await Router().complete(REQUEST)


def test_options_and_members_are_checked() -> None:
    with pytest.raises(ValueError, match="max_fallbacks"):
        Router(max_fallbacks=-1)
    with pytest.raises(ValueError, match="cooldown"):
        Router(cooldown=float("inf"))
    with pytest.raises(ValueError, match="health_check_interval"):
        Router(health_check_interval=0)
    with pytest.raises(ValueError, match="unknown routing strategy"):
        Router(strategy="fastest")
    router = Router()
    router.add(Scripted("a"))
    with pytest.raises(ValueError, match="already has a provider named 'a'"):
        router.add(Scripted("a"))
    with pytest.raises(ValueError, match="weight"):
        router.add(Scripted("b"), weight=-1)
    with pytest.raises(ValueError, match="priority"):
        router.add(Scripted("b"), priority=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="itself"):
        router.add(router)
    with pytest.raises(TypeError, match="needs a provider"):
        router.add(object())  # type: ignore[arg-type]
    router.remove("a")
    with pytest.raises(KeyError, match="no provider named 'a'"):
        router.remove("a")


async def test_from_registry_takes_priority_weight_and_pricing_from_the_configs() -> None:
    clock = FakeClock()
    built: dict[str, Scripted] = {}

    def factory(config: ProviderConfig) -> Provider:
        built[config.name] = Scripted(config.name)
        return built[config.name]

    async with Registry(factories={"custom": factory}, clock=clock) as registry:
        await registry.register(ProviderConfig(name="low", type=ProviderType.CUSTOM, priority=1, weight=0.3))
        await registry.register(ProviderConfig(name="high", type=ProviderType.CUSTOM, priority=9, weight=0.7))
        await registry.register(ProviderConfig(name="off", type=ProviderType.CUSTOM, enabled=False))
        router = Router.from_registry(registry, max_fallbacks=1)
        assert router.providers == ["high", "low"]
        assert [m.weight for m in router._members] == [0.7, 0.3]
        assert router._info.clock is clock
        assert (await router.complete(REQUEST)).content == "from high"
        await router.aclose()
