"""The fake LLM server: lifecycle, recording, connections, the fault API and the OpenAI / Azure wire."""

from __future__ import annotations

import asyncio
import datetime
import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from axonflow_llm.testing.fake_server import Endpoint, FakeLLMServer, Fault, WireFormat, fake_llm_server

SSEEvents = Callable[[str], list[tuple[str | None, str]]]
SSEJson = Callable[[str], list[Any]]

AUTH = {"Authorization": "Bearer sk-test-key"}
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]}
STREAM = {**BODY, "stream": True}
AZURE = "/openai/deployments/my-dep/chat/completions?api-version=2024-10-21"


async def _chat(client: httpx.AsyncClient, body: dict[str, object] = BODY) -> httpx.Response:
    return await client.post("/v1/chat/completions", json=body, headers=AUTH)


# --- lifecycle -----------------------------------------------------------------------------------------


def test_sync_start_stop_and_url(http: httpx.Client) -> None:
    server = FakeLLMServer()
    server.start()
    try:
        assert server.url.startswith("http://127.0.0.1:")
        response = http.post(server.url + "/v1/chat/completions", json=BODY, headers=AUTH)
        assert response.status_code == 200
    finally:
        server.stop()
    server.stop()  # idempotent
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.url


async def test_async_context_manager_serves_from_an_async_test() -> None:
    async with FakeLLMServer() as server, httpx.AsyncClient(base_url=server.url) as client:
        response = await _chat(client)
        assert response.json()["choices"][0]["message"]["content"] == "echo: hello there"


def test_fake_llm_server_helper_starts_and_stops(http: httpx.Client) -> None:
    with fake_llm_server(content="fixed") as server:
        response = http.post(server.url + "/v1/chat/completions", json=BODY, headers=AUTH)
        assert response.json()["choices"][0]["message"]["content"] == "fixed"
    with pytest.raises(RuntimeError):
        _ = server.port


def test_a_busy_port_is_reported() -> None:
    with FakeLLMServer() as first:
        second = FakeLLMServer(port=first.port)
        with pytest.raises(RuntimeError, match="could not listen"):
            second.start()


async def test_large_bodies_are_accepted(client: httpx.AsyncClient) -> None:
    big = {**BODY, "messages": [{"role": "user", "content": "x" * 3_000_000}]}
    assert (await _chat(client, big)).status_code == 200


def test_bad_options_are_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="latency"):
        FakeLLMServer(latency=-1)
    server = FakeLLMServer()
    with pytest.raises(ValueError, match="wire must be one of"):
        server.enqueue(Fault.status(500), wire="openia")
    with pytest.raises(TypeError, match="at least one Fault"):
        server.enqueue()
    with pytest.raises(ValueError, match="times"):
        server.enqueue(Fault.status(500), times=0)
    with pytest.raises(ValueError, match="status_code"):
        Fault.status(1000)
    with pytest.raises(ValueError, match="chunk_delay"):
        Fault(chunk_delay=-0.1)
    with pytest.raises(ValueError, match="disagree"):
        Fault.answer("abc", chunks=["a", "b"])


def test_cli_prints_the_url_and_answers(http: httpx.Client) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "axonflow_llm.testing.fake_server", "--port", "0", "--content", "from cli"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        response = http.post(url + "/v1/chat/completions", json=BODY, headers=AUTH, timeout=5)
        assert response.json()["choices"][0]["message"]["content"] == "from cli"
    finally:
        proc.kill()
        proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()


# --- recording and connections ----------------------------------------------------------------------


async def test_every_request_is_recorded_exactly(server: FakeLLMServer, client: httpx.AsyncClient) -> None:
    await client.post("/v1/chat/completions?x=1", json=STREAM, headers={**AUTH, "X-Custom": "yes"})
    await client.get("/nowhere")
    first, second = server.requests
    assert first.method == "POST"
    assert first.path == "/v1/chat/completions"
    assert first.query == {"x": "1"}
    assert first.headers["authorization"] == "Bearer sk-test-key"
    assert first.headers["x-custom"] == "yes"
    assert json.loads(first.body) == STREAM
    assert first.json == STREAM
    assert (first.wire, first.endpoint, first.model, first.stream) == (
        WireFormat.OPENAI,
        Endpoint.CHAT,
        "gpt-4o-mini",
        True,
    )
    assert first.fault is None
    assert "sk-test" not in repr(first)
    assert second.wire is None
    assert server.last_request is second
    server.reset()
    assert server.requests == []


async def test_unknown_paths_get_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/v2/whatever", json={})
    assert response.status_code == 404
    assert "no route" in response.json()["error"]["message"]


async def test_keep_alive_reuses_one_connection_and_close_is_seen(server: FakeLLMServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        for _ in range(3):
            await _chat(client)
        await _chat(client, STREAM)
        assert server.open_connections == 1
        assert server.total_connections == 1
        assert {r.connection_id for r in server.requests} == {1}
    assert await server.wait_for_open_connections(0) == 0


def test_open_connections_sync_wait(server: FakeLLMServer) -> None:
    with httpx.Client(base_url=server.url) as client:
        client.get("/v1/models", headers=AUTH)
        assert server.open_connections == 1
    assert server.wait_for_open_connections_sync(0) == 0


# --- OpenAI wire --------------------------------------------------------------------------------------


async def test_openai_plain_answer_has_the_documented_shape(client: httpx.AsyncClient) -> None:
    response = await _chat(client)
    assert response.status_code == 200
    assert response.headers["x-request-id"].startswith("req_")
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "gpt-4o-mini"
    choice = body["choices"][0]
    assert choice["message"] == {
        "role": "assistant",
        "content": "echo: hello there",
        "refusal": None,
        "annotations": [],
    }
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0


async def test_openai_stream_ends_with_done_and_usage_chunk(
    client: httpx.AsyncClient, sse_events: SSEEvents, sse_json: SSEJson
) -> None:
    response = await _chat(client, {**STREAM, "stream_options": {"include_usage": True}})
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events[-1] == (None, "[DONE]")
    chunks = sse_json(response.text)
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "echo: hello there"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["total_tokens"] > 0
    assert all(c["usage"] is None for c in chunks[:-1])


async def test_openai_stream_without_include_usage_has_no_usage(client: httpx.AsyncClient, sse_json: SSEJson) -> None:
    chunks = sse_json((await _chat(client, STREAM)).text)
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_openai_refuses_missing_key_and_bad_bodies(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json=BODY)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "invalid_request_error"
    response = await client.post("/v1/chat/completions", content=b"{nope", headers=AUTH)
    assert response.status_code == 400
    response = await _chat(client, {"messages": BODY["messages"]})
    assert response.status_code == 400
    assert "model" in response.json()["error"]["message"]


async def test_openai_models_list(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/models", headers=AUTH)).json()
    assert body["object"] == "list"
    assert body["data"][0]["object"] == "model"


def test_models_option_sets_every_model_list(http: httpx.Client) -> None:
    with fake_llm_server(models=["m-1", "m-2"]) as server:
        url = server.url
        openai = http.get(url + "/v1/models", headers=AUTH).json()
        assert [m["id"] for m in openai["data"]] == ["m-1", "m-2"]
        anthropic = http.get(url + "/v1/models", headers={"x-api-key": "k", "anthropic-version": "2023-06-01"})
        assert [m["id"] for m in anthropic.json()["data"]] == ["m-1", "m-2"]
        tags = http.get(url + "/api/tags").json()
        assert [m["name"] for m in tags["models"]] == ["m-1:latest", "m-2:latest"]
        gemini = http.get(url + "/v1beta/models", headers={"x-goog-api-key": "k"}).json()
        assert [m["name"] for m in gemini["models"]] == ["models/m-1", "models/m-2"]
        assert http.get(url + "/v1beta/models/m-3", headers={"x-goog-api-key": "k"}).status_code == 404
        bedrock = http.get(url + "/foundation-models/m-3", headers={"Authorization": "AWS4 x"})
        assert bedrock.status_code == 404
        assert bedrock.headers["x-amzn-errortype"].startswith("ResourceNotFoundException")
    with pytest.raises(TypeError, match="list of model ids"):
        FakeLLMServer(models="gpt-4o")


def test_require_auth_false_accepts_anonymous_requests(http: httpx.Client) -> None:
    with fake_llm_server(require_auth=False) as server:
        assert http.post(server.url + "/v1/chat/completions", json=BODY).status_code == 200


# --- Azure OpenAI wire --------------------------------------------------------------------------------


async def test_azure_needs_api_version_and_key(client: httpx.AsyncClient) -> None:
    path = "/openai/deployments/my-dep/chat/completions"
    response = await client.post(path, json=BODY, headers={"api-key": "k"})
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "404", "message": "Resource not found"}}
    response = await client.post(AZURE, json=BODY)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "401"


async def test_azure_plain_and_stream(
    server: FakeLLMServer, client: httpx.AsyncClient, sse_events: SSEEvents, sse_json: SSEJson
) -> None:
    response = await client.post(AZURE, json={"messages": BODY["messages"]}, headers={"api-key": "k"})
    assert response.status_code == 200
    assert response.headers["apim-request-id"]
    body = response.json()
    assert body["choices"][0]["message"]["content"] == "echo: hello there"
    assert "prompt_filter_results" in body
    assert server.last_request.model == "my-dep"
    response = await client.post(AZURE, json={**STREAM}, headers={"api-key": "k"})
    chunks = sse_json(response.text)
    assert chunks[0]["choices"] == []  # Azure's prompt-filter chunk comes first
    assert "prompt_filter_results" in chunks[0]
    assert sse_events(response.text)[-1] == (None, "[DONE]")
    models = await client.get("/openai/models?api-version=2024-10-21", headers={"api-key": "k"})
    assert models.json()["object"] == "list"


async def test_azure_v1_api_needs_no_api_version_but_a_model(server: FakeLLMServer, client: httpx.AsyncClient) -> None:
    response = await client.post("/openai/v1/chat/completions", json=BODY, headers={"api-key": "k"})
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "echo: hello there"
    assert server.last_request.wire is WireFormat.AZURE_OPENAI
    response = await client.post(
        "/openai/v1/chat/completions", json={"messages": BODY["messages"]}, headers={"api-key": "k"}
    )
    assert response.status_code == 400
    models = await client.get("/openai/v1/models", headers={"api-key": "k"})
    assert models.json()["data"][0]["id"] == "gpt-4o-mini"


async def test_azure_error_shape(server: FakeLLMServer, client: httpx.AsyncClient) -> None:
    server.enqueue(Fault.status(429, retry_after=6))
    response = await client.post(AZURE, json=BODY, headers={"api-key": "k"})
    assert response.status_code == 429
    assert response.headers["retry-after"] == "6"
    assert response.json()["error"]["code"] == "429"


# --- the fault API -----------------------------------------------------------------------------------


async def test_status_fault_with_retry_headers(server: FakeLLMServer, client: httpx.AsyncClient) -> None:
    server.enqueue(Fault.status(429, retry_after=1.5, retry_after_ms=1500, should_retry=True))
    response = await _chat(client)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1.5"
    assert response.headers["retry-after-ms"] == "1500"
    assert response.headers["x-should-retry"] == "true"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert server.last_request.fault is not None
    assert (await _chat(client)).status_code == 200  # consumed


async def test_retry_after_http_date_and_custom_error(server: FakeLLMServer, client: httpx.AsyncClient) -> None:
    date = "Wed, 21 Oct 2037 07:28:00 GMT"
    server.enqueue(
        Fault.status(503, retry_after=date, error_type="server_error", message="busy", headers={"X-Extra": "1"})
    )
    response = await _chat(client)
    assert response.headers["retry-after"] == date
    assert response.headers["x-extra"] == "1"
    assert response.json()["error"]["message"] == "busy"


async def test_retry_after_from_an_aware_datetime(server: FakeLLMServer, client: httpx.AsyncClient) -> None:
    when = datetime.datetime(2037, 10, 21, 7, 28, tzinfo=datetime.UTC)
    server.enqueue(Fault.status(429, retry_after=when))
    assert (await _chat(client)).headers["retry-after"] == "Wed, 21 Oct 2037 07:28:00 GMT"
    with pytest.raises(ValueError, match="timezone-aware"):
        Fault.status(429, retry_after=datetime.datetime(2037, 1, 1))


def test_record_false_keeps_no_requests(http: httpx.Client) -> None:
    with fake_llm_server(record=False) as server:
        assert http.post(server.url + "/v1/chat/completions", json=BODY, headers=AUTH).status_code == 200
        assert server.requests == []


async def test_faults_are_fifo_and_filtered(server: FakeLLMServer, client: httpx.AsyncClient) -> None:
    server.enqueue(Fault.status(500), wire="anthropic")
    server.enqueue(Fault.status(502), stream=True)
    server.enqueue(Fault.status(503), Fault.status(504))
    assert server.pending == 4
    assert (await _chat(client)).status_code == 503
    assert (await _chat(client, STREAM)).status_code == 502
    assert (await _chat(client)).status_code == 504
    assert (await _chat(client)).status_code == 200
    assert server.pending == 1  # the Anthropic one is still waiting


async def test_times_and_endpoint_filters(server: FakeLLMServer, client: httpx.AsyncClient) -> None:
    server.enqueue(Fault.status(503), endpoint="models", times=2)
    assert (await _chat(client)).status_code == 200
    assert (await client.get("/v1/models", headers=AUTH)).status_code == 503
    assert (await client.get("/v1/models", headers=AUTH)).status_code == 503
    assert (await client.get("/v1/models", headers=AUTH)).status_code == 200
    server.enqueue(Fault.status(500), path="/openai/")
    assert (await _chat(client)).status_code == 200
    assert server.pending == 1


async def test_default_fault_applies_when_nothing_is_queued(server: FakeLLMServer, client: httpx.AsyncClient) -> None:
    server.set_default(Fault.answer("always"))
    server.enqueue(Fault.answer("once"))
    contents = [(await _chat(client)).json()["choices"][0]["message"]["content"] for _ in range(3)]
    assert contents == ["once", "always", "always"]
    server.reset()
    assert (await _chat(client)).json()["choices"][0]["message"]["content"] == "echo: hello there"


async def test_custom_answer_chunks_usage_and_finish(
    server: FakeLLMServer, client: httpx.AsyncClient, sse_json: SSEJson
) -> None:
    fault = Fault.answer(chunks=["a", "b", "c"], prompt_tokens=7, completion_tokens=3, finish_reason="length")
    server.enqueue(fault, times=2)
    body = (await _chat(client)).json()
    assert body["choices"][0]["message"]["content"] == "abc"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["prompt_tokens"] == 7
    assert body["usage"]["completion_tokens"] == 3
    chunks = sse_json((await _chat(client, STREAM)).text)
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:4]] == ["a", "b", "c"]


async def test_latency_delays_the_headers(server: FakeLLMServer, client: httpx.AsyncClient) -> None:
    server.enqueue(Fault.latency(0.15))
    start = time.monotonic()
    assert (await _chat(client)).status_code == 200
    assert time.monotonic() - start >= 0.14


async def test_stall_before_first_chunk_and_between(server: FakeLLMServer, client: httpx.AsyncClient) -> None:
    server.enqueue(Fault.stall(before_first=0.1, between=0.05))
    start = time.monotonic()
    async with client.stream("POST", "/v1/chat/completions", json=STREAM, headers=AUTH) as response:
        headers_at = time.monotonic() - start
        arrivals = []
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                arrivals.append(time.monotonic() - start)
    assert arrivals[0] - headers_at >= 0.09  # the stall comes after the headers
    assert arrivals[-1] - arrivals[0] >= 0.09  # two gaps between the three text chunks


async def test_stall_on_a_plain_answer_delays_the_body(server: FakeLLMServer, client: httpx.AsyncClient) -> None:
    server.enqueue(Fault.stall(before_first=0.1))
    with pytest.raises(httpx.ReadTimeout):
        await client.post("/v1/chat/completions", json=BODY, headers=AUTH, timeout=httpx.Timeout(5, read=0.03))


async def test_drop_before_response(server: FakeLLMServer, client: httpx.AsyncClient) -> None:
    server.enqueue(Fault.drop_connection())
    with pytest.raises(httpx.RemoteProtocolError):
        await _chat(client)
    assert (await _chat(client)).status_code == 200


async def test_drop_mid_stream_after_n_chunks(server: FakeLLMServer, client: httpx.AsyncClient) -> None:
    server.enqueue(Fault.drop_mid_stream(after_chunks=2))
    lines: list[str] = []

    async def read() -> None:
        async with client.stream("POST", "/v1/chat/completions", json=STREAM, headers=AUTH) as response:
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    lines.append(line)

    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        await read()
    assert len(lines) == 3  # the role chunk and two text chunks
    assert await server.wait_for_open_connections(0) == 0


async def test_drop_mid_body_of_a_plain_answer(server: FakeLLMServer, client: httpx.AsyncClient) -> None:
    server.enqueue(Fault.drop_mid_stream())
    with pytest.raises(httpx.RemoteProtocolError):
        await _chat(client)


async def test_malformed_json_plain_and_streamed(
    server: FakeLLMServer, client: httpx.AsyncClient, sse_events: SSEEvents
) -> None:
    server.enqueue(Fault.malformed_json())
    response = await _chat(client)
    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()
    server.enqueue(Fault.malformed_json(after_chunks=1))
    events = sse_events((await _chat(client, STREAM)).text)
    bad = [data for _, data in events if data != "[DONE]" and not _is_json(data)]
    assert len(bad) == 1
    assert events[-1] == (None, "[DONE]")


async def test_error_event_inside_a_200_stream(
    server: FakeLLMServer, client: httpx.AsyncClient, sse_json: SSEJson
) -> None:
    server.enqueue(Fault.error_event(after_chunks=1))
    response = await _chat(client, STREAM)
    assert response.status_code == 200
    chunks = sse_json(response.text)
    assert chunks[-1]["error"]["type"] == "server_error"
    assert "[DONE]" not in response.text


async def test_missing_end_marker(server: FakeLLMServer, client: httpx.AsyncClient, sse_json: SSEJson) -> None:
    server.enqueue(Fault.missing_end_marker())
    response = await _chat(client, STREAM)
    assert "[DONE]" not in response.text
    assert sse_json(response.text)[-1]["choices"][0]["finish_reason"] == "stop"


async def test_raw_body_and_combined_faults(server: FakeLLMServer, client: httpx.AsyncClient) -> None:
    server.enqueue(Fault.raw(b"<html>bad gateway</html>", status=502, content_type="text/html"))
    response = await _chat(client)
    assert (response.status_code, response.text) == (502, "<html>bad gateway</html>")
    assert response.headers["content-type"] == "text/html"
    combined = Fault.latency(0.05) | Fault.status(503, retry_after=2)
    assert (combined.headers_delay, combined.status_code, combined.retry_after) == (0.05, 503, 2)
    server.enqueue(combined)
    start = time.monotonic()
    response = await _chat(client)
    assert response.status_code == 503
    assert time.monotonic() - start >= 0.04


async def test_stop_does_not_hang_on_a_stalled_stream() -> None:
    server = FakeLLMServer().start()
    server.enqueue(Fault.stall(before_first=30))
    async with (
        httpx.AsyncClient(base_url=server.url, verify=False) as client,
        client.stream("POST", "/v1/chat/completions", json=STREAM, headers=AUTH),
    ):
        start = time.monotonic()
        await asyncio.to_thread(server.stop)
        assert time.monotonic() - start < 2


def _is_json(data: str) -> bool:
    try:
        json.loads(data)
    except ValueError:
        return False
    return True
