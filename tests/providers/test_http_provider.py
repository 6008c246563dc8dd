"""HTTPProvider and the transports: the leaf's error mapping, stream safety (always closed), auth, timeouts."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest

from axonflow_llm.pipeline.context import CallContext
from axonflow_llm.pipeline.errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    OverloadedError,
    RateLimitError,
    ServerError,
    StreamInterruptedError,
)
from axonflow_llm.pipeline.models import (
    CompletionRequest,
    CompletionResponse,
    HealthStatus,
    ProviderConfig,
    ProviderType,
    StreamChunk,
)
from axonflow_llm.pipeline.pipeline import Pipeline
from axonflow_llm.providers.http_provider import HTTPChunkStream, HTTPProvider
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


def test_from_config_on_a_subclass() -> None:
    class Configured(LineProvider):
        def __init__(self, *, api_key: str | None = None, settings: Any = None, **kw: Any) -> None:
            super().__init__(**kw)

    config = ProviderConfig(name="cfg", type=ProviderType.CUSTOM, endpoint="http://x.test/", max_tokens=9)
    p = Configured.from_config(config)
    assert (p.name, p.endpoint, p.default_max_tokens) == ("cfg", "http://x.test", 9)


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
            p._direct = default_transport(transport="httpx")
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
