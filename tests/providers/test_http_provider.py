"""HTTPProvider and the transports: the leaf's error mapping, stream safety (always closed), auth, timeouts."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import re
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import httpx
import msgspec
import pytest

from axonflow_llm.pipeline.context import CallContext
from axonflow_llm.pipeline.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConfigError,
    OverloadedError,
    RateLimitError,
    ServerError,
    StreamInterruptedError,
    request_secrets,
)
from axonflow_llm.pipeline.models import (
    CompletionRequest,
    CompletionResponse,
    FinishReason,
    HealthStatus,
    Message,
    ProviderConfig,
    ProviderType,
    StreamChunk,
)
from axonflow_llm.pipeline.pipeline import Pipeline
from axonflow_llm.providers.http_provider import (
    RAW_FINISH_REASON,
    TOOL_RESULT_PREFIX,
    HTTPChunkStream,
    HTTPProvider,
    excerpt,
)
from axonflow_llm.providers.transport import (
    DEFAULT_TIMEOUT,
    AiohttpTransport,
    default_http_client,
    default_timeout,
    default_transport,
    user_agent,
)
from axonflow_llm.testing.fake_server import FakeLLMServer, Fault

REQ = CompletionRequest(prompt="hi")


class _Line(msgspec.Struct):
    text: str = ""
    done: bool = False


class LineProvider(HTTPProvider):
    """A toy wire: POST /gen -> {"text"}; streamed as JSON lines, the last with "done": true."""

    def __init__(self, **kw: Any) -> None:
        kw.setdefault("name", "toy")
        kw.setdefault("endpoint", "http://toy.test")
        kw.setdefault("pipeline", Pipeline())
        super().__init__(**kw)

    def build_request(self, request: CompletionRequest, ctx: CallContext) -> httpx.Request:
        return self.json_request("POST", self.url("/gen"), {"prompt": request.prompt, "stream": ctx.streaming})

    def parse_response(self, response: httpx.Response, request: CompletionRequest, *,
                       latency: float) -> CompletionResponse:
        return CompletionResponse(content=self.decode(response, _Line).text, latency=latency, provider=self.name,
                                  request_id=self.request_id(response))

    async def parse_stream(self, response: httpx.Response, request: CompletionRequest) -> AsyncIterator[StreamChunk]:
        async for line in self.ndjson_lines(response):
            item = msgspec.json.decode(line, type=_Line)
            yield StreamChunk(content=item.text, done=item.done)


class TrackedBody(httpx.AsyncByteStream):
    """A response body that yields ``parts`` (an exception part is raised) and records being closed."""

    def __init__(self, *parts: bytes | BaseException, gap: float = 0.0) -> None:
        self.parts = parts
        self.gap = gap
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            if self.gap:
                await asyncio.sleep(self.gap)
            if isinstance(part, BaseException):
                raise part
            yield part

    async def aclose(self) -> None:
        self.closed = True


def client_for(body: TrackedBody, status: int = 200) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(lambda request: httpx.Response(status, stream=body)))


L1, L2, DONE = b'{"text": "a"}\n', b'{"text": "b"}\n', b'{"done": true}\n'


# --- streams: always closed, drops mapped by position --------------------------------------------------


async def test_exhausted_stream_closes_the_response() -> None:
    body = TrackedBody(L1, L2, DONE)
    p = LineProvider(http_client=client_for(body))
    chunks = [c async for c in p.stream(REQ)]
    assert [c.content for c in chunks] == ["a", "b", ""] and chunks[-1].done and body.closed


async def test_stopping_at_the_done_chunk_already_released_the_response() -> None:
    body = TrackedBody(L1, DONE)
    p = LineProvider(http_client=client_for(body))
    async for chunk in p.stream(REQ):
        if chunk.done:
            assert body.closed  # the end marker was handled before the chunk reached the caller
            break


async def test_closing_early_closes_the_response() -> None:
    body = TrackedBody(L1, L2, DONE)
    p = LineProvider(http_client=client_for(body))
    async with p.stream(REQ) as stream:
        await stream.__anext__()
    assert body.closed


async def test_closing_before_the_first_chunk_closes_the_response() -> None:
    body = TrackedBody(L1, L2, DONE)
    p = LineProvider(http_client=client_for(body))
    stream = await p.send(REQ, CallContext(p.info, streaming=True))  # what a middleware holds
    assert not body.closed
    await stream.aclose()  # type: ignore[union-attr]
    assert body.closed


async def test_cancelling_the_reader_closes_the_response() -> None:
    body = TrackedBody(L1, L2, DONE, gap=5.0)
    p = LineProvider(http_client=client_for(body))

    async def read() -> None:
        async for _ in p.stream(REQ):
            pass

    task = asyncio.create_task(read())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert body.closed


@pytest.mark.parametrize(("parts", "error", "chunks"), [
    ((httpx.ReadError("reset"),), APIConnectionError, 0),
    ((httpx.ReadTimeout("slow"),), APITimeoutError, 0),
    ((L1, httpx.ReadError("reset")), StreamInterruptedError, 1),
    ((L1, L2), StreamInterruptedError, 2),  # the body ended without the end marker
])
async def test_a_broken_stream_is_mapped_by_where_it_broke(parts: tuple[Any, ...], error: type, chunks: int) -> None:
    body = TrackedBody(*parts)
    p = LineProvider(http_client=client_for(body))
    got: list[StreamChunk] = []
    with pytest.raises(error) as info:
        await drain(p.stream(REQ), got)
    assert type(info.value) is error and len(got) == chunks and body.closed
    if isinstance(info.value, StreamInterruptedError):
        assert info.value.chunks_received == chunks
    if isinstance(parts[-1], BaseException):
        assert info.value.__cause__ is parts[-1]


async def test_an_error_status_on_a_stream_reads_the_body_and_closes_it() -> None:
    body = TrackedBody(b'{"error": {"message": "slow down"}}')
    p = LineProvider(http_client=httpx.AsyncClient(transport=httpx.MockTransport(
        lambda r: httpx.Response(429, stream=body, headers={"retry-after": "3", "x-request-id": "r-1"}))))
    with pytest.raises(RateLimitError) as info:
        await drain(p.stream(REQ), [])
    assert (info.value.message, info.value.retry_after, info.value.request_id) == ("slow down", 3.0, "r-1")
    assert body.closed


async def test_a_redirect_is_an_error_naming_the_fix_not_a_healthy_or_malformed_answer() -> None:
    bodies: list[TrackedBody] = []

    def moved(request: httpx.Request) -> httpx.Response:
        bodies.append(TrackedBody(b"<html>Moved</html>"))
        return httpx.Response(301, stream=bodies[-1], headers={"location": "https://toy.test/gen"})

    p = LineProvider(http_client=httpx.AsyncClient(transport=httpx.MockTransport(moved)))
    with pytest.raises(APIError) as plain:
        await p.complete(REQ)
    with pytest.raises(APIError) as streamed:
        await drain(p.stream(REQ), [])
    for info in (plain, streamed):
        assert info.value.status_code == 301 and not info.value.retryable
        assert "redirected to https://toy.test/gen; redirects are not followed" in str(info.value)
    health = await p.probe("GET", p.url("/models"))
    assert health.status is HealthStatus.UNHEALTHY and "redirects are not followed" in health.message
    assert all(b.closed for b in bodies)


async def test_a_provider_without_parse_stream_says_so_and_closes_the_response() -> None:
    class PlainOnly(LineProvider):
        parse_stream = HTTPProvider.parse_stream  # type: ignore[assignment]

    body = TrackedBody(L1, DONE)
    p = PlainOnly(http_client=client_for(body))
    with pytest.raises(NotImplementedError, match="must implement parse_stream"):
        await drain(p.stream(REQ), [])
    assert body.closed


async def test_chunk_stream_repr_and_counters() -> None:
    p = LineProvider(http_client=client_for(TrackedBody(L1, DONE)))
    ctx = CallContext(p.info, streaming=True)
    stream = await p.send(REQ, ctx)
    assert isinstance(stream, HTTPChunkStream)
    assert (await stream.__anext__()).content == "a"
    assert stream.chunks_received == 1 and "chunks=1" in repr(stream)
    await stream.aclose()
    await stream.aclose()  # idempotent
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()


async def drain(stream: Any, into: list[StreamChunk]) -> None:
    async for chunk in stream:
        into.append(chunk)


# --- errors and auth ---------------------------------------------------------------------------------


def test_a_timeout_caused_by_a_dropped_connection_is_a_connection_error() -> None:
    # httpx_aiohttp reports aiohttp's ServerDisconnectedError as httpx.ConnectTimeout.
    p = LineProvider()
    exc = httpx.ConnectTimeout("Server disconnected")
    exc.__cause__ = ConnectionResetError("reset")
    assert type(p._connection_error(exc)) is APIConnectionError
    real = httpx.ConnectTimeout("timed out")
    real.__cause__ = TimeoutError()
    assert type(p._connection_error(real)) is APITimeoutError


@pytest.mark.parametrize(("kind", "cls", "status"), [
    ("rate_limit_exceeded", RateLimitError, 429), ("authentication_error", AuthenticationError, 401),
    ("invalid_request_error", BadRequestError, 400), ("overloaded_error", OverloadedError, 529),
    ("server_error", ServerError, 500), (None, ServerError, 500),
])
def test_stream_error_kinds(kind: str | None, cls: type, status: int) -> None:
    err = LineProvider().stream_error("boom sk-abcdefghijklmnop", kind=kind)
    assert type(err) is cls and err.status_code == status and "sk-abcdefghijklmnop" not in str(err)


async def test_auth_objects_and_httpx_auth_are_both_applied() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"text": "ok"})

    class Stamp:
        def apply(self, request: httpx.Request) -> None:
            request.headers["x-stamp"] = "1"

    class FlowAuth(httpx.Auth):
        def auth_flow(self, request: httpx.Request) -> Any:
            request.headers["x-flow"] = "1"
            yield request

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    await LineProvider(http_client=client, auth=Stamp()).complete(REQ)
    assert seen[-1].headers["x-stamp"] == "1"
    await LineProvider(http_client=client, auth=FlowAuth()).complete(REQ)
    assert seen[-1].headers["x-flow"] == "1"
    with pytest.raises(TypeError, match="apply"):
        await LineProvider(http_client=client, auth=object()).complete(REQ)


async def test_a_handed_in_client_keeps_its_own_headers_and_timeout() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"text": "ok"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler), headers={"x-team": "blue"},
                                 timeout=42.0) as client:
        await LineProvider(http_client=client).complete(REQ)
        assert seen[-1].headers["x-team"] == "blue"
        assert seen[-1].extensions["timeout"]["read"] == 42.0
        await LineProvider(http_client=client, timeout=7).complete(REQ)
        assert seen[-1].extensions["timeout"] == {"connect": 5.0, "read": 7.0, "write": 7.0, "pool": 7.0}
        assert seen[-1].headers["user-agent"] == user_agent()


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"endpoint": "toy.test"}, "http:// or https://"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"timeout": -1}, "timeout"),
    ({"http_client": object()}, "httpx.AsyncClient"),
    ({"pipeline": [1]}, "Pipeline"),
])
def test_bad_construction_says_what_to_fix(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        LineProvider(**kwargs)


def test_defaults() -> None:
    assert user_agent().startswith("axonflow-llm/")
    assert (DEFAULT_TIMEOUT.connect, DEFAULT_TIMEOUT.read) == (5.0, 600.0)
    assert default_timeout(None) is DEFAULT_TIMEOUT
    assert (default_timeout(2).connect, default_timeout(2).read) == (2.0, 2.0)
    with pytest.raises(ValueError, match="transport"):
        default_transport(transport="curl")  # type: ignore[arg-type]
    assert isinstance(default_transport(), AiohttpTransport)
    assert isinstance(default_transport(transport="httpx"), httpx.AsyncHTTPTransport)


def test_from_config_on_a_subclass_that_takes_api_key_and_settings() -> None:
    seen: dict[str, Any] = {}

    class Configured(LineProvider):
        def __init__(self, *, api_key: str | None = None, settings: Any = None, **kw: Any) -> None:
            seen.update(api_key=api_key, settings=settings)
            super().__init__(**kw)

    config = ProviderConfig(name="cfg", type=ProviderType.CUSTOM, endpoint="http://x.test/", max_tokens=9,
                            api_key="sk-cfg-0123456789", settings={"flavour": "x"})
    p = Configured.from_config(config)
    assert (p.name, p.endpoint, p.default_max_tokens) == ("cfg", "http://x.test", 9)
    assert seen == {"api_key": "sk-cfg-0123456789", "settings": {"flavour": "x"}}


class Acme(HTTPProvider):
    """A user's provider as the docs show it: the base constructor, nothing else."""

    provider_type = ProviderType.CUSTOM

    def build_request(self, request: CompletionRequest, ctx: CallContext) -> httpx.Request:
        return self.json_request("POST", self.url("/gen"), {"prompt": request.prompt})

    def parse_response(self, response: httpx.Response, request: CompletionRequest, *,
                       latency: float) -> CompletionResponse:
        return CompletionResponse(content=self.decode(response, _Line).text, provider=self.name)


async def test_the_generic_from_config_builds_a_plain_subclass() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"text": "ok"})

    config = ProviderConfig(
        name="acme", type=ProviderType.CUSTOM, api_key="acme-KEY-0123456789", endpoint="https://acme.test/v1/",
        model="acme-1", max_tokens=64, timeout=30,
        settings={"headers": {"X-Team": "blue"}, "retry": {"max_retries": 1},
                  "pricing": {"acme-1": {"input_per_1m": 1.0, "output_per_1m": 2.0}}},
    )
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        p = Acme.from_config(config, http_client=client, pipeline=Pipeline())
        assert (p.name, p.model, p.endpoint, p.default_max_tokens, p.type) == (
            "acme", "acme-1", "https://acme.test/v1", 64, ProviderType.CUSTOM)
        assert (await p.complete(REQ)).content == "ok"
    # api_key became auth=APIKeyAuth(...) (a Bearer token); settings["headers"] became headers=.
    assert seen[-1].headers["authorization"] == "Bearer acme-KEY-0123456789"
    assert seen[-1].headers["x-team"] == "blue"
    assert seen[-1].extensions["timeout"]["read"] == 30.0
    # settings["pricing"] became prices=: the estimate uses it (64 output tokens: the provider's max_tokens).
    estimate = p.estimate_cost(CompletionRequest(prompt="hi"))
    assert estimate is not None and estimate.output_cost_per_1k == pytest.approx(0.002)
    assert estimate.estimated_output_tokens == 64


@pytest.mark.parametrize(("fields", "named"), [
    ({"region": "us-east-1"}, "region"),
    ({"settings": {"flavour": "x"}}, "settings['flavour']"),
])
def test_from_config_refuses_what_the_constructor_cannot_take(fields: dict[str, Any], named: str) -> None:
    config = ProviderConfig(name="acme", type=ProviderType.CUSTOM, endpoint="https://acme.test", **fields)
    with pytest.raises(ConfigError, match=re.escape(named) + r".*override from_config"):
        Acme.from_config(config)


def test_from_config_refuses_a_key_it_has_nowhere_to_put() -> None:
    class Keyless(HTTPProvider):
        def __init__(self, *, name: str, endpoint: str, http_client: Any = None, pipeline: Any = None,
                     clock: Any = None) -> None:
            super().__init__(name=name, endpoint=endpoint, http_client=http_client, pipeline=pipeline, clock=clock)

    config = ProviderConfig(name="k", type=ProviderType.CUSTOM, endpoint="https://k.test", api_key="k-0123456789")
    with pytest.raises(ConfigError, match="api_key") as info:
        Keyless.from_config(config)
    assert "k-0123456789" not in str(info.value)
    keyless = ProviderConfig(name="k", type=ProviderType.CUSTOM, endpoint="https://k.test")
    assert Keyless.from_config(keyless).name == "k"


# --- credentials made ready by the leaf ----------------------------------------------------------------


class Refreshing:
    """A credential that must be prepared before it can be applied (as a token source is)."""

    needs_prepare = True

    def __init__(self) -> None:
        self.prepared: list[float | None] = []
        self.token: str | None = None

    async def prepare(self, now: float | None = None) -> None:
        self.prepared.append(now)
        self.token = f"tok-{len(self.prepared)}"

    def apply(self, request: httpx.Request) -> None:
        if self.token is None:
            raise RuntimeError("not prepared")
        request.headers["authorization"] = "Bearer " + self.token


class Fixed:
    """A fixed credential: its prepare() must never run (the fixed-key path does no extra work)."""

    needs_prepare = False

    async def prepare(self, now: float | None = None) -> None:
        raise AssertionError("a fixed key was prepared")

    def apply(self, request: httpx.Request) -> None:
        request.headers["authorization"] = "Bearer fixed"


def ok_client(seen: list[httpx.Request]) -> httpx.AsyncClient:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if b'"stream": true' in request.content or b'"stream":true' in request.content:
            return httpx.Response(200, content=L1 + DONE)
        return httpx.Response(200, json={"text": "ok"})

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def test_the_leaf_prepares_a_refreshing_credential_without_auth_middleware() -> None:
    from axonflow_llm.testing.fake_clock import FakeClock

    seen: list[httpx.Request] = []
    auth, clock = Refreshing(), FakeClock(100.0)
    p = LineProvider(http_client=ok_client(seen), auth=auth, clock=clock)  # pipeline: the bare leaf
    assert (await p.complete(REQ)).content == "ok"
    assert [c.content async for c in p.stream(REQ)] == ["a", ""]
    assert [r.headers["authorization"] for r in seen] == ["Bearer tok-1", "Bearer tok-2"]
    assert auth.prepared == [100.0, 100.0]  # on the provider's clock, as AuthMiddleware would pass it


async def test_the_leaf_prepares_a_per_call_credential_that_is_not_the_providers() -> None:
    seen: list[httpx.Request] = []
    other = Refreshing()
    p = LineProvider(http_client=ok_client(seen), auth=Fixed())
    ctx = CallContext(p.info)
    ctx.auth = other  # what an AuthMiddleware with its own credential leaves for the leaf
    await p.send(REQ, ctx)
    assert other.prepared == [None] and seen[-1].headers["authorization"] == "Bearer tok-1"


async def test_a_fixed_key_is_never_prepared() -> None:
    seen: list[httpx.Request] = []
    p = LineProvider(http_client=ok_client(seen), auth=Fixed())
    await p.complete(REQ)
    assert (await p.probe("GET", p.url("/health"))).status is HealthStatus.HEALTHY
    assert seen[0].headers["authorization"] == "Bearer fixed"


async def test_a_credential_that_cannot_be_prepared_fails_the_call_and_the_health_check() -> None:
    class Broken(Refreshing):
        async def prepare(self, now: float | None = None) -> None:
            raise ConfigError("no credentials found for sk-abcdefghijklmnopqrst")

    p = LineProvider(http_client=ok_client([]), auth=Broken())
    with pytest.raises(ConfigError, match="no credentials"):
        await p.complete(REQ)
    health = await p.probe("GET", p.url("/health"))
    assert health.status is HealthStatus.UNHEALTHY and "could not be prepared" in health.message
    assert "sk-abcdefghijklmnopqrst" not in health.message


# --- the error hook and the credentials scrubbed from errors ------------------------------------------


async def test_error_from_response_is_the_hook_for_a_providers_own_error_shape() -> None:
    class Tagged(LineProvider):
        def error_from_response(self, response: httpx.Response) -> APIError:
            kind = response.headers.get("x-error-kind", "?")
            return APIError.from_response(response, provider=self.name, message=f"{kind}: {response.text}")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, text="slow down", headers={"x-error-kind": "Throttled", "retry-after": "2"})

    p = Tagged(http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)))
    for call in (p.complete(REQ), drain(p.stream(REQ), [])):
        with pytest.raises(RateLimitError) as info:
            await call
        assert (info.value.message, info.value.retry_after) == ("Throttled: slow down", 2.0)
    health = await p.probe("GET", p.url("/health"), accept_error=lambda e: "throttled is fine" if
                           e.message.startswith("Throttled") else None)
    assert health.status is HealthStatus.HEALTHY and "throttled is fine" in health.message


def test_request_secrets_lists_every_credential_a_request_carries() -> None:
    request = httpx.Request("GET", "https://x.test/v1?key=AIzaQUERYKEY&alt=sse&access_token=tok-QUERY", headers={
        "authorization": "Bearer sk-BEARER", "proxy-authorization": "Basic dXNlcjpwYXNz", "x-api-key": "ant-KEY",
        "api-key": "azure-KEY", "x-goog-api-key": "goog-KEY", "x-amz-security-token": "aws-SESSION",
    })
    found = request_secrets(request)
    for secret in ("Bearer sk-BEARER", "sk-BEARER", "dXNlcjpwYXNz", "ant-KEY", "azure-KEY", "goog-KEY",
                   "aws-SESSION", "AIzaQUERYKEY", "tok-QUERY"):
        assert secret in found
    assert "sse" not in found
    text = excerpt("echo: sk-BEARER ant-KEY azure-KEY goog-KEY aws-SESSION AIzaQUERYKEY tok-QUERY", request)
    assert text == "echo: *** *** *** *** *** *** ***"


# --- the six built-in providers behave alike --------------------------------------------------------------

SIX = ("openai", "azure-openai", "anthropic", "ollama", "gemini", "bedrock")
NOWHERE = SimpleNamespace(url="http://127.0.0.1:9")  # built, never called
RAW_STOP = {"openai": "stop", "azure-openai": "stop", "anthropic": "end_turn", "ollama": "stop", "gemini": "STOP",
            "bedrock": "end_turn"}


@pytest.mark.parametrize("kind", SIX)
def test_cost_estimates_assume_the_request_then_the_provider_max_tokens(kind: str, built_in: Any) -> None:
    plain = built_in(kind, NOWHERE).estimate_cost(CompletionRequest(prompt="hi"))
    assert plain is not None
    assert plain.estimated_output_tokens == (4096 if kind == "anthropic" else 1024)  # Anthropic sends 4096
    capped = built_in(kind, NOWHERE, max_tokens=500)
    assert capped.estimate_cost(CompletionRequest(prompt="hi")).estimated_output_tokens == 500
    assert capped.estimate_cost(CompletionRequest(prompt="hi", max_tokens=7)).estimated_output_tokens == 7


@pytest.mark.parametrize("kind", SIX)
def test_prices_reach_the_estimate_and_the_default_cost_layer(kind: str, built_in: Any) -> None:
    from axonflow_llm.middleware.cost import CostMiddleware
    from axonflow_llm.middleware.pricing import ModelPrice

    p = built_in(kind, NOWHERE, model="house-model", pipeline=None,
                 prices={"house-model": ModelPrice(input_per_1m=1000.0, output_per_1m=2000.0)})
    estimate = p.estimate_cost(CompletionRequest(prompt="hi", max_tokens=10))
    assert estimate is not None and estimate.total_estimate == pytest.approx(
        (estimate.estimated_input_tokens * 1000.0 + 10 * 2000.0) / 1e6)
    cost_layer = p.pipeline[p.pipeline.index(CostMiddleware)]
    assert cost_layer.options["prices"] is p.prices
    assert p.prices is not None and p.prices.get("gpt-4o") is not None  # laid over the shipped table


@pytest.mark.parametrize("kind", SIX)
async def test_the_raw_finish_reason_is_kept_under_one_key(kind: str, fake_server: FakeLLMServer,
                                                           built_in: Any) -> None:
    async with asyncio.timeout(10):
        p = built_in(kind, fake_server)
        r = await p.complete(REQ)
        assert r.finish_reason is FinishReason.STOP
        assert r.metadata[RAW_FINISH_REASON] == RAW_STOP[kind]
        await p.aclose()


def sent_turns(kind: str, body: dict[str, Any]) -> list[tuple[str, str]]:
    """(role, text) for every text the request carried, on each provider's wire."""
    if kind == "gemini":
        return [(c["role"], part["text"]) for c in body["contents"] for part in c["parts"]]
    if kind == "bedrock":
        return [(m["role"], block["text"]) for m in body["messages"] for block in m["content"]]
    return [(m["role"], m["content"]) for m in body["messages"]]


@pytest.mark.parametrize("kind", SIX)
async def test_a_tool_turn_travels_as_labelled_user_text(kind: str, fake_server: FakeLLMServer,
                                                         built_in: Any) -> None:
    request = CompletionRequest(messages=[
        Message(role="user", content="Weather in Paris?"),
        Message(role="assistant", content="Let me check."),
        Message(role="tool", content='{"temp_c": 21}'),
    ], prompt="So?")
    async with asyncio.timeout(10):
        p = built_in(kind, fake_server)
        assert (await p.complete(request)).content.endswith("So?")  # the fake echoes the last user turn
        turns = sent_turns(kind, fake_server.last_request.json)
        await p.aclose()
    user, assistant = "user", ("model" if kind == "gemini" else "assistant")
    assert turns == [(user, "Weather in Paris?"), (assistant, "Let me check."),
                     (user, TOOL_RESULT_PREFIX + '{"temp_c": 21}'), (user, "So?")]


@pytest.mark.parametrize("kind", SIX)
async def test_extra_headers_from_settings_go_on_every_request(kind: str, fake_server: FakeLLMServer,
                                                               built_in: Any) -> None:
    async with asyncio.timeout(10):
        p = built_in(kind, fake_server, settings={"headers": {"X-Team": "blue"}})
        await p.complete(REQ)
        assert fake_server.last_request.headers["x-team"] == "blue"
        assert [c async for c in p.stream(REQ)][-1].done
        assert fake_server.last_request.headers["x-team"] == "blue"
        await p.aclose()


@pytest.mark.parametrize("kind", SIX)
@pytest.mark.parametrize("header", ["Authorization", "x-api-key", "api-key", "X-Goog-Api-Key", "Host"])
def test_extra_headers_may_not_set_credentials_or_framing(kind: str, header: str, built_in: Any) -> None:
    with pytest.raises(ValueError, match=f"may not set '{header.lower()}'"):
        built_in(kind, NOWHERE, settings={"headers": {header: "x"}})  # names are lower-cased


def test_extra_headers_must_be_a_mapping() -> None:
    with pytest.raises(TypeError, match=r"settings\['headers'\] must be a mapping"):
        HTTPProvider.settings_headers("p", {"headers": ["x-team: blue"]})
    with pytest.raises(ValueError, match="may not set 'x-amz-security-token'"):
        LineProvider(headers={"x-amz-security-token": "t"})


async def test_probe_reports_problems_and_never_raises() -> None:
    client = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(200, json={"ok": 1})))
    p = LineProvider(http_client=client)
    assert (await p.probe("GET", p.url("/health"))).status is HealthStatus.HEALTHY
    sick = await p.probe("GET", p.url("/health"), check=lambda r: "model missing")
    assert sick.status is HealthStatus.UNHEALTHY and "model missing" in sick.message


# --- the transports over real sockets ----------------------------------------------------------------


def toy_at(server: FakeLLMServer, **kw: Any) -> LineProvider:
    """The toy wire is Ollama's shape ({"done": true} ends it): point it at the fake server's /api/chat."""

    class OnFake(LineProvider):
        def build_request(self, request: CompletionRequest, ctx: CallContext) -> httpx.Request:
            return self.json_request("POST", self.url("/api/chat"), {
                "model": "llama3.1", "messages": [{"role": "user", "content": request.prompt}],
                "stream": ctx.streaming})

    return OnFake(endpoint=server.url, **kw)


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_own_pool_plain_stream_and_no_leak(fake_server: FakeLLMServer, transport: str) -> None:
    from axonflow_llm.providers.ollama import OllamaProvider

    async with asyncio.timeout(10):
        p = OllamaProvider(endpoint=fake_server.url, pipeline=Pipeline())
        if transport == "httpx":  # swap the provider's own transport for httpx's pool
            p._direct, p._buffered = default_transport(transport="httpx"), None
            p._info.http_client = httpx.AsyncClient(transport=p._direct, timeout=DEFAULT_TIMEOUT)
        results = await asyncio.gather(*(p.complete(CompletionRequest(prompt=f"n{i}")) for i in range(20)))
        assert sorted(r.content for r in results) == sorted(f"echo: n{i}" for i in range(20))
        chunks = [c async for c in p.stream(CompletionRequest(prompt="s t"))]
        assert "".join(c.content for c in chunks) == "echo: s t"
        assert fake_server.open_connections > 0  # kept warm in the pool
        await p.aclose()
        assert await fake_server.wait_for_open_connections(0, within=2.0) == 0


async def test_aiohttp_transport_decodes_gzip_bodies(fake_server: FakeLLMServer) -> None:
    async with asyncio.timeout(10):
        zipped = gzip.compress(b'{"text": "unzipped"}')
        fake_server.enqueue(Fault.raw(zipped, headers={"content-encoding": "gzip"}))
        p = toy_at(fake_server)
        assert (await p.complete(REQ)).content == "unzipped"
        await p.aclose()


async def test_aiohttp_transport_maps_errors_to_httpx(fake_server: FakeLLMServer) -> None:
    transport = AiohttpTransport()
    try:
        async with asyncio.timeout(10):
            with pytest.raises(httpx.ConnectError):
                await transport.handle_async_request(httpx.Request("GET", "http://127.0.0.1:9/"))
            fake_server.enqueue(Fault.drop_connection())
            chat = httpx.Request("POST", fake_server.url + "/api/chat", json={
                "model": "llama3.1", "messages": [{"role": "user", "content": "x"}], "stream": False})
            with pytest.raises(httpx.RemoteProtocolError):  # (aiohttp itself retries an idempotent GET once)
                await transport.handle_buffered(chat)
            request = httpx.Request("GET", fake_server.url + "/api/tags",
                                    extensions={"timeout": {"connect": 1.0, "read": 0.1, "pool": 1.0}})
            fake_server.enqueue(Fault.latency(1.0), endpoint=None)
            with pytest.raises(httpx.ReadTimeout):
                await transport.handle_buffered(request)
    finally:
        await transport.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await transport.handle_async_request(httpx.Request("GET", fake_server.url + "/api/tags"))


async def test_default_http_client_is_an_httpx_client() -> None:
    client = default_http_client(timeout=3)
    try:
        assert isinstance(client, httpx.AsyncClient) and client.timeout.read == 3.0
    finally:
        await client.aclose()


def test_a_proxy_in_the_environment_selects_httpxs_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert isinstance(default_transport(), httpx.AsyncHTTPTransport)
    assert isinstance(default_transport(transport="aiohttp"), AiohttpTransport)  # asked for explicitly


async def _capture_heads(requests: list[httpx.Request]) -> list[list[tuple[str, str]]]:
    """Send each request through one AiohttpTransport to a bare socket server; the header lines it got."""
    heads: list[list[tuple[str, str]]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            lines = head.decode("latin-1").split("\r\n")[1:-2]
            fields = [(k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in lines)]
            heads.append(fields)
            await reader.readexactly(int(dict(fields).get("content-length", "0")))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = AiohttpTransport()
    try:
        async with asyncio.timeout(10):
            for request in requests:
                request.url = request.url.copy_with(port=port)
                response = await transport.handle_buffered(request)
                assert response.json() == {}
    finally:
        await transport.aclose()
        server.close()
        await server.wait_closed()
    return heads


async def test_aiohttp_transport_sends_the_requests_headers_once_each() -> None:
    body = b'{"a": 1}'
    plain = httpx.Request("POST", "http://127.0.0.1:1/v1/x", content=body,
                          headers={"authorization": "Bearer one", "x-custom": "v", "user-agent": "mine/1"})
    rotated = httpx.Request("POST", "http://127.0.0.1:1/v1/x", content=body,
                            headers={"authorization": "Bearer two", "x-custom": "v"})
    vhost = httpx.Request("GET", "http://127.0.0.1:1/v1/models", headers={"host": "api.internal.example"})
    first, second, third = await _capture_heads([plain, rotated, vhost])
    for head, auth in ((first, "Bearer one"), (second, "Bearer two")):
        names = [k for k, _ in head]
        assert len(names) == len(set(names)), head  # no header twice (Host included)
        fields = dict(head)
        assert fields["host"].startswith("127.0.0.1:") and fields["authorization"] == auth
        assert fields["content-length"] == str(len(body)) and fields["x-custom"] == "v"
    assert dict(first)["user-agent"] == "mine/1"
    assert "user-agent" not in dict(second)  # none of its own: none added (as over httpx's transport)
    assert dict(third)["host"] == "api.internal.example"  # a Host other than the URL's is sent as given
    assert [k for k, _ in third].count("host") == 1


async def test_aiohttp_transport_bounds_plain_answers_on_one_shared_timer(fake_server: FakeLLMServer) -> None:
    transport = AiohttpTransport()
    timeouts = {"connect": 1.0, "read": 0.3, "pool": 1.0}  # one dict, as a provider passes it

    def chat() -> httpx.Request:
        return httpx.Request("POST", fake_server.url + "/api/chat", extensions={"timeout": timeouts}, json={
            "model": "llama3.1", "messages": [{"role": "user", "content": "x"}], "stream": False})

    try:
        async with asyncio.timeout(10):
            # Ten answers in flight within the limit: ten deadlines, one loop timer.
            fake_server.enqueue(Fault.latency(0.1), times=10)
            calls = [asyncio.create_task(transport.handle_buffered(chat())) for _ in range(10)]
            await asyncio.sleep(0.05)
            deadlines = transport._deadlines[0.3]
            assert len(deadlines.entries) == 10 and deadlines.timer is not None
            assert all(r.status_code == 200 for r in await asyncio.gather(*calls))
            assert not deadlines.entries

            # An answer slower than the read timeout: ReadTimeout after about 0.3 s, its connection closed.
            fake_server.enqueue(Fault.latency(2.0))
            started = time.monotonic()
            with pytest.raises(httpx.ReadTimeout, match=r"0\.3 s") as info:
                await transport.handle_buffered(chat())
            assert 0.25 <= time.monotonic() - started < 1.5
            assert isinstance(info.value.__cause__, TimeoutError)  # what HTTPProvider maps to APITimeoutError

            # The caller's cancellation stays a cancellation; a shorter outer timeout stays the caller's.
            fake_server.enqueue(Fault.latency(2.0), times=2)
            call = asyncio.create_task(transport.handle_buffered(chat()))
            await asyncio.sleep(0.05)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            with pytest.raises(TimeoutError) as outer:
                async with asyncio.timeout(0.1):
                    await transport.handle_buffered(chat())
            assert not isinstance(outer.value, httpx.ReadTimeout)
            assert not deadlines.entries and not deadlines.fired
    finally:
        await transport.aclose()
    assert deadlines.timer is None
    assert await fake_server.wait_for_open_connections(0, within=2.0) == 0


async def test_a_body_held_open_after_the_end_marker_delays_the_last_chunk_only_briefly() -> None:
    from axonflow_llm.providers.openai import OpenAIProvider

    events = (b'data: {"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
              b'data: {"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
              b"data: [DONE]\n\n")
    connections: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        head = await reader.readuntil(b"\r\n\r\n")
        fields = dict(line.lower().split(b": ", 1) for line in head.split(b"\r\n")[1:] if b": " in line)
        await reader.readexactly(int(fields[b"content-length"]))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + b"%x\r\n" % len(events) + events + b"\r\n")
        await writer.drain()
        await asyncio.sleep(1.5)  # a proxy holding the body open after the end marker
        writer.write(b"0\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    p = OpenAIProvider(api_key="sk-test", endpoint=f"http://127.0.0.1:{port}/v1", pipeline=Pipeline())
    try:
        async with asyncio.timeout(10):
            started = time.monotonic()
            chunks = [c async for c in p.stream(REQ)]
            elapsed = time.monotonic() - started
    finally:
        await p.aclose()
        server.close()
        for w in connections:
            w.close()
    assert "".join(c.content for c in chunks) == "hi" and chunks[-1].done
    assert elapsed < 1.0  # bounded by the short drain, not by the 1.5 s the body stayed open


async def test_aiohttp_transport_keeps_no_credential_in_its_header_cache() -> None:
    transport = AiohttpTransport()
    try:
        request = httpx.Request("POST", "http://127.0.0.1:1/v1/x", content=b"{}", headers={
            "authorization": "Bearer sk-secret-token", "x-api-key": "k-secret", "accept": "application/json"})
        transport._start(request, None).close()  # (built, never sent)
        cached = {key for _, key, _ in transport._header_strs}
        assert b"accept" in cached
        assert not cached & {b"authorization", b"x-api-key", b"content-length"}
    finally:
        await transport.aclose()
