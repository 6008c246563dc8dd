"""The default aiohttp transport over TLS: certificates are verified, and both kinds of answer work."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator

import httpx
import pytest
import trustme
from aiohttp import web

from axonflow_llm.pipeline.errors import APIConnectionError
from axonflow_llm.pipeline.models import CompletionRequest
from axonflow_llm.pipeline.pipeline import Pipeline
from axonflow_llm.providers.openai import OpenAIProvider
from axonflow_llm.providers.transport import AiohttpTransport

ANSWER = {"model": "gpt-4o-mini", "choices": [{"index": 0, "message": {"content": "over tls"},
                                               "finish_reason": "stop"}]}
EVENTS = [
    {"model": "gpt-4o-mini", "choices": [{"index": 0, "delta": {"content": "over "}}]},
    {"model": "gpt-4o-mini", "choices": [{"index": 0, "delta": {"content": "tls"}, "finish_reason": "stop"}]},
]


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_url(ca: trustme.CA) -> AsyncIterator[str]:
    """An OpenAI-shaped HTTPS server on 127.0.0.1 with a certificate from ``ca``."""

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not body.get("stream"):
            return web.json_response(ANSWER)
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for event in EVENTS:
            await response.write(b"data: " + json.dumps(event).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"https://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


async def test_plain_and_streamed_answers_over_tls(ca: trustme.CA, tls_url: str) -> None:
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    transport = AiohttpTransport(verify=client_ctx)
    client = httpx.AsyncClient(transport=transport)
    p = OpenAIProvider(api_key="sk-test", endpoint=tls_url, http_client=client, pipeline=Pipeline())
    try:
        async with asyncio.timeout(10):
            assert (await p.complete(CompletionRequest(prompt="hi"))).content == "over tls"
            chunks = [c async for c in p.stream(CompletionRequest(prompt="hi"))]
            assert "".join(c.content for c in chunks) == "over tls" and chunks[-1].done
            # The buffered path of the transport itself, as a provider's own client uses it.
            request = httpx.Request("POST", tls_url + "/chat/completions", json={"stream": False},
                                    extensions={"timeout": {"connect": 5.0, "read": 5.0, "pool": 5.0}})
            assert (await transport.handle_buffered(request)).json() == ANSWER
    finally:
        await p.aclose()
        await client.aclose()


async def test_an_untrusted_certificate_is_refused_by_default(tls_url: str) -> None:
    p = OpenAIProvider(api_key="sk-test", endpoint=tls_url, pipeline=Pipeline())  # its own client: certifi
    try:
        async with asyncio.timeout(10):
            with pytest.raises(APIConnectionError, match=r"(?i)certificate") as info:
                await p.complete(CompletionRequest(prompt="hi"))
        assert "sk-test" not in str(info.value)
    finally:
        await p.aclose()
