"""The Google Gemini provider: the Gemini API's ``generateContent`` and ``streamGenerateContent`` (SSE)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from ..pipeline.clock import Clock
from ..pipeline.context import CallContext
from ..pipeline.models import (
    Capability,
    CompletionRequest,
    CompletionResponse,
    HealthCheckResult,
    ProviderType,
    StreamChunk,
)
from ..pipeline.pipeline import Pipeline
from .auth import APIKeyAuth
from .gemini_wire import RESPONSE_DECODER, GeminiStreamState, build_body, model_path, to_response
from .http_provider import HTTPProvider

if TYPE_CHECKING:
    from ..middleware.pricing import ModelPrice, PriceTable

__all__ = ["DEFAULT_GEMINI_ENDPOINT", "DEFAULT_GEMINI_MODEL", "GeminiProvider"]

DEFAULT_GEMINI_ENDPOINT = "https://generativelanguage.googleapis.com"
DEFAULT_GEMINI_MODEL = "gemini-2.5-flash"
#: As the official google-genai client: ``GOOGLE_API_KEY`` wins when both are set.
API_KEY_ENVS = ("GOOGLE_API_KEY", "GEMINI_API_KEY")
API_VERSION = "v1beta"

_CAPABILITIES = (
    Capability.CHAT,
    Capability.COMPLETION,
    Capability.STREAMING,
    Capability.VISION,
    Capability.FUNCTION_CALLING,
    Capability.CODE_GENERATION,
    Capability.LONG_CONTEXT,
)


class GeminiProvider(HTTPProvider):
    """Gemini through the Gemini Developer API (``generativelanguage.googleapis.com``), as documented.

    A call is ``POST {endpoint}/v1beta/models/{model}:generateContent``; a stream is
    ``:streamGenerateContent?alt=sse`` (server-sent events, each a whole ``GenerateContentResponse``).
    The key travels in the ``x-goog-api-key`` header, never in the URL. The body holds ``contents``
    (roles ``user`` and ``model``), ``systemInstruction`` for the system prompt and ``system`` messages,
    and ``generationConfig`` (``maxOutputTokens``, ``temperature``, ``topP``, ``topK``,
    ``stopSequences``) with only what is set. A stream ends at the candidate's ``finishReason``; an
    ``{"error": ...}`` payload inside the 200 stream raises its typed error.

    Arguments: ``name``; ``api_key`` (default ``$GOOGLE_API_KEY``, then ``$GEMINI_API_KEY``: when both are
    set, ``GOOGLE_API_KEY`` wins, as in the official ``google-genai`` client); ``model``
    (default ``gemini-2.5-flash``; ``models/...`` and ``tunedModels/...`` names are taken as given);
    ``endpoint`` (base URL, default ``https://generativelanguage.googleapis.com``); ``max_tokens`` (sent
    as ``maxOutputTokens`` when the request has none; otherwise the model's default applies);
    ``timeout``; ``http_client``; ``pipeline``; ``clock``; ``settings`` (``headers``: extra headers, not
    credentials); ``prices`` (model price overrides, see :class:`HTTPProvider`).

    It is the leaf of its onion. ``health_check()`` lists the models (``GET /v1beta/models``), which
    spends no tokens.
    """

    provider_type = ProviderType.GEMINI

    def __init__(
        self,
        *,
        name: str = "gemini",
        api_key: str | None = None,
        model: str | None = DEFAULT_GEMINI_MODEL,
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
        key = api_key or os.environ.get(API_KEY_ENVS[0]) or os.environ.get(API_KEY_ENVS[1])
        if not key:
            raise ValueError(
                f"{name}: Gemini needs an API key: pass api_key= or set the GEMINI_API_KEY (or GOOGLE_API_KEY) variable"
            )
        super().__init__(
            name=name,
            model=model or DEFAULT_GEMINI_MODEL,
            endpoint=endpoint or DEFAULT_GEMINI_ENDPOINT,
            auth=APIKeyAuth(key, header="x-goog-api-key"),
            max_tokens=max_tokens,
            timeout=timeout,
            http_client=http_client,
            pipeline=pipeline,
            clock=clock,
            capabilities=_CAPABILITIES,
            headers=self.settings_headers(name, settings),
            prices=prices,
        )
        self._model_urls: dict[tuple[str, bool], str] = {}

    def _model_url(self, model: str, stream: bool) -> str:
        url = self._model_urls.get((model, stream))
        if url is None:
            method = "streamGenerateContent?alt=sse" if stream else "generateContent"
            url = self.url(f"/{API_VERSION}/{quote(model_path(model), safe='/')}:{method}")
            if len(self._model_urls) < 256:
                self._model_urls[(model, stream)] = url
        return url

    # -- mapping ---------------------------------------------------------------------------------------

    def build_request(self, request: CompletionRequest, ctx: CallContext) -> httpx.Request:
        model = request.model or self._info.model or DEFAULT_GEMINI_MODEL
        body = build_body(request, max_tokens=self.default_max_tokens)
        return self.json_request("POST", self._model_url(model, ctx.streaming), body)

    def parse_response(
        self, response: httpx.Response, request: CompletionRequest, *, latency: float
    ) -> CompletionResponse:
        return to_response(
            self.decode(response, RESPONSE_DECODER),
            provider=self.name,
            request_id=self.request_id(response),
            latency=latency,
            fallback_model=request.model or self._info.model or "",
        )

    async def parse_stream(self, response: httpx.Response, request: CompletionRequest) -> AsyncIterator[StreamChunk]:
        state = GeminiStreamState(
            provider=self.name,
            request_id=self.request_id(response),
            model=request.model or self._info.model or "",
        )
        async for event in self.sse_events(response):
            if state.finished:
                continue  # after the finish reason: read to the end of the body
            if not event.data:
                continue
            chunk = state.feed(event.data)
            if chunk is not None:
                yield chunk
            if state.finished:
                yield state.final_chunk()

    # -- the rest of the interface ---------------------------------------------------------------------

    async def health_check(self) -> HealthCheckResult:
        """``GET /v1beta/models``: checks the endpoint and the key; spends no tokens."""
        return await self.probe("GET", self.url(f"/{API_VERSION}/models"), params={"pageSize": "1"})
