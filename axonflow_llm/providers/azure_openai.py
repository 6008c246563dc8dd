"""Azure OpenAI: the OpenAI wire format at your resource, with an ``api-key`` or a Microsoft Entra ID token."""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from axonflow_llm.pipeline.clock import Clock
from axonflow_llm.pipeline.context import CallContext
from axonflow_llm.pipeline.models import CompletionRequest, HealthCheckResult, ProviderType
from axonflow_llm.pipeline.pipeline import Pipeline

from .openai import OPENAI_DEFAULT_MODEL, OpenAIProvider

if TYPE_CHECKING:
    from axonflow_llm.middleware.pricing import ModelPrice, PriceTable

__all__ = ["AZURE_DEFAULT_API_VERSION", "AzureOpenAIProvider"]

#: The current GA data-plane API: ``{endpoint}/openai/v1/...``, OpenAI's own request shape (the deployment
#: name goes in ``model``), no dated ``api-version``. Dated versions ("2024-10-21", the last dated GA, or
#: "2025-04-01-preview") are still accepted and use ``/openai/deployments/{deployment}/...?api-version=``.
AZURE_DEFAULT_API_VERSION = "v1"
#: Entra ID token lifetime assumed when a token provider returns only the token: it is asked again after
#: about a minute (azure-identity's provider caches the token itself, so this costs nothing).
_AD_TOKEN_LIFETIME = 60.0
_DATED = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")


def _modern(api_version: str) -> bool:
    """Whether the API version documents ``max_completion_tokens`` and ``stream_options``: v1, and previews
    from 2024-09-01-preview on. The dated GA versions (up to 2024-10-21) document neither."""
    if api_version in ("v1", "preview", "latest"):
        return True
    return api_version.endswith("-preview") and api_version >= "2024-09-01-preview"


class AzureOpenAIProvider(OpenAIProvider):
    """Azure OpenAI chat completions (and streaming, with usage) for one deployment.

    ``endpoint`` is the resource URL ``https://{resource}.openai.azure.com`` (falls back to
    ``settings["resource"]``, then ``AZURE_OPENAI_ENDPOINT``). ``settings``: ``deployment`` (default: the
    model), ``api_version`` (default ``"v1"``, the current GA API; or ``OPENAI_API_VERSION``),
    ``azure_ad_token_provider`` (a callable returning an Entra ID token, sync or async, as the official SDK
    takes; or returning ``(token, lifetime_seconds)``), ``azure_ad_token`` (a fixed token). Without
    either, ``api_key`` (or ``AZURE_OPENAI_API_KEY``) is sent in the ``api-key`` header. A token provider
    is asked again when its token is due, before each attempt (with or without an ``AuthMiddleware``).
    ``headers``: extra headers on every request (not credentials); ``prices``: see :class:`HTTPProvider`.
    ``request.model``, when set, names the deployment for that call. ``model`` is the underlying model,
    used for capabilities and pricing. Request ids come from ``apim-request-id``.
    """

    provider_type = ProviderType.AZURE_OPENAI
    settings_keys = OpenAIProvider.settings_keys | {
        "deployment", "api_version", "resource", "azure_ad_token", "azure_ad_token_provider",
    }

    def __init__(
        self,
        *,
        name: str = "azure-openai",
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
        resource = settings.get("resource")
        endpoint = (
            endpoint
            or (f"https://{resource}.openai.azure.com" if resource else None)
            or os.environ.get("AZURE_OPENAI_ENDPOINT")
        )
        if not endpoint:
            raise ValueError(
                f"{name}: Azure OpenAI needs the resource endpoint: pass endpoint='https://<resource>.openai."
                "azure.com', settings={'resource': '<resource>'}, or set AZURE_OPENAI_ENDPOINT"
            )
        endpoint = re.sub(r"/openai(/v1)?/*$", "", endpoint.rstrip("/"))
        api_version = str(
            settings.get("api_version") or os.environ.get("OPENAI_API_VERSION") or AZURE_DEFAULT_API_VERSION
        )
        if api_version not in ("v1", "preview", "latest") and not _DATED.match(api_version):
            raise ValueError(
                f"{name}: settings['api_version'] must be 'v1' or a dated version like '2024-10-21' or "
                f"'2025-04-01-preview', got {api_version!r}"
            )
        deployment = settings.get("deployment") or model
        if not isinstance(deployment, str) or not deployment:
            raise ValueError(f"{name}: settings['deployment'] must be the deployment name, got {deployment!r}")
        self.api_version = api_version
        self.deployment = deployment
        self._v1 = not _DATED.match(api_version)
        modern = _modern(api_version)
        settings.setdefault("max_tokens_field", "max_completion_tokens" if modern else "max_tokens")
        settings.setdefault("stream_usage", modern)
        super().__init__(
            name=name,
            api_key=api_key,
            model=model,
            endpoint=endpoint,
            max_tokens=max_tokens,
            timeout=timeout,
            http_client=http_client,
            pipeline=pipeline,
            clock=clock,
            settings=settings,
            prices=prices,
        )
        self._chat_url = self._url_for(deployment)

    def make_auth(self, name: str, api_key: str | None, settings: Mapping[str, Any]) -> Any:
        """An Entra ID bearer token (``azure_ad_token_provider``/``azure_ad_token``) or the ``api-key`` header."""
        return _azure_auth(name, api_key, settings)

    def extra_headers(self, settings: Mapping[str, Any]) -> dict[str, str]:
        return {}

    def _url_for(self, deployment: str) -> str:
        if self._v1:
            url = self.url("/openai/v1/chat/completions")
            return url if self.api_version == "v1" else f"{url}?api-version={self.api_version}"
        return (
            self.url(f"/openai/deployments/{quote(deployment, safe='')}/chat/completions")
            + f"?api-version={self.api_version}"
        )

    def build_request(self, request: CompletionRequest, ctx: CallContext) -> httpx.Request:
        deployment = request.model or self.deployment
        if self._v1:
            body = self.chat_body(request, ctx.streaming, deployment)
            url = self._chat_url
        else:
            body = self.chat_body(request, ctx.streaming, None)
            url = self._chat_url if deployment == self.deployment else self._url_for(deployment)
        return self.json_request("POST", url, body)

    def request_id(self, response: httpx.Response) -> str | None:
        headers = response.headers
        rid: str | None = headers.get("apim-request-id") or headers.get("x-request-id")
        return rid

    async def health_check(self) -> HealthCheckResult:
        """``GET {endpoint}/openai/v1/models`` (v1) or ``/openai/models?api-version=``: no tokens spent."""
        if self._v1:
            params = None if self.api_version == "v1" else {"api-version": self.api_version}
            return await self.probe("GET", self.url("/openai/v1/models"), params=params)
        return await self.probe("GET", self.url("/openai/models"), params={"api-version": self.api_version})


def _azure_auth(name: str, api_key: str | None, settings: Mapping[str, Any]) -> Any:
    from .auth import APIKeyAuth, BearerTokenAuth

    provider = settings.get("azure_ad_token_provider")
    if provider is not None:
        if not callable(provider):
            raise TypeError(
                f"{name}: settings['azure_ad_token_provider'] must be a callable returning a token, "
                f"e.g. azure.identity.aio.get_bearer_token_provider(...); got {type(provider).__name__}"
            )

        async def source() -> tuple[str, float]:
            result = provider()
            if inspect.isawaitable(result):
                result = await result
            if isinstance(result, tuple):
                return result[0], float(result[1])
            return result, _AD_TOKEN_LIFETIME

        source.__qualname__ = "azure_ad_token_provider"
        return BearerTokenAuth(source)
    token = settings.get("azure_ad_token")
    if token:
        return BearerTokenAuth(str(token))
    key = api_key or os.environ.get("AZURE_OPENAI_API_KEY")
    if not key:
        raise ValueError(
            f"{name}: Azure OpenAI needs a credential: pass api_key=... or set AZURE_OPENAI_API_KEY, or give "
            "settings={'azure_ad_token_provider': ...} for Microsoft Entra ID"
        )
    return APIKeyAuth(key, header="api-key", env_var="AZURE_OPENAI_API_KEY")
