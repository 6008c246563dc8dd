"""OpenAI Chat Completions and Azure OpenAI on the wire: bodies, SSE chunks, errors, model lists."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from .faults import Endpoint, WireFormat
from .wire import Answer, Call, ErrorReply, Frames, Wire, encode, message_text, sse

__all__ = ["AzureOpenAIWire", "OpenAIWire"]

_DONE = b"data: [DONE]\n\n"

# (type, code, message) by status, as api.openai.com sends them.
_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: (
        "invalid_request_error",
        "unsupported_country_region_territory",
        "Country, region, or territory not supported",
    ),
    404: ("invalid_request_error", "model_not_found", "The model does not exist or you do not have access to it."),
    409: ("invalid_request_error", None, "Conflict."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again in 1s."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}

_SAFE = {"filtered": False, "severity": "safe"}
_CONTENT_FILTER = {"hate": _SAFE, "self_harm": _SAFE, "sexual": _SAFE, "violence": _SAFE}
_PROMPT_FILTER = [{"prompt_index": 0, "content_filter_results": _CONTENT_FILTER}]


def _prompt_of(messages: Any) -> str:
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                return message_text(message.get("content"))
    return ""


class OpenAIWire(Wire):
    """POST /v1/chat/completions (plain and SSE), GET /v1/models; Bearer auth."""

    format: ClassVar[WireFormat] = WireFormat.OPENAI
    routes: ClassVar[tuple[tuple[str, str, Endpoint], ...]] = (
        ("POST", "/v1/chat/completions", Endpoint.CHAT),
        ("GET", "/v1/models", Endpoint.MODELS),
    )
    finish_reasons: ClassVar[Mapping[str, str]] = {}
    azure: ClassVar[bool] = False
    default_models: ClassVar[tuple[str, ...]] = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini")

    def check(self, call: Call, headers: Mapping[str, str], query: Mapping[str, str]) -> ErrorReply | None:
        auth = headers.get("authorization", "")
        if self.require_auth and (not auth.lower().startswith("bearer ") or not auth[7:].strip()):
            return ErrorReply(
                401,
                "invalid_request_error",
                "You didn't provide an API key. You need to provide your API key in an Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        return None

    def parse(self, call: Call, body: Any) -> ErrorReply | None:
        if not isinstance(body, dict):
            return ErrorReply(400, "invalid_request_error", "The request body must be a JSON object.")
        model = body.get("model")
        if not isinstance(model, str) and "deployment" not in call.params:
            return ErrorReply(400, "invalid_request_error", "you must provide a model parameter")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return ErrorReply(400, "invalid_request_error", "Missing required parameter: 'messages'.")
        call.model = model if isinstance(model, str) else call.params.get("deployment")
        call.stream = body.get("stream") is True
        options = body.get("stream_options")
        call.include_usage = isinstance(options, dict) and options.get("include_usage") is True
        call.prompt = _prompt_of(messages)
        return None

    def response_headers(self, call: Call) -> dict[str, str]:
        return {"x-request-id": f"req_{call.seq:032x}", "openai-processing-ms": "1", "openai-version": "2020-10-01"}

    def _completion_id(self, call: Call) -> str:
        return f"chatcmpl-{call.seq:024d}"

    def plain(self, call: Call, answer: Answer) -> bytes:
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": answer.content, "refusal": None, "annotations": []},
            "logprobs": None,
            "finish_reason": self.finish(answer.finish_reason),
        }
        body: dict[str, Any] = {
            "id": self._completion_id(call),
            "object": "chat.completion",
            "created": answer.created,
            "model": call.model or "",
            "choices": [choice],
            "usage": _usage(answer),
            "system_fingerprint": "fp_fake",
        }
        if self.azure:
            choice["content_filter_results"] = _CONTENT_FILTER
            body["prompt_filter_results"] = _PROMPT_FILTER
        else:
            body["service_tier"] = "default"
        return encode(body)

    def _chunk(self, call: Call, answer: Answer, delta: dict[str, Any], finish: str | None) -> bytes:
        choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        if self.azure and delta:
            choice["content_filter_results"] = _CONTENT_FILTER if "content" in delta else {}
        body: dict[str, Any] = {
            "id": self._completion_id(call),
            "object": "chat.completion.chunk",
            "created": answer.created,
            "model": call.model or "",
            "system_fingerprint": "fp_fake",
            "choices": [choice],
        }
        if not self.azure:
            body["service_tier"] = "default"
        if call.include_usage:
            body["usage"] = None
        return sse(encode(body))

    def stream(self, call: Call, answer: Answer, *, end_marker: bool) -> Frames:
        preamble: list[bytes] = []
        if self.azure:
            preamble.append(
                sse(
                    encode(
                        {
                            "choices": [],
                            "created": 0,
                            "id": "",
                            "model": "",
                            "object": "",
                            "prompt_filter_results": _PROMPT_FILTER,
                        }
                    )
                )
            )
        preamble.append(self._chunk(call, answer, {"role": "assistant", "content": "", "refusal": None}, None))
        content = [self._chunk(call, answer, {"content": text}, None) for text in answer.chunks]
        tail = [self._chunk(call, answer, {}, self.finish(answer.finish_reason))]
        if call.include_usage:
            usage_chunk: dict[str, Any] = {
                "id": self._completion_id(call),
                "object": "chat.completion.chunk",
                "created": answer.created,
                "model": call.model or "",
                "system_fingerprint": "fp_fake",
                "choices": [],
                "usage": _usage(answer),
            }
            tail.append(sse(encode(usage_chunk)))
        if end_marker:
            tail.append(_DONE)
        return Frames(preamble, content, tail)

    def models(self, call: Call) -> bytes | ErrorReply:
        data = [{"id": m, "object": "model", "created": 1721172741, "owned_by": "system"} for m in self.model_ids]
        return encode({"object": "list", "data": data})

    def error(
        self, call: Call, status: int, error_type: str | None, message: str | None
    ) -> tuple[bytes, dict[str, str]]:
        default_type, code, default_message = _ERRORS.get(
            status, ("server_error" if status >= 500 else "invalid_request_error", None, "Error.")
        )
        body = {
            "error": {
                "message": message or default_message,
                "type": error_type or default_type,
                "param": None,
                "code": code,
            }
        }
        return encode(body), {}

    def error_event(self, call: Call, error_type: str | None, message: str | None, *, index: int = 0) -> bytes:
        return sse(
            encode(
                {
                    "error": {
                        "message": message
                        or "The server had an error while processing your request. Sorry about that!",
                        "type": error_type or "server_error",
                        "param": None,
                        "code": None,
                    }
                }
            )
        )


class AzureOpenAIWire(OpenAIWire):
    """Azure OpenAI: the v1 API (``/openai/v1/chat/completions``, ``GET /openai/v1/models``; the deployment in
    ``model``; no api-version needed) and the dated one (``/openai/deployments/{deployment}/chat/completions``
    and ``GET /openai/models``, both requiring ``?api-version=``, else 404 as Azure answers). Auth: an
    ``api-key`` header or a Bearer (Entra ID) token."""

    format: ClassVar[WireFormat] = WireFormat.AZURE_OPENAI
    routes: ClassVar[tuple[tuple[str, str, Endpoint], ...]] = (
        ("POST", r"/openai/deployments/(?P<deployment>[^/]+)/chat/completions", Endpoint.CHAT),
        ("GET", "/openai/models", Endpoint.MODELS),
        ("POST", r"/openai/(?P<v1>v1)/chat/completions", Endpoint.CHAT),
        ("GET", r"/openai/(?P<v1>v1)/models", Endpoint.MODELS),
    )
    azure: ClassVar[bool] = True

    def check(self, call: Call, headers: Mapping[str, str], query: Mapping[str, str]) -> ErrorReply | None:
        if "v1" not in call.params and not query.get("api-version"):
            return ErrorReply(404, "404", "Resource not found")
        auth = headers.get("authorization", "")
        if (
            self.require_auth
            and not headers.get("api-key")
            and not (auth.lower().startswith("bearer ") and auth[7:].strip())
        ):
            return ErrorReply(
                401,
                "401",
                "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a "
                "valid key for an active subscription and use a correct regional API endpoint for your resource.",
            )
        return None

    def response_headers(self, call: Call) -> dict[str, str]:
        rid = f"00000000-0000-4000-8000-{call.seq:012d}"
        return {"apim-request-id": rid, "x-request-id": rid, "x-ms-region": "East US"}

    def models(self, call: Call) -> bytes | ErrorReply:
        data = [
            {
                "id": m,
                "status": "succeeded",
                "created_at": 1721260800,
                "lifecycle_status": "generally-available",
                "capabilities": {"chat_completion": True, "completion": False, "embeddings": False},
                "object": "model",
            }
            for m in self.model_ids
        ]
        return encode({"data": data, "object": "list"})

    def error(
        self, call: Call, status: int, error_type: str | None, message: str | None
    ) -> tuple[bytes, dict[str, str]]:
        if message is None:
            message = (
                "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version have exceeded "
                "call rate limit of your current OpenAI S0 pricing tier. Please retry after 1 second."
                if status == 429
                else _ERRORS.get(status, ("", None, "Error."))[2]
            )
        return encode({"error": {"code": error_type or str(status), "message": message}}), {}


def _usage(answer: Answer) -> dict[str, Any]:
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.total_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
