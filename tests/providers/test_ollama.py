"""OllamaProvider: /api/chat requests and options, documented answers and NDJSON streams, errors, health."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from axonflow_llm.pipeline.errors import (
    BadRequestError,
    MalformedResponseError,
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
from axonflow_llm.providers.ollama import OllamaProvider, ollama_host
from axonflow_llm.testing.fake_server import FakeLLMServer, Fault

# The documented answers (github.com/ollama/ollama/blob/main/docs/api.md, "Generate a chat completion").
DOC_ANSWER = {
    "model": "llama3.2",
    "created_at": "2023-12-12T14:13:43.416799Z",
    "message": {"role": "assistant", "content": "Hello! How are you today?"},
    "done": True,
    "done_reason": "stop",
    "total_duration": 5191566416,
    "load_duration": 2154458,
    "prompt_eval_count": 26,
    "prompt_eval_duration": 383809000,
    "eval_count": 298,
    "eval_duration": 4799921000,
}
DOC_STREAM = [
    {"model": "llama3.2", "created_at": "2023-08-04T08:52:19.385406455-07:00",
     "message": {"role": "assistant", "content": "The"}, "done": False},
    {"model": "llama3.2", "created_at": "2023-08-04T08:52:19.385406455-07:00",
     "message": {"role": "assistant", "content": " sky"}, "done": False},
    {"model": "llama3.2", "created_at": "2023-08-04T19:22:45.499127Z", "message": {"role": "assistant", "content": ""},
     "done": True, "done_reason": "stop", "total_duration": 4883583458, "load_duration": 1334875,
     "prompt_eval_count": 26, "prompt_eval_duration": 342546000, "eval_count": 282, "eval_duration": 4535599000},
]


def provider(recorder: Any, bare: Pipeline, **kw: Any) -> OllamaProvider:
    return OllamaProvider(http_client=recorder.client, pipeline=bare, **kw)


async def collect(stream: Any) -> list[StreamChunk]:
    return [chunk async for chunk in stream]


async def drain(stream: Any, into: list[StreamChunk]) -> None:
    async for chunk in stream:
        into.append(chunk)


async def test_complete_sends_api_chat_with_stream_false_and_options(recorder: Any, bare: Pipeline) -> None:
    recorder.json(DOC_ANSWER)
    p = provider(recorder, bare, model="llama3.2")
    await p.complete(CompletionRequest(
        system_prompt="Be brief.", messages=[Message(role="user", content="Hi")], prompt="Why is the sky blue?",
        max_tokens=64, temperature=0, top_p=0.9, top_k=40, stop_sequences=["\n\n"],
    ))
    req = recorder.last
    assert (req.method, str(req.url)) == ("POST", "http://localhost:11434/api/chat")
    assert "authorization" not in req.headers
    assert req.headers["content-type"] == "application/json"
    assert req.headers["user-agent"].startswith("axonflow-llm/")
    assert recorder.last_json() == {
        "model": "llama3.2",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                     {"role": "user", "content": "Why is the sky blue?"}],
        "stream": False,  # Ollama streams unless told not to
        "options": {"temperature": 0, "top_p": 0.9, "top_k": 40, "num_predict": 64, "stop": ["\n\n"]},
    }


async def test_minimal_request_and_extra_settings(recorder: Any, bare: Pipeline) -> None:
    recorder.json(DOC_ANSWER).json(DOC_ANSWER)
    await provider(recorder, bare).complete(CompletionRequest(prompt="hi"))
    assert recorder.last_json() == {"model": "llama3.1", "messages": [{"role": "user", "content": "hi"}],
                                    "stream": False}
    p = provider(recorder, bare, settings={"options": {"num_ctx": 8192}, "keep_alive": "10m"}, max_tokens=32)
    await p.complete(CompletionRequest(prompt="hi"))
    body = recorder.last_json()
    assert body["options"] == {"num_ctx": 8192, "num_predict": 32} and body["keep_alive"] == "10m"


async def test_documented_answer_is_mapped(recorder: Any, bare: Pipeline) -> None:
    recorder.json(DOC_ANSWER)
    r = await provider(recorder, bare, name="local").complete(CompletionRequest(prompt="hi"))
    assert (r.content, r.model, r.finish_reason, r.provider) == (
        "Hello! How are you today?", "llama3.2", FinishReason.STOP, "local")
    assert r.usage == UsageStats(prompt_tokens=26, completion_tokens=298, total_tokens=324)


async def test_length_finish_and_unknown_reasons(recorder: Any, bare: Pipeline) -> None:
    recorder.json({**DOC_ANSWER, "done_reason": "length"}).json({**DOC_ANSWER, "done_reason": "load"})
    p = provider(recorder, bare)
    assert (await p.complete(CompletionRequest(prompt="hi"))).finish_reason is FinishReason.LENGTH
    assert (await p.complete(CompletionRequest(prompt="hi"))).finish_reason is None


async def test_documented_stream_is_mapped(recorder: Any, bare: Pipeline) -> None:
    recorder.ndjson(*DOC_STREAM)
    chunks = await collect(provider(recorder, bare).stream(CompletionRequest(prompt="hi")))
    assert recorder.last_json()["stream"] is True
    assert [c.content for c in chunks] == ["The", " sky", ""]
    assert chunks[-1].done and chunks[-1].finish_reason is FinishReason.STOP
    assert chunks[-1].usage == UsageStats(prompt_tokens=26, completion_tokens=282, total_tokens=308)


async def test_stream_errors(recorder: Any, bare: Pipeline) -> None:
    recorder.ndjson(DOC_STREAM[0], {"error": "an unknown error was encountered while running the model"})
    recorder.ndjson(*DOC_STREAM[:2])
    recorder.ndjson(DOC_STREAM[0], "{not json")
    p = provider(recorder, bare)
    got: list[StreamChunk] = []
    with pytest.raises(ServerError, match="unknown error"):
        await drain(p.stream(CompletionRequest(prompt="hi")), got)
    assert [c.content for c in got] == ["The"]
    with pytest.raises(StreamInterruptedError) as info:
        await collect(p.stream(CompletionRequest(prompt="hi")))
    assert info.value.chunks_received == 2
    with pytest.raises(MalformedResponseError):
        await collect(p.stream(CompletionRequest(prompt="hi")))


async def test_http_errors_use_ollamas_error_body(recorder: Any, bare: Pipeline) -> None:
    recorder.json({"error": "model 'nope' not found, try pulling it first"}, status=404)
    with pytest.raises(BadRequestError, match="try pulling it first"):
        await provider(recorder, bare).complete(CompletionRequest(prompt="hi", model="nope"))


async def test_optional_key_is_sent_as_bearer(recorder: Any, bare: Pipeline) -> None:
    recorder.json(DOC_ANSWER)
    await provider(recorder, bare, api_key="ollama-KEY-0123456789").complete(CompletionRequest(prompt="hi"))
    assert recorder.last.headers["authorization"] == "Bearer ollama-KEY-0123456789"


# OLLAMA_HOST as the official ollama-python client reads it (its _parse_host doctests), localhost for no host.
OLLAMA_HOSTS = [
    (None, "http://localhost:11434"),
    ("", "http://localhost:11434"),
    ("1.2.3.4", "http://1.2.3.4:11434"),
    (":56789", "http://localhost:56789"),
    ("1.2.3.4:56789", "http://1.2.3.4:56789"),
    ("http://1.2.3.4", "http://1.2.3.4:80"),
    ("https://1.2.3.4", "https://1.2.3.4:443"),
    ("https://1.2.3.4:56789", "https://1.2.3.4:56789"),
    ("example.com", "http://example.com:11434"),
    ("example.com:56789", "http://example.com:56789"),
    ("http://example.com", "http://example.com:80"),
    ("https://example.com", "https://example.com:443"),
    ("https://example.com:56789", "https://example.com:56789"),
    ("example.com/", "http://example.com:11434"),
    ("example.com:56789/", "http://example.com:56789"),
    ("example.com/path", "http://example.com:11434/path"),
    ("https://example.com:56789/path/", "https://example.com:56789/path"),
    ("0.0.0.0", "http://0.0.0.0:11434"),
    ("[::1]", "http://[::1]:11434"),
    ("[::1]:56789", "http://[::1]:56789"),
    ("https://[::1]", "https://[::1]:443"),
]


@pytest.mark.parametrize(("host", "expected"), OLLAMA_HOSTS)
def test_ollama_host_is_read_as_the_official_client_reads_it(host: str | None, expected: str) -> None:
    assert ollama_host(host) == expected


@pytest.mark.parametrize(("host", "expected"), [(None, "http://localhost:11434"), (":8080", "http://localhost:8080"),
                                                ("gpu-box", "http://gpu-box:11434")])
def test_endpoint_defaults_to_ollama_host(monkeypatch: pytest.MonkeyPatch, host: str | None, expected: str) -> None:
    if host is None:
        monkeypatch.delenv("OLLAMA_HOST", raising=False)
    else:
        monkeypatch.setenv("OLLAMA_HOST", host)
    assert OllamaProvider(pipeline=Pipeline()).endpoint == expected
    assert OllamaProvider(pipeline=Pipeline(), endpoint="http://given:1").endpoint == "http://given:1"


@pytest.mark.parametrize("host", ["example.com:port", "ftp://example.com", "example.com:99999"])
def test_a_bad_ollama_host_says_what_is_wrong(host: str) -> None:
    with pytest.raises(ValueError, match="OLLAMA_HOST"):
        ollama_host(host)


def test_from_config_and_capabilities() -> None:
    p = OllamaProvider.from_config(ProviderConfig(name="o", type=ProviderType.OLLAMA, model="llava:13b",
                                                  endpoint="http://gpu-box:11434/"), pipeline=Pipeline())
    assert (p.name, p.model, p.endpoint, p.type) == ("o", "llava:13b", "http://gpu-box:11434", ProviderType.OLLAMA)
    assert Capability.VISION in p.capabilities() and Capability.STREAMING in p.capabilities()
    assert Capability.FUNCTION_CALLING in OllamaProvider(model="llama3.1", pipeline=Pipeline()).capabilities()


async def test_health_check_reports_whether_the_model_is_pulled(recorder: Any, bare: Pipeline) -> None:
    tags = {"models": [{"name": "llama3.1:latest", "model": "llama3.1:latest", "size": 4661224676},
                       {"name": "qwen2.5:7b", "model": "qwen2.5:7b"}]}
    recorder.json(tags).json(tags).json(tags)
    assert (await provider(recorder, bare).health_check()).status is HealthStatus.HEALTHY
    assert (recorder.last.method, str(recorder.last.url)) == ("GET", "http://localhost:11434/api/tags")
    assert (await provider(recorder, bare, model="qwen2.5:7b").health_check()).status is HealthStatus.HEALTHY
    h = await provider(recorder, bare, model="mistral").health_check()
    assert h.status is HealthStatus.UNHEALTHY and "ollama pull mistral" in h.message


async def test_health_check_when_the_server_is_down() -> None:
    p = OllamaProvider(endpoint="http://127.0.0.1:9", pipeline=Pipeline())
    try:
        h = await p.health_check()
    finally:
        await p.aclose()
    assert h.status is HealthStatus.UNHEALTHY and "connection failed" in h.message


# --- over real sockets -------------------------------------------------------------------------------


async def test_plain_stream_health_and_a_404_over_sockets(fake_server: FakeLLMServer) -> None:
    async with asyncio.timeout(10):
        p = OllamaProvider(endpoint=fake_server.url, pipeline=Pipeline())
        r = await p.complete(CompletionRequest(prompt="hi there"))
        assert r.content == "echo: hi there" and r.usage.total_tokens > 0
        chunks = await collect(p.stream(CompletionRequest(prompt="hi there")))
        assert "".join(c.content for c in chunks) == "echo: hi there" and chunks[-1].done
        assert (await p.health_check()).status is HealthStatus.HEALTHY
        fake_server.enqueue(Fault.status(404, message="model 'nope' not found"))
        with pytest.raises(BadRequestError, match="not found"):
            await p.complete(CompletionRequest(prompt="x", model="nope"))
        await p.aclose()
        assert await fake_server.wait_for_open_connections(0, within=2.0) == 0


@pytest.mark.live
async def test_live_ollama(live_or_skip: Any) -> None:
    live_or_skip("OLLAMA_HOST")
    async with asyncio.timeout(120):
        p = OllamaProvider(pipeline=Pipeline())
        try:
            assert (await p.health_check()).status is HealthStatus.HEALTHY
            r = await p.complete(CompletionRequest(prompt="Say OK.", max_tokens=5))
            assert r.content
        finally:
            await p.aclose()


async def test_an_error_in_a_200_answer_or_stream_that_echoes_the_key_is_scrubbed(
    recorder: Any, bare: Pipeline, assert_no_secret: Any
) -> None:
    key = "proxy-token-0123456789"  # a gateway's token, of no shape redact() knows
    recorder.json({"error": f"bad token {key}"}).ndjson({"error": f"bad token {key}"})
    p = OllamaProvider(http_client=recorder.client, pipeline=bare, api_key=key, endpoint="http://gpu-box:11434")
    with pytest.raises(ServerError) as plain:
        await p.complete(CompletionRequest(prompt="hi"))
    with pytest.raises(ServerError) as streamed:
        [c async for c in p.stream(CompletionRequest(prompt="hi"))]
    for info in (plain, streamed):
        assert_no_secret(info.value, key)
        assert "bad token ***" in str(info.value)
