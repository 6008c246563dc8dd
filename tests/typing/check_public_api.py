"""Typing-only checks of the public API: mypy --strict reads this file (see [tool.mypy] files); pytest does not.

Each ``assert_type`` pins what a user's type checker sees, so a change to a public signature shows up here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, assert_type

import axonflow_llm as af
from axonflow_llm.testing import FakeClock, ScriptedHandler


async def handler_contract(request: af.CompletionRequest, ctx: af.CallContext) -> af.Reply:
    reply = await ScriptedHandler()(request, ctx)
    if isinstance(reply, af.CompletionResponse):
        assert_type(reply.usage, af.UsageStats)
        return reply
    return af.observe_stream(reply, lambda outcome: None)


class Stamp(af.Middleware):
    def __init__(self, next_handler: af.Handler, /, *, tag: str) -> None:
        super().__init__(next_handler)
        self.tag = tag

    async def __call__(self, request: af.CompletionRequest, ctx: af.CallContext) -> af.Reply:
        ctx.state["stamp"] = self.tag
        return await self.next(request, ctx)


async def provider_api(provider: af.BaseProvider) -> None:
    request = af.CompletionRequest(prompt="hi", max_tokens=10)
    assert_type(await provider.complete(request), af.CompletionResponse)
    assert_type(provider.stream(request), af.StreamResponse)
    async for chunk in provider.stream(request):
        assert_type(chunk, af.StreamChunk)
    assert_type(provider.complete_sync(request), af.CompletionResponse)
    assert_type(provider.stream_sync(request), Iterator[af.StreamChunk])
    assert_type(await provider.health_check(), af.HealthCheckResult)
    assert_type(provider.capabilities(), list[af.Capability])
    assert_type(provider.estimate_cost(request), af.CostEstimate | None)
    assert_type(provider.pipeline, af.Pipeline)
    await provider.aclose()


def protocol_view(provider: af.Provider, request: af.CompletionRequest) -> AsyncIterator[af.StreamChunk]:
    assert_type(provider.name, str)
    assert_type(provider.type, af.ProviderType)
    return provider.stream(request)


async def builder_api() -> af.CustomProvider:
    async def complete(request: af.CompletionRequest, ctx: af.CallContext) -> af.CompletionResponse:
        assert_type(ctx.attempt, int)
        assert_type(ctx.model, str | None)
        return af.CompletionResponse(content="x")

    clock = FakeClock()
    provider = (
        af.ProviderBuilder("p", af.ProviderType.CUSTOM)
        .with_model("m")
        .with_auth(af.APIKeyAuth("sk-typing-example"))
        .with_rate_limiter(af.RateLimiter(10, 10, clock=clock))
        .with_retry(af.RetryConfig(max_retries=2))
        .with_circuit_breaker(af.CircuitBreaker(3, 10.0, clock=clock))
        .with_timeout(30.0, first_chunk=10.0, idle=5.0)
        .with_logging(level="debug")
        .with_pricing({"m": af.ModelPrice(input_per_1m=1.0, output_per_1m=2.0)})
        .with_middleware(Stamp, tag="t", after=af.RetryMiddleware)
        .with_middleware(af.hook(hooked))
        .with_clock(clock)
        .with_complete_func(complete)
        .build()
    )
    assert_type(provider, af.CustomProvider)
    return provider


async def hooked(request: af.CompletionRequest, ctx: af.CallContext, call_next: af.Handler) -> af.Reply:
    return await call_next(request, ctx)


def pipeline_api(leaf: af.Handler) -> af.Handler:
    pipeline = af.Pipeline([af.Layer(af.RetryMiddleware), af.Layer(Stamp, tag="a")])
    pipeline.insert_before(af.RetryMiddleware, af.Layer(af.LoggingMiddleware)).remove("Stamp")
    assert_type(pipeline.names(), list[str])
    assert_type(pipeline.describe(), str)
    return pipeline.build(leaf)


async def primitives(clock: af.Clock) -> None:
    limiter = af.RateLimiter(100, 100, clock=clock)
    await limiter.wait()
    assert_type(limiter.try_acquire(), bool)
    assert_type(limiter.available(), float)
    breaker = af.CircuitBreaker(5, 30.0, clock=clock)
    assert_type(breaker.allow(), bool)
    assert_type(breaker.state, af.CircuitState)

    async def call() -> int:
        return 1

    assert_type(await af.retry_with_backoff(af.default_retry_config(), call, clock=clock), int)


async def registry_api(path: str, extra: Any) -> None:
    config = af.load_config(path)
    assert_type(config, af.LLMConfig)
    async with await af.Registry.from_config(config) as registry:
        provider = await registry.get("x")
        router = af.Router.from_registry(registry, strategy="weighted")
        assert_type(await router.complete(af.CompletionRequest(prompt="x")), af.CompletionResponse)
        del provider, extra


def errors_api(exc: af.APIError) -> float | None:
    assert_type(exc.retryable, bool)
    assert_type(exc.status_code, int)
    return exc.retry_after
