"""The fake server speaking the Anthropic Messages API: message objects, the SSE event sequence, faults."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from axonflow_llm.testing.fake_server import FakeLLMServer, Fault, WireFormat

SSEEvents = Callable[[str], list[tuple[str | None, str]]]
SSEJson = Callable[[str], list[Any]]

HEADERS = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}
BODY = {
    "model": "claude-sonnet-4-20250514",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": [{"type": "text", "text": "hi claude"}]}],
}
STREAM = {**BODY, "stream": True}
SEQUENCE = ["message_start", "content_block_start", "ping"]


async def _post(client: httpx.AsyncClient, body: dict[str, Any] = BODY) -> httpx.Response:
    return await client.post("/v1/messages", json=body, headers=HEADERS)


async def test_plain_message_has_the_documented_shape(server: FakeLLMServer, client: httpx.AsyncClient) -> None:
    response = await _post(client)
    assert response.status_code == 200
    assert response.headers["request-id"].startswith("req_")
    body = response.json()
    assert body["type"] == "message"
    assert body["role"] == "assistant"
    assert body["id"].startswith("msg_")
    assert body["content"] == [{"type": "text", "text": "echo: hi claude"}]
    assert body["stop_reason"] == "end_turn"
    assert body["usage"]["input_tokens"] > 0
    assert body["usage"]["output_tokens"] > 0
    assert server.last_request.wire is WireFormat.ANTHROPIC


async def test_stream_follows_the_documented_event_sequence(
    client: httpx.AsyncClient, sse_events: SSEEvents, sse_json: SSEJson
) -> None:
    response = await _post(client, STREAM)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    names = [name for name, _ in events]
    assert names[:3] == SEQUENCE
    assert names[3:-3] == ["content_block_delta"] * (len(names) - 6)
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    data = sse_json(response.text)
    assert all(d["type"] == name for d, name in zip(data, names, strict=True))
    text = "".join(d["delta"]["text"] for d in data if d["type"] == "content_block_delta")
    assert text == "echo: hi claude"
    assert data[0]["message"]["usage"]["input_tokens"] > 0
    assert data[-2]["delta"]["stop_reason"] == "end_turn"
    assert data[-2]["usage"]["output_tokens"] > 0


async def test_missing_key_version_or_field_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/messages", json=BODY, headers={"anthropic-version": "2023-06-01"})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    response = await client.post("/v1/messages", json=BODY, headers={"x-api-key": "k"})
    assert response.status_code == 400
    assert "anthropic-version" in response.json()["error"]["message"]
    response = await _post(client, {k: v for k, v in BODY.items() if k != "max_tokens"})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "max_tokens: Field required"


async def test_models_list_is_anthropics_when_anthropic_headers_are_sent(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/models", headers=HEADERS)).json()
    assert body["data"][0]["type"] == "model"
    assert body["has_more"] is False


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (529, "overloaded_error"),
    ],
)
async def test_error_statuses_use_anthropics_error_shape(
    server: FakeLLMServer, client: httpx.AsyncClient, status: int, error_type: str
) -> None:
    server.enqueue(Fault.status(status, retry_after=2, should_retry=status >= 429))
    response = await _post(client)
    assert response.status_code == status
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == error_type
    assert body["request_id"] == response.headers["request-id"]
    assert response.headers["retry-after"] == "2"


async def test_overloaded_error_event_inside_a_200_stream(
    server: FakeLLMServer, client: httpx.AsyncClient, sse_events: SSEEvents, sse_json: SSEJson
) -> None:
    server.enqueue(Fault.error_event(after_chunks=1))
    response = await _post(client, STREAM)
    assert response.status_code == 200
    names = [name for name, _ in sse_events(response.text)]
    assert names == [*SEQUENCE, "content_block_delta", "error"]
    assert sse_json(response.text)[-1] == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }


async def test_stream_without_message_stop(
    server: FakeLLMServer, client: httpx.AsyncClient, sse_events: SSEEvents
) -> None:
    server.enqueue(Fault.missing_end_marker())
    names = [name for name, _ in sse_events((await _post(client, STREAM)).text)]
    assert "message_stop" not in names
    assert names[-1] == "message_delta"


async def test_drop_mid_stream_raises_in_the_client(server: FakeLLMServer, client: httpx.AsyncClient) -> None:
    server.enqueue(Fault.drop_mid_stream(after_chunks=1))
    seen: list[str] = []

    async def read() -> None:
        async with client.stream("POST", "/v1/messages", json=STREAM, headers=HEADERS) as response:
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    seen.append(line[7:])

    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        await read()
    assert seen == [*SEQUENCE, "content_block_delta"]


async def test_malformed_event_and_custom_answer(
    server: FakeLLMServer, client: httpx.AsyncClient, sse_events: SSEEvents
) -> None:
    server.enqueue(Fault.malformed_json(after_chunks=0))
    events = sse_events((await _post(client, STREAM)).text)
    assert events[3][0] == "content_block_delta"
    assert not events[3][1].endswith("}")
    server.enqueue(Fault.answer("cut", finish_reason="length", completion_tokens=9))
    body = (await _post(client)).json()
    assert (body["content"][0]["text"], body["stop_reason"], body["usage"]["output_tokens"]) == ("cut", "max_tokens", 9)
