"""The fake server speaking Bedrock Runtime: Converse JSON, ConverseStream event-stream frames (decoded with
botocore), AWS error shapes, URL-encoded model ids."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from botocore.eventstream import EventStreamBuffer

from axonflow_llm.testing.fake_server import FakeLLMServer, Fault
from axonflow_llm.testing.fake_server.bedrock import encode_event_message

AUTH = {"Authorization": "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250101/us-east-1/bedrock/aws4_request"}
MODEL = "anthropic.claude-3-5-sonnet-20240620-v1%3A0"
CONVERSE = f"/model/{MODEL}/converse"
STREAM = f"/model/{MODEL}/converse-stream"
BODY = {"messages": [{"role": "user", "content": [{"text": "hi bedrock"}]}], "inferenceConfig": {"maxTokens": 50}}


def _decode(raw: bytes) -> list[tuple[dict[str, Any], Any]]:
    buffer = EventStreamBuffer()
    buffer.add_data(raw)
    out: list[tuple[dict[str, Any], Any]] = []
    for message in buffer:
        payload = message.payload
        try:
            body: Any = json.loads(payload)
        except ValueError:
            body = payload
        out.append((message.headers, body))
    return out


def test_encoder_round_trips_through_botocore() -> None:
    raw = encode_event_message({":event-type": "x", ":message-type": "event"}, b'{"a":1}')
    raw += encode_event_message({"h": "é"}, b"")
    (h1, b1), (h2, b2) = _decode(raw)
    assert (h1, b1) == ({":event-type": "x", ":message-type": "event"}, {"a": 1})
    assert (h2, b2) == ({"h": "é"}, b"")


async def test_converse_has_the_documented_shape(server: FakeLLMServer, client: httpx.AsyncClient) -> None:
    response = await client.post(CONVERSE, json=BODY, headers=AUTH)
    assert response.status_code == 200
    assert response.headers["x-amzn-requestid"]
    body = response.json()
    assert body["output"]["message"] == {"role": "assistant", "content": [{"text": "echo: hi bedrock"}]}
    assert body["stopReason"] == "end_turn"
    usage = body["usage"]
    assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"]
    assert "latencyMs" in body["metrics"]
    record = server.last_request
    assert record.model == "anthropic.claude-3-5-sonnet-20240620-v1:0"
    assert record.raw_path == CONVERSE
    assert record.headers["authorization"].startswith("AWS4-HMAC-SHA256")


async def test_converse_stream_decodes_with_botocore(client: httpx.AsyncClient) -> None:
    response = await client.post(STREAM, json=BODY, headers=AUTH)
    assert response.headers["content-type"] == "application/vnd.amazon.eventstream"
    messages = _decode(response.content)
    kinds = [h[":event-type"] for h, _ in messages]
    assert kinds[0] == "messageStart"
    assert kinds[-3:] == ["contentBlockStop", "messageStop", "metadata"]
    assert set(kinds[1:-3]) == {"contentBlockDelta"}
    assert all(h[":message-type"] == "event" and h[":content-type"] == "application/json" for h, _ in messages)
    assert messages[0][1]["role"] == "assistant"
    text = "".join(b["delta"]["text"] for h, b in messages if h[":event-type"] == "contentBlockDelta")
    assert text == "echo: hi bedrock"
    assert messages[-2][1]["stopReason"] == "end_turn"
    assert messages[-1][1]["usage"]["outputTokens"] > 0


async def test_exception_event_inside_the_stream(server: FakeLLMServer, client: httpx.AsyncClient) -> None:
    server.enqueue(Fault.error_event(after_chunks=1))
    messages = _decode((await client.post(STREAM, json=BODY, headers=AUTH)).content)
    headers, body = messages[-1]
    assert headers[":message-type"] == "exception"
    assert headers[":exception-type"] == "throttlingException"
    assert "message" in body
    assert [h.get(":event-type") for h, _ in messages[:-1]] == ["messageStart", "contentBlockDelta"]


async def test_missing_end_and_malformed_payload(server: FakeLLMServer, client: httpx.AsyncClient) -> None:
    server.enqueue(Fault.missing_end_marker())
    kinds = [h[":event-type"] for h, _ in _decode((await client.post(STREAM, json=BODY, headers=AUTH)).content)]
    assert "messageStop" not in kinds
    assert "metadata" not in kinds
    server.enqueue(Fault.malformed_json(after_chunks=1))
    messages = _decode((await client.post(STREAM, json=BODY, headers=AUTH)).content)
    assert isinstance(messages[2][1], bytes)  # framing fine, payload not JSON


@pytest.mark.parametrize(
    ("status", "kind"),
    [(429, "ThrottlingException"), (400, "ValidationException"), (503, "ServiceUnavailableException")],
)
async def test_errors_use_the_aws_shape(
    server: FakeLLMServer, client: httpx.AsyncClient, status: int, kind: str
) -> None:
    server.enqueue(Fault.status(status))
    response = await client.post(CONVERSE, json=BODY, headers=AUTH)
    assert response.status_code == status
    assert response.headers["x-amzn-errortype"].split(":")[0] == kind
    assert set(response.json()) == {"message"}


async def test_missing_authorization_and_messages(client: httpx.AsyncClient) -> None:
    response = await client.post(CONVERSE, json=BODY)
    assert response.status_code == 403
    assert response.json() == {"message": "Missing Authentication Token"}
    response = await client.post(CONVERSE, json={"messages": []}, headers=AUTH)
    assert response.status_code == 400
    assert response.headers["x-amzn-errortype"].startswith("ValidationException")


async def test_foundation_model_health(client: httpx.AsyncClient) -> None:
    body = (await client.get(f"/foundation-models/{MODEL}", headers=AUTH)).json()
    assert body["modelDetails"]["modelId"] == "anthropic.claude-3-5-sonnet-20240620-v1:0"
    assert (await client.get("/foundation-models", headers=AUTH)).json()["modelSummaries"]


async def test_drop_mid_event_stream(server: FakeLLMServer, client: httpx.AsyncClient) -> None:
    server.enqueue(Fault.drop_mid_stream(after_chunks=1))
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        await client.post(STREAM, json=BODY, headers=AUTH)


def test_botocores_own_client_speaks_to_the_fake(server: FakeLLMServer) -> None:
    import botocore.session
    from botocore.config import Config
    from botocore.exceptions import ClientError, EventStreamError

    client = botocore.session.get_session().create_client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=server.url,
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="not-a-secret",
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
    )
    model = "anthropic.claude-3-5-sonnet-20240620-v1:0"
    messages = [{"role": "user", "content": [{"text": "hi boto"}]}]
    answer = client.converse(modelId=model, messages=messages)
    assert answer["output"]["message"]["content"] == [{"text": "echo: hi boto"}]
    assert answer["usage"]["totalTokens"] == 5
    assert server.last_request.raw_path == f"/model/{MODEL}/converse"
    try:
        stream = client.converse_stream(modelId=model, messages=messages)["stream"]
        try:
            events = list(stream)
        finally:
            stream.close()
        assert [next(iter(e)) for e in events][-3:] == ["contentBlockStop", "messageStop", "metadata"]
        server.enqueue(Fault.error_event(after_chunks=1))
        broken = client.converse_stream(modelId=model, messages=messages)["stream"]
        try:
            with pytest.raises(EventStreamError, match="throttlingException"):
                list(broken)
        finally:
            broken.close()  # the error left the connection checked out: close it, not the garbage collector
        server.enqueue(Fault.status(429))
        with pytest.raises(ClientError) as caught:
            client.converse(modelId=model, messages=messages)
        assert caught.value.response["Error"]["Code"] == "ThrottlingException"
    finally:
        client.close()
