"""Ollama: ``POST /api/chat`` on a local (or remote) Ollama server, streamed as newline-delimited JSON."""

from __future__ import annotations

import os
import urllib.parse
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

__all__ = ["OLLAMA_BASE_URL", "OLLAMA_DEFAULT_MODEL", "OllamaProvider", "ollama_capabilities", "ollama_host"]

OLLAMA_BASE_URL = "http://localhost:11434"
OLLAMA_DEFAULT_MODEL = "llama3.1"

# --- the documented wire shapes (unknown fields are ignored) ----------------------------------------


class _Message(msgspec.Struct, frozen=True, kw_only=True):
    role: str = "assistant"
    content: str = ""


class ChatResponse(msgspec.Struct, frozen=True, kw_only=True):
    """One ``/api/chat`` object: the whole answer (``stream: false``) or one line of a stream.

    ``error`` is set instead when Ollama reports a failure inside a stream.
    """

    model: str = ""
    message: _Message | None = None
    done: bool = False
    done_reason: str | None = None
    prompt_eval_count: int = 0
    eval_count: int = 0
    error: str | None = None


class _Model(msgspec.Struct, frozen=True, kw_only=True):
    name: str = ""
    model: str = ""


class _Tags(msgspec.Struct, frozen=True, kw_only=True):
    models: list[_Model] = []


_CHAT = msgspec.json.Decoder(ChatResponse)
_TAGS = msgspec.json.Decoder(_Tags)

_FINISH = {"stop": FinishReason.STOP, "length": FinishReason.LENGTH}


def _usage(r: ChatResponse) -> UsageStats:
    return UsageStats(prompt_tokens=r.prompt_eval_count, completion_tokens=r.eval_count,
                      total_tokens=r.prompt_eval_count + r.eval_count)


_VISION = ("llava", "vision", "bakllava", "moondream", "minicpm-v", "gemma3", "qwen2.5vl", "qwen2.5-vl",
           "llama4", "granite3.2-vision", "mistral-small3.1")
_TOOLS = ("llama3.1", "llama3.2", "llama3.3", "llama4", "qwen2.5", "qwen3", "mistral", "mixtral", "command-r",
          "firefunction", "hermes3", "granite3", "smollm2", "gpt-oss")
_CODE = ("code", "coder", "starcoder", "deepseek-coder", "codellama", "codegemma", "qwen2.5-coder")


def ollama_capabilities(model: str) -> list[Capability]:
    """Chat, completion and streaming always; vision, function calling and code generation for the model
    families that have them (by name, as Ollama's library lists them)."""
    m = model.lower()
    caps = [Capability.CHAT, Capability.COMPLETION, Capability.STREAMING]
    if any(x in m for x in _VISION):
        caps.append(Capability.VISION)
    if any(m.startswith(x) for x in _TOOLS):
        caps.append(Capability.FUNCTION_CALLING)
    if any(x in m for x in _CODE):
        caps.append(Capability.CODE_GENERATION)
    return caps


def ollama_host(host: str | None) -> str:
    """The base URL for an ``OLLAMA_HOST`` value, read as the official ``ollama`` Python client reads it:
    no scheme means ``http://``; no port means 11434 (``http://`` and ``https://`` given explicitly mean
    80 and 443); no host (``":56789"``) means localhost; an IPv6 address may be bracketed; a path is kept.
    ``None`` or ``""`` is ``http://localhost:11434``. ``ValueError`` if the port is not a number."""
    host = (host or "").strip()
    port = 11434
    scheme, sep, rest = host.partition("://")
    if not sep:
        scheme, rest = "http", host
    elif scheme == "http":
        port = 80
    elif scheme == "https":
        port = 443
    else:
        raise ValueError(f"OLLAMA_HOST must be host[:port] or an http(s):// URL, got scheme {scheme!r}")
    split = urllib.parse.urlsplit(f"{scheme}://{rest}")
    try:
        port = split.port or port
    except ValueError:
        raise ValueError(f"OLLAMA_HOST {host!r} has a port that is not a number 0-65535") from None
    name = split.hostname or "localhost"
    if ":" in name:  # an IPv6 address: urlsplit drops the brackets a URL needs
        name = f"[{name}]"
    path = split.path.strip("/")
    return f"{scheme}://{name}:{port}" + (f"/{path}" if path else "")


def _default_endpoint() -> str:
    host = os.environ.get("OLLAMA_HOST")
    return ollama_host(host) if host else OLLAMA_BASE_URL


class OllamaProvider(HTTPProvider):
    """A model served by Ollama (``/api/chat``). Needs no key.

    ``endpoint`` defaults to ``OLLAMA_HOST`` (read as the official client reads it, see
    :func:`ollama_host`) then ``http://localhost:11434``. ``api_key``, if given, is sent as
    ``Authorization: Bearer`` (an Ollama behind an authenticating proxy). Temperature, top_p, top_k, the
    token limit (``num_predict``) and stop sequences go in ``options``; ``settings["options"]`` adds
    further Ollama options (``num_ctx``, ``seed``...), ``settings["keep_alive"]`` how long the model stays
    loaded, ``settings["headers"]`` extra headers (not credentials). A ``tool`` message is sent as a
    labelled ``user`` turn, as by every provider. The health check lists the pulled models and reports
    whether this one is among them.
    """

    provider_type = ProviderType.OLLAMA
    settings_keys = frozenset({"headers", "options", "keep_alive"})

    def __init__(
        self,
        *,
        name: str = "ollama",
        api_key: str | None = None,
        model: str = OLLAMA_DEFAULT_MODEL,
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
        extra = settings.get("options") or {}
        if not isinstance(extra, Mapping):
            raise TypeError(f"{name}: settings['options'] must be a dict of Ollama options, got {type(extra).__name__}")
        self._extra_options = dict(extra)
        self._keep_alive = settings.get("keep_alive")
        auth: Any = None
        if api_key:
            from .auth import APIKeyAuth

            auth = APIKeyAuth(api_key)
        super().__init__(
            name=name,
            model=model,
            endpoint=endpoint or _default_endpoint(),
            auth=auth,
            max_tokens=max_tokens,
            timeout=timeout,
            http_client=http_client,
            pipeline=pipeline,
            clock=clock,
            capabilities=ollama_capabilities(model),
            headers=self.settings_headers(name, settings),
            prices=prices,
        )
        self._chat_url = self.url("/api/chat")

    # -- mapping --------------------------------------------------------------------------------------

    def build_request(self, request: CompletionRequest, ctx: CallContext) -> httpx.Request:
        messages: list[Any] = []
        if request.system_prompt:
            messages.append({"role": "system", "content": request.system_prompt})
        if request.messages:
            messages.extend(map(tool_as_user, request.messages))
        if request.prompt:
            messages.append({"role": "user", "content": request.prompt})
        options: dict[str, Any] = dict(self._extra_options) if self._extra_options else {}
        if request.temperature is not None:
            options["temperature"] = request.temperature
        if request.top_p is not None:
            options["top_p"] = request.top_p
        if request.top_k is not None:
            options["top_k"] = request.top_k
        limit = request.max_tokens if request.max_tokens is not None else self.default_max_tokens
        if limit is not None:
            options["num_predict"] = limit
        if request.stop_sequences:
            options["stop"] = list(request.stop_sequences)
        # Ollama streams unless told otherwise: "stream" is always sent.
        body: dict[str, Any] = {"model": request.model or self.model, "messages": messages,
                                "stream": ctx.streaming}
        if options:
            body["options"] = options
        if self._keep_alive is not None:
            body["keep_alive"] = self._keep_alive
        return self.json_request("POST", self._chat_url, body)

    def parse_response(
        self, response: httpx.Response, request: CompletionRequest, *, latency: float
    ) -> CompletionResponse:
        data = self.decode(response, _CHAT)
        if data.error is not None:
            raise self.stream_error(data.error, body=data.error)
        if data.message is None:
            raise self.malformed("the answer has no message", response.content, response=response)
        return CompletionResponse(
            content=data.message.content,
            model=data.model or request.model or self.model or "",
            usage=_usage(data),
            finish_reason=_FINISH.get(data.done_reason or ""),
            latency=latency,
            provider=self.name,
            request_id=self.request_id(response),
            metadata={RAW_FINISH_REASON: data.done_reason} if data.done_reason else {},
        )

    async def parse_stream(
        self, response: httpx.Response, request: CompletionRequest
    ) -> AsyncIterator[StreamChunk]:
        decode = _CHAT.decode
        async for line in self.ndjson_lines(response):
            try:
                obj = decode(line)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise self.malformed(f"a stream line is not the documented JSON ({exc})", line,
                                     response=response) from exc
            if obj.error is not None:
                raise self.stream_error(obj.error, body=line)
            content = obj.message.content if obj.message is not None else ""
            if obj.done:
                if content:
                    yield StreamChunk(content=content)
                yield StreamChunk(done=True, finish_reason=_FINISH.get(obj.done_reason or ""), usage=_usage(obj))
                continue
            if content:
                yield StreamChunk(content=content)

    # -- health ---------------------------------------------------------------------------------------

    async def health_check(self) -> HealthCheckResult:
        """``GET /api/tags``: the server is up, and the configured model is pulled (no tokens spent)."""
        model = self.model or ""

        def pulled(response: httpx.Response) -> str | None:
            tags = self.decode(response, _TAGS)
            names = {n for m in tags.models for n in (m.name, m.model) if n}
            wanted = {model, model + ":latest"} if ":" not in model else {model}
            if names & wanted:
                return None
            return f"model {model!r} is not pulled on this server; run `ollama pull {model}`"

        return await self.probe("GET", self.url("/api/tags"), check=pulled)
