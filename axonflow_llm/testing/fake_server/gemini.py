"""The Gemini API on the wire: generateContent, streamGenerateContent (SSE or JSON array), google.rpc errors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from .faults import Endpoint, WireFormat
from .wire import Answer, Call, ErrorReply, Frames, Wire, encode, message_text, sse

__all__ = ["GeminiWire"]

# google.rpc status and message by HTTP status, as the Gemini API answers them.
_ERRORS: dict[int, tuple[str, str]] = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    403: ("PERMISSION_DENIED", "The caller does not have permission"),
    404: ("NOT_FOUND", "Requested entity was not found."),
    429: ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    500: (
        "INTERNAL",
        "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
    ),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "The request timed out. Please try again."),
}
_STATUS_CODES = {status: code for code, (status, _) in _ERRORS.items()}


class GeminiWire(Wire):
    """POST /v1beta/models/{model}:generateContent and :streamGenerateContent (``?alt=sse``: SSE with CRLF
    line ends; without it: a streamed JSON array); GET /v1beta/models[/{model}]. Auth: ``x-goog-api-key``
    header, ``?key=`` or a Bearer token. ``v1`` works as well as ``v1beta`` for completions."""

    format: ClassVar[WireFormat] = WireFormat.GEMINI
    routes: ClassVar[tuple[tuple[str, str, Endpoint], ...]] = (
        (
            "POST",
            r"/(?P<version>v1beta|v1)/models/(?P<model>[^/:]+):(?P<action>generateContent|streamGenerateContent)",
            Endpoint.CHAT,
        ),
        ("GET", "/v1beta/models", Endpoint.MODELS),
        ("GET", r"/v1beta/models/(?P<model>[^/:]+)", Endpoint.MODELS),
    )
    default_models: ClassVar[tuple[str, ...]] = ("gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.0-flash")
    finish_reasons: ClassVar[Mapping[str, str]] = {
        "stop": "STOP",
        "length": "MAX_TOKENS",
        "content_filter": "SAFETY",
        "tool_calls": "STOP",
    }

    def check(self, call: Call, headers: Mapping[str, str], query: Mapping[str, str]) -> ErrorReply | None:
        if not self.require_auth:
            return None
        auth = headers.get("authorization", "")
        if headers.get("x-goog-api-key") or query.get("key") or (auth.lower().startswith("bearer ") and auth[7:]):
            return None
        return ErrorReply(
            403,
            "PERMISSION_DENIED",
            "Method doesn't allow unregistered callers (callers without established identity). Please use API "
            "Key or other form of API consumer identity to call this API.",
        )

    def parse(self, call: Call, body: Any) -> ErrorReply | None:
        if not isinstance(body, dict):
            return ErrorReply(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            return ErrorReply(400, "INVALID_ARGUMENT", "* GenerateContentRequest.contents: contents is not specified")
        call.model = call.params.get("model")
        call.stream = call.params.get("action") == "streamGenerateContent"
        for content in reversed(contents):
            if isinstance(content, dict) and content.get("role", "user") == "user":
                call.prompt = message_text(content.get("parts"))
                break
        return None

    def _response(self, call: Call, answer: Answer, text: str, finish: bool, completion: int) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
        if finish:
            candidate["finishReason"] = self.finish(answer.finish_reason)
        usage: dict[str, Any] = {"promptTokenCount": answer.prompt_tokens}
        if completion:
            usage["candidatesTokenCount"] = completion
        usage["totalTokenCount"] = answer.prompt_tokens + completion
        usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": answer.prompt_tokens}]
        return {
            "candidates": [candidate],
            "usageMetadata": usage,
            "modelVersion": call.model or "",
            "responseId": f"fake{call.seq:020d}",
        }

    def plain(self, call: Call, answer: Answer) -> bytes:
        return encode(self._response(call, answer, answer.content, True, answer.completion_tokens))

    def stream(self, call: Call, answer: Answer, *, end_marker: bool) -> Frames:
        count = len(answer.chunks)
        bodies = [
            encode(
                self._response(
                    call, answer, text, end_marker and i == count - 1, answer.completion_tokens * (i + 1) // count
                )
            )
            for i, text in enumerate(answer.chunks)
        ]
        if self._sse(call):
            return Frames([], [sse(body, crlf=True) for body in bodies], [])
        content = [body if i == 0 else b",\r\n" + body for i, body in enumerate(bodies)]
        return Frames([b"["], content, [b"]"] if end_marker else [])

    def stream_media_type(self, call: Call) -> str:
        return "text/event-stream" if self._sse(call) else "application/json; charset=UTF-8"

    @staticmethod
    def _sse(call: Call) -> bool:
        return call.query.get("alt") == "sse"

    def models(self, call: Call) -> bytes | ErrorReply:
        name = call.params.get("model")
        if name is not None:
            if self.strict_models and name not in self.model_ids:
                return ErrorReply(404, "NOT_FOUND", f"models/{name} is not found for API version v1beta.")
            return encode(_model(name))
        return encode({"models": [_model(m) for m in self.model_ids]})

    def error(
        self, call: Call, status: int, error_type: str | None, message: str | None
    ) -> tuple[bytes, dict[str, str]]:
        return encode(_error(status, error_type, message)), {}

    def error_event(self, call: Call, error_type: str | None, message: str | None, *, index: int = 0) -> bytes:
        code = _STATUS_CODES.get(error_type or "", 503)
        body = encode(_error(code, error_type or "UNAVAILABLE", message))
        return sse(body, crlf=True) if self._sse(call) else (b",\r\n" if index else b"") + body

    def malformed_event(self, call: Call, *, index: int = 0) -> bytes:
        bad = b'{"candidates": [{"content": {"parts": [{"text": '
        return sse(bad, crlf=True) if self._sse(call) else (b",\r\n" if index else b"") + bad


def _error(status: int, error_type: str | None, message: str | None) -> dict[str, Any]:
    default_status, default_message = _ERRORS.get(
        status, ("INTERNAL" if status >= 500 else "INVALID_ARGUMENT", "Error")
    )
    return {"error": {"code": status, "message": message or default_message, "status": error_type or default_status}}


def _model(name: str) -> dict[str, Any]:
    return {
        "name": f"models/{name}",
        "version": "001",
        "displayName": name,
        "inputTokenLimit": 1048576,
        "outputTokenLimit": 8192,
        "supportedGenerationMethods": ["generateContent", "countTokens"],
    }
