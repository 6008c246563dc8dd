"""The fake server speaking Ollama's /api/chat: one JSON answer, NDJSON streams (the default), faults."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from axonflow_llm.testing.fake_server import FakeLLMServer, Fault

BODY: dict[str, Any] = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi llama"}]}
PLAIN = {**BODY, "stream": False}


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line]


async def test_plain_answer_has_the_documented_shape(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/chat", json=PLAIN)
    body = response.json()
    assert body["message"] == {"role": "assistant", "content": "echo: hi llama"}
    assert body["done"] is True
    assert body["done_reason"] == "stop"
    assert body["model"] == "llama3.2"
    for field in ("prompt_eval_count", "eval_count", "total_duration", "load_duration", "eval_duration"):
        assert isinstance(body[field], int)


async def test_streaming_is_the_default_and_ends_with_done(server: FakeLLMServer, client: httpx.AsyncClient) -> None:
    response = await client.post("/api/chat", json=BODY)
    assert response.headers["content-type"] == "application/x-ndjson"
    lines = _lines(response.text)
    assert all(not line["done"] for line in lines[:-1])
    assert "".join(line["message"]["content"] for line in lines) == "echo: hi llama"
    last = lines[-1]
    assert (last["done"], last["done_reason"]) == (True, "stop")
    assert last["prompt_eval_count"] > 0
    assert last["eval_count"] > 0
    assert server.last_request.stream is True


async def test_tags_and_missing_model(client: httpx.AsyncClient) -> None:
    tags = (await client.get("/api/tags")).json()
    assert "llama3.1:latest" in {m["name"] for m in tags["models"]}  # OllamaProvider's default model
    response = await client.post("/api/chat", json={"messages": []})
    assert (response.status_code, response.json()) == (400, {"error": "model is required"})


async def test_error_status_is_a_plain_error_string(server: FakeLLMServer, client: httpx.AsyncClient) -> None:
    server.enqueue(Fault.status(404))
    response = await client.post("/api/chat", json=PLAIN)
    assert response.status_code == 404
    assert response.json() == {"error": 'model "llama3.2" not found, try pulling it first'}
    server.enqueue(Fault.status(503, retry_after=1))
    response = await client.post("/api/chat", json=PLAIN)
    assert response.status_code == 503
    assert "server busy" in response.json()["error"]


async def test_error_line_missing_done_and_malformed_line(server: FakeLLMServer, client: httpx.AsyncClient) -> None:
    server.enqueue(Fault.error_event(after_chunks=2, message="boom"))
    lines = _lines((await client.post("/api/chat", json=BODY)).text)
    assert lines[-1] == {"error": "boom"}
    assert len(lines) == 3
    server.enqueue(Fault.missing_end_marker())
    lines = _lines((await client.post("/api/chat", json=BODY)).text)
    assert all(line["done"] is False for line in lines)
    server.enqueue(Fault.malformed_json(after_chunks=1))
    raw = (await client.post("/api/chat", json=BODY)).text.splitlines()
    with pytest.raises(ValueError):
        json.loads(raw[1])


async def test_drop_mid_stream(server: FakeLLMServer, client: httpx.AsyncClient) -> None:
    server.enqueue(Fault.drop_mid_stream(after_chunks=1))
    got: list[str] = []

    async def read() -> None:
        async with client.stream("POST", "/api/chat", json=BODY) as response:
            async for line in response.aiter_lines():
                got.append(line)

    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        await read()
    assert len(got) == 1
