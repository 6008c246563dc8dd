"""The Bedrock Converse API on the wire: request body, response and event-stream shapes, their mapping."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any
from urllib.parse import quote

import msgspec

from ..pipeline.errors import (
    APIError,
    BadRequestError,
    RateLimitError,
    ServerError,
    redact,
)
from ..pipeline.models import CompletionRequest, CompletionResponse, FinishReason, StreamChunk, UsageStats
from .wire import RAW_FINISH_REASON, malformed_payload, tool_as_user

__all__ = [
    "RESPONSE_DECODER",
    "BedrockStreamState",
    "build_body",
    "error_from_exception_event",
    "finish_reason",
    "model_family",
    "model_path",
    "quote_model_id",
    "to_response",
]

_FINISH = {
    "end_turn": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
    "max_tokens": FinishReason.LENGTH,
    "model_context_window_exceeded": FinishReason.LENGTH,
    "tool_use": FinishReason.TOOL_CALLS,
    "guardrail_intervened": FinishReason.CONTENT_FILTER,
    "content_filtered": FinishReason.CONTENT_FILTER,
}

# ConverseStream exception events -> (class, the HTTP status the service model gives it, retry it?)
_EXCEPTIONS: dict[str, tuple[type[APIError], int, bool | None]] = {
    "throttlingException": (RateLimitError, 429, None),
    "serviceUnavailableException": (ServerError, 503, None),
    "internalServerException": (ServerError, 500, None),
    # 424: the model failed mid-stream; AWS documents it as worth retrying.
    "modelStreamErrorException": (ServerError, 424, True),
    "validationException": (BadRequestError, 400, None),
}

_PROVIDERS = frozenset(
    {"anthropic", "amazon", "meta", "mistral", "cohere", "ai21", "deepseek", "writer", "openai", "qwen"}
)


# --- wire shapes (only the fields we read) -------------------------------------------------------------


class TokenUsage(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_write_input_tokens: int = 0


class ContentBlock(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    text: str | None = None
    tool_use: dict[str, Any] | None = None


class OutputMessage(msgspec.Struct, frozen=True, kw_only=True):
    role: str = "assistant"
    content: list[ContentBlock]


class ConverseOutput(msgspec.Struct, frozen=True, kw_only=True):
    message: OutputMessage


class ConverseResponse(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    output: ConverseOutput
    stop_reason: str | None = None
    usage: TokenUsage = TokenUsage()


class Delta(msgspec.Struct, frozen=True, kw_only=True):
    text: str | None = None


class ContentBlockDeltaEvent(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    delta: Delta
    content_block_index: int = 0


class MessageStopEvent(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    stop_reason: str | None = None


class MetadataEvent(msgspec.Struct, frozen=True, kw_only=True):
    usage: TokenUsage = TokenUsage()


class ExceptionEvent(msgspec.Struct, frozen=True, kw_only=True):
    message: str = ""


RESPONSE_DECODER = msgspec.json.Decoder(ConverseResponse)
_delta = msgspec.json.Decoder(ContentBlockDeltaEvent)
_stop = msgspec.json.Decoder(MessageStopEvent)
_metadata = msgspec.json.Decoder(MetadataEvent)
_exception = msgspec.json.Decoder(ExceptionEvent)
_encode = msgspec.json.Encoder().encode


# --- request ------------------------------------------------------------------------------------------


def model_path(model_id: str, *, stream: bool) -> str:
    """``/model/{modelId}/converse[-stream]``, the id as one path segment: ``/`` (in ARNs) and anything
    else outside ``[A-Za-z0-9-_.~:]`` percent-encoded. ``:`` stays literal (RFC 3986 allows it in a path
    segment, as Bedrock's own curl examples send it): some transports (aiohttp's URL library) decode
    ``%3A`` on the way out, and the SigV4 signature must cover the path exactly as the server sees it."""
    return f"/model/{quote_model_id(model_id)}/{'converse-stream' if stream else 'converse'}"


def quote_model_id(model_id: str) -> str:
    """A model id (or ARN) as one URL path segment; see :func:`model_path`."""
    return quote(model_id, safe=":")


def model_family(model_id: str) -> str | None:
    """The model's provider: ``anthropic`` for ``anthropic.claude-...``, ``us.anthropic.claude-...`` (an
    inference profile) or an ARN ending in either; ``None`` when it cannot be told."""
    name = model_id.rsplit("/", 1)[-1]
    for part in name.split(".")[:3]:
        if part in _PROVIDERS:
            return part
    return None


def top_k_fields(model_id: str, top_k: int) -> dict[str, Any]:
    """Converse has no ``topK``; it goes in ``additionalModelRequestFields`` as the model family takes it:
    Anthropic Claude ``{"top_k": k}``, Amazon Nova ``{"inferenceConfig": {"topK": k}}``. Other families
    raise ``ValueError``: pass the field your model documents through the provider setting
    ``additional_model_request_fields`` instead."""
    family = model_family(model_id)
    if family == "anthropic":
        return {"top_k": top_k}
    if family == "amazon" and "nova" in model_id:
        return {"inferenceConfig": {"topK": top_k}}
    raise ValueError(
        f"top_k is not supported through the Bedrock Converse API for model {model_id!r} by axonflow-llm; "
        "drop top_k, or pass the model's own field in the provider setting "
        "additional_model_request_fields (e.g. {'top_k': 50})"
    )


def build_body(
    request: CompletionRequest,
    *,
    model_id: str,
    max_tokens: int | None,
    additional_fields: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON body of ``Converse`` / ``ConverseStream``.

    ``messages`` are ``[{role, content: [{text}]}]``: ``tool`` messages as labelled ``user`` text
    (:func:`tool_as_user`), consecutive turns of one role as one message with a text block each (Converse
    refuses a conversation whose roles do not alternate). The system
    prompt and ``system`` messages go to ``system: [{text}]``, sampling to ``inferenceConfig``
    (``maxTokens``, ``temperature``, ``topP``, ``stopSequences``); ``top_k`` and ``additional_fields`` to
    ``additionalModelRequestFields``.
    """
    system: list[dict[str, str]] = [{"text": request.system_prompt}] if request.system_prompt else []
    messages: list[dict[str, Any]] = []
    for m in request.chat_messages():
        if m.role == "system":
            system.append({"text": m.content})
            continue
        m = tool_as_user(m)
        if messages and messages[-1]["role"] == m.role:
            messages[-1]["content"].append({"text": m.content})
        else:
            messages.append({"role": m.role, "content": [{"text": m.content}]})
    if not messages:
        raise ValueError(
            "Bedrock Converse needs at least one user or assistant message; the request has only system "
            "text. Pass prompt= or a user Message"
        )
    body: dict[str, Any] = {"messages": messages}
    if system:
        body["system"] = system
    config: dict[str, Any] = {}
    limit = request.max_tokens if request.max_tokens is not None else max_tokens
    if limit is not None:
        config["maxTokens"] = limit
    if request.temperature is not None:
        config["temperature"] = request.temperature
    if request.top_p is not None:
        config["topP"] = request.top_p
    if request.stop_sequences:
        config["stopSequences"] = list(request.stop_sequences)
    if config:
        body["inferenceConfig"] = config
    extra: dict[str, Any] = dict(additional_fields) if additional_fields else {}
    if request.top_k is not None and "top_k" not in extra:
        for key, value in top_k_fields(model_id, request.top_k).items():
            if isinstance(value, dict) and isinstance(extra.get(key), dict):
                extra[key] = {**value, **extra[key]}
            else:
                extra.setdefault(key, value)
    if extra:
        body["additionalModelRequestFields"] = extra
    return body


# --- response -----------------------------------------------------------------------------------------


def finish_reason(stop_reason: str | None) -> FinishReason | None:
    """``end_turn``/``stop_sequence`` -> stop, ``max_tokens`` -> length, ``tool_use`` -> tool_calls,
    ``guardrail_intervened``/``content_filtered`` -> content_filter; anything else -> ``None``."""
    return _FINISH.get(stop_reason) if stop_reason else None


def usage_stats(usage: TokenUsage) -> UsageStats:
    """Prompt tokens count every input token: uncached, read from and written to the prompt cache."""
    prompt = usage.input_tokens + usage.cache_read_input_tokens + usage.cache_write_input_tokens
    return UsageStats(
        prompt_tokens=prompt,
        completion_tokens=usage.output_tokens,
        total_tokens=usage.total_tokens or prompt + usage.output_tokens,
    )


#: ``malformed(provider, what, data, exc=None)``: the error for a payload not in the documented shape.
malformed = partial(malformed_payload, "the Bedrock Converse API")


def to_response(
    resp: ConverseResponse, *, provider: str, request_id: str | None, latency: float, model: str
) -> CompletionResponse:
    """Map a decoded ``Converse`` answer to a :class:`CompletionResponse`. Converse does not echo the
    model, so ``model`` is the id that was called."""
    text = "".join(b.text for b in resp.output.message.content if b.text)
    meta: dict[str, Any] = {}
    if resp.stop_reason:
        meta[RAW_FINISH_REASON] = resp.stop_reason
    if resp.usage.cache_read_input_tokens:
        meta["cache_read_input_tokens"] = resp.usage.cache_read_input_tokens
    if resp.usage.cache_write_input_tokens:
        meta["cache_write_input_tokens"] = resp.usage.cache_write_input_tokens
    return CompletionResponse(
        content=text,
        model=model,
        usage=usage_stats(resp.usage),
        finish_reason=finish_reason(resp.stop_reason),
        latency=latency,
        provider=provider,
        request_id=request_id,
        metadata=meta,
    )


def error_from_exception_event(
    exception_type: str, payload: bytes, *, provider: str, request_id: str | None
) -> APIError:
    """The typed error for a ConverseStream exception event (``throttlingException`` ->
    :class:`RateLimitError`, ``serviceUnavailableException``/``internalServerException``/
    ``modelStreamErrorException`` -> :class:`ServerError`, ``validationException`` ->
    :class:`BadRequestError`; unknown -> a 500 :class:`ServerError`)."""
    cls, status, should_retry = _EXCEPTIONS.get(exception_type, (ServerError, 500, None))
    text = payload.decode("utf-8", "replace")
    try:
        message = _exception.decode(payload).message
    except (msgspec.DecodeError, msgspec.ValidationError):
        message = text[:200]
    return cls(
        redact(f"{exception_type}: {message or 'exception event in the stream'}"),
        status_code=status,
        provider=provider,
        request_id=request_id,
        should_retry=should_retry,
        body=redact(text[:500]) or None,
    )


class BedrockStreamState:
    """Folds the decoded AWS event-stream messages of ``ConverseStream`` into :class:`StreamChunk`\\ s.

    ``feed(headers, payload)`` takes one message (headers from botocore's ``EventStreamBuffer``) and
    returns a text chunk or ``None``; it raises the typed error for an ``exception`` or ``error`` message
    and :class:`MalformedResponseError` for a payload not documented. ``finished`` turns true once both
    end markers arrived, ``messageStop`` (the stop reason) and ``metadata`` (the usage); then
    :meth:`final_chunk` gives the ``done`` chunk.
    """

    __slots__ = ("finished", "metadata_seen", "provider", "request_id", "stop_reason", "stopped", "usage")

    def __init__(self, *, provider: str, request_id: str | None) -> None:
        self.provider = provider
        self.request_id = request_id
        self.stop_reason: str | None = None
        self.usage = TokenUsage()
        self.stopped = False
        self.metadata_seen = False
        self.finished = False

    def feed(self, headers: Mapping[str, Any], payload: bytes) -> StreamChunk | None:
        kind = headers.get(":message-type")
        if kind == "event":
            event = headers.get(":event-type")
            try:
                if event == "contentBlockDelta":
                    text = _delta.decode(payload).delta.text
                    return StreamChunk(content=text) if text else None
                if event == "messageStop":
                    self.stop_reason = _stop.decode(payload).stop_reason
                    self.stopped = True
                elif event == "metadata":
                    self.usage = _metadata.decode(payload).usage
                    self.metadata_seen = True
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise malformed(self.provider, f"the {event!r} stream event", payload, exc) from exc
            self.finished = self.stopped and self.metadata_seen
            return None
        if kind == "exception":
            raise error_from_exception_event(
                str(headers.get(":exception-type", "")),
                payload,
                provider=self.provider,
                request_id=self.request_id,
            )
        if kind == "error":
            code = str(headers.get(":error-code", ""))
            message = str(headers.get(":error-message", ""))
            raise error_from_exception_event(
                code, _encode({"message": message}), provider=self.provider, request_id=self.request_id
            )
        raise malformed(self.provider, f"an event-stream message of type {kind!r}", payload)

    def final_chunk(self) -> StreamChunk:
        return StreamChunk(done=True, finish_reason=finish_reason(self.stop_reason), usage=usage_stats(self.usage))
