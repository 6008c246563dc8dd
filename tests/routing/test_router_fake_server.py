"""End to end over real sockets: YAML -> registry -> router, failing over between built-in providers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from axonflow_llm.pipeline.errors import StreamInterruptedError
from axonflow_llm.pipeline.models import CompletionRequest
from axonflow_llm.registry import Registry
from axonflow_llm.routing import Router
from axonflow_llm.testing.fake_server import FakeLLMServer, Fault, fake_llm_server

CONFIG = """\
version: "1.0"
llm_providers:
  openai_primary:
    config:
      model: gpt-4o-mini
      endpoint: ${FAKE_URL}/v1
    credentials:
      api_key: ${OPENAI_API_KEY}
    priority: 10
    retry:
      max_retries: 1
      initial_backoff: 1ms
      max_backoff: 1ms
    circuit_breaker:
      failure_threshold: 2
      reset_timeout: 60s
  ollama_backup:
    config:
      model: llama3.1
      endpoint: ${FAKE_URL}
    priority: 5
    retry: false
"""

REQUEST = CompletionRequest(prompt="hello there")


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with fake_llm_server() as s:
        yield s


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "axonflow.yaml"
    path.write_text(CONFIG)
    return path


def env(server: FakeLLMServer) -> dict[str, str]:
    return {"FAKE_URL": server.url, "OPENAI_API_KEY": "sk-fake-0123456789abcdef"}


async def test_fails_over_from_openai_to_ollama_then_skips_the_open_circuit(
    server: FakeLLMServer, config_file: Path
) -> None:
    server.enqueue(Fault.status(503), wire="openai", times=2)
    async with await Registry.from_config(config_file, env=env(server)) as registry:
        router = Router.from_registry(registry, cooldown=0)
        resp = await router.complete(REQUEST)
        assert resp.content == "echo: hello there"
        assert resp.provider == "ollama_backup"
        route = resp.metadata["route"]
        assert route["provider"] == "ollama_backup"
        assert route["attempted"][0]["provider"] == "openai_primary"
        assert "HTTP 503" in route["attempted"][0]["error"]

        # Two failed attempts opened openai's breaker: the next call fails fast there, no request sent.
        sent = len(server.requests)
        resp = await router.complete(REQUEST)
        assert resp.provider == "ollama_backup"
        assert resp.metadata["route"]["attempted"][0]["error"].startswith("CircuitOpenError")
        cooling = router.cooling_down()
        assert cooling["openai_primary"][1] == "circuit_open"
        assert 50 < cooling["openai_primary"][0] <= 60
        assert len(server.requests) == sent + 1  # only ollama was called
        await router.aclose()


async def test_stream_fails_over_before_the_first_chunk_only(server: FakeLLMServer, config_file: Path) -> None:
    async with await Registry.from_config(config_file, env=env(server)) as registry:
        router = Router.from_registry(registry, cooldown=0)

        server.enqueue(Fault.drop_mid_stream(after_chunks=1), wire="openai", stream=True)
        got: list[str] = []

        async def read() -> None:
            async for chunk in router.stream(REQUEST):
                got.append(chunk.content)

        with pytest.raises(StreamInterruptedError):
            await read()
        assert len(got) == 1  # one chunk from openai, then the error: no replay from ollama
        assert not any(r.wire == "ollama" for r in server.requests)

        server.enqueue(Fault.status(500), wire="openai", stream=True, times=2)
        s = router.stream(REQUEST)
        text = "".join([chunk.content async for chunk in s])
        assert text == "echo: hello there"
        assert s.route is not None and s.route["provider"] == "ollama_backup"
        await router.aclose()
