"""OpenAIProvider: the exact wire requests, the documented answers and stream events, errors, health, faults."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from axonflow_llm.pipeline.errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    MalformedResponseError,
    RateLimitError,
    ServerError,
    StreamInterruptedError,
)
from axonflow_llm.pipeline.models import (
    Capability,
    CompletionRequest,
    FinishReason,
    HealthStatus,
    Message,
    ProviderConfig,
    ProviderType,
    StreamChunk,
    UsageStats,
)
from axonflow_llm.pipeline.pipeline import Pipeline
from axonflow_llm.providers.openai import OpenAIProvider
from axonflow_llm.testing.fake_server import FakeLLMServer, Fault

# The documented example answer (platform.openai.com/docs/api-reference/chat/object).
DOC_COMPLETION = {
    "id": "chatcmpl-123",
    "object": "chat.completion",
    "created": 1677652288,
    "model": "gpt-4o-mini-2024-07-18",
    "system_fingerprint": "fp_44709d6fcb",
    "choices": [{
        "index": 0,
        "message": {"role": "assistant", "content": "\n\nHello there, how may I assist you today?",
                    "refusal": None, "annotations": []},
        "logprobs": None,
        "finish_reason": "stop",
    }],
    "service_tier": "default",
    "usage": {
        "prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    },
}


def doc_chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    """A documented ``chat.completion.chunk`` (docs/api-reference/chat-streaming/streaming)."""
    return {"id": "chatcmpl-123", "object": "chat.completion.chunk", "created": 1694268190,
            "model": "gpt-4o-mini", "system_fingerprint": "fp_44709d6fcb",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}


USAGE_CHUNK = {"id": "chatcmpl-123", "object": "chat.completion.chunk", "created": 1694268190,
               "model": "gpt-4o-mini", "choices": [],
               "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}}


def provider(recorder: Any, bare: Pipeline, **kw: Any) -> OpenAIProvider:
    kw.setdefault("api_key", "sk-test-SECRETKEY0123456789abcdef")
    return OpenAIProvider(http_client=recorder.client, pipeline=bare, **kw)


async def collect(stream: Any) -> list[StreamChunk]:
    return [chunk async for chunk in stream]


async def drain(stream: Any, into: list[StreamChunk]) -> None:
    """Read ``stream`` to its end (or its error), keeping what arrived in ``into``."""
    async for chunk in stream:
        into.append(chunk)


# --- requests ----------------------------------------------------------------------------------------


async def test_complete_sends_the_documented_request(recorder: Any, bare: Pipeline, fake_key: str) -> None:
    recorder.json(DOC_COMPLETION)
    p = provider(recorder, bare, model="gpt-4o-mini")
    await p.complete(CompletionRequest(
        system_prompt="Be brief.", messages=[Message(role="user", content="Hi"),
                                             Message(role="assistant", content="Hello")],
        prompt="How are you?", max_tokens=50, temperature=0, top_p=0.5, top_k=7, stop_sequences=["END"],
    ))
    req = recorder.last
    assert req.method == "POST"
    assert str(req.url) == "https://api.openai.com/v1/chat/completions"
    assert req.headers["authorization"] == f"Bearer {fake_key}"
    assert req.headers["content-type"] == "application/json"
    assert req.headers["user-agent"].startswith("axonflow-llm/")
    assert "api-key" not in req.headers
    assert recorder.last_json() == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "How are you?"},
        ],
        "max_completion_tokens": 50,
        "temperature": 0,  # zero is sent, not dropped
        "top_p": 0.5,
        "stop": ["END"],  # top_k: Chat Completions has none, so it is not sent
    }


async def test_unset_options_are_not_sent_and_request_model_overrides(recorder: Any, bare: Pipeline) -> None:
    recorder.json(DOC_COMPLETION)
    await provider(recorder, bare).complete(CompletionRequest(prompt="hi", model="gpt-4.1"))
    assert recorder.last_json() == {"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]}


async def test_provider_max_tokens_is_the_default_limit(recorder: Any, bare: Pipeline) -> None:
    recorder.json(DOC_COMPLETION).json(DOC_COMPLETION)
    p = provider(recorder, bare, max_tokens=256)
    await p.complete(CompletionRequest(prompt="hi"))
    assert recorder.last_json()["max_completion_tokens"] == 256
    await p.complete(CompletionRequest(prompt="hi", max_tokens=10))
    assert recorder.last_json()["max_completion_tokens"] == 10


async def test_max_tokens_field_can_be_set_for_older_compatible_servers(recorder: Any, bare: Pipeline) -> None:
    recorder.json(DOC_COMPLETION)
    p = provider(recorder, bare, settings={"max_tokens_field": "max_tokens"})
    await p.complete(CompletionRequest(prompt="hi", max_tokens=5))
    body = recorder.last_json()
    assert body["max_tokens"] == 5
    assert "max_completion_tokens" not in body
    with pytest.raises(ValueError, match="max_tokens_field"):
        provider(recorder, bare, settings={"max_tokens_field": "limit"})


async def test_stream_asks_for_sse_with_usage(recorder: Any, bare: Pipeline) -> None:
    recorder.sse(doc_chunk({"content": "x"}, "stop"), USAGE_CHUNK, "[DONE]")
    await collect(provider(recorder, bare).stream(CompletionRequest(prompt="hi")))
    body = recorder.last_json()
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert str(recorder.last.url) == "https://api.openai.com/v1/chat/completions"


@pytest.mark.parametrize("endpoint", ["https://example.test/v1", "https://example.test/v1/", "https://example.test/v1//"])
async def test_trailing_slashes_in_the_endpoint_are_harmless(recorder: Any, bare: Pipeline, endpoint: str) -> None:
    recorder.json(DOC_COMPLETION)
    await provider(recorder, bare, endpoint=endpoint).complete(CompletionRequest(prompt="hi"))
    assert str(recorder.last.url) == "https://example.test/v1/chat/completions"


async def test_organization_and_project_headers(recorder: Any, bare: Pipeline) -> None:
    recorder.json(DOC_COMPLETION)
    p = provider(recorder, bare, settings={"organization": "org-1", "project": "proj_2"})
    await p.complete(CompletionRequest(prompt="hi"))
    assert recorder.last.headers["openai-organization"] == "org-1"
    assert recorder.last.headers["openai-project"] == "proj_2"


def test_the_key_falls_back_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match=r"api_key=.*OPENAI_API_KEY"):
        OpenAIProvider(pipeline=Pipeline())
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env-0123456789")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1/")
    p = OpenAIProvider(pipeline=Pipeline())
    assert p.endpoint == "http://127.0.0.1:1/v1"
    assert "sk-from-env" not in repr(p) and "sk-from-env" not in repr(p.info.auth)


def test_from_config_maps_every_field() -> None:
    config = ProviderConfig(name="oa", type=ProviderType.OPENAI, api_key="sk-cfg-0123456789", model="gpt-4o",
                            endpoint="https://proxy.test/v1/", max_tokens=99, timeout=30)
    p = OpenAIProvider.from_config(config, pipeline=Pipeline())
    assert (p.name, p.model, p.endpoint, p.default_max_tokens) == ("oa", "gpt-4o", "https://proxy.test/v1", 99)
    assert p.type is ProviderType.OPENAI


def test_capabilities_follow_the_model() -> None:
    vision = OpenAIProvider(api_key="sk-x-0123456789", model="gpt-4o", pipeline=Pipeline()).capabilities()
    assert {Capability.CHAT, Capability.STREAMING, Capability.FUNCTION_CALLING, Capability.VISION,
            Capability.LONG_CONTEXT} <= set(vision)
    plain = OpenAIProvider(api_key="sk-x-0123456789", model="gpt-3.5-turbo", pipeline=Pipeline()).capabilities()
    assert Capability.VISION not in plain and Capability.LONG_CONTEXT not in plain


def test_estimate_cost_uses_the_price_table() -> None:
    p = OpenAIProvider(api_key="sk-x-0123456789", model="gpt-4o-mini", pipeline=Pipeline())
    estimate = p.estimate_cost(CompletionRequest(prompt="hello", max_tokens=100))
    assert estimate is not None and estimate.total_estimate > 0
    unknown = OpenAIProvider(api_key="sk-x-0123456789", model="no-such-model", pipeline=Pipeline())
    assert unknown.estimate_cost(CompletionRequest(prompt="hello")) is None


# --- answers -----------------------------------------------------------------------------------------


async def test_documented_answer_is_mapped(recorder: Any, bare: Pipeline) -> None:
    recorder.json(DOC_COMPLETION, headers={"x-request-id": "req_abc"})
    r = await provider(recorder, bare, name="oa").complete(CompletionRequest(prompt="hi"))
    assert r.content == "\n\nHello there, how may I assist you today?"
    assert r.model == "gpt-4o-mini-2024-07-18"
    assert r.usage == UsageStats(prompt_tokens=9, completion_tokens=12, total_tokens=21)
    assert r.finish_reason is FinishReason.STOP
    assert r.request_id == "req_abc"
    assert r.provider == "oa"
    assert r.latency >= 0
    assert r.metadata["id"] == "chatcmpl-123"


@pytest.mark.parametrize(("raw", "expected"), [
    ("stop", FinishReason.STOP), ("length", FinishReason.LENGTH),
    ("content_filter", FinishReason.CONTENT_FILTER), ("tool_calls", FinishReason.TOOL_CALLS),
    ("function_call", FinishReason.TOOL_CALLS), (None, None),
])
async def test_finish_reasons_are_normalised(recorder: Any, bare: Pipeline, raw: str | None,
                                             expected: FinishReason | None) -> None:
    body = json.loads(json.dumps(DOC_COMPLETION))
    body["choices"][0]["finish_reason"] = raw
    recorder.json(body)
    r = await provider(recorder, bare).complete(CompletionRequest(prompt="hi"))
    assert r.finish_reason is expected


async def test_tool_call_answer_with_null_content(recorder: Any, bare: Pipeline) -> None:
    body = json.loads(json.dumps(DOC_COMPLETION))
    body["choices"][0]["message"] = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}
    body["choices"][0]["finish_reason"] = "tool_calls"
    recorder.json(body)
    r = await provider(recorder, bare).complete(CompletionRequest(prompt="hi"))
    assert (r.content, r.finish_reason) == ("", FinishReason.TOOL_CALLS)


async def test_documented_stream_is_mapped(recorder: Any, bare: Pipeline) -> None:
    recorder.sse(doc_chunk({"role": "assistant", "content": ""}), doc_chunk({"content": "Hello"}),
                 doc_chunk({"content": " there"}), doc_chunk({}, "stop"), USAGE_CHUNK, "[DONE]")
    chunks = await collect(provider(recorder, bare).stream(CompletionRequest(prompt="hi")))
    assert [c.content for c in chunks] == ["Hello", " there", ""]
    assert [c.done for c in chunks] == [False, False, True]
    assert chunks[-1].finish_reason is FinishReason.STOP
    assert chunks[-1].usage == UsageStats(prompt_tokens=9, completion_tokens=2, total_tokens=11)


# --- errors ------------------------------------------------------------------------------------------


async def test_429_is_a_rate_limit_error_with_retry_after_and_request_id(recorder: Any, bare: Pipeline) -> None:
    recorder.json({"error": {"message": "Rate limit reached for requests", "type": "requests",
                             "param": None, "code": "rate_limit_exceeded"}},
                  status=429, headers={"retry-after-ms": "1500", "x-request-id": "req_429"})
    with pytest.raises(RateLimitError) as info:
        await provider(recorder, bare, name="oa").complete(CompletionRequest(prompt="hi"))
    err = info.value
    assert (err.status_code, err.retry_after, err.request_id, err.provider) == (429, 1.5, "req_429", "oa")
    assert "Rate limit reached" in str(err) and err.retryable


@pytest.mark.parametrize(("status", "cls"), [(400, BadRequestError), (401, AuthenticationError),
                                             (404, BadRequestError), (500, ServerError), (503, ServerError)])
async def test_http_errors_map_to_the_hierarchy(recorder: Any, bare: Pipeline, status: int, cls: type) -> None:
    recorder.json({"error": {"message": "nope", "type": "x"}}, status=status)
    with pytest.raises(cls):
        await provider(recorder, bare).complete(CompletionRequest(prompt="hi"))


async def test_echoed_key_never_reaches_the_error(recorder: Any, bare: Pipeline, fake_key: str,
                                                  assert_no_secret: Any) -> None:
    recorder.json({"error": {"message": f"Incorrect API key provided: {fake_key}.", "type": "invalid_request_error",
                             "code": "invalid_api_key"}}, status=401)
    with pytest.raises(AuthenticationError) as info:
        await provider(recorder, bare).complete(CompletionRequest(prompt="hi"))
    assert_no_secret(info.value, fake_key)


async def test_stream_http_error_is_raised_before_any_chunk(recorder: Any, bare: Pipeline) -> None:
    recorder.json({"error": {"message": "overloaded", "type": "server_error"}}, status=503,
                  headers={"retry-after": "2"})
    with pytest.raises(ServerError) as info:
        await collect(provider(recorder, bare).stream(CompletionRequest(prompt="hi")))
    assert info.value.retry_after == 2.0


async def test_error_object_inside_a_200_stream_is_typed(recorder: Any, bare: Pipeline) -> None:
    recorder.sse(doc_chunk({"content": "He"}),
                 {"error": {"message": "The server had an error", "type": "server_error", "code": None}})
    chunks: list[StreamChunk] = []
    with pytest.raises(ServerError, match="The server had an error"):
        await drain(provider(recorder, bare).stream(CompletionRequest(prompt="hi")), chunks)
    assert [c.content for c in chunks] == ["He"]


async def test_stream_without_done_is_interrupted(recorder: Any, bare: Pipeline) -> None:
    recorder.sse(doc_chunk({"content": "a"}), doc_chunk({"content": "b"}))
    with pytest.raises(StreamInterruptedError) as info:
        await collect(provider(recorder, bare).stream(CompletionRequest(prompt="hi")))
    assert info.value.chunks_received == 2


async def test_malformed_answer_names_the_provider(recorder: Any, bare: Pipeline, fake_key: str) -> None:
    recorder.reply(httpx.Response(200, content=f"<html>oops {fake_key}</html>".encode()))
    with pytest.raises(MalformedResponseError) as info:
        await provider(recorder, bare, name="oa").complete(CompletionRequest(prompt="hi"))
    assert str(info.value).startswith("oa:")
    assert info.value.body is not None and fake_key not in info.value.body
    recorder.json({"id": "x", "choices": []})
    with pytest.raises(MalformedResponseError, match="no choices"):
        await provider(recorder, bare).complete(CompletionRequest(prompt="hi"))


async def test_timeout_and_connection_errors_are_mapped(bare: Pipeline, fake_key: str,
                                                        assert_no_secret: Any) -> None:
    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    for handler, cls in ((timeout, APITimeoutError), (refused, APIConnectionError)):
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            p = OpenAIProvider(api_key=fake_key, http_client=client, pipeline=bare, name="oa")
            with pytest.raises(cls) as info:
                await p.complete(CompletionRequest(prompt="hi"))
            assert type(info.value) is cls
            assert isinstance(info.value.__cause__, httpx.TransportError)
            assert str(info.value).startswith("oa:")
            assert_no_secret(info.value, fake_key)


# --- health ------------------------------------------------------------------------------------------


async def test_health_check_lists_models_and_spends_no_tokens(recorder: Any, bare: Pipeline) -> None:
    recorder.json({"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model"}]})
    h = await provider(recorder, bare).health_check()
    assert h.status is HealthStatus.HEALTHY and h.latency >= 0
    assert (recorder.last.method, str(recorder.last.url)) == ("GET", "https://api.openai.com/v1/models")


async def test_health_check_reports_errors_without_raising(recorder: Any, bare: Pipeline, fake_key: str) -> None:
    recorder.json({"error": {"message": f"Incorrect API key provided: {fake_key}"}}, status=401)
    h = await provider(recorder, bare).health_check()
    assert h.status is HealthStatus.UNHEALTHY and "401" in h.message and fake_key not in h.message
    p = OpenAIProvider(api_key=fake_key, endpoint="http://127.0.0.1:9/v1", pipeline=bare)
    try:
        h = await p.health_check()
    finally:
        await p.aclose()
    assert h.status is HealthStatus.UNHEALTHY and "connection failed" in h.message


# --- over real sockets, against the fake server ------------------------------------------------------


def real(server: FakeLLMServer, pipeline: Pipeline | None = None, **kw: Any) -> OpenAIProvider:
    return OpenAIProvider(api_key="sk-test-SECRETKEY0123456789abcdef", endpoint=server.url + "/v1",
                          pipeline=pipeline or Pipeline(), **kw)


async def test_plain_and_stream_over_sockets(fake_server: FakeLLMServer) -> None:
    async with asyncio.timeout(10):
        p = real(fake_server)
        r = await p.complete(CompletionRequest(prompt="ping pong"))
        assert r.content == "echo: ping pong" and r.request_id and r.usage.total_tokens > 0
        chunks = await collect(p.stream(CompletionRequest(prompt="ping pong")))
        assert "".join(c.content for c in chunks) == "echo: ping pong"
        assert chunks[-1].done and chunks[-1].usage is not None and chunks[-1].finish_reason is FinishReason.STOP
        assert (await p.health_check()).status is HealthStatus.HEALTHY
        await p.aclose()
        assert await fake_server.wait_for_open_connections(0, within=2.0) == 0


# The generic faults (Retry-After, latency, stalls, drops, malformed JSON, error events, missing end
# markers), plain and streamed, are in test_fault_matrix.py for all six providers.


@pytest.mark.parametrize(("fault", "error"), [
    (Fault.status(500), ServerError),
    (Fault.status(401), AuthenticationError),
])
async def test_error_statuses_over_sockets_end_in_typed_errors(fake_server: FakeLLMServer, fault: Fault,
                                                                error: type) -> None:
    async with asyncio.timeout(10):
        fake_server.enqueue(fault)
        p = real(fake_server)
        with pytest.raises(error):
            await p.complete(CompletionRequest(prompt="x y"))
        await p.aclose()
        assert await fake_server.wait_for_open_connections(0, within=2.0) == 0


async def test_closing_a_stream_early_releases_the_connection(fake_server: FakeLLMServer) -> None:
    async with asyncio.timeout(10):
        fake_server.enqueue(Fault.stall(between=0.05))
        p = real(fake_server)
        async with p.stream(CompletionRequest(prompt="a b c d")) as s:
            async for _ in s:
                break
        # Cancel a reader mid-stream too.
        fake_server.enqueue(Fault.stall(between=5.0))

        async def read() -> None:
            async for _ in p.stream(CompletionRequest(prompt="a b c d")):
                pass

        task = asyncio.create_task(read())
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await p.aclose()
        assert await fake_server.wait_for_open_connections(0, within=2.0) == 0


async def test_the_users_client_is_not_closed(fake_server: FakeLLMServer) -> None:
    async with asyncio.timeout(10), httpx.AsyncClient() as client:
        p = real(fake_server, http_client=client)
        assert (await p.complete(CompletionRequest(prompt="hi"))).content == "echo: hi"
        await p.aclose()
        assert not client.is_closed


@pytest.mark.live
async def test_live_openai(live_or_skip: Any) -> None:
    live_or_skip("OPENAI_API_KEY")
    async with asyncio.timeout(60):
        p = OpenAIProvider(pipeline=Pipeline())
        try:
            r = await p.complete(CompletionRequest(prompt="Say OK.", max_tokens=5))
            assert r.content and r.usage.total_tokens > 0
            chunks = await collect(p.stream(CompletionRequest(prompt="Say OK.", max_tokens=5)))
            assert chunks[-1].done
        finally:
            await p.aclose()
