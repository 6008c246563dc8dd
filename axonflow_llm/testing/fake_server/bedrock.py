"""Bedrock Runtime on the wire: Converse JSON, ConverseStream as AWS event-stream frames, AWS error shapes."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from typing import Any, ClassVar

from .faults import Endpoint, WireFormat
from .wire import Answer, Call, ErrorReply, Frames, Wire, encode, message_text

__all__ = ["BedrockWire", "encode_event_message"]

# HTTP status -> (error type, message), as Bedrock Runtime answers them.
_ERRORS: dict[int, tuple[str, str]] = {
    400: ("ValidationException", "The provided request is not valid"),
    403: ("AccessDeniedException", "You don't have access to the model with the specified model ID."),
    404: ("ResourceNotFoundException", "The requested resource could not be found."),
    408: ("ModelTimeoutException", "Model has timed out in processing the request. Try your request again."),
    424: ("ModelErrorException", "The model returned an error."),
    429: ("ThrottlingException", "Too many requests, please wait before trying again."),
    500: ("InternalServerException", "The server encountered an internal error. Try your request again."),
    503: ("ServiceUnavailableException", "Bedrock is unable to process your request."),
}
_PAD = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0"
_STRING = 7  # header value type: UTF-8 string


def encode_event_message(headers: Mapping[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message: prelude (total length, headers length, prelude CRC32), string headers,
    the payload and the message CRC32, all big-endian."""
    encoded = bytearray()
    for name, value in headers.items():
        raw_name, raw_value = name.encode(), value.encode()
        encoded += struct.pack("!B", len(raw_name)) + raw_name
        encoded += struct.pack("!BH", _STRING, len(raw_value)) + raw_value
    total = 12 + len(encoded) + len(payload) + 4
    prelude = struct.pack("!II", total, len(encoded))
    message = prelude + struct.pack("!I", zlib.crc32(prelude)) + bytes(encoded) + payload
    return message + struct.pack("!I", zlib.crc32(message))


def _event(event_type: str, body: dict[str, Any]) -> bytes:
    headers = {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"}
    return encode_event_message(headers, encode(body))


class BedrockWire(Wire):
    """POST /model/{modelId}/converse and /converse-stream (the id percent-decoded from the path), plus the
    control plane's GET /foundation-models[/{modelId}]. Needs an ``Authorization`` header (SigV4 is not
    verified); missing it gets AWS's 403 MissingAuthenticationTokenException."""

    format: ClassVar[WireFormat] = WireFormat.BEDROCK
    routes: ClassVar[tuple[tuple[str, str, Endpoint], ...]] = (
        ("POST", r"/model/(?P<model>[^/]+)/(?P<action>converse|converse-stream)", Endpoint.CHAT),
        ("GET", "/foundation-models", Endpoint.MODELS),
        ("GET", r"/foundation-models/(?P<model>[^/]+)", Endpoint.MODELS),
    )
    stream_content_type: ClassVar[str] = "application/vnd.amazon.eventstream"
    default_models: ClassVar[tuple[str, ...]] = (
        "amazon.nova-lite-v1:0",
        "anthropic.claude-3-5-sonnet-20240620-v1:0",
        "meta.llama3-1-8b-instruct-v1:0",
    )
    finish_reasons: ClassVar[Mapping[str, str]] = {
        "stop": "end_turn",
        "length": "max_tokens",
        "tool_calls": "tool_use",
        "content_filter": "content_filtered",
    }

    def check(self, call: Call, headers: Mapping[str, str], query: Mapping[str, str]) -> ErrorReply | None:
        if self.require_auth and not headers.get("authorization"):
            return ErrorReply(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
        return None

    def parse(self, call: Call, body: Any) -> ErrorReply | None:
        call.model = call.params.get("model")
        call.stream = call.params.get("action") == "converse-stream"
        if not isinstance(body, dict):
            return ErrorReply(400, "ValidationException", "The request body must be a JSON object.")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return ErrorReply(400, "ValidationException", "A conversation must start with a user message. Try again.")
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                call.prompt = message_text(message.get("content"))
                break
        return None

    def response_headers(self, call: Call) -> dict[str, str]:
        return {"x-amzn-RequestId": f"00000000-0000-4000-a000-{call.seq:012d}"}

    def plain(self, call: Call, answer: Answer) -> bytes:
        return encode(
            {
                "output": {"message": {"role": "assistant", "content": [{"text": answer.content}]}},
                "stopReason": self.finish(answer.finish_reason),
                "usage": _usage(answer),
                "metrics": {"latencyMs": 10 + answer.completion_tokens},
            }
        )

    def stream(self, call: Call, answer: Answer, *, end_marker: bool) -> Frames:
        preamble = [_event("messageStart", {"p": _PAD[:10], "role": "assistant"})]
        content = [
            _event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": text}, "p": _PAD[: 5 + i % 20]})
            for i, text in enumerate(answer.chunks)
        ]
        tail = [_event("contentBlockStop", {"contentBlockIndex": 0, "p": _PAD[:12]})]
        if end_marker:
            tail.append(_event("messageStop", {"p": _PAD[:8], "stopReason": self.finish(answer.finish_reason)}))
            tail.append(
                _event(
                    "metadata",
                    {"metrics": {"latencyMs": 10 + answer.completion_tokens}, "p": _PAD[:6], "usage": _usage(answer)},
                )
            )
        return Frames(preamble, content, tail)

    def models(self, call: Call) -> bytes | ErrorReply:
        model_id = call.params.get("model")
        if model_id is not None:
            if self.strict_models and model_id not in self.model_ids:
                return ErrorReply(404, "ResourceNotFoundException", f"Could not find model {model_id}.")
            return encode({"modelDetails": _model(model_id)})
        return encode({"modelSummaries": [_model(m) for m in self.model_ids]})

    def error(
        self, call: Call, status: int, error_type: str | None, message: str | None
    ) -> tuple[bytes, dict[str, str]]:
        default_type, default_message = _ERRORS.get(
            status, ("InternalServerException" if status >= 500 else "ValidationException", "Error")
        )
        kind = error_type or default_type
        headers = {"x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"}
        return encode({"message": message or default_message}), headers

    def error_event(self, call: Call, error_type: str | None, message: str | None, *, index: int = 0) -> bytes:
        headers = {
            ":exception-type": error_type or "throttlingException",
            ":content-type": "application/json",
            ":message-type": "exception",
        }
        return encode_event_message(headers, encode({"message": message or _ERRORS[429][1]}))

    def malformed_event(self, call: Call, *, index: int = 0) -> bytes:
        headers = {":event-type": "contentBlockDelta", ":content-type": "application/json", ":message-type": "event"}
        return encode_event_message(headers, b'{"contentBlockIndex":0,"delta":{"text":')


def _usage(answer: Answer) -> dict[str, int]:
    return {
        "inputTokens": answer.prompt_tokens,
        "outputTokens": answer.completion_tokens,
        "totalTokens": answer.total_tokens,
    }


def _model(model_id: str) -> dict[str, Any]:
    return {
        "modelArn": f"arn:aws:bedrock:us-east-1::foundation-model/{model_id}",
        "modelId": model_id,
        "modelName": model_id,
        "providerName": model_id.split(".", 1)[0].capitalize(),
        "inputModalities": ["TEXT"],
        "outputModalities": ["TEXT"],
        "responseStreamingSupported": True,
        "customizationsSupported": [],
        "inferenceTypesSupported": ["ON_DEMAND"],
        "modelLifecycle": {"status": "ACTIVE"},
    }
