"""GeminiProvider: the exact generateContent requests, documented responses and SSE chunks, errors, no leaks."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from axonflow_llm.middleware.retry import RetryMiddleware
from axonflow_llm.middleware.retry_config import RetryConfig
from axonflow_llm.pipeline.errors import (
    AuthenticationError,
    BadRequestError,
    MalformedResponseError,
    RateLimitError,
    ServerError,
    StreamInterruptedError,
)
from axonflow_llm.pipeline.models import (
    CompletionRequest,
    FinishReason,
    HealthStatus,
    Message,
    ProviderConfig,
    ProviderType,
    StreamChunk,
    UsageStats,
)
from axonflow_llm.pipeline.pipeline import Layer, Pipeline
from axonflow_llm.providers.gemini import GeminiProvider
from axonflow_llm.testing.fake_server import FakeLLMServer, Fault, fake_llm_server

KEY = "AIzaSyFAKE-FAKE-FAKE-FAKE-FAKE-1234567"

# The documented generateContent answer (Gemini API reference, "Text generation").
EXAMPLE_RESPONSE = {
    "candidates": [
        {
            "content": {"parts": [{"text": "AI learns patterns from data to make predictions."}], "role": "model"},
            "finishReason": "STOP",
            "index": 0,
            "safetyRatings": [{"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"}],
        }
    ],
    "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 10, "totalTokenCount": 18},
    "modelVersion": "gemini-2.5-flash",
    "responseId": "mAitaJyLBp-bz7IPtLfP6Qg",
}


def sse_payloads(*payloads: dict[str, Any]) -> str:
    return "".join(f"data: {json.dumps(p)}\r\n\r\n" for p in payloads)


# streamGenerateContent?alt=sse: each event a whole GenerateContentResponse; the last one finishes.
EXAMPLE_STREAM = sse_payloads(
    {
        "candidates": [{"content": {"parts": [{"text": "The"}], "role": "model"}, "index": 0}],
        "usageMetadata": {"promptTokenCount": 8, "totalTokenCount": 8},
        "modelVersion": "gemini-2.5-flash",
    },
    {
        "candidates": [{"content": {"parts": [{"text": " sky is blue."}], "role": "model"}, "index": 0}],
        "usageMetadata": {"promptTokenCount": 8, "totalTokenCount": 8},
        "modelVersion": "gemini-2.5-flash",
    },
    {
        "candidates": [{"content": {"parts": [{"text": ""}], "role": "model"}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {
            "promptTokenCount": 8,
            "candidatesTokenCount": 5,
            "totalTokenCount": 33,
            "thoughtsTokenCount": 20,
        },
        "modelVersion": "gemini-2.5-flash",
    },
)


class ClosableStream(httpx.AsyncByteStream):
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for line in self.data.splitlines(keepends=True):
            yield line

    async def aclose(self) -> None:
        self.closed = True


class Recorder:
    def __init__(self, *answers: httpx.Response | Callable[[httpx.Request], httpx.Response]) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return answer(request) if callable(answer) else answer

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]

    def body(self) -> Any:
        return json.loads(self.requests[-1].content)


def sse(text: str) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=ClosableStream(text.encode()))


def make(rec: Recorder, **kwargs: Any) -> GeminiProvider:
    kwargs.setdefault("api_key", KEY)
    kwargs.setdefault("pipeline", Pipeline())
    return GeminiProvider(http_client=httpx.AsyncClient(transport=httpx.MockTransport(rec)), **kwargs)


async def collect(provider: GeminiProvider, request: CompletionRequest) -> list[StreamChunk]:
    async with provider.stream(request) as stream:
        return [chunk async for chunk in stream]


async def drain_into(provider: GeminiProvider, request: CompletionRequest, got: list[str]) -> None:
    """Read a stream to its end, keeping the text of each chunk as it arrives (even if it then fails)."""
    async with provider.stream(request) as stream:
        async for chunk in stream:
            got.append(chunk.content)


async def call(provider: GeminiProvider, request: CompletionRequest, *, streaming: bool) -> None:
    if streaming:
        await collect(provider, request)
    else:
        await provider.complete(request)


REQ = CompletionRequest(prompt="Explain how AI works in a few words")


# --- requests -------------------------------------------------------------------------------------------


async def test_plain_call_sends_the_documented_request() -> None:
    rec = Recorder(httpx.Response(200, json=EXAMPLE_RESPONSE))
    await make(rec, model="gemini-2.5-flash").complete(
        CompletionRequest(prompt="Explain how AI works", system_prompt="You are a cat.", temperature=0)
    )
    req = rec.last
    assert req.method == "POST"
    assert str(req.url) == ("https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent")
    assert req.headers["x-goog-api-key"] == KEY
    assert req.headers["content-type"] == "application/json"
    assert "key" not in req.url.params
    assert KEY not in str(req.url)
    assert rec.body() == {
        "contents": [{"role": "user", "parts": [{"text": "Explain how AI works"}]}],
        "systemInstruction": {"parts": [{"text": "You are a cat."}]},
        "generationConfig": {"temperature": 0},
    }


async def test_streamed_call_uses_stream_generate_content_with_alt_sse() -> None:
    rec = Recorder(sse(EXAMPLE_STREAM))
    await collect(make(rec), REQ)
    req = rec.last
    assert req.url.path == "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    assert dict(req.url.params) == {"alt": "sse"}
    assert req.headers["x-goog-api-key"] == KEY
    assert KEY not in str(req.url)
    assert "stream" not in rec.body()


async def test_generation_config_holds_only_what_is_set() -> None:
    rec = Recorder(httpx.Response(200, json=EXAMPLE_RESPONSE))
    provider = make(rec)
    await provider.complete(REQ)
    assert set(rec.body()) == {"contents"}
    await provider.complete(
        CompletionRequest(prompt="x", max_tokens=64, temperature=0.5, top_p=0.8, top_k=20, stop_sequences=["END"])
    )
    assert rec.body()["generationConfig"] == {
        "maxOutputTokens": 64,
        "temperature": 0.5,
        "topP": 0.8,
        "topK": 20,
        "stopSequences": ["END"],
    }
    await make(rec, max_tokens=99).complete(REQ)
    assert rec.body()["generationConfig"] == {"maxOutputTokens": 99}


async def test_roles_are_user_and_model_and_system_goes_to_system_instruction() -> None:
    rec = Recorder(httpx.Response(200, json=EXAMPLE_RESPONSE))
    await make(rec).complete(
        CompletionRequest(
            messages=[
                Message(role="system", content="Be brief."),
                Message(role="user", content="Hello"),
                Message(role="assistant", content="Great to meet you."),
            ],
            prompt="I have two dogs.",
        )
    )
    body = rec.body()
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "Hello"}]},
        {"role": "model", "parts": [{"text": "Great to meet you."}]},
        {"role": "user", "parts": [{"text": "I have two dogs."}]},
    ]


async def test_tool_turns_are_labelled_user_text_and_consecutive_turns_share_one_content() -> None:
    rec = Recorder(httpx.Response(200, json=EXAMPLE_RESPONSE))
    await make(rec).complete(
        CompletionRequest(
            messages=[
                Message(role="user", content="Weather in Paris?"),
                Message(role="assistant", content="Checking."),
                Message(role="tool", content='{"temp_c": 21}'),
            ],
            prompt="So?",
        )
    )
    assert rec.body()["contents"] == [
        {"role": "user", "parts": [{"text": "Weather in Paris?"}]},
        {"role": "model", "parts": [{"text": "Checking."}]},
        {"role": "user", "parts": [{"text": 'Tool result:\n{"temp_c": 21}'}, {"text": "So?"}]},
    ]


@pytest.mark.parametrize(
    ("model", "path"),
    [
        ("gemini-2.0-flash", "/v1beta/models/gemini-2.0-flash:generateContent"),
        ("models/gemini-2.5-pro", "/v1beta/models/gemini-2.5-pro:generateContent"),
        ("tunedModels/my-model-123", "/v1beta/tunedModels/my-model-123:generateContent"),
    ],
)
async def test_model_names_map_to_resource_paths(model: str, path: str) -> None:
    rec = Recorder(httpx.Response(200, json=EXAMPLE_RESPONSE))
    await make(rec).complete(CompletionRequest(prompt="x", model=model))
    assert rec.last.url.path == path


async def test_a_model_name_cannot_inject_query_parameters() -> None:
    rec = Recorder(httpx.Response(200, json=EXAMPLE_RESPONSE))
    await make(rec).complete(CompletionRequest(prompt="x", model="gemini?key=stolen"))
    assert "key" not in rec.last.url.params


async def test_trailing_slash_in_the_endpoint_is_harmless() -> None:
    rec = Recorder(httpx.Response(200, json=EXAMPLE_RESPONSE))
    await make(rec, endpoint="http://127.0.0.1:9/").complete(REQ)
    assert str(rec.last.url) == "http://127.0.0.1:9/v1beta/models/gemini-2.5-flash:generateContent"


# --- responses ------------------------------------------------------------------------------------------


async def test_documented_response_maps_to_a_completion_response() -> None:
    rec = Recorder(httpx.Response(200, json=EXAMPLE_RESPONSE, headers={"x-request-id": "rid-1"}))
    resp = await make(rec).complete(REQ)
    assert resp.content == "AI learns patterns from data to make predictions."
    assert resp.model == "gemini-2.5-flash"
    assert resp.usage == UsageStats(prompt_tokens=8, completion_tokens=10, total_tokens=18)
    assert resp.finish_reason is FinishReason.STOP
    assert resp.provider == "gemini"
    assert resp.request_id == "rid-1"
    resp = await make(Recorder(httpx.Response(200, json=EXAMPLE_RESPONSE))).complete(REQ)
    assert resp.request_id == "mAitaJyLBp-bz7IPtLfP6Qg"  # no header: the body's responseId


async def test_thought_parts_are_not_content_but_thinking_tokens_are_completion_tokens() -> None:
    body = {
        "candidates": [
            {
                "content": {
                    "parts": [{"text": "Let me think...", "thought": True}, {"text": "42"}, {"text": " indeed"}],
                    "role": "model",
                },
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 10,
            "candidatesTokenCount": 3,
            "thoughtsTokenCount": 50,
            "totalTokenCount": 63,
        },
    }
    resp = await make(Recorder(httpx.Response(200, json=body))).complete(REQ)
    assert resp.content == "42 indeed"
    assert resp.usage == UsageStats(prompt_tokens=10, completion_tokens=53, total_tokens=63)
    assert resp.model == "gemini-2.5-flash"  # no modelVersion: the model asked for


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("STOP", FinishReason.STOP),
        ("MAX_TOKENS", FinishReason.LENGTH),
        ("SAFETY", FinishReason.CONTENT_FILTER),
        ("RECITATION", FinishReason.CONTENT_FILTER),
        ("BLOCKLIST", FinishReason.CONTENT_FILTER),
        ("PROHIBITED_CONTENT", FinishReason.CONTENT_FILTER),
        ("SPII", FinishReason.CONTENT_FILTER),
        ("OTHER", None),
        ("MALFORMED_FUNCTION_CALL", None),
        ("FINISH_REASON_UNSPECIFIED", None),
    ],
)
async def test_finish_reasons_are_normalised(reason: str, expected: FinishReason | None) -> None:
    body = json.loads(json.dumps(EXAMPLE_RESPONSE))
    body["candidates"][0]["finishReason"] = reason
    resp = await make(Recorder(httpx.Response(200, json=body))).complete(REQ)
    assert resp.finish_reason is expected
    assert resp.metadata["raw_finish_reason"] == reason


async def test_a_function_call_answer_finishes_with_tool_calls() -> None:
    body = json.loads(json.dumps(EXAMPLE_RESPONSE))
    body["candidates"][0]["content"]["parts"] = [{"functionCall": {"name": "get_weather", "args": {}}}]
    resp = await make(Recorder(httpx.Response(200, json=body))).complete(REQ)
    assert resp.content == ""
    assert resp.finish_reason is FinishReason.TOOL_CALLS


async def test_a_blocked_prompt_is_an_empty_content_filtered_answer() -> None:
    body = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5}}
    resp = await make(Recorder(httpx.Response(200, json=body))).complete(REQ)
    assert resp.content == ""
    assert resp.finish_reason is FinishReason.CONTENT_FILTER
    assert resp.metadata["block_reason"] == "SAFETY"


@pytest.mark.parametrize("body", [b"<html>oops</html>", b"{}", b'{"candidates": "nope"}'])
async def test_malformed_answer_raises_malformed_response_error(body: bytes) -> None:
    with pytest.raises(MalformedResponseError) as info:
        await make(Recorder(httpx.Response(200, content=body))).complete(REQ)
    assert info.value.provider == "gemini"


# --- streams --------------------------------------------------------------------------------------------


async def test_stream_yields_text_then_a_done_chunk_with_the_final_usage() -> None:
    chunks = await collect(make(Recorder(sse(EXAMPLE_STREAM))), REQ)
    assert [c.content for c in chunks] == ["The", " sky is blue.", ""]
    final = chunks[-1]
    assert final.done
    assert final.finish_reason is FinishReason.STOP
    assert final.usage == UsageStats(prompt_tokens=8, completion_tokens=25, total_tokens=33)


async def test_text_in_the_finishing_event_comes_before_the_done_chunk() -> None:
    text = sse_payloads(
        {"candidates": [{"content": {"parts": [{"text": "All"}], "role": "model"}}]},
        {
            "candidates": [{"content": {"parts": [{"text": " at once"}]}, "finishReason": "MAX_TOKENS"}],
            "usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 3, "totalTokenCount": 5},
        },
    )
    chunks = await collect(make(Recorder(sse(text))), REQ)
    assert [(c.content, c.done) for c in chunks] == [("All", False), (" at once", False), ("", True)]
    assert chunks[-1].finish_reason is FinishReason.LENGTH


async def test_stream_without_a_finish_reason_is_interrupted() -> None:
    text = EXAMPLE_STREAM.rsplit("data: ", 1)[0]
    got: list[str] = []
    with pytest.raises(StreamInterruptedError):
        await drain_into(make(Recorder(sse(text))), REQ, got)
    assert got == ["The", " sky is blue."]


@pytest.mark.parametrize(
    ("error", "cls", "status"),
    [
        ({"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}, ServerError, 503),
        ({"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}, RateLimitError, 429),
        ({"message": "Internal error", "status": "INTERNAL"}, ServerError, 500),
        ({"code": 400, "message": "Bad", "status": "INVALID_ARGUMENT"}, BadRequestError, 400),
    ],
)
async def test_error_payload_inside_a_200_stream_raises_its_typed_error(
    error: dict[str, Any], cls: type[Exception], status: int
) -> None:
    first = EXAMPLE_STREAM.split("\r\n\r\n")[0] + "\r\n\r\n"
    body = ClosableStream((first + sse_payloads({"error": error})).encode())
    provider = make(Recorder(httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=body)))
    got: list[str] = []
    with pytest.raises(cls) as info:
        await drain_into(provider, REQ, got)
    assert got == ["The"]
    assert info.value.status_code == status  # type: ignore[attr-defined]
    assert error["message"] in str(info.value)
    assert body.closed


async def test_stream_payload_that_is_not_json_is_malformed() -> None:
    with pytest.raises(MalformedResponseError):
        await collect(make(Recorder(sse("data: {not json\r\n\r\n"))), REQ)


async def test_stream_closed_early_closes_the_response() -> None:
    body = ClosableStream(EXAMPLE_STREAM.encode())
    provider = make(Recorder(httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=body)))
    async with provider.stream(REQ) as stream:
        async for _ in stream:
            break
    assert body.closed


# --- HTTP errors and credentials -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "rpc", "cls"),
    [
        (400, "INVALID_ARGUMENT", BadRequestError),
        (403, "PERMISSION_DENIED", AuthenticationError),
        (404, "NOT_FOUND", BadRequestError),
        (429, "RESOURCE_EXHAUSTED", RateLimitError),
        (500, "INTERNAL", ServerError),
        (503, "UNAVAILABLE", ServerError),
    ],
)
@pytest.mark.parametrize("streaming", [False, True])
async def test_http_errors_map_to_typed_errors(status: int, rpc: str, cls: type[Exception], streaming: bool) -> None:
    body = {"error": {"code": status, "message": "Specific problem.", "status": rpc}}
    provider = make(Recorder(httpx.Response(status, json=body, headers={"retry-after": "2"})))
    with pytest.raises(cls) as info:
        await call(provider, REQ, streaming=streaming)
    assert info.value.message == "Specific problem."  # type: ignore[attr-defined]
    assert info.value.retry_after == 2.0  # type: ignore[attr-defined]


async def test_the_key_never_appears_in_errors_or_reprs() -> None:
    body = {"error": {"code": 400, "message": f"API key not valid: {KEY}", "status": "INVALID_ARGUMENT"}}
    provider = make(Recorder(httpx.Response(400, json=body)))
    with pytest.raises(BadRequestError) as info:
        await provider.complete(REQ)
    err = info.value
    for text in (str(err), repr(err), err.body or "", repr(provider), repr(provider.info.auth)):
        assert KEY not in text


def test_missing_key_says_how_to_fix_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    with pytest.raises(ValueError, match=r"api_key=.*GEMINI_API_KEY"):
        GeminiProvider(pipeline=Pipeline())


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        # As google-genai (get_env_api_key): GOOGLE_API_KEY wins when both are set.
        ({"GEMINI_API_KEY": "AIza-gemini-env", "GOOGLE_API_KEY": "AIza-google-env"}, "AIza-google-env"),
        ({"GOOGLE_API_KEY": "AIza-google-env"}, "AIza-google-env"),
        ({"GEMINI_API_KEY": "AIza-gemini-env"}, "AIza-gemini-env"),
        ({"GEMINI_API_KEY": "AIza-gemini-env", "GOOGLE_API_KEY": ""}, "AIza-gemini-env"),  # empty is unset
    ],
)
async def test_key_falls_back_to_google_then_gemini_variables(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    rec = Recorder(httpx.Response(200, json=EXAMPLE_RESPONSE))
    provider = GeminiProvider(http_client=httpx.AsyncClient(transport=httpx.MockTransport(rec)), pipeline=Pipeline())
    await provider.complete(REQ)
    assert rec.last.headers["x-goog-api-key"] == expected


# --- construction, health, cost -------------------------------------------------------------------------


async def test_from_config() -> None:
    rec = Recorder(httpx.Response(200, json=EXAMPLE_RESPONSE))
    config = ProviderConfig(name="g", type=ProviderType.GEMINI, api_key=KEY, model="gemini-2.5-pro", max_tokens=5)
    provider = GeminiProvider.from_config(
        config, http_client=httpx.AsyncClient(transport=httpx.MockTransport(rec)), pipeline=Pipeline()
    )
    await provider.complete(REQ)
    assert rec.last.url.path == "/v1beta/models/gemini-2.5-pro:generateContent"
    assert rec.body()["generationConfig"] == {"maxOutputTokens": 5}
    assert provider.type is ProviderType.GEMINI


async def test_health_check_lists_models_without_spending_tokens() -> None:
    rec = Recorder(httpx.Response(200, json={"models": []}))
    result = await make(rec).health_check()
    assert result.status is HealthStatus.HEALTHY
    assert rec.last.method == "GET"
    assert rec.last.url.path == "/v1beta/models"
    assert rec.last.headers["x-goog-api-key"] == KEY
    assert KEY not in str(rec.last.url)


async def test_health_check_reports_failures_without_raising() -> None:
    body = {"error": {"code": 400, "message": "API key not valid.", "status": "INVALID_ARGUMENT"}}
    result = await make(Recorder(httpx.Response(400, json=body))).health_check()
    assert result.status is HealthStatus.UNHEALTHY
    assert "API key not valid" in result.message


def test_cost_estimate_uses_the_price_table() -> None:
    provider = make(Recorder(httpx.Response(200)), model="gemini-2.5-flash")
    estimate = provider.estimate_cost(CompletionRequest(prompt="hi", max_tokens=10))
    assert estimate is not None
    assert estimate.output_cost_per_1k == pytest.approx(0.0025)


# --- over real sockets, against the fake server ---------------------------------------------------------

SOCKET_REQ = CompletionRequest(prompt="hello over a real socket")
BOUND = 5.0  # seconds: no socket test may take longer, whatever the fault


@pytest.fixture
def llm_server() -> Iterator[FakeLLMServer]:
    with fake_llm_server() as server:
        yield server


def over_sockets(server: FakeLLMServer, *, retry: bool = False, **kwargs: Any) -> GeminiProvider:
    layers = [Layer(RetryMiddleware, config=RetryConfig(initial_backoff=0.001, max_backoff=0.01))] if retry else []
    return GeminiProvider(api_key=KEY, endpoint=server.url, pipeline=Pipeline(layers), **kwargs)


async def finish(provider: GeminiProvider, server: FakeLLMServer) -> None:
    await provider.aclose()
    assert await server.wait_for_open_connections(0, within=2.0) == 0


async def test_plain_and_streamed_calls_over_sockets(llm_server: FakeLLMServer) -> None:
    provider = over_sockets(llm_server)
    async with asyncio.timeout(BOUND):
        resp = await provider.complete(SOCKET_REQ)
        assert resp.content == "echo: hello over a real socket"
        assert resp.finish_reason is FinishReason.STOP
        assert resp.usage.total_tokens > 0
        seen = llm_server.last_request
        assert seen.path == "/v1beta/models/gemini-2.5-flash:generateContent"
        assert seen.headers["x-goog-api-key"] == KEY
        assert "key" not in seen.query
        chunks = await collect(provider, SOCKET_REQ)
        assert "".join(c.content for c in chunks) == "echo: hello over a real socket"
        assert chunks[-1].done and chunks[-1].finish_reason is FinishReason.STOP
        assert llm_server.last_request.query.get("alt") == "sse"
    await finish(provider, llm_server)


# The generic faults (Retry-After, latency, stalls, drops, malformed JSON, the default error event, missing
# end markers), plain and streamed, are in test_fault_matrix.py for all six providers; here, what is
# particular to this provider.
FAULTS: list[tuple[str, Fault, bool, type[Exception]]] = [
    ("503", Fault.status(503), True, ServerError),
    ("400", Fault.status(400), False, BadRequestError),
    ("403", Fault.status(403), True, AuthenticationError),
    ("quota event", Fault.error_event(after_chunks=1, error_type="RESOURCE_EXHAUSTED"), True, RateLimitError),
]


@pytest.mark.parametrize(
    ("label", "fault", "streaming", "cls"), FAULTS, ids=[f[0] + ("/stream" if f[2] else "") for f in FAULTS]
)
async def test_each_fault_ends_in_its_typed_error(
    llm_server: FakeLLMServer, label: str, fault: Fault, streaming: bool, cls: type[Exception]
) -> None:
    provider = over_sockets(llm_server)
    llm_server.enqueue(fault)
    async with asyncio.timeout(BOUND):
        with pytest.raises(cls):
            await call(provider, SOCKET_REQ, streaming=streaming)
        assert (await provider.complete(SOCKET_REQ)).content.startswith("echo:")
    await finish(provider, llm_server)


RETRYABLE: list[tuple[str, Fault, bool]] = [
    (label, fault, streaming)
    for label, fault in [
        ("500", Fault.status(500)),
        ("503", Fault.status(503)),
    ]
    for streaming in (False, True)
]


@pytest.mark.parametrize(
    ("label", "fault", "streaming"), RETRYABLE, ids=[r[0] + ("/stream" if r[2] else "") for r in RETRYABLE]
)
async def test_retryable_faults_succeed_on_retry(
    llm_server: FakeLLMServer, label: str, fault: Fault, streaming: bool
) -> None:
    provider = over_sockets(llm_server, retry=True)
    llm_server.enqueue(fault, times=2)
    async with asyncio.timeout(BOUND):
        if streaming:
            chunks = await collect(provider, SOCKET_REQ)
            assert "".join(c.content for c in chunks) == "echo: hello over a real socket"
        else:
            assert (await provider.complete(SOCKET_REQ)).content == "echo: hello over a real socket"
    assert len(llm_server.requests) == 3
    await finish(provider, llm_server)


async def test_a_stream_closed_early_releases_its_connection(llm_server: FakeLLMServer) -> None:
    provider = over_sockets(llm_server)
    llm_server.enqueue(Fault.answer(chunks=["a", "b", "c", "d"]) | Fault.stall(between=0.05))
    async with asyncio.timeout(BOUND):
        async with provider.stream(SOCKET_REQ) as stream:
            async for chunk in stream:
                assert chunk.content == "a"
                break
    await finish(provider, llm_server)


async def test_health_check_over_sockets(llm_server: FakeLLMServer) -> None:
    provider = over_sockets(llm_server)
    async with asyncio.timeout(BOUND):
        assert (await provider.health_check()).status is HealthStatus.HEALTHY
        llm_server.enqueue(Fault.status(503), endpoint="models")
        assert (await provider.health_check()).status is HealthStatus.UNHEALTHY
    await finish(provider, llm_server)


@pytest.mark.live
async def test_live_call_to_gemini() -> None:
    if os.environ.get("AXONFLOW_LIVE_TESTS") != "1" or not (
        os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY")
    ):
        pytest.skip("live test: set AXONFLOW_LIVE_TESTS=1 and GEMINI_API_KEY to call the real Gemini API")
    provider = GeminiProvider(model=os.environ.get("AXONFLOW_GEMINI_MODEL", "gemini-2.5-flash"))
    try:
        async with asyncio.timeout(60):
            resp = await provider.complete(CompletionRequest(prompt="Say OK.", max_tokens=50))
            assert resp.usage.total_tokens > 0
            chunks = await collect(provider, CompletionRequest(prompt="Say OK.", max_tokens=50))
            assert chunks[-1].done
            assert (await provider.health_check()).status is HealthStatus.HEALTHY
    finally:
        await provider.aclose()
