"""The fake server speaking the Gemini API: generateContent, streamGenerateContent (SSE and array), errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from axonflow_llm.testing.fake_server import FakeLLMServer, Fault

SSEJson = Callable[[str], list[Any]]

KEY = {"x-goog-api-key": "AIza-test"}
BODY = {"contents": [{"role": "user", "parts": [{"text": "hi gemini"}]}]}
PLAIN = "/v1beta/models/gemini-2.0-flash:generateContent"
SSE = "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"


def _text(response: dict[str, Any]) -> str:
    return "".join(p.get("text", "") for p in response["candidates"][0]["content"]["parts"])


async def test_generate_content_has_the_documented_shape(server: FakeLLMServer, client: httpx.AsyncClient) -> None:
    body = (await client.post(PLAIN, json=BODY, headers=KEY)).json()
    assert _text(body) == "echo: hi gemini"
    candidate = body["candidates"][0]
    assert candidate["content"]["role"] == "model"
    assert candidate["finishReason"] == "STOP"
    usage = body["usageMetadata"]
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"]
    assert server.last_request.model == "gemini-2.0-flash"


async def test_sse_stream_uses_crlf_and_puts_finish_reason_on_the_last(
    client: httpx.AsyncClient, sse_json: SSEJson
) -> None:
    response = await client.post(SSE, json=BODY, headers=KEY)
    assert response.headers["content-type"].startswith("text/event-stream")
    assert "\r\n\r\n" in response.text
    chunks = sse_json(response.text)
    assert "".join(_text(c) for c in chunks) == "echo: hi gemini"
    assert [("finishReason" in c["candidates"][0]) for c in chunks] == [False] * (len(chunks) - 1) + [True]
    last = chunks[-1]["usageMetadata"]
    assert last["candidatesTokenCount"] > 0
    assert last["totalTokenCount"] == last["promptTokenCount"] + last["candidatesTokenCount"]


async def test_stream_without_alt_sse_is_a_json_array(client: httpx.AsyncClient) -> None:
    path = "/v1beta/models/gemini-2.0-flash:streamGenerateContent"
    response = await client.post(path, json=BODY, headers=KEY)
    chunks = json.loads(response.text)
    assert isinstance(chunks, list)
    assert "".join(_text(c) for c in chunks) == "echo: hi gemini"


async def test_key_in_query_is_accepted_and_missing_key_is_refused(client: httpx.AsyncClient) -> None:
    assert (await client.post(PLAIN + "?key=AIza-test", json=BODY)).status_code == 200
    response = await client.post(PLAIN, json=BODY)
    assert response.status_code == 403
    assert response.json()["error"]["status"] == "PERMISSION_DENIED"
    response = await client.post(PLAIN, json={"contents": []}, headers=KEY)
    assert response.status_code == 400
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"


async def test_models_list_and_one_model(client: httpx.AsyncClient) -> None:
    listed = (await client.get("/v1beta/models", headers=KEY)).json()
    assert listed["models"][0]["name"].startswith("models/")
    one = (await client.get("/v1beta/models/gemini-2.0-flash", headers=KEY)).json()
    assert one["name"] == "models/gemini-2.0-flash"


@pytest.mark.parametrize(("status", "rpc"), [(429, "RESOURCE_EXHAUSTED"), (503, "UNAVAILABLE"), (500, "INTERNAL")])
async def test_errors_use_the_google_rpc_shape(
    server: FakeLLMServer, client: httpx.AsyncClient, status: int, rpc: str
) -> None:
    server.enqueue(Fault.status(status))
    response = await client.post(PLAIN, json=BODY, headers=KEY)
    error = response.json()["error"]
    assert (response.status_code, error["code"], error["status"]) == (status, status, rpc)


async def test_error_chunk_and_missing_finish_reason(
    server: FakeLLMServer, client: httpx.AsyncClient, sse_json: SSEJson
) -> None:
    server.enqueue(Fault.error_event(after_chunks=1))
    chunks = sse_json((await client.post(SSE, json=BODY, headers=KEY)).text)
    assert chunks[-1]["error"]["status"] == "UNAVAILABLE"
    assert all("finishReason" not in c["candidates"][0] for c in chunks[:-1])
    server.enqueue(Fault.missing_end_marker())
    chunks = sse_json((await client.post(SSE, json=BODY, headers=KEY)).text)
    assert all("finishReason" not in c["candidates"][0] for c in chunks)


async def test_drop_and_malformed_chunk(server: FakeLLMServer, client: httpx.AsyncClient) -> None:
    server.enqueue(Fault.malformed_json(after_chunks=1))
    text = (await client.post(SSE, json=BODY, headers=KEY)).text
    datas = [line[6:] for line in text.split("\r\n") if line.startswith("data: ")]
    with pytest.raises(ValueError):
        json.loads(datas[1])
    server.enqueue(Fault.drop_mid_stream(after_chunks=1))
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        await client.post(SSE, json=BODY, headers=KEY)


@pytest.mark.parametrize("after", [0, 2])
async def test_error_inside_a_json_array_stream_keeps_the_array_valid(
    server: FakeLLMServer, client: httpx.AsyncClient, after: int
) -> None:
    server.enqueue(Fault.error_event(after_chunks=after))
    path = "/v1beta/models/gemini-2.0-flash:streamGenerateContent"
    text = (await client.post(path, json=BODY, headers=KEY)).text
    items = json.loads(text + "]")  # the stream ends after the error, without the closing bracket
    assert len(items) == after + 1
    assert items[-1]["error"]["status"] == "UNAVAILABLE"
