"""AzureOpenAIProvider: addressing (v1 and dated API versions), api-key and Entra ID auth, errors, health."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from axonflow_llm.pipeline.errors import AuthenticationError, BadRequestError, RateLimitError
from axonflow_llm.pipeline.models import (
    CompletionRequest,
    FinishReason,
    HealthStatus,
    ProviderConfig,
    ProviderType,
    StreamChunk,
    UsageStats,
)
from axonflow_llm.pipeline.pipeline import Pipeline
from axonflow_llm.providers.azure_openai import AZURE_DEFAULT_API_VERSION, AzureOpenAIProvider
from axonflow_llm.testing.fake_server import FakeLLMServer

ENDPOINT = "https://my-resource.openai.azure.com"

# The documented answer of Azure OpenAI (learn.microsoft.com, "Chat completions" REST reference).
DOC_COMPLETION = {
    "id": "chatcmpl-7R1nGnsXO8n4oi9UPz2f3UHdgAYMn",
    "object": "chat.completion",
    "created": 1686676106,
    "model": "gpt-4o-2024-08-06",
    "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {
        "hate": {"filtered": False, "severity": "safe"}}}],
    "choices": [{
        "index": 0,
        "finish_reason": "stop",
        "message": {"role": "assistant", "content": "Yes, other Azure AI services also support customer managed keys."},
        "content_filter_results": {"hate": {"filtered": False, "severity": "safe"}},
    }],
    "usage": {"completion_tokens": 557, "prompt_tokens": 33, "total_tokens": 590},
}


def provider(recorder: Any, bare: Pipeline, **kw: Any) -> AzureOpenAIProvider:
    kw.setdefault("api_key", "azure-SECRETKEY-0123456789abcdef")
    kw.setdefault("endpoint", ENDPOINT)
    return AzureOpenAIProvider(http_client=recorder.client, pipeline=bare, **kw)


async def collect(stream: Any) -> list[StreamChunk]:
    return [chunk async for chunk in stream]


def test_default_api_version_is_the_v1_ga_api() -> None:
    assert AZURE_DEFAULT_API_VERSION == "v1"


async def test_v1_request_puts_the_deployment_in_model(recorder: Any, bare: Pipeline) -> None:
    recorder.json(DOC_COMPLETION)
    p = provider(recorder, bare, model="gpt-4o", settings={"deployment": "my-gpt4o"})
    await p.complete(CompletionRequest(prompt="hi", system_prompt="sys", max_tokens=20, temperature=0))
    req = recorder.last
    assert str(req.url) == f"{ENDPOINT}/openai/v1/chat/completions"
    assert req.headers["api-key"] == "azure-SECRETKEY-0123456789abcdef"
    assert "authorization" not in req.headers
    assert req.headers["content-type"] == "application/json"
    assert req.headers["user-agent"].startswith("axonflow-llm/")
    assert recorder.last_json() == {
        "model": "my-gpt4o",
        "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}],
        "max_completion_tokens": 20,
        "temperature": 0,
    }


async def test_dated_ga_version_uses_the_deployment_path_and_its_documented_fields(
    recorder: Any, bare: Pipeline
) -> None:
    recorder.json(DOC_COMPLETION)
    recorder.sse({"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": "stop"}]}, "[DONE]")
    p = provider(recorder, bare, settings={"deployment": "dep 1", "api_version": "2024-10-21"})
    await p.complete(CompletionRequest(prompt="hi", max_tokens=20))
    assert str(recorder.last.url) == f"{ENDPOINT}/openai/deployments/dep%201/chat/completions?api-version=2024-10-21"
    assert recorder.last_json() == {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}
    await collect(p.stream(CompletionRequest(prompt="hi")))
    # 2024-10-21 documents neither stream_options nor max_completion_tokens: they are not sent.
    assert recorder.last_json() == {"messages": [{"role": "user", "content": "hi"}], "stream": True}


async def test_preview_versions_get_the_newer_fields(recorder: Any, bare: Pipeline) -> None:
    recorder.sse({"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": "stop"}]}, "[DONE]")
    p = provider(recorder, bare, settings={"api_version": "2025-04-01-preview"})
    await collect(p.stream(CompletionRequest(prompt="hi", max_tokens=5)))
    body = recorder.last_json()
    assert body["stream_options"] == {"include_usage": True} and body["max_completion_tokens"] == 5
    assert "api-version=2025-04-01-preview" in str(recorder.last.url)


async def test_request_model_names_the_deployment(recorder: Any, bare: Pipeline) -> None:
    recorder.json(DOC_COMPLETION).json(DOC_COMPLETION)
    dated = provider(recorder, bare, settings={"api_version": "2024-10-21", "deployment": "a"})
    await dated.complete(CompletionRequest(prompt="hi", model="b"))
    assert "/openai/deployments/b/chat/completions" in str(recorder.last.url)
    await provider(recorder, bare).complete(CompletionRequest(prompt="hi", model="other"))
    assert recorder.last_json()["model"] == "other"


@pytest.mark.parametrize("endpoint", [ENDPOINT + "/", ENDPOINT + "/openai", ENDPOINT + "/openai/v1/"])
async def test_endpoint_forms_are_normalised(recorder: Any, bare: Pipeline, endpoint: str) -> None:
    recorder.json(DOC_COMPLETION)
    await provider(recorder, bare, endpoint=endpoint).complete(CompletionRequest(prompt="hi"))
    assert str(recorder.last.url) == f"{ENDPOINT}/openai/v1/chat/completions"


async def test_documented_answer_and_apim_request_id(recorder: Any, bare: Pipeline) -> None:
    recorder.json(DOC_COMPLETION, headers={"apim-request-id": "apim-1", "x-request-id": "x-1"})
    r = await provider(recorder, bare).complete(CompletionRequest(prompt="hi"))
    assert r.content.startswith("Yes, other Azure AI services")
    assert (r.model, r.request_id, r.finish_reason) == ("gpt-4o-2024-08-06", "apim-1", FinishReason.STOP)
    assert r.usage == UsageStats(prompt_tokens=33, completion_tokens=557, total_tokens=590)
    assert r.provider == "azure-openai"


async def test_stream_skips_the_prompt_filter_preamble_and_content_filter_ends(recorder: Any, bare: Pipeline) -> None:
    recorder.sse(
        {"choices": [], "created": 0, "id": "", "model": "", "object": "",
         "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}]},
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
        {"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "content_filter"}]},
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}},
        "[DONE]",
    )
    chunks = await collect(provider(recorder, bare).stream(CompletionRequest(prompt="hi")))
    assert [c.content for c in chunks] == ["Hi", ""]
    assert chunks[-1].finish_reason is FinishReason.CONTENT_FILTER and chunks[-1].usage == UsageStats(
        prompt_tokens=3, completion_tokens=1, total_tokens=4)


async def test_entra_id_token_provider_sends_a_bearer_token(recorder: Any) -> None:
    from axonflow_llm.middleware.auth import AuthMiddleware
    from axonflow_llm.pipeline.pipeline import Layer

    calls = 0

    async def token_provider() -> str:
        nonlocal calls
        calls += 1
        return "entra-TOKEN-0123456789"

    recorder.json(DOC_COMPLETION).json(DOC_COMPLETION)
    p = AzureOpenAIProvider(endpoint=ENDPOINT, http_client=recorder.client,
                            settings={"azure_ad_token_provider": token_provider})
    p.use_pipeline(Pipeline([Layer(AuthMiddleware, auth=p.info.auth)]))
    await p.complete(CompletionRequest(prompt="hi"))
    await p.complete(CompletionRequest(prompt="hi"))
    assert recorder.last.headers["authorization"] == "Bearer entra-TOKEN-0123456789"
    assert "api-key" not in recorder.last.headers
    assert calls == 1  # cached for its assumed lifetime
    assert "entra-TOKEN" not in repr(p.info.auth)


async def test_sync_token_provider_and_fixed_token_work_too(recorder: Any) -> None:
    recorder.json(DOC_COMPLETION).json(DOC_COMPLETION)
    p = AzureOpenAIProvider(endpoint=ENDPOINT, http_client=recorder.client,
                            settings={"azure_ad_token_provider": lambda: "sync-TOKEN-0123456789"})
    await p.complete(CompletionRequest(prompt="hi"))
    assert recorder.last.headers["authorization"] == "Bearer sync-TOKEN-0123456789"
    fixed = AzureOpenAIProvider(endpoint=ENDPOINT, http_client=recorder.client, pipeline=Pipeline(),
                                settings={"azure_ad_token": "fixed-TOKEN-0123456789"})
    await fixed.complete(CompletionRequest(prompt="hi"))
    assert recorder.last.headers["authorization"] == "Bearer fixed-TOKEN-0123456789"


async def test_entra_id_works_without_auth_middleware_and_refreshes_when_due(recorder: Any) -> None:
    from axonflow_llm.testing.fake_clock import FakeClock

    calls = 0

    async def token_provider() -> tuple[str, float]:
        nonlocal calls
        calls += 1
        return f"entra-TOKEN-{calls}-0123456789", 3600.0

    clock = FakeClock()
    recorder.json(DOC_COMPLETION).json(DOC_COMPLETION).json(DOC_COMPLETION)
    recorder.sse({"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": "stop"}]}, "[DONE]")
    p = AzureOpenAIProvider(endpoint=ENDPOINT, http_client=recorder.client, pipeline=Pipeline(), clock=clock,
                            settings={"azure_ad_token_provider": token_provider})
    await p.complete(CompletionRequest(prompt="hi"))
    await p.complete(CompletionRequest(prompt="hi"))
    assert [r.headers["authorization"] for r in recorder.requests] == ["Bearer entra-TOKEN-1-0123456789"] * 2
    await clock.advance(3600.0)  # the token is due: the leaf asks for a new one before the next attempt
    await p.complete(CompletionRequest(prompt="hi"))
    await collect(p.stream(CompletionRequest(prompt="hi")))
    assert recorder.requests[-2].headers["authorization"] == "Bearer entra-TOKEN-2-0123456789"
    assert recorder.last.headers["authorization"] == "Bearer entra-TOKEN-2-0123456789"
    assert calls == 2


async def test_with_the_default_pipeline_the_token_is_fetched_once(recorder: Any) -> None:
    from axonflow_llm.testing.fake_clock import FakeClock

    calls = 0

    def token_provider() -> str:
        nonlocal calls
        calls += 1
        return "entra-TOKEN-0123456789"

    recorder.json(DOC_COMPLETION).json(DOC_COMPLETION)
    p = AzureOpenAIProvider(endpoint=ENDPOINT, http_client=recorder.client, clock=FakeClock(50.0),
                            settings={"azure_ad_token_provider": token_provider})
    assert "AuthMiddleware" in p.pipeline.names()
    await p.complete(CompletionRequest(prompt="hi"))
    await p.complete(CompletionRequest(prompt="hi"))
    assert calls == 1  # AuthMiddleware and the leaf read one clock: no second fetch


def test_configuration_errors_name_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_OPENAI_ENDPOINT", raising=False)
    monkeypatch.delenv("AZURE_OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_VERSION", raising=False)
    with pytest.raises(ValueError, match="AZURE_OPENAI_ENDPOINT"):
        AzureOpenAIProvider(api_key="k-0123456789", pipeline=Pipeline())
    with pytest.raises(ValueError, match=r"api_key=.*AZURE_OPENAI_API_KEY"):
        AzureOpenAIProvider(endpoint=ENDPOINT, pipeline=Pipeline())
    with pytest.raises(ValueError, match="api_version"):
        AzureOpenAIProvider(endpoint=ENDPOINT, api_key="k-0123456789", pipeline=Pipeline(),
                            settings={"api_version": "latest-please"})
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", ENDPOINT)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "env-key-0123456789")
    p = AzureOpenAIProvider(pipeline=Pipeline(), settings={"resource": "other"})
    assert p.endpoint == "https://other.openai.azure.com"


def test_from_config_reads_settings() -> None:
    config = ProviderConfig(name="az", type=ProviderType.AZURE_OPENAI, api_key="k-0123456789", model="gpt-4o",
                            endpoint=ENDPOINT, settings={"deployment": "prod-4o", "api_version": "2024-10-21"})
    p = AzureOpenAIProvider.from_config(config, pipeline=Pipeline())
    assert (p.name, p.deployment, p.api_version, p.type) == ("az", "prod-4o", "2024-10-21", ProviderType.AZURE_OPENAI)


async def test_errors_carry_retry_after_and_no_key(recorder: Any, bare: Pipeline, assert_no_secret: Any) -> None:
    key = "azure-SECRETKEY-0123456789abcdef"
    recorder.json({"error": {"code": "429", "message": "Requests have exceeded the rate limit."}}, status=429,
                  headers={"retry-after": "7", "apim-request-id": "apim-9"})
    recorder.json({"error": {"code": "401", "message": f"Access denied due to invalid subscription key {key}."}},
                  status=401)
    p = provider(recorder, bare, api_key=key)
    with pytest.raises(RateLimitError) as info:
        await p.complete(CompletionRequest(prompt="hi"))
    assert (info.value.retry_after, info.value.request_id) == (7.0, "apim-9")
    with pytest.raises(AuthenticationError) as auth_info:
        await p.complete(CompletionRequest(prompt="hi"))
    assert_no_secret(auth_info.value, key)


async def test_health_check_paths(recorder: Any, bare: Pipeline) -> None:
    recorder.json({"data": []}).json({"data": []}).json({"error": {"message": "no"}}, status=404)
    assert (await provider(recorder, bare).health_check()).status is HealthStatus.HEALTHY
    assert str(recorder.last.url) == f"{ENDPOINT}/openai/v1/models"
    dated = provider(recorder, bare, settings={"api_version": "2024-10-21"})
    assert (await dated.health_check()).status is HealthStatus.HEALTHY
    assert str(recorder.last.url) == f"{ENDPOINT}/openai/models?api-version=2024-10-21"
    assert recorder.last.method == "GET" and recorder.last.headers["api-key"]
    h = await dated.health_check()
    assert h.status is HealthStatus.UNHEALTHY and "404" in h.message


# --- over real sockets: the dated deployment API here, the v1 API in test_fault_matrix.py -------------


def real(server: FakeLLMServer, **kw: Any) -> AzureOpenAIProvider:
    return AzureOpenAIProvider(api_key="azure-key-0123456789", endpoint=server.url, pipeline=Pipeline(),
                               settings={"deployment": "gpt-4o-mini", "api_version": "2024-10-21"}, **kw)


async def test_plain_stream_and_health_over_sockets(fake_server: FakeLLMServer) -> None:
    async with asyncio.timeout(10):
        p = real(fake_server)
        r = await p.complete(CompletionRequest(prompt="hello azure"))
        assert r.content == "echo: hello azure" and r.request_id
        chunks = await collect(p.stream(CompletionRequest(prompt="hello azure")))
        assert "".join(c.content for c in chunks) == "echo: hello azure" and chunks[-1].done
        assert (await p.health_check()).status is HealthStatus.HEALTHY
        assert fake_server.last_request.headers["api-key"] == "azure-key-0123456789"
        await p.aclose()
        assert await fake_server.wait_for_open_connections(0, within=2.0) == 0


async def drain(stream: Any, into: list[StreamChunk]) -> None:
    async for chunk in stream:
        into.append(chunk)


@pytest.mark.live
async def test_live_azure_openai(live_or_skip: Any) -> None:
    live_or_skip("AZURE_OPENAI_API_KEY")
    live_or_skip("AZURE_OPENAI_ENDPOINT")
    import os

    async with asyncio.timeout(60):
        p = AzureOpenAIProvider(pipeline=Pipeline(),
                                settings={"deployment": os.environ.get("AZURE_OPENAI_DEPLOYMENT", "gpt-4o-mini")})
        try:
            r = await p.complete(CompletionRequest(prompt="Say OK.", max_tokens=5))
            assert r.content
        finally:
            await p.aclose()



async def test_an_error_event_in_a_stream_that_echoes_the_key_is_scrubbed(
    recorder: Any, bare: Pipeline, assert_no_secret: Any
) -> None:
    key = "0123456789abcdef0123456789abcdef"  # an Azure key has no shape redact() knows
    recorder.sse({"error": {"message": f"invalid subscription key {key}", "type": "invalid_request_error"}})
    p = provider(recorder, bare, api_key=key)
    with pytest.raises(BadRequestError) as info:
        await collect(p.stream(CompletionRequest(prompt="hi")))
    assert_no_secret(info.value, key)
    assert "invalid subscription key ***" in str(info.value)
