"""OpenAI Chat Completions: ``POST {base}/chat/completions``, streamed as server-sent events."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import httpx
import msgspec

from axonflow_llm.pipeline.clock import Clock
from axonflow_llm.pipeline.context import CallContext
from axonflow_llm.pipeline.models import (
    Capability,
    CompletionRequest,
    CompletionResponse,
    FinishReason,
    HealthCheckResult,
    ProviderType,
    StreamChunk,
    UsageStats,
)
from axonflow_llm.pipeline.pipeline import Pipeline

from .http_provider import HTTPProvider
from .wire import RAW_FINISH_REASON, tool_as_user

if TYPE_CHECKING:
    from axonflow_llm.middleware.pricing import ModelPrice, PriceTable

__all__ = ["OPENAI_BASE_URL", "OPENAI_DEFAULT_MODEL", "OpenAIProvider", "openai_capabilities"]

OPENAI_BASE_URL = "https://api.openai.com/v1"
OPENAI_DEFAULT_MODEL = "gpt-4o-mini"

# --- the documented wire shapes (unknown fields are ignored) ----------------------------------------


class _Usage(msgspec.Struct, frozen=True, kw_only=True):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class _Message(msgspec.Struct, frozen=True, kw_only=True):
    content: str | None = None
    refusal: str | None = None


class _Choice(msgspec.Struct, frozen=True, kw_only=True):
    index: int = 0
    message: _Message
    finish_reason: str | None = None


class ChatCompletion(msgspec.Struct, frozen=True, kw_only=True):
    """``chat.completion``: the non-streamed answer."""

    id: str = ""
    model: str = ""
    choices: list[_Choice]
    usage: _Usage | None = None


class _Delta(msgspec.Struct, frozen=True, kw_only=True):
    content: str | None = None


class _ChunkChoice(msgspec.Struct, frozen=True, kw_only=True):
    index: int = 0
    delta: _Delta | None = None
    finish_reason: str | None = None


class _ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    message: str | None = None
    type: str | None = None
    code: str | int | None = None


class ChatCompletionChunk(msgspec.Struct, frozen=True, kw_only=True):
    """``chat.completion.chunk`` (or ``{"error": {...}}``, which OpenAI sends inside a 200 stream)."""

    model: str = ""
    choices: list[_ChunkChoice] = []
    usage: _Usage | None = None
    error: _ErrorBody | None = None


_COMPLETION = msgspec.json.Decoder(ChatCompletion)
_CHUNK = msgspec.json.Decoder(ChatCompletionChunk)

_FINISH = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "content_filter": FinishReason.CONTENT_FILTER,
    "tool_calls": FinishReason.TOOL_CALLS,
    "function_call": FinishReason.TOOL_CALLS,  # the deprecated functions API
}


def finish_reason(raw: str | None) -> FinishReason | None:
    return _FINISH.get(raw) if raw else None


def usage_stats(u: _Usage | None) -> UsageStats:
    if u is None:
        return UsageStats()
    return UsageStats(prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens,
                      total_tokens=u.total_tokens or u.prompt_tokens + u.completion_tokens)


_VISION_MARKERS = ("gpt-4o", "gpt-4.1", "gpt-4-turbo", "gpt-4.5", "gpt-5", "vision", "o1", "o3", "o4")
_LONG_CONTEXT_MARKERS = ("gpt-4o", "gpt-4.1", "gpt-4-turbo", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "128k")


def openai_capabilities(model: str) -> list[Capability]:
    """What an OpenAI chat model can do: chat, completion, streaming, function calling, code; vision and
    long context (>= 128k tokens) for the models that have them."""
    m = model.lower()
    caps = [Capability.CHAT, Capability.COMPLETION, Capability.STREAMING, Capability.FUNCTION_CALLING,
            Capability.CODE_GENERATION]
    if any(x in m for x in _VISION_MARKERS) and not m.startswith(("o1-mini", "o3-mini")):
        caps.append(Capability.VISION)
    if any(x in m for x in _LONG_CONTEXT_MARKERS):
        caps.append(Capability.LONG_CONTEXT)
    return caps


class OpenAIProvider(HTTPProvider):
    """OpenAI's Chat Completions API (and OpenAI-compatible servers, with ``endpoint=``).

    ``api_key`` falls back to ``OPENAI_API_KEY``, ``endpoint`` to ``OPENAI_BASE_URL`` then
    ``https://api.openai.com/v1`` (the official SDK's base URL: paths are appended to it). ``settings``:
    ``organization``/``project`` (or ``OPENAI_ORG_ID``/``OPENAI_PROJECT_ID``) become the
    ``OpenAI-Organization``/``OpenAI-Project`` headers; ``max_tokens_field`` overrides the field the token
    limit is sent in (``"max_tokens"`` for older OpenAI-compatible servers); ``headers`` adds headers to
    every request (not credentials). ``prices`` overrides model prices (see :class:`HTTPProvider`).

    Messages are sent in order; a ``tool`` message becomes a labelled ``user`` turn (see
    :func:`~axonflow_llm.providers.wire.tool_as_user`: a ``tool`` turn without the
    ``tool_call_id`` it answers is refused by the API).

    It is the leaf of its pipeline (the default pipeline unless ``pipeline=`` is given); its one pooled
    client is closed by ``aclose()`` unless it was handed in.
    """

    provider_type = ProviderType.OPENAI
    settings_keys = frozenset({"headers", "organization", "project", "max_tokens_field", "stream_usage"})
    #: The API documents ``max_tokens`` as deprecated in favour of ``max_completion_tokens``, which every
    #: current chat model accepts and which o-series and GPT-5 models *require* (they reject
    #: ``max_tokens``). So the limit is sent as ``max_completion_tokens``.
    max_tokens_field = "max_completion_tokens"
    #: Ask for ``usage`` in the last streamed chunk (``stream_options.include_usage``).
    stream_usage = True

    def __init__(
        self,
        *,
        name: str = "openai",
        api_key: str | None = None,
        model: str = OPENAI_DEFAULT_MODEL,
        endpoint: str | None = None,
        max_tokens: int | None = None,
        timeout: float | httpx.Timeout | None = None,
        http_client: httpx.AsyncClient | None = None,
        pipeline: Pipeline | None = None,
        clock: Clock | None = None,
        settings: Mapping[str, Any] | None = None,
        prices: PriceTable | Mapping[str, ModelPrice] | None = None,
    ) -> None:
        settings = self.checked_settings(name, settings)
        self._configure_fields(settings)
        super().__init__(
            name=name,
            model=model,
            endpoint=endpoint or os.environ.get("OPENAI_BASE_URL") or OPENAI_BASE_URL,
            auth=self.make_auth(name, api_key, settings),
            max_tokens=max_tokens,
            timeout=timeout,
            http_client=http_client,
            pipeline=pipeline,
            clock=clock,
            capabilities=openai_capabilities(model),
            headers={**self.extra_headers(settings), **self.settings_headers(name, settings)},
            prices=prices,
        )
        self._chat_url = self.url("/chat/completions")

    def make_auth(self, name: str, api_key: str | None, settings: Mapping[str, Any]) -> Any:
        """``Authorization: Bearer`` with ``api_key`` or ``OPENAI_API_KEY``."""
        from .auth import APIKeyAuth

        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            raise ValueError(
                f"{name}: OpenAI needs an API key: pass api_key=... or set the OPENAI_API_KEY variable"
            )
        return APIKeyAuth(key, env_var="OPENAI_API_KEY")

    def extra_headers(self, settings: Mapping[str, Any]) -> dict[str, str]:
        headers: dict[str, str] = {}
        org = settings.get("organization") or os.environ.get("OPENAI_ORG_ID")
        project = settings.get("project") or os.environ.get("OPENAI_PROJECT_ID")
        if org:
            headers["OpenAI-Organization"] = str(org)
        if project:
            headers["OpenAI-Project"] = str(project)
        return headers

    def _configure_fields(self, settings: Mapping[str, Any]) -> None:
        field = settings.get("max_tokens_field")
        if field is not None:
            if field not in ("max_tokens", "max_completion_tokens"):
                raise ValueError(
                    f"settings['max_tokens_field'] must be 'max_tokens' or 'max_completion_tokens', got {field!r}"
                )
            self.max_tokens_field = field
        usage = settings.get("stream_usage")
        if usage is not None:
            self.stream_usage = bool(usage)

    # -- mapping --------------------------------------------------------------------------------------

    def chat_body(self, request: CompletionRequest, streaming: bool, model: str | None) -> dict[str, Any]:
        """The documented request body; ``model`` ``None`` leaves the field out (Azure dated API)."""
        messages: list[Any] = []
        if request.system_prompt:
            messages.append({"role": "system", "content": request.system_prompt})
        if request.messages:
            # msgspec encodes Message as {"role", "content"}; a tool turn goes as labelled user text.
            messages.extend(map(tool_as_user, request.messages))
        if request.prompt:
            messages.append({"role": "user", "content": request.prompt})
        body: dict[str, Any] = {"model": model, "messages": messages} if model is not None else {"messages": messages}
        limit = request.max_tokens if request.max_tokens is not None else self.default_max_tokens
        if limit is not None:
            body[self.max_tokens_field] = limit
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.stop_sequences:
            body["stop"] = list(request.stop_sequences)
        # top_k: the Chat Completions API has none; it is ignored.
        if streaming:
            body["stream"] = True
            if self.stream_usage:
                body["stream_options"] = {"include_usage": True}
        return body

    def build_request(self, request: CompletionRequest, ctx: CallContext) -> httpx.Request:
        body = self.chat_body(request, ctx.streaming, request.model or self.model)
        return self.json_request("POST", self._chat_url, body)

    def parse_response(
        self, response: httpx.Response, request: CompletionRequest, *, latency: float
    ) -> CompletionResponse:
        data = self.decode(response, _COMPLETION)
        if not data.choices:
            raise self.malformed("the answer has no choices", response.content, response=response)
        choice = data.choices[0]
        metadata: dict[str, Any] = {"id": data.id} if data.id else {}
        if choice.finish_reason:
            metadata[RAW_FINISH_REASON] = choice.finish_reason
        if choice.message.refusal:
            metadata["refusal"] = choice.message.refusal
        return CompletionResponse(
            content=choice.message.content or "",
            model=data.model or request.model or self.model or "",
            usage=usage_stats(data.usage),
            finish_reason=finish_reason(choice.finish_reason),
            latency=latency,
            provider=self.name,
            request_id=self.request_id(response),
            metadata=metadata,
        )

    async def parse_stream(
        self, response: httpx.Response, request: CompletionRequest
    ) -> AsyncIterator[StreamChunk]:
        finish: FinishReason | None = None
        usage: UsageStats | None = None
        decode = _CHUNK.decode
        async for event in self.sse_events(response):
            data = event.data
            if not data:
                continue
            if data == "[DONE]":
                yield StreamChunk(done=True, finish_reason=finish, usage=usage)
                continue
            try:
                chunk = decode(data)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise self.malformed(f"a stream event is not the documented JSON ({exc})", data,
                                     response=response) from exc
            if chunk.error is not None:
                err = chunk.error
                raise self.stream_error(err.message or "the stream reported an error",
                                        kind=err.type or (str(err.code) if err.code else None), body=data)
            if chunk.usage is not None:
                usage = usage_stats(chunk.usage)
            for choice in chunk.choices:
                if choice.index != 0:
                    continue
                if choice.finish_reason:
                    finish = finish_reason(choice.finish_reason)
                delta = choice.delta
                if delta is not None and delta.content:
                    yield StreamChunk(content=delta.content)

    # -- health ---------------------------------------------------------------------------------------

    async def health_check(self) -> HealthCheckResult:
        """``GET {base}/models``: checks reachability and the key, spends no tokens."""
        return await self.probe("GET", self.url("/models"))
