"""Ollama's native API on the wire: /api/chat answers and NDJSON streams, {"error": ...} bodies, /api/tags."""

from __future__ import annotations

import time
from typing import Any, ClassVar

from .faults import Endpoint, WireFormat
from .wire import Answer, Call, ErrorReply, Frames, Wire, encode, message_text

__all__ = ["OllamaWire"]

_ERRORS: dict[int, str] = {
    400: "invalid request",
    404: "model not found, try pulling it first",
    429: "too many requests",
    500: "an error was encountered while running the model: unexpected EOF",
    503: "server busy, please try again.  maximum pending requests exceeded",
}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime())


class OllamaWire(Wire):
    """POST /api/chat (``stream`` defaults to true: NDJSON lines, the last with ``"done": true``), GET /api/tags.

    Needs no credentials (an Authorization header, if any, is recorded).
    """

    format: ClassVar[WireFormat] = WireFormat.OLLAMA
    routes: ClassVar[tuple[tuple[str, str, Endpoint], ...]] = (
        ("POST", "/api/chat", Endpoint.CHAT),
        ("GET", "/api/tags", Endpoint.MODELS),
    )
    stream_content_type: ClassVar[str] = "application/x-ndjson"
    default_models: ClassVar[tuple[str, ...]] = ("llama3.1", "llama3.2", "qwen2.5")

    def parse(self, call: Call, body: Any) -> ErrorReply | None:
        if not isinstance(body, dict):
            return ErrorReply(400, None, "invalid request body")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return ErrorReply(400, None, "model is required")
        call.model = model
        call.stream = body.get("stream", True) is not False
        messages = body.get("messages")
        if isinstance(messages, list):
            for message in reversed(messages):
                if isinstance(message, dict) and message.get("role") == "user":
                    call.prompt = message_text(message.get("content"))
                    break
        return None

    def _final(self, call: Call, answer: Answer, content: str) -> dict[str, Any]:
        return {
            "model": call.model or "",
            "created_at": _now(),
            "message": {"role": "assistant", "content": content},
            "done_reason": self.finish(answer.finish_reason),
            "done": True,
            "total_duration": 5_000_000 + 1_000_000 * answer.completion_tokens,
            "load_duration": 1_000_000,
            "prompt_eval_count": answer.prompt_tokens,
            "prompt_eval_duration": 1_000_000,
            "eval_count": answer.completion_tokens,
            "eval_duration": 1_000_000 * answer.completion_tokens,
        }

    def plain(self, call: Call, answer: Answer) -> bytes:
        return encode(self._final(call, answer, answer.content))

    def stream(self, call: Call, answer: Answer, *, end_marker: bool) -> Frames:
        created = _now()
        content = [
            encode(
                {
                    "model": call.model or "",
                    "created_at": created,
                    "message": {"role": "assistant", "content": text},
                    "done": False,
                }
            )
            + b"\n"
            for text in answer.chunks
        ]
        tail = [encode(self._final(call, answer, "")) + b"\n"] if end_marker else []
        return Frames([], content, tail)

    def models(self, call: Call) -> bytes | ErrorReply:
        return encode({"models": [_tag(m if ":" in m else m + ":latest") for m in self.model_ids]})

    def error(
        self, call: Call, status: int, error_type: str | None, message: str | None
    ) -> tuple[bytes, dict[str, str]]:
        if message is None:
            message = _ERRORS.get(status, "error")
            if status == 404 and call.model:
                message = f'model "{call.model}" not found, try pulling it first'
        return encode({"error": message}), {}

    def error_event(self, call: Call, error_type: str | None, message: str | None, *, index: int = 0) -> bytes:
        return encode({"error": message or _ERRORS[500]}) + b"\n"

    def malformed_event(self, call: Call, *, index: int = 0) -> bytes:
        return b'{"model":"' + (call.model or "").encode() + b'","message":{"role":"assistant","content":\n'

    def finish(self, reason: str) -> str:
        return "stop" if reason in ("content_filter", "tool_calls") else reason


def _tag(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "model": name,
        "modified_at": "2024-10-01T12:00:00.000000000Z",
        "size": 2019393189,
        "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": "llama",
            "families": ["llama"],
            "parameter_size": "3.2B",
            "quantization_level": "Q4_K_M",
        },
    }
