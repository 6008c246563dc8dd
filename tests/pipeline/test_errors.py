from __future__ import annotations

import email.utils
import time

import httpx
import pytest

from axonflow_llm import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    AxonFlowError,
    BadRequestError,
    BudgetExceededError,
    CircuitOpenError,
    ConfigError,
    OverloadedError,
    RateLimitError,
    RateLimitExceededError,
    ServerError,
    StreamInterruptedError,
)
from axonflow_llm.pipeline.errors import parse_retry_after, redact

KEY = "sk-test-SECRET1234567890"


def response(status: int, body: object = None, headers: dict[str, str] | None = None,
             request_headers: dict[str, str] | None = None, text: str | None = None) -> httpx.Response:
    request = httpx.Request("POST", "https://api.example.com/v1/x", headers=request_headers or {})
    if text is not None:
        return httpx.Response(status, text=text, headers=headers, request=request)
    return httpx.Response(status, json=body, headers=headers, request=request)


@pytest.mark.parametrize(
    ("status", "cls", "retryable"),
    [
        (400, BadRequestError, False),
        (404, BadRequestError, False),
        (422, BadRequestError, False),
        (401, AuthenticationError, False),
        (403, AuthenticationError, False),
        (408, BadRequestError, True),
        (409, BadRequestError, True),
        (429, RateLimitError, True),
        (500, ServerError, True),
        (503, ServerError, True),
        (529, OverloadedError, True),
    ],
)
def test_from_response_picks_the_subclass(status: int, cls: type[APIError], retryable: bool) -> None:
    err = APIError.from_response(response(status, {"error": {"message": "boom"}}), provider="openai")
    assert type(err) is cls
    assert err.status_code == status
    assert err.retryable is retryable
    assert err.message == "boom"
    assert str(err) == f"openai: HTTP {status}: boom"


def test_retry_after_seconds_ms_and_http_date() -> None:
    assert parse_retry_after(httpx.Headers({"retry-after": "7"})) == 7.0
    assert parse_retry_after(httpx.Headers({"retry-after": "1.5"})) == 1.5
    assert parse_retry_after(httpx.Headers({"retry-after-ms": "250", "retry-after": "9"})) == 0.25
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    got = parse_retry_after(httpx.Headers({"retry-after": date}), now=now)
    assert got is not None and 28 <= got <= 31
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after(httpx.Headers({"retry-after": past}), now=now) == 0.0
    for junk in ("soon", "-3", "nan", "inf"):
        assert parse_retry_after(httpx.Headers({"retry-after": junk})) is None


def test_from_response_reads_request_id_should_retry_and_retry_after() -> None:
    err = APIError.from_response(
        response(400, {"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}},
                 headers={"request-id": "req_1", "x-should-retry": "true", "retry-after": "2"}),
        provider="anthropic",
    )
    assert err.request_id == "req_1"
    assert err.should_retry is True
    assert err.retryable is True  # the server's word wins
    assert err.retry_after == 2.0
    assert "req_1" in str(err)
    no = APIError.from_response(response(503, {}, headers={"x-should-retry": "false"}), provider="p")
    assert no.retryable is False


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"error": {"message": "openai-style"}}, "openai-style"),
        ({"error": "ollama-style"}, "ollama-style"),
        ({"message": "bedrock-style"}, "bedrock-style"),
        ({"Message": "bedrock-upper"}, "bedrock-upper"),
        ([{"error": {"code": 400, "message": "gemini-list"}}], "gemini-list"),
    ],
)
def test_from_response_finds_the_provider_message(body: object, message: str) -> None:
    assert APIError.from_response(response(400, body), provider="p").message == message


def test_non_json_body_gives_its_text() -> None:
    err = APIError.from_response(response(502, text="<html>Bad Gateway</html>"), provider="p")
    assert isinstance(err, ServerError)
    assert "Bad Gateway" in err.message


def test_credentials_the_request_carried_are_scrubbed() -> None:
    body = {"error": {"message": f"Incorrect API key provided: {KEY}"}}
    err = APIError.from_response(
        response(401, body, request_headers={"Authorization": f"Bearer {KEY}"}), provider="openai"
    )
    for text in (str(err), repr(err), err.message, err.body or ""):
        assert KEY not in text
    err2 = APIError.from_response(
        response(401, {"error": {"message": "key abcd-custom-key-9999 rejected"}},
                 request_headers={"x-api-key": "abcd-custom-key-9999"}), provider="anthropic"
    )
    assert "abcd-custom-key-9999" not in str(err2)


def test_redact_masks_key_shapes() -> None:
    assert redact(f"token {KEY} here") == "token *** here"
    assert redact("AKIAABCDEFGHIJKLMNOP") == "***"
    assert redact("nothing secret") == "nothing secret"


def test_hierarchy_and_retryable() -> None:
    assert issubclass(OverloadedError, ServerError)
    assert issubclass(APITimeoutError, APIConnectionError)
    assert APIConnectionError("x").retryable
    assert APITimeoutError("x").retryable
    assert StreamInterruptedError("x").retryable
    assert not CircuitOpenError("x", retry_after=3).retryable
    assert RateLimitExceededError("x", retry_after=1).retryable
    assert not RateLimitExceededError("x", retry_after=None).retryable
    assert not BudgetExceededError("x").retryable
    assert isinstance(ConfigError("x"), ValueError)
    for cls in (APIError, APIConnectionError, StreamInterruptedError, CircuitOpenError,
                RateLimitExceededError, BudgetExceededError, ConfigError):
        assert issubclass(cls, AxonFlowError)


def test_request_id_prefers_the_first_known_header_whatever_their_order() -> None:
    from axonflow_llm.pipeline.errors import request_id_from_headers

    headers = httpx.Headers([("Apim-Request-Id", "azure-1"), ("X-Request-ID", "req-1"), ("other", "x")])
    assert request_id_from_headers(headers) == "req-1"
    assert request_id_from_headers(httpx.Headers({"x-amzn-RequestId": "aws-1"})) == "aws-1"
    assert request_id_from_headers(httpx.Headers({"x-request-id": ""})) is None
    assert request_id_from_headers(httpx.Headers({})) is None
    assert request_id_from_headers({"request-id": "plain-mapping"}) == "plain-mapping"
