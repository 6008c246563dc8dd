"""ProviderBuilder: validation, the order it assembles, where user middleware goes, the call context."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from axonflow_llm import (
    APIKeyAuth,
    CallContext,
    Capability,
    CompletionRequest,
    CompletionResponse,
    FinishReason,
    HealthCheckResult,
    HealthStatus,
    Middleware,
    ModelPrice,
    ProviderBuilder,
    ProviderType,
    RateLimiter,
    Reply,
    RetryConfig,
    RetryMiddleware,
    ServerError,
    StreamChunk,
    UsageStats,
    hook,
)
from axonflow_llm.testing import FakeClock

REQ = CompletionRequest(prompt="hi")


async def answer(request: CompletionRequest, ctx: CallContext) -> CompletionResponse:
    return CompletionResponse(content="answer", usage=UsageStats(prompt_tokens=1, completion_tokens=2,
                                                                 total_tokens=3))


class Tag(Middleware):
    __slots__ = ("log", "tag")

    def __init__(self, next_handler: Any, /, *, tag: str, log: list[str] | None = None) -> None:
        super().__init__(next_handler)
        self.tag = tag
        self.log = log if log is not None else []

    async def __call__(self, request: CompletionRequest, ctx: CallContext) -> Reply:
        self.log.append(f"{self.tag}@{ctx.attempt}")
        return await self.next(request, ctx)


def full() -> ProviderBuilder:
    return (
        ProviderBuilder("p", ProviderType.CUSTOM)
        .with_model("m")
        .with_auth(APIKeyAuth("sk-builder-test-key"))
        .with_rate_limiter(RateLimiter(100, 100))
        .with_retry()
        .with_circuit_breaker()
        .with_timeout(30)
        .with_logging()
        .with_pricing({"m": ModelPrice(input_per_1m=1, output_per_1m=1)})
        .with_complete_func(answer)
    )


def test_the_default_order_from_outside_in() -> None:
    assert full().pipeline().names() == [
        "LoggingMiddleware", "CostMiddleware", "RetryMiddleware", "CircuitBreakerMiddleware",
        "RateLimitMiddleware", "TimeoutMiddleware", "AuthMiddleware",
    ]


def test_only_what_was_asked_for_is_in_the_pipeline() -> None:
    b = ProviderBuilder("p").with_retry().with_complete_func(answer)
    assert b.pipeline().names() == ["RetryMiddleware"]
    assert ProviderBuilder("p").with_complete_func(answer).pipeline().names() == []


def test_user_middleware_placement_and_order_of_insertion() -> None:
    b = (
        full()
        .with_middleware(Tag, tag="inner1")
        .with_middleware(Tag, tag="before-retry-1", before=RetryMiddleware)
        .with_middleware(Tag, tag="after-retry-1", after=RetryMiddleware)
        .with_middleware(Tag, tag="before-retry-2", before="RetryMiddleware")
        .with_middleware(Tag, tag="after-retry-2", after="RetryMiddleware")
        .with_middleware(Tag, tag="inner2")
    )
    layers = list(b.pipeline())
    tags = [layer.options.get("tag", layer.name) for layer in layers]
    assert tags == [
        "LoggingMiddleware", "CostMiddleware", "before-retry-1", "before-retry-2", "RetryMiddleware",
        "after-retry-1", "after-retry-2", "CircuitBreakerMiddleware", "RateLimitMiddleware",
        "TimeoutMiddleware", "AuthMiddleware", "inner1", "inner2",
    ]


async def test_innermost_user_middleware_sees_every_attempt_and_outer_sees_one_call() -> None:
    log: list[str] = []
    calls = 0

    async def flaky(request: CompletionRequest, ctx: CallContext) -> CompletionResponse:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ServerError("busy", status_code=503)
        return CompletionResponse(content="ok")

    provider = (
        ProviderBuilder("p")
        .with_clock(FakeClock())
        .with_retry(RetryConfig(max_retries=5))
        .with_middleware(Tag, tag="outer", log=log, before=RetryMiddleware)
        .with_middleware(Tag, tag="inner", log=log)
        .with_complete_func(flaky)
        .build()
    )
    assert (await provider.complete(REQ)).content == "ok"
    assert log == ["outer@1", "inner@1", "inner@2", "inner@3"]


def test_placement_relative_to_a_missing_middleware_says_how_to_fix_it() -> None:
    b = ProviderBuilder("p").with_complete_func(answer).with_middleware(Tag, tag="x", before=RetryMiddleware)
    with pytest.raises(ValueError, match=r"no middleware 'RetryMiddleware'.*with_retry\(\)"):
        b.build()


def test_before_and_after_together_is_an_error() -> None:
    with pytest.raises(ValueError, match="not both"):
        ProviderBuilder("p").with_middleware(Tag, tag="x", before=RetryMiddleware, after=RetryMiddleware)


@pytest.mark.parametrize(
    ("builder", "message"),
    [
        (ProviderBuilder(""), "non-empty provider name"),
        (ProviderBuilder("p", "nope").with_complete_func(answer), "unknown provider type 'nope'"),
        (ProviderBuilder("p"), r"with_complete_func\(fn\)"),
        (ProviderBuilder("p").with_complete_func(answer).with_endpoint("api.example.com"), "http:// or https://"),
    ],
)
def test_build_validates_with_a_message_that_says_how_to_fix_it(builder: ProviderBuilder, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        builder.build()


def test_a_rate_limiter_or_timeout_that_would_limit_nothing_is_refused_not_silently_dropped() -> None:
    with pytest.raises(ValueError, match="tokens_per_minute="):
        ProviderBuilder("p").with_rate_limiter()
    with pytest.raises(ValueError, match="first_chunk= or idle="):
        ProviderBuilder("p").with_timeout(None)
    built = ProviderBuilder("p").with_complete_func(answer).with_timeout(None, idle=5).build()
    assert "TimeoutMiddleware" in built.pipeline.names()


def test_a_sync_complete_function_is_refused() -> None:
    def not_async(request: CompletionRequest, ctx: CallContext) -> CompletionResponse:
        return CompletionResponse(content="x")

    with pytest.raises(TypeError, match="must be async"):
        ProviderBuilder("p").with_complete_func(not_async).build()  # type: ignore[arg-type]


async def test_ctx_gives_model_endpoint_auth_client_and_attempt() -> None:
    seen: dict[str, Any] = {}
    client = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    auth = APIKeyAuth("sk-builder-ctx-key")

    async def spy(request: CompletionRequest, ctx: CallContext) -> CompletionResponse:
        seen.update(model=ctx.model, endpoint=ctx.endpoint, auth=ctx.auth, client=ctx.http_client,
                    attempt=ctx.attempt)
        return CompletionResponse(content="x")

    provider = (
        ProviderBuilder("p").with_model("m").with_endpoint("https://api.example.com/v1").with_auth(auth)
        .with_http_client(client).with_complete_func(spy).build()
    )
    await provider.complete(REQ)
    assert seen == {"model": "m", "endpoint": "https://api.example.com/v1", "auth": auth, "client": client,
                    "attempt": 1}
    await provider.aclose()
    assert not client.is_closed  # handed in: the provider does not close it
    await client.aclose()


async def test_response_gets_provider_model_and_latency_filled_in() -> None:
    clock = FakeClock()

    async def slow(request: CompletionRequest, ctx: CallContext) -> CompletionResponse:
        await clock.sleep(1.5)
        return CompletionResponse(content="x")

    provider = ProviderBuilder("p").with_model("m").with_clock(clock).with_complete_func(slow).build()
    resp = await provider.complete(CompletionRequest(prompt="x", model="other"))
    assert (resp.provider, resp.model, resp.latency) == ("p", "other", 1.5)


async def test_pricing_attaches_cost_and_estimates() -> None:
    provider = full().build()
    resp = await provider.complete(REQ)
    assert resp.cost == pytest.approx((1 * 1 + 2 * 1) / 1e6)
    estimate = provider.estimate_cost(CompletionRequest(prompt="x" * 400, max_tokens=100))
    assert estimate is not None and estimate.estimated_output_tokens == 100


async def test_stream_function_and_complete_collected_from_it() -> None:
    async def chunks(request: CompletionRequest, ctx: CallContext) -> Any:
        yield StreamChunk(content="a")
        yield StreamChunk(content="b", done=True, usage=UsageStats(total_tokens=2))

    provider = ProviderBuilder("p").with_stream_func(chunks).build()
    assert Capability.STREAMING in provider.capabilities() and provider.supports_streaming()
    assert [c.content async for c in provider.stream(REQ)] == ["a", "b"]
    resp = await provider.complete(REQ)
    assert resp.content == "ab" and resp.usage.total_tokens == 2


async def test_complete_collected_from_a_stream_keeps_a_finish_reason_sent_before_a_usage_only_chunk() -> None:
    async def chunks(request: CompletionRequest, ctx: CallContext) -> Any:
        yield StreamChunk(content="a")
        yield StreamChunk(content="b", finish_reason=FinishReason.LENGTH)
        yield StreamChunk(done=True, usage=UsageStats(total_tokens=2))  # usage comes last, alone

    resp = await ProviderBuilder("p").with_stream_func(chunks).build().complete(REQ)
    assert resp.content == "ab" and resp.finish_reason is FinishReason.LENGTH and resp.usage.total_tokens == 2


async def test_a_stream_function_that_returns_its_iterator_from_a_coroutine_serves_complete_too() -> None:
    async def gen() -> Any:
        yield StreamChunk(content="x", done=True)

    async def opens(request: CompletionRequest, ctx: CallContext) -> Any:
        return gen()

    provider = ProviderBuilder("p").with_stream_func(opens).build()
    assert [c.content async for c in provider.stream(REQ)] == ["x"]
    assert (await provider.complete(REQ)).content == "x"


async def test_complete_only_provider_streams_one_final_chunk() -> None:
    provider = ProviderBuilder("p").with_complete_func(answer).build()
    assert not provider.supports_streaming()
    chunks = [c async for c in provider.stream(REQ)]
    assert [(c.content, c.done) for c in chunks] == [("answer", True)]


async def test_health_check_function_or_passive_default() -> None:
    async def healthy(ctx: CallContext) -> HealthCheckResult:
        return HealthCheckResult(status=HealthStatus.HEALTHY, message=ctx.provider)

    p = ProviderBuilder("p").with_complete_func(answer).with_health_check_func(healthy).build()
    assert (await p.health_check()).message == "p"
    q = ProviderBuilder("q").with_complete_func(answer).build()
    assert (await q.health_check()).status is HealthStatus.HEALTHY  # passive: spends no tokens


async def test_hook_layers_are_accepted() -> None:
    seen: list[str] = []

    async def h(request: CompletionRequest, ctx: CallContext, call_next: Any) -> Reply:
        seen.append("h")
        return await call_next(request, ctx)

    p = ProviderBuilder("p").with_complete_func(answer).with_middleware(hook(h)).build()
    await p.complete(REQ)
    assert seen == ["h"]
    with pytest.raises(TypeError, match="carries its options"):
        ProviderBuilder("p").with_middleware(hook(h), extra=1)



async def test_without_a_client_of_yours_ctx_gets_a_pooled_one_made_on_first_use_and_closed() -> None:
    seen: list[httpx.AsyncClient] = []

    async def uses_client(request: CompletionRequest, ctx: CallContext) -> CompletionResponse:
        assert ctx.http_client is not None
        seen.append(ctx.http_client)
        return CompletionResponse(content="x")

    provider = ProviderBuilder("p").with_endpoint("https://api.example.com").with_complete_func(uses_client).build()
    assert not provider.info.client_created  # nothing made until a function asks for it
    await provider.complete(REQ)
    await provider.complete(REQ)
    assert isinstance(seen[0], httpx.AsyncClient) and seen[0] is seen[1]
    await provider.aclose()
    assert seen[0].is_closed

    unused = ProviderBuilder("q").with_complete_func(answer).build()
    await unused.aclose()
    assert not unused.info.client_created  # closing does not make one either
