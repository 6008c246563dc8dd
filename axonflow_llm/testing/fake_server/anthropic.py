"""Anthropic Messages API on the wire: message objects, the SSE event sequence, error shapes, model list."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from .faults import Endpoint, WireFormat
from .wire import Answer, Call, ErrorReply, Frames, Wire, encode, message_text, sse

__all__ = ["AnthropicWire"]

# Error type and message by status, as the Anthropic errors page lists them.
_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low to access the Anthropic API."),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "The requested resource could not be found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."),
    500: ("api_error", "Internal server error"),
    504: ("timeout_error", "Request timed out"),
    529: ("overloaded_error", "Overloaded"),
}

_MESSAGE_STOP = sse(b'{"type":"message_stop"}', "message_stop")
_PING = sse(b'{"type": "ping"}', "ping")


class AnthropicWire(Wire):
    """POST /v1/messages (plain and SSE), GET /v1/models; needs ``x-api-key`` and ``anthropic-version``."""

    format: ClassVar[WireFormat] = WireFormat.ANTHROPIC
    routes: ClassVar[tuple[tuple[str, str, Endpoint], ...]] = (
        ("POST", "/v1/messages", Endpoint.CHAT),
        ("GET", "/v1/models", Endpoint.MODELS),
    )
    finish_reasons: ClassVar[Mapping[str, str]] = {
        "stop": "end_turn",
        "length": "max_tokens",
        "tool_calls": "tool_use",
        "content_filter": "refusal",
    }

    default_models: ClassVar[tuple[str, ...]] = (
        "claude-sonnet-4-5",
        "claude-sonnet-4-20250514",
        "claude-3-5-haiku-20241022",
    )

    def claims(self, headers: Mapping[str, str]) -> bool:
        return "anthropic-version" in headers or "x-api-key" in headers

    def check(self, call: Call, headers: Mapping[str, str], query: Mapping[str, str]) -> ErrorReply | None:
        if not self.require_auth:
            return None
        auth = headers.get("authorization", "")
        if not headers.get("x-api-key") and not (auth.lower().startswith("bearer ") and auth[7:].strip()):
            return ErrorReply(401, "authentication_error", "x-api-key header is required")
        if not headers.get("anthropic-version"):
            return ErrorReply(400, "invalid_request_error", "anthropic-version: header is required")
        return None

    def parse(self, call: Call, body: Any) -> ErrorReply | None:
        if not isinstance(body, dict):
            return ErrorReply(400, "invalid_request_error", "The request body must be a JSON object.")
        for field in ("model", "max_tokens", "messages"):
            if field not in body:
                return ErrorReply(400, "invalid_request_error", f"{field}: Field required")
        messages = body["messages"]
        if not isinstance(messages, list) or not messages:
            return ErrorReply(400, "invalid_request_error", "messages: at least one message is required")
        call.model = str(body["model"])
        call.stream = body.get("stream") is True
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                call.prompt = message_text(message.get("content"))
                break
        return None

    def response_headers(self, call: Call) -> dict[str, str]:
        return {"request-id": _request_id(call)}

    def _message(self, call: Call, answer: Answer, *, streaming: bool) -> dict[str, Any]:
        return {
            "id": f"msg_{call.seq:024d}",
            "type": "message",
            "role": "assistant",
            "model": call.model or "",
            "content": [] if streaming else [{"type": "text", "text": answer.content}],
            "stop_reason": None if streaming else self.finish(answer.finish_reason),
            "stop_sequence": None,
            "usage": {
                "input_tokens": answer.prompt_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 1 if streaming else answer.completion_tokens,
                "service_tier": "standard",
            },
        }

    def plain(self, call: Call, answer: Answer) -> bytes:
        return encode(self._message(call, answer, streaming=False))

    def stream(self, call: Call, answer: Answer, *, end_marker: bool) -> Frames:
        start = {"type": "message_start", "message": self._message(call, answer, streaming=True)}
        preamble = [
            sse(encode(start), "message_start"),
            sse(
                b'{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}',
                "content_block_start",
            ),
            _PING,
        ]
        content = [
            sse(
                encode({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
                "content_block_delta",
            )
            for text in answer.chunks
        ]
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": self.finish(answer.finish_reason), "stop_sequence": None},
            "usage": {"output_tokens": answer.completion_tokens},
        }
        tail = [
            sse(b'{"type":"content_block_stop","index":0}', "content_block_stop"),
            sse(encode(delta), "message_delta"),
        ]
        if end_marker:
            tail.append(_MESSAGE_STOP)
        return Frames(preamble, content, tail)

    def models(self, call: Call) -> bytes | ErrorReply:
        models = [
            {"type": "model", "id": m, "display_name": m, "created_at": "2025-05-22T00:00:00Z"} for m in self.model_ids
        ]
        first, last = (models[0]["id"], models[-1]["id"]) if models else (None, None)
        return encode({"data": models, "has_more": False, "first_id": first, "last_id": last})

    def error(
        self, call: Call, status: int, error_type: str | None, message: str | None
    ) -> tuple[bytes, dict[str, str]]:
        default_type, default_message = _ERRORS.get(
            status, ("api_error" if status >= 500 else "invalid_request_error", "Error")
        )
        body = {
            "type": "error",
            "error": {"type": error_type or default_type, "message": message or default_message},
            "request_id": _request_id(call),
        }
        return encode(body), {}

    def error_event(self, call: Call, error_type: str | None, message: str | None, *, index: int = 0) -> bytes:
        body = {
            "type": "error",
            "error": {"type": error_type or "overloaded_error", "message": message or "Overloaded"},
        }
        return sse(encode(body), "error")

    def malformed_event(self, call: Call, *, index: int = 0) -> bytes:
        return sse(
            b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":', "content_block_delta"
        )


def _request_id(call: Call) -> str:
    return f"req_{call.seq:024d}"
