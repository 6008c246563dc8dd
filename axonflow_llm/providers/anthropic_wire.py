"""The Anthropic Messages API on the wire: request body, response and stream-event shapes, their mapping."""

from __future__ import annotations

from functools import partial
from typing import Any

import msgspec

from ..pipeline.errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    OverloadedError,
    RateLimitError,
    ServerError,
    redact,
)
from ..pipeline.models import CompletionRequest, CompletionResponse, FinishReason, StreamChunk, UsageStats
from .wire import RAW_FINISH_REASON, malformed_payload, tool_as_user

__all__ = [
    "ANTHROPIC_VERSION",
    "MESSAGE_DECODER",
    "DEFAULT_MAX_TOKENS",
    "AnthropicStreamState",
    "build_body",
    "error_from_event",
    "finish_reason",
    "to_response",
]

#: The ``anthropic-version`` header every request carries (the one version the Messages API documents).
ANTHROPIC_VERSION = "2023-06-01"
#: ``max_tokens`` is required by Anthropic; used when neither the request nor the provider sets one.
DEFAULT_MAX_TOKENS = 4096

_FINISH = {
    "end_turn": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
    "max_tokens": FinishReason.LENGTH,
    "model_context_window_exceeded": FinishReason.LENGTH,
    "tool_use": FinishReason.TOOL_CALLS,
    "refusal": FinishReason.CONTENT_FILTER,
}

# error.type of an error body or of an ``error`` stream event -> (class, the HTTP status it stands for)
_ERROR_TYPES: dict[str, tuple[type[APIError], int]] = {
    "invalid_request_error": (BadRequestError, 400),
    "authentication_error": (AuthenticationError, 401),
    "billing_error": (BadRequestError, 402),
    "permission_error": (AuthenticationError, 403),
    "not_found_error": (BadRequestError, 404),
    "request_too_large": (BadRequestError, 413),
    "rate_limit_error": (RateLimitError, 429),
    "api_error": (ServerError, 500),
    "timeout_error": (ServerError, 504),
    "overloaded_error": (OverloadedError, 529),
}


# --- wire shapes (only the fields we read; unknown fields are ignored) ---------------------------------


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class ContentBlock(msgspec.Struct, frozen=True, kw_only=True):
    type: str
    text: str = ""


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """The body of a non-streamed answer, and the ``message`` of a ``message_start`` event."""

    id: str = ""
    model: str = ""
    content: list[ContentBlock]
    stop_reason: str | None = None
    stop_sequence: str | None = None
    usage: Usage = Usage()


class MessageStart(msgspec.Struct, frozen=True, kw_only=True):
    message: Message


class Delta(msgspec.Struct, frozen=True, kw_only=True):
    type: str = ""
    text: str = ""


class ContentBlockDelta(msgspec.Struct, frozen=True, kw_only=True):
    index: int = 0
    delta: Delta


class MessageDeltaBody(msgspec.Struct, frozen=True, kw_only=True):
    stop_reason: str | None = None
    stop_sequence: str | None = None


class MessageDelta(msgspec.Struct, frozen=True, kw_only=True):
    delta: MessageDeltaBody = MessageDeltaBody()
    usage: Usage = Usage()


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    type: str = ""
    message: str = ""


class ErrorEvent(msgspec.Struct, frozen=True, kw_only=True):
    error: ErrorBody = ErrorBody()


MESSAGE_DECODER = msgspec.json.Decoder(Message)
_message_start = msgspec.json.Decoder(MessageStart)
_block_delta = msgspec.json.Decoder(ContentBlockDelta)
_message_delta = msgspec.json.Decoder(MessageDelta)
_error_event = msgspec.json.Decoder(ErrorEvent)


# --- request ------------------------------------------------------------------------------------------


def build_body(request: CompletionRequest, *, model: str, max_tokens: int, stream: bool) -> dict[str, Any]:
    """The JSON body of ``POST /v1/messages``.

    The system prompt and any ``system`` messages go to the top-level ``system`` (joined by a blank
    line); ``tool`` messages are sent as labelled ``user`` turns (:func:`tool_as_user`); consecutive turns
    of one role are left for the API to combine, as it documents. ``temperature`` 0 is sent as 0; unset
    sampling parameters are not sent.
    """
    system: list[str] = [request.system_prompt] if request.system_prompt else []
    messages: list[dict[str, str]] = []
    for m in request.chat_messages():
        if m.role == "system":
            system.append(m.content)
        else:
            m = tool_as_user(m)
            messages.append({"role": m.role, "content": m.content})
    if not messages:
        raise ValueError(
            "Anthropic needs at least one user or assistant message; the request has only system text. "
            "Pass prompt= or a user Message"
        )
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": request.max_tokens if request.max_tokens is not None else max_tokens,
        "messages": messages,
    }
    if system:
        body["system"] = "\n\n".join(system)
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.top_k is not None:
        body["top_k"] = request.top_k
    if request.stop_sequences:
        body["stop_sequences"] = list(request.stop_sequences)
    if stream:
        body["stream"] = True
    return body


# --- response -----------------------------------------------------------------------------------------


def finish_reason(stop_reason: str | None) -> FinishReason | None:
    """``end_turn``/``stop_sequence`` -> stop, ``max_tokens`` -> length, ``tool_use`` -> tool_calls,
    ``refusal`` -> content_filter; anything else (``pause_turn``, new values) -> ``None``."""
    return _FINISH.get(stop_reason) if stop_reason else None


def usage_stats(usage: Usage) -> UsageStats:
    """Prompt tokens count every input token processed: uncached, written to and read from the cache."""
    prompt = (usage.input_tokens or 0) + (usage.cache_creation_input_tokens or 0) + (usage.cache_read_input_tokens or 0)
    completion = usage.output_tokens or 0
    return UsageStats(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def _usage_metadata(usage: Usage) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    if usage.cache_creation_input_tokens:
        meta["cache_creation_input_tokens"] = usage.cache_creation_input_tokens
    if usage.cache_read_input_tokens:
        meta["cache_read_input_tokens"] = usage.cache_read_input_tokens
    return meta


#: ``malformed(provider, what, data, exc=None)``: the error for a payload not in the documented shape.
malformed = partial(malformed_payload, "the Anthropic Messages API")


def to_response(
    msg: Message, *, provider: str, request_id: str | None, latency: float, fallback_model: str
) -> CompletionResponse:
    """Map a decoded ``POST /v1/messages`` answer to a :class:`CompletionResponse` (text blocks joined)."""
    text = "".join(b.text for b in msg.content if b.type == "text")
    meta = _usage_metadata(msg.usage)
    if msg.id:
        meta["id"] = msg.id
    if msg.stop_reason:
        meta[RAW_FINISH_REASON] = msg.stop_reason
    return CompletionResponse(
        content=text,
        model=msg.model or fallback_model,
        usage=usage_stats(msg.usage),
        finish_reason=finish_reason(msg.stop_reason),
        latency=latency,
        provider=provider,
        request_id=request_id,
        metadata=meta,
    )


def error_from_event(
    error_type: str, message: str, *, provider: str, request_id: str | None, body: str | None = None
) -> APIError:
    """The typed error for an Anthropic ``error.type`` (``overloaded_error`` -> :class:`OverloadedError`,
    ``rate_limit_error`` -> :class:`RateLimitError`, ``api_error`` -> :class:`ServerError` ...). Its
    ``status_code`` is the HTTP status that type stands for; an unknown type is a 500 ``ServerError``."""
    cls, status = _ERROR_TYPES.get(error_type, (ServerError, 500))
    label = f"{error_type}: " if error_type else ""
    return cls(
        redact(f"{label}{message or 'error event in the stream'}"),
        status_code=status,
        provider=provider,
        request_id=request_id,
        body=redact(body[:500]) if body else None,
    )


class AnthropicStreamState:
    """Folds the server-sent events of a streamed Messages call into :class:`StreamChunk`\\ s.

    ``feed(event, data)`` returns a text chunk to deliver or ``None``; it raises the typed error for an
    ``error`` event and :class:`MalformedResponseError` for an event whose data is not the documented
    shape. ``finished`` turns true at ``message_stop``, the end marker; then :meth:`final_chunk` gives
    the ``done`` chunk. Usage: ``input_tokens`` (and cache tokens) from ``message_start``, the
    cumulative ``output_tokens`` from the last ``message_delta``, which may also update the input
    counts. ``ping`` and unknown events are ignored, as the API asks.
    """

    __slots__ = ("finished", "model", "provider", "request_id", "stop_reason", "usage")

    def __init__(self, *, provider: str, request_id: str | None, model: str) -> None:
        self.provider = provider
        self.request_id = request_id
        self.model = model
        self.usage = Usage()
        self.stop_reason: str | None = None
        self.finished = False

    def feed(self, event: str, data: str) -> StreamChunk | None:
        try:
            if event == "content_block_delta":
                delta = _block_delta.decode(data).delta
                if delta.type == "text_delta" and delta.text:
                    return StreamChunk(content=delta.text)
                return None
            if event == "message_start":
                msg = _message_start.decode(data).message
                self.usage = msg.usage
                if msg.model:
                    self.model = msg.model
                return None
            if event == "message_delta":
                md = _message_delta.decode(data)
                if md.delta.stop_reason is not None:
                    self.stop_reason = md.delta.stop_reason
                self.usage = _merge(self.usage, md.usage)
                return None
            if event == "message_stop":
                self.finished = True
                return None
            if event == "error":
                err = _error_event.decode(data).error
                raise error_from_event(
                    err.type, err.message, provider=self.provider, request_id=self.request_id, body=data
                )
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise malformed(self.provider, f"the {event!r} stream event", data, exc) from exc
        return None

    def final_chunk(self) -> StreamChunk:
        """The ``done`` chunk, once ``finished``: finish reason and the usage gathered."""
        return StreamChunk(done=True, finish_reason=finish_reason(self.stop_reason), usage=usage_stats(self.usage))


def _merge(old: Usage, new: Usage) -> Usage:
    return Usage(
        input_tokens=new.input_tokens if new.input_tokens is not None else old.input_tokens,
        output_tokens=new.output_tokens if new.output_tokens is not None else old.output_tokens,
        cache_creation_input_tokens=(
            new.cache_creation_input_tokens
            if new.cache_creation_input_tokens is not None
            else old.cache_creation_input_tokens
        ),
        cache_read_input_tokens=(
            new.cache_read_input_tokens if new.cache_read_input_tokens is not None else old.cache_read_input_tokens
        ),
    )
