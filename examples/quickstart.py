"""Build a custom provider with a full middleware pipeline, call it, and print the result and the onion.

Run it: ``python examples/quickstart.py``. It needs no network and no key: the "provider" is a local
function that fails once with HTTP 503 (so you can watch the retry) and then answers.
"""

from __future__ import annotations

import asyncio
import os

import structlog

from axonflow_llm import (
    APIKeyAuth,
    CallContext,
    CircuitBreaker,
    CompletionRequest,
    CompletionResponse,
    Message,
    ModelPrice,
    ProviderBuilder,
    ProviderType,
    RateLimiter,
    Reply,
    RetryConfig,
    ServerError,
    UsageStats,
    hook,
)

attempts = 0


async def my_completion_handler(request: CompletionRequest, ctx: CallContext) -> CompletionResponse:
    """The leaf: a real provider would POST to ctx.endpoint with ctx.http_client here."""
    global attempts
    attempts += 1
    if attempts == 1:
        raise ServerError("the model is warming up", status_code=503, provider=ctx.provider)
    question = request.chat_messages()[-1].content
    return CompletionResponse(
        content=f"You asked {question!r}; attempt {ctx.attempt} of this call answered.",
        usage=UsageStats(prompt_tokens=12, completion_tokens=18, total_tokens=30),
    )


async def stamp_tenant(request: CompletionRequest, ctx: CallContext, call_next: object) -> Reply:
    """A user hook: runs on every attempt, next to the provider call."""
    ctx.state["tenant"] = request.metadata.get("tenant", "default")
    return await call_next(request, ctx)  # type: ignore[operator, no-any-return]


async def main() -> None:
    structlog.configure(processors=[structlog.processors.JSONRenderer()])
    provider = (
        ProviderBuilder("my-provider", ProviderType.CUSTOM)
        .with_model("my-model-v1")
        .with_endpoint("https://api.myprovider.com/v1")
        .with_auth(APIKeyAuth(os.environ.get("MY_API_KEY", "sk-example-not-a-real-key")))
        .with_rate_limiter(RateLimiter(100, 100))
        .with_retry(RetryConfig(max_retries=3, initial_backoff=0.05))
        .with_circuit_breaker(CircuitBreaker(failure_threshold=5, reset_timeout=30.0))
        .with_timeout(30.0)
        .with_logging()
        .with_pricing({"my-model-v1": ModelPrice(input_per_1m=1.0, output_per_1m=2.0)})
        .with_middleware(hook(stamp_tenant))
        .with_complete_func(my_completion_handler)
        .build()
    )
    async with provider:
        request = CompletionRequest(
            messages=[Message(role="user", content="Hello, world!")], max_tokens=100,
            metadata={"tenant": "acme"},
        )
        response = await provider.complete(request)
        print()
        print("content:      ", response.content)
        print("model:        ", response.model)
        print("usage:        ", response.usage)
        print(f"cost:          ${response.cost:.8f}" if response.cost is not None else "cost: unknown")
        print(f"latency:       {response.latency * 1000:.2f} ms")
        print("estimate:     ", provider.estimate_cost(request))
        print()
        print("pipeline, from the caller inward:")
        print(provider.pipeline.describe())


if __name__ == "__main__":
    asyncio.run(main())
