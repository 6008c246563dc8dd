"""AnthropicProvider: the exact Messages API requests, documented responses and events, errors, no leaks."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from axonflow_llm.middleware.retry import RetryMiddleware
from axonflow_llm.middleware.retry_config import RetryConfig
from axonflow_llm.pipeline.errors import (
    APIConnectionError,
    AuthenticationError,
    BadRequestError,
    MalformedResponseError,
    OverloadedError,
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
from axonflow_llm.providers.anthropic import AnthropicProvider
from axonflow_llm.testing.fake_server import FakeLLMServer, Fault, fake_llm_server

KEY = "sk-ant-api03-FAKEFAKEFAKEFAKE-secret"

# The documented non-streamed example (Messages API reference).
EXAMPLE_MESSAGE = {
    "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
    "type": "message",
    "role": "assistant",
    "content": [{"type": "text", "text": "Hi! My name is Claude."}],
    "model": "claude-sonnet-4-5-20250929",
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 2095, "output_tokens": 503},
}

# The documented "basic streaming request" event flow (Streaming Messages guide).
EXAMPLE_STREAM = """event: message_start
data: {"type": "message_start", "message": {"id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "type": "message", "role": "assistant", "content": [], "model": "claude-sonnet-4-5-20250929", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 25, "output_tokens": 1}}}

event: content_block_start
data: {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}}

event: content_block_stop
data: {"type": "content_block_stop", "index": 0}

event: message_delta
data: {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence":null}, "usage": {"output_tokens": 15}}

event: message_stop
data: {"type": "message_stop"}

"""  # noqa: E501


class ClosableStream(httpx.AsyncByteStream):
    """A response body that remembers being closed."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for line in self.data.splitlines(keepends=True):
            yield line

    async def aclose(self) -> None:
        self.closed = True


class Recorder:
    """A MockTransport handler answering from a queue, keeping every request it saw."""

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

    def body(self, i: int = -1) -> Any:
        return json.loads(self.requests[i].content)


def sse(text: str, *, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        200,
        headers={"content-type": "text/event-stream", **(headers or {})},
        stream=ClosableStream(text.encode()),
    )


def make(rec: Recorder, **kwargs: Any) -> AnthropicProvider:
    client = httpx.AsyncClient(transport=httpx.MockTransport(rec))
    kwargs.setdefault("api_key", KEY)
    kwargs.setdefault("pipeline", Pipeline())
    return AnthropicProvider(http_client=client, **kwargs)


async def collect(provider: AnthropicProvider, request: CompletionRequest) -> list[StreamChunk]:
    async with provider.stream(request) as stream:
        return [chunk async for chunk in stream]


async def drain_into(provider: AnthropicProvider, request: CompletionRequest, got: list[str]) -> None:
    """Read a stream to its end, keeping the text of each chunk as it arrives (even if it then fails)."""
    async with provider.stream(request) as stream:
        async for chunk in stream:
            got.append(chunk.content)


async def call(provider: AnthropicProvider, request: CompletionRequest, *, streaming: bool) -> None:
    if streaming:
        await collect(provider, request)
    else:
        await provider.complete(request)


REQ = CompletionRequest(prompt="Hello, Claude")


# --- requests -------------------------------------------------------------------------------------------


async def test_plain_call_sends_the_documented_request() -> None:
    rec = Recorder(httpx.Response(200, json=EXAMPLE_MESSAGE))
    provider = make(rec, model="claude-sonnet-4-5")
    await provider.complete(CompletionRequest(prompt="Hello, Claude", system_prompt="Be brief.", temperature=0))
    req = rec.last
    assert req.method == "POST"
    assert str(req.url) == "https://api.anthropic.com/v1/messages"
    assert req.headers["x-api-key"] == KEY
    assert req.headers["anthropic-version"] == "2023-06-01"
    assert req.headers["content-type"] == "application/json"
    assert "authorization" not in req.headers
    assert rec.body() == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": "Hello, Claude"}],
        "system": "Be brief.",
        "temperature": 0,
    }


async def test_streamed_call_asks_for_a_stream() -> None:
    rec = Recorder(sse(EXAMPLE_STREAM))
    provider = make(rec)
    await collect(provider, REQ)
    assert rec.body()["stream"] is True
    assert rec.last.url.path == "/v1/messages"


async def test_sampling_parameters_are_sent_only_when_set() -> None:
    rec = Recorder(httpx.Response(200, json=EXAMPLE_MESSAGE))
    provider = make(rec)
    await provider.complete(REQ)
    assert set(rec.body()) == {"model", "max_tokens", "messages"}
    await provider.complete(
        CompletionRequest(prompt="x", temperature=0.7, top_p=0.9, top_k=40, stop_sequences=["\n\nHuman:"])
    )
    body = rec.body()
    assert body["temperature"] == 0.7
    assert body["top_p"] == 0.9
    assert body["top_k"] == 40
    assert body["stop_sequences"] == ["\n\nHuman:"]


async def test_system_messages_move_to_the_top_level_system() -> None:
    rec = Recorder(httpx.Response(200, json=EXAMPLE_MESSAGE))
    provider = make(rec)
    await provider.complete(
        CompletionRequest(
            system_prompt="You are terse.",
            messages=[
                Message(role="system", content="Answer in French."),
                Message(role="user", content="Hi"),
                Message(role="assistant", content="Salut"),
                Message(role="tool", content="42"),
            ],
            prompt="And now?",
        )
    )
    body = rec.body()
    assert body["system"] == "You are terse.\n\nAnswer in French."
    assert body["messages"] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Salut"},
        {"role": "user", "content": "Tool result:\n42"},  # a labelled user turn: Message has no tool_use_id
        {"role": "user", "content": "And now?"},  # consecutive user turns: the API combines them
    ]


async def test_max_tokens_comes_from_the_request_then_the_provider_then_4096() -> None:
    rec = Recorder(httpx.Response(200, json=EXAMPLE_MESSAGE))
    await make(rec).complete(REQ)
    assert rec.body()["max_tokens"] == 4096
    provider = make(rec, max_tokens=300)
    await provider.complete(REQ)
    assert rec.body()["max_tokens"] == 300
    await provider.complete(CompletionRequest(prompt="x", max_tokens=12))
    assert rec.body()["max_tokens"] == 12


async def test_request_model_overrides_the_provider_model() -> None:
    rec = Recorder(httpx.Response(200, json=EXAMPLE_MESSAGE))
    await make(rec, model="claude-haiku-4-5").complete(CompletionRequest(prompt="x", model="claude-opus-4-1"))
    assert rec.body()["model"] == "claude-opus-4-1"


async def test_only_system_text_is_refused_before_sending() -> None:
    rec = Recorder(httpx.Response(200, json=EXAMPLE_MESSAGE))
    with pytest.raises(ValueError, match="at least one user or assistant message"):
        await make(rec).complete(CompletionRequest(messages=[Message(role="system", content="x")]))
    assert rec.requests == []


@pytest.mark.parametrize("endpoint", ["https://proxy.example/anthropic", "https://proxy.example/anthropic/"])
async def test_endpoint_is_the_base_url_and_a_trailing_slash_is_harmless(endpoint: str) -> None:
    rec = Recorder(httpx.Response(200, json=EXAMPLE_MESSAGE))
    await make(rec, endpoint=endpoint).complete(REQ)
    assert str(rec.last.url) == "https://proxy.example/anthropic/v1/messages"


# --- responses ------------------------------------------------------------------------------------------


async def test_documented_response_maps_to_a_completion_response() -> None:
    rec = Recorder(httpx.Response(200, json=EXAMPLE_MESSAGE, headers={"request-id": "req_018EeWyXxfu5pfWkrYcMdjWG"}))
    resp = await make(rec).complete(REQ)
    assert resp.content == "Hi! My name is Claude."
    assert resp.model == "claude-sonnet-4-5-20250929"
    assert resp.usage == UsageStats(prompt_tokens=2095, completion_tokens=503, total_tokens=2598)
    assert resp.finish_reason is FinishReason.STOP
    assert resp.request_id == "req_018EeWyXxfu5pfWkrYcMdjWG"
    assert resp.provider == "anthropic"
    assert resp.latency >= 0
    assert resp.metadata["id"] == "msg_013Zva2CMHLNnXjNJJKqJ2EF"


async def test_text_blocks_are_joined_and_other_blocks_skipped() -> None:
    body = {
        **EXAMPLE_MESSAGE,
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "x"},
            {"type": "text", "text": "Part one. "},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
            {"type": "text", "text": "Part two."},
        ],
        "stop_reason": "tool_use",
    }
    resp = await make(Recorder(httpx.Response(200, json=body))).complete(REQ)
    assert resp.content == "Part one. Part two."
    assert resp.finish_reason is FinishReason.TOOL_CALLS


@pytest.mark.parametrize(
    ("stop_reason", "expected"),
    [
        ("end_turn", FinishReason.STOP),
        ("stop_sequence", FinishReason.STOP),
        ("max_tokens", FinishReason.LENGTH),
        ("model_context_window_exceeded", FinishReason.LENGTH),
        ("tool_use", FinishReason.TOOL_CALLS),
        ("refusal", FinishReason.CONTENT_FILTER),
        ("pause_turn", None),
        ("something_new", None),
        (None, None),
    ],
)
async def test_stop_reasons_are_normalised(stop_reason: str | None, expected: FinishReason | None) -> None:
    resp = await make(Recorder(httpx.Response(200, json={**EXAMPLE_MESSAGE, "stop_reason": stop_reason}))).complete(REQ)
    assert resp.finish_reason is expected


async def test_cache_tokens_count_as_prompt_tokens() -> None:
    usage = {
        "input_tokens": 10,
        "cache_creation_input_tokens": 200,
        "cache_read_input_tokens": 3000,
        "output_tokens": 7,
    }
    resp = await make(Recorder(httpx.Response(200, json={**EXAMPLE_MESSAGE, "usage": usage}))).complete(REQ)
    assert resp.usage == UsageStats(prompt_tokens=3210, completion_tokens=7, total_tokens=3217)
    assert resp.metadata["cache_read_input_tokens"] == 3000
    assert resp.metadata["cache_creation_input_tokens"] == 200


@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"type": "message"}', b'{"content": "not a list", "usage": {}}', b"[]"],
)
async def test_malformed_answer_raises_malformed_response_error(body: bytes) -> None:
    rec = Recorder(httpx.Response(200, content=body))
    with pytest.raises(MalformedResponseError) as info:
        await make(rec).complete(REQ)
    assert info.value.provider == "anthropic"
    assert "anthropic" in str(info.value)


# --- streams --------------------------------------------------------------------------------------------


async def test_documented_stream_yields_text_deltas_then_a_done_chunk() -> None:
    chunks = await collect(make(Recorder(sse(EXAMPLE_STREAM))), REQ)
    assert [c.content for c in chunks] == ["Hello", "!", ""]
    assert not chunks[0].done
    final = chunks[-1]
    assert final.done
    assert final.finish_reason is FinishReason.STOP
    assert final.usage == UsageStats(prompt_tokens=25, completion_tokens=15, total_tokens=40)


async def test_stream_usage_takes_input_counts_updated_by_message_delta() -> None:
    text = EXAMPLE_STREAM.replace(
        '"usage": {"output_tokens": 15}',
        '"usage": {"input_tokens": 30, "cache_read_input_tokens": 5, "output_tokens": 15}',
    )
    chunks = await collect(make(Recorder(sse(text))), REQ)
    assert chunks[-1].usage == UsageStats(prompt_tokens=35, completion_tokens=15, total_tokens=50)


async def test_non_text_deltas_are_not_content() -> None:
    extra = (
        'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 1, '
        '"delta": {"type": "input_json_delta", "partial_json": "{\\"a\\": 1"}}\n\n'
        'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, '
        '"delta": {"type": "thinking_delta", "thinking": "hmm"}}\n\n'
        "event: brand_new_event\ndata: {}\n\n"
    )
    text = EXAMPLE_STREAM.replace("event: content_block_stop", extra + "event: content_block_stop")
    chunks = await collect(make(Recorder(sse(text))), REQ)
    assert "".join(c.content for c in chunks) == "Hello!"


@pytest.mark.parametrize(
    ("error_type", "cls", "status"),
    [
        ("overloaded_error", OverloadedError, 529),
        ("rate_limit_error", RateLimitError, 429),
        ("api_error", ServerError, 500),
        ("invalid_request_error", BadRequestError, 400),
        ("authentication_error", AuthenticationError, 401),
        ("unheard_of_error", ServerError, 500),
    ],
)
async def test_error_event_in_a_200_stream_raises_its_typed_error(
    error_type: str, cls: type[Exception], status: int
) -> None:
    payload = json.dumps({"type": "error", "error": {"type": error_type, "message": "Overloaded"}})
    error = f"event: error\ndata: {payload}\n\n"
    text = EXAMPLE_STREAM.split("event: content_block_stop")[0] + error
    body = ClosableStream(text.encode())
    response = httpx.Response(200, headers={"content-type": "text/event-stream", "request-id": "req_1"}, stream=body)
    provider = make(Recorder(response))
    got: list[str] = []
    with pytest.raises(cls) as info:
        await drain_into(provider, REQ, got)
    assert got == ["Hello", "!"]
    err = info.value
    assert type(err) is cls
    assert err.status_code == status  # type: ignore[attr-defined]
    assert err.request_id == "req_1"  # type: ignore[attr-defined]
    assert error_type in str(err)
    assert body.closed


async def test_error_event_before_any_text_is_raised_before_the_first_chunk() -> None:
    text = 'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}\n\n'
    with pytest.raises(OverloadedError):
        await collect(make(Recorder(sse(text))), REQ)


async def test_stream_without_message_stop_is_interrupted() -> None:
    text = EXAMPLE_STREAM.split("event: message_stop")[0]
    got: list[str] = []
    with pytest.raises(StreamInterruptedError) as info:
        await drain_into(make(Recorder(sse(text))), REQ, got)
    assert got == ["Hello", "!"]
    assert info.value.provider == "anthropic"


async def test_stream_event_with_bad_json_is_malformed() -> None:
    text = EXAMPLE_STREAM.replace('"text": "!"}}', '"text": "!"')
    with pytest.raises(MalformedResponseError, match="content_block_delta"):
        await collect(make(Recorder(sse(text))), REQ)


async def test_stream_closed_early_closes_the_response() -> None:
    body = ClosableStream(EXAMPLE_STREAM.encode())
    provider = make(Recorder(httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=body)))
    async with provider.stream(REQ) as stream:
        async for chunk in stream:
            assert chunk.content == "Hello"
            break
    assert body.closed


async def test_stream_read_to_the_end_closes_the_response() -> None:
    body = ClosableStream(EXAMPLE_STREAM.encode())
    provider = make(Recorder(httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=body)))
    await collect(provider, REQ)
    assert body.closed


# --- HTTP errors ----------------------------------------------------------------------------------------


def error_body(error_type: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "message": message}, "request_id": "req_x"}


@pytest.mark.parametrize(
    ("status", "error_type", "cls"),
    [
        (400, "invalid_request_error", BadRequestError),
        (401, "authentication_error", AuthenticationError),
        (403, "permission_error", AuthenticationError),
        (404, "not_found_error", BadRequestError),
        (429, "rate_limit_error", RateLimitError),
        (500, "api_error", ServerError),
        (529, "overloaded_error", OverloadedError),
    ],
)
@pytest.mark.parametrize("streaming", [False, True])
async def test_http_errors_map_to_typed_errors(
    status: int, error_type: str, cls: type[Exception], streaming: bool
) -> None:
    response = httpx.Response(
        status,
        json=error_body(error_type, "Something specific went wrong"),
        headers={"request-id": "req_42", "retry-after": "3"},
    )
    provider = make(Recorder(response))
    with pytest.raises(cls) as info:
        await call(provider, REQ, streaming=streaming)
    err = info.value
    assert type(err) is cls
    assert err.status_code == status  # type: ignore[attr-defined]
    assert err.message == "Something specific went wrong"  # type: ignore[attr-defined]
    assert err.request_id == "req_42"  # type: ignore[attr-defined]
    assert err.retry_after == 3.0  # type: ignore[attr-defined]


async def test_connection_failure_is_a_connection_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(APIConnectionError):
        await make(Recorder(refuse)).complete(REQ)


# --- credentials ----------------------------------------------------------------------------------------


async def test_the_key_never_appears_in_errors_or_reprs() -> None:
    echoed = error_body("authentication_error", f"invalid x-api-key {KEY}")
    provider = make(Recorder(httpx.Response(401, json=echoed, text=None)))
    with pytest.raises(AuthenticationError) as info:
        await provider.complete(REQ)
    err = info.value
    for text in (str(err), repr(err), err.body or "", repr(provider), repr(provider.info), repr(provider.info.auth)):
        assert KEY not in text
    config = ProviderConfig(name="a", type=ProviderType.ANTHROPIC, api_key=KEY)
    assert KEY not in repr(config)


def test_missing_key_says_how_to_fix_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(ValueError, match=r"api_key=.*ANTHROPIC_API_KEY"):
        AnthropicProvider(pipeline=Pipeline())


async def test_key_falls_back_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-from-env-12345")
    rec = Recorder(httpx.Response(200, json=EXAMPLE_MESSAGE))
    client = httpx.AsyncClient(transport=httpx.MockTransport(rec))
    provider = AnthropicProvider(http_client=client, pipeline=Pipeline())
    await provider.complete(REQ)
    assert rec.last.headers["x-api-key"] == "sk-ant-from-env-12345"


# --- construction, health, cost -------------------------------------------------------------------------


async def test_from_config_reads_every_field() -> None:
    rec = Recorder(httpx.Response(200, json=EXAMPLE_MESSAGE))
    config = ProviderConfig(
        name="claude",
        type=ProviderType.ANTHROPIC,
        api_key=KEY,
        model="claude-haiku-4-5",
        endpoint="https://gateway.example/",
        max_tokens=77,
        settings={"headers": {"anthropic-beta": "prompt-caching-2024-07-31"}},
    )
    provider = AnthropicProvider.from_config(
        config, http_client=httpx.AsyncClient(transport=httpx.MockTransport(rec)), pipeline=Pipeline()
    )
    assert provider.name == "claude"
    assert provider.type is ProviderType.ANTHROPIC
    await provider.complete(REQ)
    assert str(rec.last.url) == "https://gateway.example/v1/messages"
    assert rec.body()["model"] == "claude-haiku-4-5"
    assert rec.body()["max_tokens"] == 77
    assert rec.last.headers["anthropic-beta"] == "prompt-caching-2024-07-31"


async def test_default_pipeline_is_built_when_none_is_given() -> None:
    provider = AnthropicProvider(api_key=KEY)
    assert len(provider.pipeline) >= 1
    assert "AuthMiddleware" in provider.pipeline.names()
    await provider.aclose()


async def test_health_check_lists_models_without_spending_tokens() -> None:
    rec = Recorder(httpx.Response(200, json={"data": [], "has_more": False}))
    result = await make(rec).health_check()
    assert result.status is HealthStatus.HEALTHY
    assert rec.last.method == "GET"
    assert str(rec.last.url) == "https://api.anthropic.com/v1/models"
    assert rec.last.headers["x-api-key"] == KEY
    assert rec.last.headers["anthropic-version"] == "2023-06-01"


async def test_health_check_reports_failures_without_raising() -> None:
    rec = Recorder(httpx.Response(401, json=error_body("authentication_error", "invalid x-api-key")))
    result = await make(rec).health_check()
    assert result.status is HealthStatus.UNHEALTHY
    assert "invalid x-api-key" in result.message

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    result = await make(Recorder(refuse)).health_check()
    assert result.status is HealthStatus.UNHEALTHY


def test_capabilities_and_cost_estimate() -> None:
    provider = make(Recorder(httpx.Response(200)), model="claude-sonnet-4-5")
    assert provider.supports_streaming()
    estimate = provider.estimate_cost(CompletionRequest(prompt="hello " * 100, max_tokens=100))
    assert estimate is not None
    assert estimate.input_cost_per_1k == pytest.approx(0.003)
    assert estimate.output_cost_per_1k == pytest.approx(0.015)
    assert provider.estimate_cost(CompletionRequest(prompt="x", model="no-such-model")) is None


# --- over real sockets, against the fake server ---------------------------------------------------------

SOCKET_REQ = CompletionRequest(prompt="hello over a real socket")
BOUND = 5.0  # seconds: no socket test may take longer, whatever the fault


@pytest.fixture
def llm_server() -> Iterator[FakeLLMServer]:
    with fake_llm_server() as server:
        yield server


def over_sockets(server: FakeLLMServer, *, retry: bool = False, **kwargs: Any) -> AnthropicProvider:
    """A provider with its own default HTTP client, pointed at the fake server."""
    layers = [Layer(RetryMiddleware, config=RetryConfig(initial_backoff=0.001, max_backoff=0.01))] if retry else []
    return AnthropicProvider(api_key=KEY, endpoint=server.url, pipeline=Pipeline(layers), **kwargs)


async def finish(provider: AnthropicProvider, server: FakeLLMServer) -> None:
    await provider.aclose()
    assert await server.wait_for_open_connections(0, within=2.0) == 0


async def test_plain_and_streamed_calls_over_sockets(llm_server: FakeLLMServer) -> None:
    provider = over_sockets(llm_server)
    async with asyncio.timeout(BOUND):
        resp = await provider.complete(SOCKET_REQ)
        assert resp.content == "echo: hello over a real socket"
        assert resp.finish_reason is FinishReason.STOP
        assert resp.usage.completion_tokens > 0
        assert resp.request_id
        seen = llm_server.last_request
        assert seen.path == "/v1/messages"
        assert seen.headers["x-api-key"] == KEY
        assert seen.headers["anthropic-version"] == "2023-06-01"
        chunks = await collect(provider, SOCKET_REQ)
        assert "".join(c.content for c in chunks) == "echo: hello over a real socket"
        assert chunks[-1].done
        assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens > 0
        assert llm_server.last_request.json["stream"] is True
    await finish(provider, llm_server)


# The generic faults (Retry-After, latency, stalls, drops, malformed JSON, the default error event, missing
# end markers), plain and streamed, are in test_fault_matrix.py for all six providers; here, what is
# particular to this provider.
FAULTS: list[tuple[str, Fault, bool, type[Exception]]] = [
    ("529", Fault.status(529), False, OverloadedError),
    ("500", Fault.status(500), True, ServerError),
    ("401", Fault.status(401), False, AuthenticationError),
    ("error event first", Fault.error_event(after_chunks=0), True, OverloadedError),
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
        # The provider is still usable afterwards.
        assert (await provider.complete(SOCKET_REQ)).content.startswith("echo:")
    await finish(provider, llm_server)


RETRYABLE: list[tuple[str, Fault, bool]] = [
    (label, fault, streaming)
    for label, fault in [
        ("529", Fault.status(529, retry_after_ms=5)),
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


@pytest.mark.live
async def test_live_call_to_anthropic() -> None:
    if os.environ.get("AXONFLOW_LIVE_TESTS") != "1" or not os.environ.get("ANTHROPIC_API_KEY"):
        pytest.skip("live test: set AXONFLOW_LIVE_TESTS=1 and ANTHROPIC_API_KEY to call the real Anthropic API")
    provider = AnthropicProvider(model=os.environ.get("AXONFLOW_ANTHROPIC_MODEL", "claude-haiku-4-5"))
    try:
        async with asyncio.timeout(60):
            resp = await provider.complete(CompletionRequest(prompt="Say OK.", max_tokens=5))
            assert resp.content
            assert resp.usage.total_tokens > 0
            chunks = await collect(provider, CompletionRequest(prompt="Say OK.", max_tokens=5))
            assert chunks[-1].done
            assert (await provider.health_check()).status is HealthStatus.HEALTHY
    finally:
        await provider.aclose()


@settings(deadline=None, max_examples=60)
@given(texts=st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=8))
async def test_any_text_deltas_come_out_as_sent_then_done(texts: list[str]) -> None:
    deltas = "".join(
        "event: content_block_delta\ndata: "
        + json.dumps({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}})
        + "\n\n"
        for t in texts
    )
    head, tail = EXAMPLE_STREAM.split("event: content_block_delta", 1)
    tail = tail[tail.index("event: content_block_stop") :]
    chunks = await collect(make(Recorder(sse(head + deltas + tail))), REQ)
    assert [c.content for c in chunks[:-1]] == texts
    assert chunks[-1].done and not any(c.done for c in chunks[:-1])
