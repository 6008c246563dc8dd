"""The seed README's Go examples, in Python: quick start, the mock-provider test, the provider interface."""

from __future__ import annotations

import os
import time

import httpx
import msgspec

from axonflow_llm import (
    APIError,
    APIKeyAuth,
    CallContext,
    Capability,
    CompletionRequest,
    CompletionResponse,
    CostEstimate,
    HealthCheckResult,
    HealthStatus,
    Provider,
    ProviderBuilder,
    ProviderType,
    RateLimiter,
    Reply,
    UsageStats,
    default_retry_config,
    retry_with_backoff,
)
from axonflow_llm.testing import FakeClock


async def my_completion_handler(request: CompletionRequest, ctx: CallContext) -> CompletionResponse:
    return CompletionResponse(
        content="Response from custom provider",
        model=request.model or ctx.model or "",
        usage=UsageStats(prompt_tokens=10, completion_tokens=20, total_tokens=30),
    )


async def test_quick_start_with_the_fluent_builder() -> None:
    provider = (
        ProviderBuilder("my-provider", ProviderType.CUSTOM)
        .with_model("my-model-v1")
        .with_endpoint("https://api.myprovider.com/v1")
        .with_auth(APIKeyAuth(os.environ.get("MY_API_KEY", "sk-example-key-1234")))
        .with_rate_limiter(RateLimiter(100, 100))
        .with_retry(default_retry_config())
        .with_complete_func(my_completion_handler)
        .build()
    )
    resp = await provider.complete(CompletionRequest(prompt="Hello, world!", max_tokens=100))
    assert resp.content == "Response from custom provider"
    assert resp.model == "my-model-v1"
    assert resp.usage.total_tokens == 30
    assert resp.provider == "my-provider"
    assert provider.pipeline.names() == [
        "RetryMiddleware", "RateLimitMiddleware", "AuthMiddleware",
    ]
    await provider.aclose()


async def test_the_mock_provider_pattern_of_the_seed_testing_section() -> None:
    async def mock(request: CompletionRequest, ctx: CallContext) -> CompletionResponse:
        return CompletionResponse(content="mock response", model=request.model or "")

    provider = ProviderBuilder("test", ProviderType.CUSTOM).with_complete_func(mock).build()
    resp = await provider.complete(CompletionRequest(prompt="test"))
    assert resp.content == "mock response"


class MyProvider:
    """The seed's "implementing the Provider interface directly", in Python."""

    def __init__(self, name: str, client: httpx.AsyncClient, auth: APIKeyAuth, limiter: RateLimiter,
                 endpoint: str) -> None:
        self._name = name
        self.client = client
        self.auth = auth
        self.limiter = limiter
        self.endpoint = endpoint

    @property
    def name(self) -> str:
        return self._name

    @property
    def type(self) -> ProviderType:
        return ProviderType.CUSTOM

    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        await self.limiter.wait()
        body = msgspec.json.encode({"prompt": request.prompt, "max_tokens": request.max_tokens})

        async def attempt() -> CompletionResponse:
            http_request = self.client.build_request(
                "POST", self.endpoint + "/completions", content=body,
                headers={"Content-Type": "application/json"},
            )
            self.auth.apply(http_request)
            response = await self.client.send(http_request)
            if response.status_code >= 400:
                raise APIError.from_response(response, provider=self.name)
            return CompletionResponse(content=response.json()["text"], provider=self.name)

        return await retry_with_backoff(default_retry_config(), attempt, clock=FakeClock())

    async def health_check(self) -> HealthCheckResult:
        return HealthCheckResult(status=HealthStatus.HEALTHY, checked_at=time.time())

    def capabilities(self) -> list[Capability]:
        return [Capability.CHAT, Capability.COMPLETION]

    def supports_streaming(self) -> bool:
        return False

    def stream(self, request: CompletionRequest) -> Reply:  # type: ignore[override]
        raise NotImplementedError

    def estimate_cost(self, request: CompletionRequest) -> CostEstimate | None:
        return None

    async def aclose(self) -> None:
        await self.client.aclose()


async def test_implementing_the_provider_interface_directly() -> None:
    calls: list[httpx.Request] = []

    def serve(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            return httpx.Response(503, json={"error": {"message": "try again"}})
        return httpx.Response(200, json={"text": "direct"})

    client = httpx.AsyncClient(transport=httpx.MockTransport(serve))
    provider = MyProvider("mine", client, APIKeyAuth("sk-direct-key-1234"), RateLimiter(100, 100),
                          "https://api.myprovider.com/v1")
    assert isinstance(provider, Provider)
    resp = await provider.complete(CompletionRequest(prompt="hi", max_tokens=5))
    assert resp.content == "direct"
    assert len(calls) == 2  # the 503 was retried
    assert calls[1].headers["authorization"] == "Bearer sk-direct-key-1234"
    assert calls[1].url.path == "/v1/completions"
    await provider.aclose()

