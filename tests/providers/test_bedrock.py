"""BedrockProvider: Converse requests signed with SigV4, documented responses and event streams, errors."""

from __future__ import annotations

import asyncio
import binascii
import json
import os
import re
import struct
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.auth import SigV4Auth as BotoSigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import given, settings
from hypothesis import strategies as st

from axonflow_llm.middleware.retry import RetryMiddleware
from axonflow_llm.middleware.retry_config import RetryConfig
from axonflow_llm.pipeline.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigError,
    MalformedResponseError,
    RateLimitError,
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
from axonflow_llm.pipeline.pipeline import Layer, Pipeline
from axonflow_llm.providers.bedrock import BedrockProvider
from axonflow_llm.providers.sigv4 import SigV4Auth
from axonflow_llm.testing.fake_server import FakeLLMServer, Fault, RecordedRequest, fake_llm_server

ACCESS_KEY = "AKIDEXAMPLEFAKE12345"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYFAKESECRETKEY"
TOKEN = "FwoGZXIvYXdzEFAKESESSIONTOKEN"
REGION = "us-west-2"
MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
CREDS = {"aws_access_key_id": ACCESS_KEY, "aws_secret_access_key": SECRET}

# The documented Converse answer (Bedrock user guide, "Converse API examples").
EXAMPLE_RESPONSE = {
    "output": {
        "message": {
            "role": "assistant",
            "content": [{"text": "Here is a list of 3 pop songs by artists from the United Kingdom: ..."}],
        }
    },
    "stopReason": "end_turn",
    "usage": {"inputTokens": 30, "outputTokens": 628, "totalTokens": 658},
    "metrics": {"latencyMs": 1275},
}


@pytest.fixture(autouse=True)
def isolated_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No real AWS configuration, credentials or instance metadata may leak into a test."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_BEARER_TOKEN_BEDROCK",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


# --- an AWS event-stream encoder (the format botocore's EventStreamBuffer decodes) ----------------------


def _header(name: str, value: str) -> bytes:
    n, v = name.encode(), value.encode()
    return struct.pack("!B", len(n)) + n + b"\x07" + struct.pack("!H", len(v)) + v


def event_message(headers: dict[str, str], payload: bytes) -> bytes:
    hdrs = b"".join(_header(k, v) for k, v in headers.items())
    total = 12 + len(hdrs) + len(payload) + 4
    prelude = struct.pack("!II", total, len(hdrs))
    prelude += struct.pack("!I", binascii.crc32(prelude) & 0xFFFFFFFF)
    message = prelude + hdrs + payload
    return message + struct.pack("!I", binascii.crc32(message) & 0xFFFFFFFF)


def event(event_type: str, payload: dict[str, Any]) -> bytes:
    headers = {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"}
    return event_message(headers, json.dumps(payload).encode())


def exception(exception_type: str, message: str) -> bytes:
    headers = {":exception-type": exception_type, ":content-type": "application/json", ":message-type": "exception"}
    return event_message(headers, json.dumps({"message": message}).encode())


# The documented ConverseStream event flow (each payload padded with "p", as the service sends it).
EXAMPLE_EVENTS = [
    event("messageStart", {"p": "abcdefghijk", "role": "assistant"}),
    event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hello"}, "p": "abcd"}),
    event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": " there"}, "p": "ab"}),
    event("contentBlockStop", {"contentBlockIndex": 0, "p": "abcdefghijklm"}),
    event("messageStop", {"p": "abcdefghij", "stopReason": "end_turn"}),
    event(
        "metadata",
        {
            "metrics": {"latencyMs": 421},
            "p": "abcdefghijklmnop",
            "usage": {"inputTokens": 12, "outputTokens": 6, "totalTokens": 18},
        },
    ),
]


class ChunkedBody(httpx.AsyncByteStream):
    """An event-stream body delivered in awkward pieces (messages split across reads), closable."""

    def __init__(self, data: bytes, piece: int = 7) -> None:
        self.data = data
        self.piece = piece
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i in range(0, len(self.data), self.piece):
            yield self.data[i : i + self.piece]

    async def aclose(self) -> None:
        self.closed = True


def event_stream(*messages: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        200,
        headers={"content-type": "application/vnd.amazon.eventstream", "x-amzn-requestid": "rid-s", **(headers or {})},
        stream=ChunkedBody(b"".join(messages)),
    )


class Recorder:
    def __init__(self, *answers: httpx.Response | Callable[[httpx.Request], httpx.Response]) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return answer(request) if callable(answer) else answer

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]

    def body(self) -> Any:
        return json.loads(self.requests[-1].content)


def make(rec: Recorder, **kwargs: Any) -> BedrockProvider:
    kwargs.setdefault("pipeline", Pipeline())
    kwargs.setdefault("region", REGION)
    kwargs.setdefault("model", MODEL)
    if "api_key" not in kwargs:
        kwargs.setdefault("settings", CREDS)
    return BedrockProvider(http_client=httpx.AsyncClient(transport=httpx.MockTransport(rec)), **kwargs)


async def collect(provider: BedrockProvider, request: CompletionRequest) -> list[StreamChunk]:
    async with provider.stream(request) as stream:
        return [chunk async for chunk in stream]


async def drain_into(provider: BedrockProvider, request: CompletionRequest, got: list[str]) -> None:
    """Read a stream to its end, keeping the text of each chunk as it arrives (even if it then fails)."""
    async with provider.stream(request) as stream:
        async for chunk in stream:
            got.append(chunk.content)


async def call(provider: BedrockProvider, request: CompletionRequest, *, streaming: bool) -> None:
    if streaming:
        await collect(provider, request)
    else:
        await provider.complete(request)


REQ = CompletionRequest(prompt="Create a list of 3 pop songs.")
AUTH_RE = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[A-Z0-9]+)/(?P<date>\d{8})/(?P<region>[a-z0-9-]+)/bedrock/aws4_request, "
    r"SignedHeaders=(?P<signed>[a-z0-9;-]+), Signature=(?P<sig>[0-9a-f]{64})"
)


def resign(sent: httpx.Request, credentials: Credentials, region: str = REGION) -> str:
    """The signature botocore computes for exactly what was sent, at the time it was signed."""
    signed = AUTH_RE.fullmatch(sent.headers["authorization"])
    assert signed is not None
    headers = {name: sent.headers[name] for name in signed["signed"].split(";")}
    aws = AWSRequest(method=sent.method, url=str(sent.url), data=sent.content, headers=headers)
    aws.context["timestamp"] = sent.headers["x-amz-date"]
    signer = BotoSigV4Auth(credentials, "bedrock", region)
    return str(signer.signature(signer.string_to_sign(aws, signer.canonical_request(aws)), aws))


# --- requests and signing -------------------------------------------------------------------------------


async def test_plain_call_sends_the_documented_converse_request() -> None:
    rec = Recorder(httpx.Response(200, json=EXAMPLE_RESPONSE))
    await make(rec).complete(
        CompletionRequest(prompt="Create a list of 3 pop songs.", system_prompt="You are a DJ.", temperature=0)
    )
    req = rec.last
    assert req.method == "POST"
    assert req.url.host == "bedrock-runtime.us-west-2.amazonaws.com"
    assert req.url.raw_path == b"/model/anthropic.claude-3-haiku-20240307-v1:0/converse"
    assert req.headers["content-type"] == "application/json"
    assert rec.body() == {
        "messages": [{"role": "user", "content": [{"text": "Create a list of 3 pop songs."}]}],
        "system": [{"text": "You are a DJ."}],
        "inferenceConfig": {"temperature": 0},
    }


async def test_the_sigv4_authorization_header_is_well_formed() -> None:
    rec = Recorder(httpx.Response(200, json=EXAMPLE_RESPONSE))
    await make(rec).complete(REQ)
    req = rec.last
    signed = AUTH_RE.fullmatch(req.headers["authorization"])
    assert signed is not None, req.headers["authorization"]
    assert signed["key"] == ACCESS_KEY
    assert signed["region"] == REGION
    assert signed["date"] == req.headers["x-amz-date"][:8]
    assert re.fullmatch(r"\d{8}T\d{6}Z", req.headers["x-amz-date"])
    assert signed["signed"] == "content-type;host;x-amz-date"
    assert "x-amz-security-token" not in req.headers


async def test_the_signature_covers_the_exact_body_and_path() -> None:
    rec = Recorder(httpx.Response(200, json=EXAMPLE_RESPONSE))
    await make(rec).complete(CompletionRequest(prompt="sign me", top_k=5, stop_sequences=["\u00e9t\u00e9"]))
    sent = rec.last
    creds = Credentials(ACCESS_KEY, SECRET)
    signature = AUTH_RE.fullmatch(sent.headers["authorization"])["sig"]  # type: ignore[index]
    assert resign(sent, creds) == signature
    tampered = httpx.Request(sent.method, sent.url, headers=sent.headers, content=sent.content + b" ")
    assert resign(tampered, creds) != signature
    elsewhere = httpx.Request(
        sent.method, str(sent.url).replace("converse", "converse-stream"), headers=sent.headers, content=sent.content
    )
    assert resign(elsewhere, creds) != signature


async def test_every_attempt_is_signed_afresh() -> None:
    rec = Recorder(httpx.Response(200, json=EXAMPLE_RESPONSE))
    provider = make(rec)
    await provider.complete(REQ)
    await provider.complete(CompletionRequest(prompt="another"))
    first, second = (r.headers["authorization"] for r in rec.requests)
    assert first != second
    for sent in rec.requests:
        assert resign(sent, Credentials(ACCESS_KEY, SECRET)) in sent.headers["authorization"]


async def test_session_token_is_sent_and_signed() -> None:
    rec = Recorder(httpx.Response(200, json=EXAMPLE_RESPONSE))
    await make(rec, settings={**CREDS, "aws_session_token": TOKEN}).complete(REQ)
    sent = rec.last
    assert sent.headers["x-amz-security-token"] == TOKEN
    assert "x-amz-security-token" in AUTH_RE.fullmatch(sent.headers["authorization"])["signed"]  # type: ignore[index]
    assert resign(sent, Credentials(ACCESS_KEY, SECRET, TOKEN)) in sent.headers["authorization"]


async def test_streamed_call_goes_to_converse_stream() -> None:
    rec = Recorder(event_stream(*EXAMPLE_EVENTS))
    await collect(make(rec), REQ)
    assert rec.last.url.raw_path == b"/model/anthropic.claude-3-haiku-20240307-v1:0/converse-stream"
    assert resign(rec.last, Credentials(ACCESS_KEY, SECRET)) in rec.last.headers["authorization"]


async def test_model_arns_are_percent_encoded_in_the_path() -> None:
    rec = Recorder(httpx.Response(200, json=EXAMPLE_RESPONSE))
    arn = "arn:aws:bedrock:us-west-2:123456789012:inference-profile/us.anthropic.claude-3-haiku-20240307-v1:0"
    await make(rec).complete(CompletionRequest(prompt="x", model=arn))
    assert rec.last.url.raw_path == (
        b"/model/arn:aws:bedrock:us-west-2:123456789012:inference-profile%2F"
        b"us.anthropic.claude-3-haiku-20240307-v1:0/converse"
    )
    assert resign(rec.last, Credentials(ACCESS_KEY, SECRET)) in rec.last.headers["authorization"]


async def test_inference_config_and_system_messages() -> None:
    rec = Recorder(httpx.Response(200, json=EXAMPLE_RESPONSE))
    await make(rec, max_tokens=500).complete(
        CompletionRequest(
            messages=[
                Message(role="system", content="Be brief."),
                Message(role="user", content="Hi"),
                Message(role="assistant", content="Hello"),
            ],
            prompt="Songs?",
            system_prompt="You are a DJ.",
            temperature=0.5,
            top_p=0.9,
            stop_sequences=["END"],
        )
    )
    body = rec.body()
    assert body["system"] == [{"text": "You are a DJ."}, {"text": "Be brief."}]
    assert body["messages"] == [
        {"role": "user", "content": [{"text": "Hi"}]},
        {"role": "assistant", "content": [{"text": "Hello"}]},
        {"role": "user", "content": [{"text": "Songs?"}]},
    ]
    assert body["inferenceConfig"] == {"maxTokens": 500, "temperature": 0.5, "topP": 0.9, "stopSequences": ["END"]}
    assert "additionalModelRequestFields" not in body


@pytest.mark.parametrize(
    ("model", "fields"),
    [
        ("anthropic.claude-3-haiku-20240307-v1:0", {"top_k": 7}),
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", {"top_k": 7}),
        ("amazon.nova-lite-v1:0", {"inferenceConfig": {"topK": 7}}),
    ],
)
async def test_top_k_goes_to_additional_model_request_fields(model: str, fields: dict[str, Any]) -> None:
    rec = Recorder(httpx.Response(200, json=EXAMPLE_RESPONSE))
    await make(rec, model=model).complete(CompletionRequest(prompt="x", top_k=7))
    assert rec.body()["additionalModelRequestFields"] == fields


async def test_top_k_for_a_family_without_a_known_field_says_what_to_do() -> None:
    rec = Recorder(httpx.Response(200, json=EXAMPLE_RESPONSE))
    with pytest.raises(ValueError, match="additional_model_request_fields"):
        await make(rec, model="meta.llama3-70b-instruct-v1:0").complete(CompletionRequest(prompt="x", top_k=7))
    assert rec.requests == []


async def test_additional_model_request_fields_setting_is_sent() -> None:
    rec = Recorder(httpx.Response(200, json=EXAMPLE_RESPONSE))
    settings = {**CREDS, "additional_model_request_fields": {"top_k": 3, "anthropic_beta": ["x"]}}
    await make(rec, settings=settings).complete(CompletionRequest(prompt="x", top_k=9))
    assert rec.body()["additionalModelRequestFields"] == {"top_k": 3, "anthropic_beta": ["x"]}


# --- responses ------------------------------------------------------------------------------------------


async def test_documented_response_maps_to_a_completion_response() -> None:
    rec = Recorder(httpx.Response(200, json=EXAMPLE_RESPONSE, headers={"x-amzn-RequestId": "5b1e-rid"}))
    resp = await make(rec).complete(REQ)
    assert resp.content.startswith("Here is a list of 3 pop songs")
    assert resp.model == MODEL
    assert resp.usage == UsageStats(prompt_tokens=30, completion_tokens=628, total_tokens=658)
    assert resp.finish_reason is FinishReason.STOP
    assert resp.request_id == "5b1e-rid"
    assert resp.provider == "bedrock"


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("end_turn", FinishReason.STOP),
        ("stop_sequence", FinishReason.STOP),
        ("max_tokens", FinishReason.LENGTH),
        ("tool_use", FinishReason.TOOL_CALLS),
        ("guardrail_intervened", FinishReason.CONTENT_FILTER),
        ("content_filtered", FinishReason.CONTENT_FILTER),
        ("malformed_model_output", None),
    ],
)
async def test_stop_reasons_are_normalised(reason: str, expected: FinishReason | None) -> None:
    resp = await make(Recorder(httpx.Response(200, json={**EXAMPLE_RESPONSE, "stopReason": reason}))).complete(REQ)
    assert resp.finish_reason is expected


async def test_cache_tokens_count_as_prompt_tokens() -> None:
    usage = {"inputTokens": 5, "outputTokens": 2, "totalTokens": 107, "cacheReadInputTokens": 100}
    resp = await make(Recorder(httpx.Response(200, json={**EXAMPLE_RESPONSE, "usage": usage}))).complete(REQ)
    assert resp.usage == UsageStats(prompt_tokens=105, completion_tokens=2, total_tokens=107)


@pytest.mark.parametrize("body", [b"nope", b"{}", b'{"output": {"message": {"content": 3}}}'])
async def test_malformed_answer_raises_malformed_response_error(body: bytes) -> None:
    with pytest.raises(MalformedResponseError) as info:
        await make(Recorder(httpx.Response(200, content=body))).complete(REQ)
    assert info.value.provider == "bedrock"


# --- event streams --------------------------------------------------------------------------------------


async def test_event_stream_yields_text_then_a_done_chunk_after_metadata() -> None:
    chunks = await collect(make(Recorder(event_stream(*EXAMPLE_EVENTS))), REQ)
    assert [c.content for c in chunks] == ["Hello", " there", ""]
    final = chunks[-1]
    assert final.done
    assert final.finish_reason is FinishReason.STOP
    assert final.usage == UsageStats(prompt_tokens=12, completion_tokens=6, total_tokens=18)


@pytest.mark.parametrize("missing", ["messageStop", "metadata"])
async def test_stream_without_both_end_markers_is_interrupted(missing: str) -> None:
    index = {"messageStop": 4, "metadata": 5}[missing]
    events = [e for i, e in enumerate(EXAMPLE_EVENTS) if i != index]
    with pytest.raises(StreamInterruptedError):
        await collect(make(Recorder(event_stream(*events))), REQ)


async def test_stream_cut_inside_a_message_is_interrupted() -> None:
    data = b"".join(EXAMPLE_EVENTS)[:-10]
    response = httpx.Response(
        200, headers={"content-type": "application/vnd.amazon.eventstream"}, stream=ChunkedBody(data)
    )
    with pytest.raises(StreamInterruptedError):
        await collect(make(Recorder(response)), REQ)


@pytest.mark.parametrize(
    ("kind", "cls", "status"),
    [
        ("throttlingException", RateLimitError, 429),
        ("serviceUnavailableException", ServerError, 503),
        ("internalServerException", ServerError, 500),
        ("modelStreamErrorException", ServerError, 424),
        ("validationException", BadRequestError, 400),
    ],
)
async def test_exception_events_raise_typed_errors(kind: str, cls: type[Exception], status: int) -> None:
    body = ChunkedBody(b"".join([*EXAMPLE_EVENTS[:2], exception(kind, "Something went wrong.")]))
    response = httpx.Response(
        200, headers={"content-type": "application/vnd.amazon.eventstream", "x-amzn-requestid": "rid-9"}, stream=body
    )
    got: list[str] = []
    with pytest.raises(cls) as info:
        await drain_into(make(Recorder(response)), REQ, got)
    err = info.value
    assert got == ["Hello"]
    assert type(err) is cls
    assert err.status_code == status  # type: ignore[attr-defined]
    assert err.request_id == "rid-9"  # type: ignore[attr-defined]
    assert kind in str(err) and "Something went wrong." in str(err)
    assert body.closed


async def test_exception_events_never_echo_the_session_token() -> None:
    response = event_stream(exception("validationException", f"bad token {TOKEN}"))
    with pytest.raises(BadRequestError) as info:
        await collect(make(Recorder(response), settings={**CREDS, "aws_session_token": TOKEN}), REQ)
    assert TOKEN not in str(info.value) and TOKEN not in (info.value.body or "")


async def test_model_stream_errors_are_worth_retrying() -> None:
    response = event_stream(exception("modelStreamErrorException", "model failed"))
    with pytest.raises(ServerError) as info:
        await collect(make(Recorder(response)), REQ)
    assert info.value.retryable


async def test_a_corrupt_event_stream_is_malformed() -> None:
    data = bytearray(b"".join(EXAMPLE_EVENTS))
    data[20] ^= 0xFF  # breaks the message CRC
    response = httpx.Response(
        200, headers={"content-type": "application/vnd.amazon.eventstream"}, stream=ChunkedBody(bytes(data))
    )
    with pytest.raises(MalformedResponseError, match="event stream"):
        await collect(make(Recorder(response)), REQ)


async def test_a_json_answer_to_a_stream_request_is_malformed() -> None:
    response = httpx.Response(200, json=EXAMPLE_RESPONSE)
    with pytest.raises(MalformedResponseError, match="not an AWS event stream"):
        await collect(make(Recorder(response)), REQ)


async def test_stream_closed_early_closes_the_response() -> None:
    response = event_stream(*EXAMPLE_EVENTS)
    body = response.stream
    async with make(Recorder(response)).stream(REQ) as stream:
        async for _ in stream:
            break
    assert isinstance(body, ChunkedBody) and body.closed


# --- HTTP errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind", "cls"),
    [
        (400, "ValidationException", BadRequestError),
        (403, "AccessDeniedException", AuthenticationError),
        (404, "ResourceNotFoundException", BadRequestError),
        (429, "ThrottlingException", RateLimitError),
        (500, "InternalServerException", ServerError),
        (503, "ServiceUnavailableException", ServerError),
    ],
)
@pytest.mark.parametrize("streaming", [False, True])
async def test_http_errors_map_to_typed_errors_with_the_aws_error_type(
    status: int, kind: str, cls: type[Exception], streaming: bool
) -> None:
    response = httpx.Response(
        status,
        json={"message": "Specific problem."},
        headers={
            "x-amzn-errortype": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/",
            "x-amzn-requestid": "rid-e",
        },
    )
    provider = make(Recorder(response))
    with pytest.raises(cls) as info:
        await call(provider, REQ, streaming=streaming)
    err = info.value
    assert type(err) is cls
    assert err.message == f"{kind}: Specific problem."  # type: ignore[attr-defined]
    assert err.request_id == "rid-e"  # type: ignore[attr-defined]


async def test_capitalised_message_field_is_read_too() -> None:
    response = httpx.Response(400, json={"Message": "Bad thing."}, headers={"x-amzn-errortype": "ValidationException"})
    with pytest.raises(BadRequestError, match=r"ValidationException: Bad thing."):
        await make(Recorder(response)).complete(REQ)


# --- credentials and region -----------------------------------------------------------------------------


async def test_no_secret_anywhere() -> None:
    # The secret never travels, but the session token does: neither may come back in an error.
    echo = {"message": f"The security token included in the request is invalid {TOKEN} {SECRET}"}
    rec = Recorder(httpx.Response(403, json=echo, headers={"x-amzn-errortype": "UnrecognizedClientException"}))
    provider = make(rec, settings={**CREDS, "aws_session_token": TOKEN})
    with pytest.raises(AuthenticationError) as info:
        await provider.complete(REQ)
    err = info.value
    texts = [str(err), repr(err), err.body or "", repr(provider), repr(provider.info), repr(provider.info.auth)]
    texts += [f"{k}: {v}" for k, v in rec.last.headers.items() if k != "x-amz-security-token"]
    for text in texts:
        assert SECRET not in text
        assert TOKEN not in text
    config = ProviderConfig(name="b", type=ProviderType.BEDROCK, settings={})
    assert SECRET not in repr(config)


async def test_credentials_come_from_the_environment_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDENVIRONMENT00000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "envsecret")
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    rec = Recorder(httpx.Response(200, json=EXAMPLE_RESPONSE))
    provider = BedrockProvider(http_client=httpx.AsyncClient(transport=httpx.MockTransport(rec)), pipeline=Pipeline())
    await provider.complete(REQ)
    sent = rec.last
    assert sent.url.host == "bedrock-runtime.eu-central-1.amazonaws.com"
    assert "Credential=AKIDENVIRONMENT00000/" in sent.headers["authorization"]
    assert (
        resign(sent, Credentials("AKIDENVIRONMENT00000", "envsecret"), "eu-central-1") in sent.headers["authorization"]
    )


async def test_credentials_and_region_come_from_a_named_profile(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "credentials").write_text(
        "[dev]\naws_access_key_id = AKIDPROFILE000000000\naws_secret_access_key = profilesecret\n"
    )
    (tmp_path / "config").write_text("[profile dev]\nregion = ap-southeast-2\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    rec = Recorder(httpx.Response(200, json=EXAMPLE_RESPONSE))
    provider = BedrockProvider(
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(rec)),
        pipeline=Pipeline(),
        settings={"profile": "dev"},
    )
    await provider.complete(REQ)
    assert rec.last.url.host == "bedrock-runtime.ap-southeast-2.amazonaws.com"
    assert "Credential=AKIDPROFILE000000000/" in rec.last.headers["authorization"]


async def test_no_credentials_is_a_config_error_saying_what_to_set() -> None:
    rec = Recorder(httpx.Response(200, json=EXAMPLE_RESPONSE))
    provider = make(rec, settings={})
    with pytest.raises(ConfigError, match="AWS_ACCESS_KEY_ID"):
        await provider.complete(REQ)
    assert rec.requests == []
    health = await provider.health_check()
    assert health.status is HealthStatus.UNHEALTHY
    assert "AWS credentials" in health.message


def test_missing_region_says_how_to_fix_it() -> None:
    with pytest.raises(ValueError, match=r"region=.*AWS_REGION"):
        BedrockProvider(pipeline=Pipeline(), settings=CREDS)


@pytest.mark.parametrize("variable", ["AWS_REGION", "AWS_DEFAULT_REGION"])
def test_region_falls_back_to_the_environment(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, "ca-central-1")
    provider = BedrockProvider(pipeline=Pipeline(), settings=CREDS)
    assert provider.endpoint == "https://bedrock-runtime.ca-central-1.amazonaws.com"


def test_a_region_that_is_not_one_is_refused() -> None:
    with pytest.raises(ValueError, match="not an AWS region"):
        BedrockProvider(pipeline=Pipeline(), region="evil.com/x?", settings=CREDS)


async def test_a_bedrock_api_key_is_sent_as_a_bearer_token(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder(httpx.Response(200, json=EXAMPLE_RESPONSE))
    await make(rec, api_key="bedrock-api-key-FAKE").complete(REQ)
    assert rec.last.headers["authorization"] == "Bearer bedrock-api-key-FAKE"
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", "bedrock-env-key-FAKE")
    await make(rec, settings={}).complete(REQ)
    assert rec.last.headers["authorization"] == "Bearer bedrock-env-key-FAKE"
    await make(rec).complete(REQ)  # explicit access keys win over the environment's bearer token
    assert rec.last.headers["authorization"].startswith("AWS4-HMAC-SHA256 ")


def test_missing_botocore_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "botocore.eventstream", None)  # as if botocore were not installed
    with pytest.raises(ImportError, match=re.escape("install it with: pip install 'axonflow-llm[bedrock]'")):
        BedrockProvider(pipeline=Pipeline(), region=REGION, settings=CREDS)


def test_missing_botocore_through_the_registry_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from axonflow_llm.registry import create_provider

    monkeypatch.setitem(sys.modules, "botocore.eventstream", None)
    config = ProviderConfig(name="aws", type=ProviderType.BEDROCK, region=REGION, settings=CREDS)
    with pytest.raises(ConfigError, match=re.escape("aws: AWS Bedrock needs botocore")) as info:
        create_provider(config)
    assert "install it with: pip install 'axonflow-llm[bedrock]'" in str(info.value)
    assert isinstance(info.value, ImportError)  # and still what `except ImportError` expects


def test_sigv4_auth_repr_shows_no_credentials() -> None:
    auth = SigV4Auth(region=REGION, access_key_id=ACCESS_KEY, secret_access_key=SECRET, session_token=TOKEN)
    assert repr(auth) == "SigV4Auth(region='us-west-2', service='bedrock')"
    assert not auth.needs_prepare
    with pytest.raises(ValueError, match="both"):
        SigV4Auth(region=REGION, access_key_id=ACCESS_KEY)


# --- construction, health, capabilities -----------------------------------------------------------------


async def test_from_config_reads_the_region() -> None:
    rec = Recorder(httpx.Response(200, json=EXAMPLE_RESPONSE))
    config = ProviderConfig(
        name="claude-aws", type=ProviderType.BEDROCK, region="eu-west-1", model="amazon.nova-pro-v1:0", settings=CREDS
    )
    provider = BedrockProvider.from_config(
        config, http_client=httpx.AsyncClient(transport=httpx.MockTransport(rec)), pipeline=Pipeline()
    )
    await provider.complete(REQ)
    assert rec.last.url.host == "bedrock-runtime.eu-west-1.amazonaws.com"
    assert rec.last.url.raw_path == b"/model/amazon.nova-pro-v1:0/converse"
    assert provider.type is ProviderType.BEDROCK


async def test_health_check_asks_the_control_plane_about_the_model() -> None:
    rec = Recorder(httpx.Response(200, json={"modelDetails": {"modelId": "anthropic.claude-3-haiku-20240307-v1:0"}}))
    result = await make(rec, model="us.anthropic.claude-3-haiku-20240307-v1:0").health_check()
    assert result.status is HealthStatus.HEALTHY
    sent = rec.last
    assert sent.method == "GET"
    assert sent.url.host == "bedrock.us-west-2.amazonaws.com"
    assert sent.url.raw_path == b"/foundation-models/anthropic.claude-3-haiku-20240307-v1:0"
    assert resign(sent, Credentials(ACCESS_KEY, SECRET)) in sent.headers["authorization"]


@pytest.mark.parametrize(
    ("status", "kind", "expected"),
    [
        (403, "AccessDeniedException", HealthStatus.HEALTHY),
        (403, "UnrecognizedClientException", HealthStatus.UNHEALTHY),
        (404, "ResourceNotFoundException", HealthStatus.UNHEALTHY),
        (503, "ServiceUnavailableException", HealthStatus.UNHEALTHY),
    ],
)
async def test_health_check_outcomes(status: int, kind: str, expected: HealthStatus) -> None:
    rec = Recorder(httpx.Response(status, json={"message": "no"}, headers={"x-amzn-errortype": kind}))
    result = await make(rec).health_check()
    assert result.status is expected


async def test_health_check_can_stop_at_resolving_credentials() -> None:
    rec = Recorder(httpx.Response(500))
    result = await make(rec, settings={**CREDS, "health_check": "credentials"}).health_check()
    assert result.status is HealthStatus.HEALTHY
    assert rec.requests == []


def test_capabilities_and_cost_follow_the_model() -> None:
    rec = Recorder(httpx.Response(200))
    assert Capability.VISION in make(rec, model="anthropic.claude-3-haiku-20240307-v1:0").capabilities()
    assert Capability.VISION not in make(rec, model="amazon.nova-micro-v1:0").capabilities()
    estimate = make(rec, model="amazon.nova-lite-v1:0").estimate_cost(CompletionRequest(prompt="x", max_tokens=1000))
    assert estimate is not None
    assert estimate.output_cost_per_1k == pytest.approx(0.00024)


# --- over real sockets, against the fake server ---------------------------------------------------------

SOCKET_REQ = CompletionRequest(prompt="hello over a real socket")
BOUND = 5.0  # seconds: no socket test may take longer, whatever the fault


@pytest.fixture
def llm_server() -> Iterator[FakeLLMServer]:
    with fake_llm_server() as server:
        yield server


def over_sockets(server: FakeLLMServer, *, retry: bool = False, **kwargs: Any) -> BedrockProvider:
    layers = [Layer(RetryMiddleware, config=RetryConfig(initial_backoff=0.001, max_backoff=0.01))] if retry else []
    kwargs.setdefault("settings", {**CREDS, "aws_session_token": TOKEN})
    return BedrockProvider(region=REGION, endpoint=server.url, pipeline=Pipeline(layers), **kwargs)


def resign_received(seen: RecordedRequest) -> str:
    """The signature of the request exactly as the server received it (path, headers and body bytes)."""
    sent = httpx.Request(
        seen.method,
        f"http://{seen.headers['host']}{seen.raw_path}",
        params=seen.query,
        headers=seen.headers,
        content=seen.body,
    )
    return resign(sent, Credentials(ACCESS_KEY, SECRET, TOKEN))


async def finish(provider: BedrockProvider, server: FakeLLMServer) -> None:
    await provider.aclose()
    assert await server.wait_for_open_connections(0, within=2.0) == 0


async def test_plain_and_streamed_calls_over_sockets(llm_server: FakeLLMServer) -> None:
    provider = over_sockets(llm_server, model="amazon.nova-lite-v1:0")
    async with asyncio.timeout(BOUND):
        resp = await provider.complete(SOCKET_REQ)
        assert resp.content == "echo: hello over a real socket"
        assert resp.finish_reason is FinishReason.STOP
        assert resp.usage.total_tokens > 0
        assert resp.request_id
        seen = llm_server.last_request
        assert seen.raw_path == "/model/amazon.nova-lite-v1:0/converse"
        assert resign_received(seen) in seen.headers["authorization"]  # what arrived is what was signed
        assert seen.model == "amazon.nova-lite-v1:0"
        assert seen.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=")
        assert seen.headers["x-amz-security-token"] == TOKEN
        chunks = await collect(provider, SOCKET_REQ)
        assert "".join(c.content for c in chunks) == "echo: hello over a real socket"
        final = chunks[-1]
        assert final.done and final.finish_reason is FinishReason.STOP
        assert final.usage is not None and final.usage.total_tokens > 0
        assert llm_server.last_request.raw_path == "/model/amazon.nova-lite-v1:0/converse-stream"
    await finish(provider, llm_server)


async def test_an_arn_model_id_arrives_as_one_signed_path_segment(llm_server: FakeLLMServer) -> None:
    arn = "arn:aws:bedrock:us-west-2:123456789012:inference-profile/us.anthropic.claude-3-haiku-20240307-v1:0"
    provider = over_sockets(llm_server, model=arn)
    async with asyncio.timeout(BOUND):
        await provider.complete(SOCKET_REQ)
        await collect(provider, SOCKET_REQ)
    for seen in llm_server.requests:
        assert seen.model == arn
        assert "inference-profile%2Fus." in seen.raw_path
        assert resign_received(seen) in seen.headers["authorization"]
    await finish(provider, llm_server)


# The generic faults (Retry-After, latency, stalls, drops, malformed JSON, the default error event, missing
# end markers), plain and streamed, are in test_fault_matrix.py for all six providers; here, what is
# particular to this provider.
FAULTS: list[tuple[str, Fault, bool, type[Exception]]] = [
    ("503", Fault.status(503), True, ServerError),
    ("400", Fault.status(400), False, BadRequestError),
    ("403", Fault.status(403), True, AuthenticationError),
    (
        "validation event",
        Fault.error_event(after_chunks=1, error_type="validationException", message="bad"),
        True,
        BadRequestError,
    ),
]


@pytest.mark.parametrize(
    ("label", "fault", "streaming", "cls"), FAULTS, ids=[f[0] + ("/stream" if f[2] else "") for f in FAULTS]
)
async def test_each_fault_ends_in_its_typed_error(
    llm_server: FakeLLMServer, label: str, fault: Fault, streaming: bool, cls: type[Exception]
) -> None:
    provider = over_sockets(llm_server)
    llm_server.enqueue(fault)
    async with asyncio.timeout(BOUND):
        with pytest.raises(cls) as info:
            await call(provider, SOCKET_REQ, streaming=streaming)
        assert SECRET not in str(info.value) and TOKEN not in str(info.value)
        assert (await provider.complete(SOCKET_REQ)).content.startswith("echo:")
    await finish(provider, llm_server)


RETRYABLE: list[tuple[str, Fault, bool]] = [
    (label, fault, streaming)
    for label, fault in [
        ("429", Fault.status(429, retry_after=0.01)),
        ("500", Fault.status(500)),
        ("503", Fault.status(503)),
        ("drop", Fault.drop_connection()),
    ]
    for streaming in (False, True)
] + [("throttled-before-first-chunk", Fault.error_event(after_chunks=0), True)]


@pytest.mark.parametrize(
    ("label", "fault", "streaming"), RETRYABLE, ids=[r[0] + ("/stream" if r[2] else "") for r in RETRYABLE]
)
async def test_retryable_faults_succeed_on_retry_each_attempt_signed_afresh(
    llm_server: FakeLLMServer, label: str, fault: Fault, streaming: bool
) -> None:
    provider = over_sockets(llm_server, retry=True)
    llm_server.enqueue(fault, times=2)
    async with asyncio.timeout(BOUND):
        if streaming:
            chunks = await collect(provider, SOCKET_REQ)
            assert "".join(c.content for c in chunks) == "echo: hello over a real socket"
        else:
            assert (await provider.complete(SOCKET_REQ)).content == "echo: hello over a real socket"
    assert len(llm_server.requests) == 3
    for seen in llm_server.requests:
        assert resign_received(seen) in seen.headers["authorization"]
    await finish(provider, llm_server)


async def test_a_stream_closed_early_releases_its_connection(llm_server: FakeLLMServer) -> None:
    provider = over_sockets(llm_server)
    llm_server.enqueue(Fault.answer(chunks=["a", "b", "c", "d"]) | Fault.stall(between=0.05))
    async with asyncio.timeout(BOUND):
        async with provider.stream(SOCKET_REQ) as stream:
            async for chunk in stream:
                assert chunk.content == "a"
                break
    await finish(provider, llm_server)


async def test_health_check_over_sockets(llm_server: FakeLLMServer) -> None:
    provider = over_sockets(llm_server, model="amazon.nova-lite-v1:0")
    async with asyncio.timeout(BOUND):
        result = await provider.health_check()
        assert result.status is HealthStatus.HEALTHY, result.message
        assert llm_server.last_request.raw_path == "/foundation-models/amazon.nova-lite-v1:0"
        llm_server.enqueue(Fault.status(503), endpoint="models")
        assert (await provider.health_check()).status is HealthStatus.UNHEALTHY
    await finish(provider, llm_server)


@pytest.mark.live
async def test_live_call_to_bedrock() -> None:
    model = os.environ.get("AXONFLOW_BEDROCK_MODEL")
    if os.environ.get("AXONFLOW_LIVE_TESTS") != "1" or not model:
        pytest.skip(
            "live test: set AXONFLOW_LIVE_TESTS=1, AXONFLOW_BEDROCK_MODEL, AWS credentials and region "
            "to call the real Bedrock Runtime"
        )
    provider = BedrockProvider(model=model)
    try:
        async with asyncio.timeout(60):
            resp = await provider.complete(CompletionRequest(prompt="Say OK.", max_tokens=10))
            assert resp.usage.total_tokens > 0
            chunks = await collect(provider, CompletionRequest(prompt="Say OK.", max_tokens=10))
            assert chunks[-1].done
            assert (await provider.health_check()).status is HealthStatus.HEALTHY
    finally:
        await provider.aclose()


@settings(deadline=None, max_examples=60)
@given(
    texts=st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=8),
    piece=st.integers(min_value=1, max_value=200),
)
async def test_event_stream_decoding_does_not_depend_on_how_the_bytes_arrive(texts: list[str], piece: int) -> None:
    deltas = [event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": t}}) for t in texts]
    data = b"".join([EXAMPLE_EVENTS[0], *deltas, *EXAMPLE_EVENTS[3:]])
    response = httpx.Response(
        200, headers={"content-type": "application/vnd.amazon.eventstream"}, stream=ChunkedBody(data, piece)
    )
    chunks = await collect(make(Recorder(response)), REQ)
    assert [c.content for c in chunks[:-1]] == texts
    assert chunks[-1].done and chunks[-1].usage == UsageStats(prompt_tokens=12, completion_tokens=6, total_tokens=18)
