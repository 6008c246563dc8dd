"""The Gemini ``generateContent`` API on the wire: request body, response shapes and their mapping."""

from __future__ import annotations

from functools import partial
from typing import Any

import msgspec

from ..pipeline.errors import (
    APIError,
    error_class_for_status,
    redact,
)
from ..pipeline.models import CompletionRequest, CompletionResponse, FinishReason, StreamChunk, UsageStats
from .wire import RAW_FINISH_REASON, malformed_payload, tool_as_user

__all__ = [
    "RESPONSE_DECODER",
    "GeminiStreamState",
    "build_body",
    "finish_reason",
    "model_path",
    "to_response",
]

_CONTENT_FILTER = FinishReason.CONTENT_FILTER
_FINISH = {
    "STOP": FinishReason.STOP,
    "MAX_TOKENS": FinishReason.LENGTH,
    "SAFETY": _CONTENT_FILTER,
    "RECITATION": _CONTENT_FILTER,
    "BLOCKLIST": _CONTENT_FILTER,
    "PROHIBITED_CONTENT": _CONTENT_FILTER,
    "SPII": _CONTENT_FILTER,
    "IMAGE_SAFETY": _CONTENT_FILTER,
    "IMAGE_PROHIBITED_CONTENT": _CONTENT_FILTER,
    "IMAGE_RECITATION": _CONTENT_FILTER,
}

# google.rpc.Code names, for an error whose ``code`` is missing
_STATUS_CODES = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ABORTED": 409,
    "ALREADY_EXISTS": 409,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "INTERNAL": 500,
    "UNKNOWN": 500,
    "DATA_LOSS": 500,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


# --- wire shapes (only the fields we read) -------------------------------------------------------------


class Part(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    text: str | None = None
    thought: bool = False
    function_call: dict[str, Any] | None = None


class Content(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    role: str = ""
    parts: list[Part] = []


class Candidate(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    content: Content | None = None
    finish_reason: str | None = None
    index: int = 0


class UsageMetadata(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    prompt_token_count: int = 0
    candidates_token_count: int = 0
    total_token_count: int = 0
    thoughts_token_count: int = 0
    tool_use_prompt_token_count: int = 0
    cached_content_token_count: int = 0


class PromptFeedback(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    block_reason: str | None = None


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    code: int | None = None
    message: str = ""
    status: str = ""


class GenerateContentResponse(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    candidates: list[Candidate] = []
    prompt_feedback: PromptFeedback | None = None
    usage_metadata: UsageMetadata | None = None
    model_version: str = ""
    response_id: str = ""
    error: ErrorBody | None = None  # only inside a stream: an error after the 200


RESPONSE_DECODER = msgspec.json.Decoder(GenerateContentResponse)
_decode = RESPONSE_DECODER.decode


# --- request ------------------------------------------------------------------------------------------


def model_path(model: str) -> str:
    """``gemini-2.5-flash`` -> ``models/gemini-2.5-flash``; ``models/...`` and ``tunedModels/...`` kept."""
    if model.startswith(("models/", "tunedModels/")):
        return model
    return f"models/{model}"


def build_body(request: CompletionRequest, *, max_tokens: int | None) -> dict[str, Any]:
    """The JSON body of ``:generateContent`` / ``:streamGenerateContent``.

    Roles are ``user`` and ``model`` (assistant turns); the system prompt and ``system`` messages go to
    ``systemInstruction``; ``tool`` messages are sent as labelled ``user`` text (:func:`tool_as_user`).
    Consecutive turns of one role become one content with a part each, since the API wants user and
    model turns to alternate. Sampling parameters go to ``generationConfig``; unset ones are not sent.
    """
    system: list[str] = [request.system_prompt] if request.system_prompt else []
    contents: list[dict[str, Any]] = []
    for m in request.chat_messages():
        if m.role == "system":
            system.append(m.content)
            continue
        m = tool_as_user(m)
        role = "model" if m.role == "assistant" else "user"
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].append({"text": m.content})
        else:
            contents.append({"role": role, "parts": [{"text": m.content}]})
    if not contents:
        raise ValueError(
            "Gemini needs at least one user or assistant message; the request has only system text. "
            "Pass prompt= or a user Message"
        )
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
    config: dict[str, Any] = {}
    limit = request.max_tokens if request.max_tokens is not None else max_tokens
    if limit is not None:
        config["maxOutputTokens"] = limit
    if request.temperature is not None:
        config["temperature"] = request.temperature
    if request.top_p is not None:
        config["topP"] = request.top_p
    if request.top_k is not None:
        config["topK"] = request.top_k
    if request.stop_sequences:
        config["stopSequences"] = list(request.stop_sequences)
    if config:
        body["generationConfig"] = config
    return body


# --- response -----------------------------------------------------------------------------------------


def finish_reason(reason: str | None, *, tool_call: bool = False) -> FinishReason | None:
    """``STOP`` -> stop (tool_calls when the answer holds a function call), ``MAX_TOKENS`` -> length,
    ``SAFETY``/``RECITATION``/``BLOCKLIST``/``PROHIBITED_CONTENT``/``SPII``/image filters ->
    content_filter; ``OTHER``, ``LANGUAGE``, malformed tool calls and new values -> ``None``."""
    if not reason:
        return None
    if reason == "STOP" and tool_call:
        return FinishReason.TOOL_CALLS
    return _FINISH.get(reason)


def usage_stats(meta: UsageMetadata | None) -> UsageStats:
    """Prompt tokens include tool-use prompt tokens; completion tokens include thinking tokens (both are
    billed as such); total is ``totalTokenCount`` when sent."""
    if meta is None:
        return UsageStats()
    prompt = meta.prompt_token_count + meta.tool_use_prompt_token_count
    completion = meta.candidates_token_count + meta.thoughts_token_count
    return UsageStats(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=meta.total_token_count or prompt + completion,
    )


def _text(candidate: Candidate) -> tuple[str, bool]:
    """The visible text of a candidate (thought summaries left out) and whether it calls a function."""
    if candidate.content is None:
        return "", False
    parts = candidate.content.parts
    if len(parts) == 1 and parts[0].text is not None and not parts[0].thought:
        return parts[0].text, parts[0].function_call is not None
    text = "".join(p.text for p in parts if p.text and not p.thought)
    return text, any(p.function_call is not None for p in parts)


#: ``malformed(provider, what, data, exc=None)``: the error for a payload not in the documented shape.
malformed = partial(malformed_payload, "the Gemini API")


def stream_error(err: ErrorBody, *, provider: str, request_id: str | None, body: str) -> APIError:
    """The typed error for an ``{"error": {...}}`` object sent inside a 200 stream."""
    status = err.code if err.code else _STATUS_CODES.get(err.status, 500)
    label = f"{err.status}: " if err.status else ""
    return error_class_for_status(status, err.message)(
        redact(f"{label}{err.message or 'error inside the stream'}"),
        status_code=status,
        provider=provider,
        request_id=request_id,
        body=redact(body[:500]),
    )


def to_response(
    resp: GenerateContentResponse,
    *,
    provider: str,
    request_id: str | None,
    latency: float,
    fallback_model: str,
) -> CompletionResponse:
    """Map a decoded ``:generateContent`` answer to a :class:`CompletionResponse` (first candidate's text).
    The request id is the response header's, else the body's ``responseId``.

    A prompt blocked before generation (no candidates, ``promptFeedback.blockReason``) gives empty
    content with finish reason ``content_filter``. No candidates and no block reason is malformed.
    """
    meta: dict[str, Any] = {}
    if resp.response_id:
        meta["id"] = resp.response_id
    if resp.candidates:
        cand = resp.candidates[0]
        text, tool = _text(cand)
        reason = finish_reason(cand.finish_reason, tool_call=tool)
        if cand.finish_reason:
            meta[RAW_FINISH_REASON] = cand.finish_reason
    elif resp.prompt_feedback is not None and resp.prompt_feedback.block_reason:
        text, reason = "", _CONTENT_FILTER
        meta["block_reason"] = resp.prompt_feedback.block_reason
    else:
        raise malformed(provider, "a response with no candidates and no promptFeedback", msgspec.json.encode(resp))
    if resp.usage_metadata is not None and resp.usage_metadata.cached_content_token_count:
        meta["cached_content_token_count"] = resp.usage_metadata.cached_content_token_count
    return CompletionResponse(
        content=text,
        model=resp.model_version or fallback_model,
        usage=usage_stats(resp.usage_metadata),
        finish_reason=reason,
        latency=latency,
        provider=provider,
        request_id=request_id or resp.response_id or None,
        metadata=meta,
    )


class GeminiStreamState:
    """Folds the ``data:`` payloads of ``:streamGenerateContent?alt=sse`` into :class:`StreamChunk`\\ s.

    Each payload is a whole ``GenerateContentResponse`` holding the next piece of text. ``feed(data)``
    returns a text chunk or ``None``; it raises the typed error for an ``{"error": ...}`` payload and
    :class:`MalformedResponseError` for anything not documented. ``finished`` turns true at the end
    marker: a ``finishReason`` on the candidate (or a ``promptFeedback.blockReason``); then
    :meth:`final_chunk` gives the ``done`` chunk with the last usage reported.
    """

    __slots__ = ("finished", "model", "provider", "reason", "request_id", "tool_call", "usage")

    def __init__(self, *, provider: str, request_id: str | None, model: str) -> None:
        self.provider = provider
        self.request_id = request_id
        self.model = model
        self.usage: UsageMetadata | None = None
        self.reason: FinishReason | None = None
        self.tool_call = False
        self.finished = False

    def feed(self, data: str) -> StreamChunk | None:
        try:
            resp = _decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise malformed(self.provider, "a stream event", data, exc) from exc
        if resp.error is not None:
            raise stream_error(resp.error, provider=self.provider, request_id=self.request_id, body=data)
        if resp.usage_metadata is not None:
            self.usage = resp.usage_metadata
        if resp.model_version:
            self.model = resp.model_version
        if not resp.candidates:
            if resp.prompt_feedback is not None and resp.prompt_feedback.block_reason:
                self.reason = _CONTENT_FILTER
                self.finished = True
            return None
        cand = resp.candidates[0]
        text, tool = _text(cand)
        self.tool_call = self.tool_call or tool
        if cand.finish_reason:
            self.reason = finish_reason(cand.finish_reason, tool_call=self.tool_call)
            self.finished = True
        return StreamChunk(content=text) if text else None

    def final_chunk(self) -> StreamChunk:
        return StreamChunk(done=True, finish_reason=self.reason, usage=usage_stats(self.usage))
