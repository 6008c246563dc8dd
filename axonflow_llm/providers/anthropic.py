"""The Anthropic provider: Claude through the Messages API (``POST /v1/messages``), plain and streamed."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

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
from .anthropic_wire import (
    ANTHROPIC_VERSION,
    DEFAULT_MAX_TOKENS,
    MESSAGE_DECODER,
    AnthropicStreamState,
    build_body,
    to_response,
)
from .auth import APIKeyAuth
from .http_provider import HTTPProvider

if TYPE_CHECKING:
    from ..middleware.pricing import ModelPrice, PriceTable

__all__ = ["DEFAULT_ANTHROPIC_ENDPOINT", "DEFAULT_ANTHROPIC_MODEL", "AnthropicProvider"]

DEFAULT_ANTHROPIC_ENDPOINT = "https://api.anthropic.com"
DEFAULT_ANTHROPIC_MODEL = "claude-sonnet-4-5"
API_KEY_ENV = "ANTHROPIC_API_KEY"

_CAPABILITIES = (
    Capability.CHAT,
    Capability.COMPLETION,
    Capability.STREAMING,
    Capability.VISION,
    Capability.FUNCTION_CALLING,
    Capability.CODE_GENERATION,
    Capability.LONG_CONTEXT,
)


class AnthropicProvider(HTTPProvider):
    """Claude through Anthropic's Messages API, as the official SDK sends it.

    Each attempt is ``POST {endpoint}/v1/messages`` with ``x-api-key``, ``anthropic-version: 2023-06-01``
    and a JSON body: the system prompt (and any ``system`` messages) in the top-level ``system``, the
    turns in ``messages``, ``max_tokens`` (required by Anthropic: the request's, else ``max_tokens``
    here, else 4096), and ``temperature``/``top_p``/``top_k``/``stop_sequences`` when set. Streams are
    server-sent events ending at ``message_stop``; an ``error`` event inside the 200 stream raises its
    typed error (``overloaded_error`` -> :class:`OverloadedError`, ``rate_limit_error`` ->
    :class:`RateLimitError`, ``api_error`` -> :class:`ServerError` ...).

    Arguments: ``name``; ``api_key`` (default ``$ANTHROPIC_API_KEY``); ``model`` (default
    ``claude-sonnet-4-5``); ``endpoint`` (the base URL as the official SDK takes it, default
    ``https://api.anthropic.com``); ``max_tokens``; ``timeout`` (seconds); ``http_client`` (shared, not
    closed by ``aclose()``); ``pipeline`` (default: the standard middleware with this key); ``clock``;
    ``settings`` (``headers``: extra headers such as ``anthropic-beta``; not credentials); ``prices``
    (model price overrides, see :class:`HTTPProvider`). Cost estimates assume the ``max_tokens`` sent.

    It is the leaf of its onion; the ``x-api-key`` auth object is shared by all calls. ``health_check()``
    lists the models (``GET /v1/models``), which spends no tokens.
    """

    provider_type = ProviderType.ANTHROPIC
    fallback_output_tokens = DEFAULT_MAX_TOKENS  # what is sent when nothing sets max_tokens

    def __init__(
        self,
        *,
        name: str = "anthropic",
        api_key: str | None = None,
        model: str | None = DEFAULT_ANTHROPIC_MODEL,
        endpoint: str | None = None,
        max_tokens: int | None = None,
        timeout: float | httpx.Timeout | None = None,
        http_client: httpx.AsyncClient | None = None,
        pipeline: Pipeline | None = None,
        clock: Clock | None = None,
        settings: Mapping[str, Any] | None = None,
        prices: PriceTable | Mapping[str, ModelPrice] | None = None,
    ) -> None:
        key = api_key or os.environ.get(API_KEY_ENV)
        if not key:
            raise ValueError(f"{name}: Anthropic needs an API key: pass api_key= or set the {API_KEY_ENV} variable")
        settings = self.checked_settings(name, settings)
        headers = {"anthropic-version": ANTHROPIC_VERSION, **self.settings_headers(name, settings)}
        model = model or DEFAULT_ANTHROPIC_MODEL
        super().__init__(
            name=name,
            model=model,
            endpoint=endpoint or DEFAULT_ANTHROPIC_ENDPOINT,
            auth=APIKeyAuth(key, header="x-api-key"),
            max_tokens=max_tokens,
            timeout=timeout,
            http_client=http_client,
            pipeline=pipeline,
            clock=clock,
            capabilities=_CAPABILITIES,
            headers=headers,
            prices=prices,
        )
        self._messages_url = self.url("/v1/messages")
        self._body_max_tokens = self.default_max_tokens or DEFAULT_MAX_TOKENS

    # -- mapping ---------------------------------------------------------------------------------------

    def build_request(self, request: CompletionRequest, ctx: CallContext) -> httpx.Request:
        body = build_body(
            request,
            model=request.model or self._info.model or DEFAULT_ANTHROPIC_MODEL,
            max_tokens=self._body_max_tokens,
            stream=ctx.streaming,
        )
        return self.json_request("POST", self._messages_url, body)

    def parse_response(
        self, response: httpx.Response, request: CompletionRequest, *, latency: float
    ) -> CompletionResponse:
        return to_response(
            self.decode(response, MESSAGE_DECODER),
            provider=self.name,
            request_id=self.request_id(response),
            latency=latency,
            fallback_model=request.model or self._info.model or "",
        )

    def request_id(self, response: httpx.Response) -> str | None:
        return response.headers.get("request-id") or super().request_id(response)

    async def parse_stream(self, response: httpx.Response, request: CompletionRequest) -> AsyncIterator[StreamChunk]:
        state = AnthropicStreamState(
            provider=self.name,
            request_id=self.request_id(response),
            model=request.model or self._info.model or "",
        )
        async for event in self.sse_events(response):
            if state.finished:
                continue  # after message_stop: read to the end of the body, nothing more to say
            chunk = state.feed(event.event, event.data)
            if chunk is not None:
                yield chunk
            elif state.finished:
                yield state.final_chunk()

    # -- the rest of the interface ---------------------------------------------------------------------

    async def health_check(self) -> HealthCheckResult:
        """``GET /v1/models``: checks the endpoint and the key; spends no tokens."""
        return await self.probe("GET", self.url("/v1/models"))
