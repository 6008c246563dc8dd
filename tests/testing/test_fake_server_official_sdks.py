"""Official SDKs against the fake server, when installed: the fake is as faithful as the real client needs."""

from __future__ import annotations

from collections.abc import AsyncIterable
from typing import Any

import pytest

from axonflow_llm.testing.fake_server import FakeLLMServer, Fault

MESSAGES = [{"role": "user", "content": "hi sdk"}]


async def test_openai_sdk_plain_stream_and_errors(server: FakeLLMServer) -> None:
    openai = pytest.importorskip("openai")
    async with openai.AsyncOpenAI(api_key="sk-test", base_url=server.url + "/v1", max_retries=0) as client:
        answer = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert answer.choices[0].message.content == "echo: hi sdk"
        assert answer.usage is not None
        assert answer.usage.total_tokens > 0
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: hi sdk"
        assert chunks[-1].usage is not None
        server.enqueue(Fault.status(429, retry_after=1))
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert caught.value.response.headers["retry-after"] == "1"
        server.enqueue(Fault.error_event(after_chunks=1))
        broken = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
        with pytest.raises(openai.APIError, match="server had an error"):
            await _drain(broken)


async def test_openai_sdk_azure_client(server: FakeLLMServer) -> None:
    openai = pytest.importorskip("openai")
    async with openai.AsyncAzureOpenAI(
        api_key="k", azure_endpoint=server.url, api_version="2024-10-21", max_retries=0
    ) as client:
        answer = await client.chat.completions.create(model="my-deployment", messages=MESSAGES)
        assert answer.choices[0].message.content == "echo: hi sdk"
        stream = await client.chat.completions.create(model="my-deployment", messages=MESSAGES, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == "echo: hi sdk"
    record = server.last_request
    assert record.path == "/openai/deployments/my-deployment/chat/completions"
    assert record.query == {"api-version": "2024-10-21"}
    assert record.headers["api-key"] == "k"


async def _drain(stream: AsyncIterable[Any]) -> None:
    async for _ in stream:
        pass
