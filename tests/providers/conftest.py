"""Shared fixtures for provider tests: a recording MockTransport client, wire-body builders, the fake server.

Helpers writing other providers: append your fixtures below; do not change these.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from axonflow_llm.pipeline.pipeline import Pipeline
from axonflow_llm.testing.fake_server import FakeLLMServer, fake_llm_server

#: Looks like a real key (so the redaction patterns would catch it too) but is unique enough to search for.
FAKE_KEY = "sk-test-SECRETKEY0123456789abcdef"

Reply = httpx.Response | Callable[[httpx.Request], httpx.Response]


class Recorder:
    """An ``httpx.AsyncClient`` on a ``MockTransport`` that records every request and answers from a queue
    (``reply(...)``); with the queue empty it answers ``default`` (a 500 unless set)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.replies: list[Reply] = []
        self.default: Reply = httpx.Response(500, json={"error": {"message": "no reply queued"}})
        self.client = httpx.AsyncClient(transport=httpx.MockTransport(self._handle))

    def reply(self, *replies: Reply) -> Recorder:
        self.replies.extend(replies)
        return self

    def json(self, body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Recorder:
        return self.reply(httpx.Response(status, json=body, headers=headers))

    def sse(self, *events: Any, headers: dict[str, str] | None = None, status: int = 200) -> Recorder:
        """Queue a ``text/event-stream`` answer; each event is a JSON-able object or a raw data string."""
        return self.reply(httpx.Response(status, content=sse_body(*events),
                                         headers={"content-type": "text/event-stream", **(headers or {})}))

    def ndjson(self, *lines: Any, headers: dict[str, str] | None = None) -> Recorder:
        return self.reply(httpx.Response(200, content=ndjson_body(*lines),
                                         headers={"content-type": "application/x-ndjson", **(headers or {})}))

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self.replies.pop(0) if self.replies else self.default
        return reply(request) if callable(reply) else reply

    @property
    def last(self) -> httpx.Request:
        assert self.requests, "no request was sent"
        return self.requests[-1]

    def last_json(self) -> Any:
        return json.loads(self.last.content)


def sse_body(*events: Any) -> bytes:
    out = []
    for e in events:
        data = e if isinstance(e, str) else json.dumps(e)
        out.append(f"data: {data}\n\n")
    return "".join(out).encode()


def ndjson_body(*lines: Any) -> bytes:
    return "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines).encode()


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    r = Recorder()
    yield r
    await r.client.aclose()


@pytest.fixture
def bare() -> Pipeline:
    """An empty pipeline: the provider's leaf alone (no retry, no logging)."""
    return Pipeline()


@pytest.fixture
def fake_server() -> Iterator[FakeLLMServer]:
    """The fault-injecting fake LLM server on 127.0.0.1 (credentials required, as the real services)."""
    with fake_llm_server() as server:
        yield server


def _live_or_skip(key_var: str | None) -> None:
    """Skip unless ``AXONFLOW_LIVE_TESTS=1`` and the provider's key variable is set."""
    if os.environ.get("AXONFLOW_LIVE_TESTS") != "1":
        pytest.skip("live test: set AXONFLOW_LIVE_TESTS=1 (and the provider's key) to call the real service")
    if key_var and not os.environ.get(key_var):
        pytest.skip(f"live test: {key_var} is not set")


def _assert_no_secret(exc: BaseException, *secrets: str) -> None:
    """Neither ``str`` nor ``repr`` of the error (nor of its cause chain) holds a secret."""
    seen: BaseException | None = exc
    while seen is not None:
        for text in (str(seen), repr(seen), str(getattr(seen, "body", "") or "")):
            for secret in secrets:
                assert secret not in text, f"{type(seen).__name__} leaks a secret: {text!r}"
        seen = seen.__cause__


@pytest.fixture
def live_or_skip() -> Callable[[str | None], None]:
    """``live_or_skip("OPENAI_API_KEY")``: skip unless live tests are on and the key is set."""
    return _live_or_skip


@pytest.fixture
def assert_no_secret() -> Callable[..., None]:
    """``assert_no_secret(exc, key, ...)``: no secret in the error's str/repr/body, nor in its causes."""
    return _assert_no_secret


@pytest.fixture
def fake_key() -> str:
    return FAKE_KEY


# --- the six built-in providers, pointed at one fake server (test_http_provider, test_fault_matrix) -------

AWS_CREDS = {"aws_access_key_id": "AKIDEXAMPLE000000000", "aws_secret_access_key": "wJalrXUtnFEMI-SECRET-KEY"}


def _built_in(kind: str, server: FakeLLMServer, **kw: Any) -> Any:
    """Provider ``kind`` with its own HTTP client, aimed at ``server`` (``pipeline`` defaults to none)."""
    from axonflow_llm.providers.anthropic import AnthropicProvider
    from axonflow_llm.providers.azure_openai import AzureOpenAIProvider
    from axonflow_llm.providers.bedrock import BedrockProvider
    from axonflow_llm.providers.gemini import GeminiProvider
    from axonflow_llm.providers.ollama import OllamaProvider
    from axonflow_llm.providers.openai import OpenAIProvider

    kw.setdefault("pipeline", Pipeline())
    if kind == "openai":
        return OpenAIProvider(api_key=FAKE_KEY, endpoint=server.url + "/v1", **kw)
    if kind == "azure-openai":  # the v1 API (the default): the deployment goes in the body's model
        settings = {"deployment": "gpt-4o-mini", **kw.pop("settings", {})}
        return AzureOpenAIProvider(api_key=FAKE_KEY, endpoint=server.url, settings=settings, **kw)
    if kind == "anthropic":
        return AnthropicProvider(api_key=FAKE_KEY, endpoint=server.url, **kw)
    if kind == "ollama":
        return OllamaProvider(endpoint=server.url, **kw)
    if kind == "gemini":
        return GeminiProvider(api_key=FAKE_KEY, endpoint=server.url, **kw)
    if kind == "bedrock":
        settings = {**AWS_CREDS, **kw.pop("settings", {})}
        return BedrockProvider(region="us-east-1", endpoint=server.url, settings=settings, **kw)
    raise AssertionError(f"unknown provider kind {kind!r}")


@pytest.fixture
def built_in() -> Callable[..., Any]:
    """``built_in(kind, server, **kwargs)``: a built-in provider of ``kind`` (``"openai"``, ``"azure-openai"``,
    ``"anthropic"``, ``"ollama"``, ``"gemini"``, ``"bedrock"``) aimed at the fake
    server, with a bare pipeline unless ``pipeline=`` is given."""
    return _built_in
