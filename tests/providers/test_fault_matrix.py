"""The fault matrix: each fault, against each of the six providers, over real sockets to the fake server.

Every cell ends in the right typed error (exact class, no credential in it, the chunks already delivered
counted) or in a successful retry (the number of attempts checked), within a few seconds whatever the
fault (``asyncio.timeout``), and leaves no connection open: after ``aclose()`` the fake server counts none.
The provider is still usable after the fault (one clean call). Timeouts are the client's read timeout
(``timeout=httpx.Timeout(0.1)``) or ``TimeoutMiddleware``; stalls last 0.3 s.

What stays in the per-provider modules: faults with provider-specific outcomes (status mappings such as
529 or 403 over sockets, Gemini's quota event, Bedrock's validation event and re-signed retries),
early-closed streams, and the mapping of documented bodies through ``httpx.MockTransport``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from axonflow_llm.middleware.retry import RetryMiddleware
from axonflow_llm.middleware.retry_config import RetryConfig
from axonflow_llm.middleware.timeout import TimeoutMiddleware
from axonflow_llm.pipeline.errors import (
    APIConnectionError,
    APITimeoutError,
    MalformedResponseError,
    OverloadedError,
    RateLimitError,
    ServerError,
    StreamInterruptedError,
)
from axonflow_llm.pipeline.models import CompletionRequest, StreamChunk
from axonflow_llm.pipeline.pipeline import Layer, Pipeline
from axonflow_llm.testing.fake_server import FakeLLMServer, Fault, fake_llm_server

SIX = ("openai", "azure-openai", "anthropic", "ollama", "gemini", "bedrock")
SECRETS = ("sk-test-SECRETKEY0123456789abcdef", "wJalrXUtnFEMI-SECRET-KEY")  # conftest's key, the AWS secret
REQ = CompletionRequest(prompt="one two three four")
ECHO = "echo: one two three four"
BOUND = 5.0  # seconds: no cell may take longer, whatever the fault
READ_TIMEOUT = 0.1
DELAY = 0.3  # a stall or added latency: three times the timeout
RETRY_AFTER = 0.05

#: The typed error each provider's in-stream error event maps to (the fake server's default event).
ERROR_EVENT: dict[str, type[Exception]] = {
    "openai": ServerError,  # data: {"error": {"type": "server_error"}}
    "azure-openai": ServerError,
    "anthropic": OverloadedError,  # event: error, overloaded_error
    "ollama": ServerError,  # {"error": "..."}
    "gemini": OverloadedError,  # {"error": {"status": "UNAVAILABLE", "message": "The model is overloaded..."}}
    "bedrock": RateLimitError,  # :message-type exception, throttlingException
}
EVENT = ServerError  # placeholder in the table below: "the provider's ERROR_EVENT class"


@dataclass(frozen=True)
class Cell:
    """One fault, plain or streamed, and what must come of it."""

    name: str
    fault: Fault
    streaming: bool
    expect: type[Exception] | None  # None: the call succeeds (after a retry)
    retry: bool = False  # RetryMiddleware around the leaf (tiny backoff)
    read_timeout: bool = False  # the client's read timeout is READ_TIMEOUT
    timeout_layer: bool = False  # TimeoutMiddleware(timeout=, idle_timeout=READ_TIMEOUT) inside the retry
    requests: int | None = None  # completion requests the server must have seen
    chunks: int | None = None  # chunks delivered before the error
    at_least: float = 0.0  # seconds the call must have taken (a Retry-After honoured)
    event: bool = False  # expect the provider's in-stream error class
    cause: type[BaseException] | None = None  # the error's __cause__ (chained from the transport)

    @property
    def id(self) -> str:
        return f"{self.name}/{'stream' if self.streaming else 'plain'}"


def both(name: str, fault: Fault, expect: type[Exception] | None, **kw: Any) -> list[Cell]:
    stream_kw = {**kw, "chunks": 0} if expect is not None else kw
    return [Cell(name, fault, False, expect, **kw), Cell(name, fault, True, expect, **stream_kw)]


CELLS: list[Cell] = [
    # A status code with Retry-After: the typed error carries it; with retry, it is honoured and succeeds.
    *both("429 Retry-After", Fault.status(429, retry_after=RETRY_AFTER), RateLimitError, requests=1),
    *both("429 Retry-After retried", Fault.status(429, retry_after=RETRY_AFTER), None, retry=True, requests=2,
          at_least=RETRY_AFTER),
    # Added latency before the response headers: a timeout; retried inside TimeoutMiddleware, a success.
    *both("latency", Fault.latency(DELAY), APITimeoutError, read_timeout=True),
    *both("latency retried", Fault.latency(DELAY), None, retry=True, timeout_layer=True, requests=2),
    # A stall after the headers, before the first chunk (a plain answer: before its body): a timeout.
    *both("stall before first chunk", Fault.stall(before_first=DELAY), APITimeoutError, read_timeout=True),
    # A stall between chunks: the stream is interrupted after what was delivered, never truncated quietly.
    Cell("stall between chunks", Fault.stall(between=DELAY), True, StreamInterruptedError, read_timeout=True,
         chunks=1, cause=httpx.ReadTimeout),
    # The connection dropped mid-answer: a connection error, or an interrupted stream never replayed.
    Cell("drop mid-answer", Fault.drop_mid_stream(after_chunks=1), False, APIConnectionError),
    Cell("drop mid-answer", Fault.drop_mid_stream(after_chunks=1), True, StreamInterruptedError, chunks=1,
         cause=httpx.TransportError),
    Cell("drop mid-answer retried", Fault.drop_mid_stream(after_chunks=1), True, StreamInterruptedError,
         retry=True, chunks=1, requests=1),
    # The connection dropped before any answer: a connection error, which a retry recovers from.
    *both("dropped connection", Fault.drop_connection(), APIConnectionError, requests=1),
    *both("dropped connection retried", Fault.drop_connection(), None, retry=True, requests=2),
    # Malformed JSON: the plain body, or one stream event after a chunk.
    Cell("malformed JSON", Fault.malformed_json(), False, MalformedResponseError),
    Cell("malformed JSON", Fault.malformed_json(after_chunks=1), True, MalformedResponseError, chunks=1),
    # An error event inside the 200 stream: its typed error; before the first chunk a retry recovers.
    Cell("error event", Fault.error_event(after_chunks=1), True, EVENT, chunks=1, event=True),
    Cell("error event first retried", Fault.error_event(after_chunks=0), True, None, retry=True, requests=2),
    # A stream that ends cleanly without its end marker ([DONE], message_stop, done, finishReason...).
    Cell("missing end marker", Fault.missing_end_marker(), True, StreamInterruptedError),
]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeLLMServer]:
    with fake_llm_server() as s:
        yield s


@pytest.fixture
def fresh(server: FakeLLMServer) -> FakeLLMServer:
    server.reset()
    return server


def pipeline_for(cell: Cell) -> Pipeline:
    layers: list[Layer] = []
    if cell.retry:
        config = RetryConfig(max_retries=2, initial_backoff=0.001, max_backoff=0.01, max_retry_after=1.0)
        layers.append(Layer(RetryMiddleware, config=config))
    if cell.timeout_layer:
        layers.append(Layer(TimeoutMiddleware, timeout=READ_TIMEOUT, idle_timeout=READ_TIMEOUT))
    return Pipeline(layers)


async def call(provider: Any, streaming: bool, got: list[StreamChunk]) -> str:
    if not streaming:
        return str((await provider.complete(REQ)).content)
    async with provider.stream(REQ) as stream:
        async for chunk in stream:
            if not chunk.done:
                got.append(chunk)
    return "".join(c.content for c in got)


@pytest.mark.parametrize("cell", CELLS, ids=[c.id for c in CELLS])
@pytest.mark.parametrize("kind", SIX)
async def test_each_fault_ends_in_a_retry_or_its_typed_error_without_leaking(
    kind: str, cell: Cell, fresh: FakeLLMServer, built_in: Any, assert_no_secret: Any
) -> None:
    server = fresh
    server.enqueue(cell.fault)
    timeout = httpx.Timeout(READ_TIMEOUT, connect=1.0) if cell.read_timeout else None
    provider = built_in(kind, server, pipeline=pipeline_for(cell), timeout=timeout)
    got: list[StreamChunk] = []
    try:
        async with asyncio.timeout(BOUND):
            started = time.monotonic()
            if cell.expect is None:
                assert await call(provider, cell.streaming, got) == ECHO
            else:
                expected = ERROR_EVENT[kind] if cell.event else cell.expect
                with pytest.raises(expected) as info:
                    await call(provider, cell.streaming, got)
                error = info.value
                assert type(error) is expected, f"{type(error).__name__}: {error}"
                assert_no_secret(error, *SECRETS)
                if cell.chunks is not None:
                    assert len(got) == cell.chunks
                if isinstance(error, StreamInterruptedError):
                    assert error.chunks_received == len(got)
                if cell.cause is not None:
                    assert isinstance(error.__cause__, cell.cause), repr(error.__cause__)
                if isinstance(error, RateLimitError) and error.status_code == 429 and not cell.event:
                    assert error.retry_after == RETRY_AFTER
            assert time.monotonic() - started >= cell.at_least
            if cell.requests is not None:
                assert len(server.requests) == cell.requests
            # Nothing is poisoned: the next call on the same pool is clean.
            assert (await provider.complete(REQ)).content == ECHO
    finally:
        await provider.aclose()
    assert await server.wait_for_open_connections(0, within=2.0) == 0
