"""The AWS Bedrock provider: the Converse and ConverseStream APIs, signed with SigV4 through botocore."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import httpx

from ..pipeline.clock import Clock
from ..pipeline.context import CallContext
from ..pipeline.errors import APIError, ConfigError, find_error_message, redact, request_secrets
from ..pipeline.models import (
    Capability,
    CompletionRequest,
    CompletionResponse,
    HealthCheckResult,
    HealthStatus,
    ProviderType,
    StreamChunk,
)
from ..pipeline.pipeline import Pipeline
from .auth import APIKeyAuth
from .bedrock_wire import (
    RESPONSE_DECODER,
    BedrockStreamState,
    build_body,
    model_family,
    model_path,
    quote_model_id,
    to_response,
)
from .http_provider import HTTPProvider
from .sigv4 import SigV4Auth, import_botocore

if TYPE_CHECKING:
    from ..middleware.pricing import ModelPrice, PriceTable

__all__ = ["DEFAULT_BEDROCK_MODEL", "BedrockProvider"]

#: On-demand in most Bedrock regions, text in and out through Converse; pass ``model=`` for Claude etc.
DEFAULT_BEDROCK_MODEL = "amazon.nova-lite-v1:0"
BEARER_ENV = "AWS_BEARER_TOKEN_BEDROCK"
SIGNING_NAME = "bedrock"

_REGION = re.compile(r"[a-z]{2}(-[a-z0-9]+)+")
_HEALTH_MODES = ("control_plane", "credentials")
_BASE = (Capability.CHAT, Capability.COMPLETION, Capability.STREAMING)
_RICH = (*_BASE, Capability.FUNCTION_CALLING, Capability.CODE_GENERATION, Capability.LONG_CONTEXT)


def capabilities_for(model_id: str) -> tuple[Capability, ...]:
    """What the model can do through Converse, by family (text in and out is all this SDK sends)."""
    family = model_family(model_id)
    if family == "anthropic" or (family == "amazon" and "nova" in model_id and "micro" not in model_id):
        return (*_RICH, Capability.VISION)
    if family == "meta" and ("llama3-2-11b" in model_id or "llama3-2-90b" in model_id or "llama4" in model_id):
        return (*_RICH, Capability.VISION)
    if family in ("amazon", "meta", "mistral", "cohere", "ai21", "deepseek", "openai", "qwen", "writer"):
        return _RICH
    return _BASE


class BedrockProvider(HTTPProvider):
    """Models on AWS Bedrock through the Converse API, as botocore's ``bedrock-runtime`` client sends it.

    A call is ``POST {endpoint}/model/{modelId}/converse`` (a stream: ``/converse-stream``, an AWS event
    stream decoded with botocore's ``EventStreamBuffer``), the model id one percent-encoded path segment
    (``:`` kept literal so that every transport sends the path that was signed). The
    body holds ``messages`` (``[{role, content: [{text}]}]``), ``system`` (``[{text}]``) and
    ``inferenceConfig`` (``maxTokens``, ``temperature``, ``topP``, ``stopSequences``). ``top_k`` has no
    Converse field: it is sent in ``additionalModelRequestFields`` as the family takes it (Claude
    ``top_k``, Nova ``inferenceConfig.topK``); for other families ``ValueError`` asks for the setting
    ``additional_model_request_fields`` instead, whose fields are sent with every call. ``tool`` messages
    are sent as labelled ``user`` text, and consecutive turns of one role as one message with a text
    block each (Converse wants user and assistant turns to alternate).

    Credentials, as botocore resolves them: ``api_key`` (a Bedrock API key, sent as a bearer token), else
    the settings ``aws_access_key_id``/``aws_secret_access_key``/``aws_session_token``, else
    ``$AWS_BEARER_TOKEN_BEDROCK``, else the standard chain (environment, shared files, ``profile``
    setting or ``$AWS_PROFILE``, SSO, container and instance roles) resolved off the event loop on first
    use. Each attempt is signed afresh with SigV4 (service ``bedrock``) over the exact bytes sent. The
    region: ``region``, else ``$AWS_REGION``, ``$AWS_DEFAULT_REGION``, the profile's region. Needs the
    ``axonflow-llm[bedrock]`` extra (botocore): without it, construction raises
    :class:`~axonflow_llm.providers.sigv4.BotocoreMissingError`, both a ``ConfigError`` and an
    ``ImportError``, naming the extra. ``settings["headers"]``: extra headers (not credentials, which
    would break the signature); ``prices``: see :class:`HTTPProvider`. Errors put the AWS error type
    (``x-amzn-errortype``) in front of the message.

    ``health_check()``: the runtime has no free endpoint, so by default it resolves the credentials and
    asks the control plane (``GET https://bedrock.{region}.amazonaws.com/foundation-models/{id}``, no
    tokens) about the model: 2xx healthy; ``AccessDeniedException`` healthy too (the signature was
    accepted, the role just may not read model details); anything else unhealthy with the reason. The
    setting ``health_check="credentials"`` only resolves credentials; ``control_endpoint`` overrides
    the control-plane URL. It never raises.
    """

    provider_type = ProviderType.BEDROCK
    settings_keys = frozenset({
        "headers", "profile", "region", "aws_access_key_id", "aws_secret_access_key", "aws_session_token",
        "additional_model_request_fields", "health_check", "control_endpoint",
    })

    def __init__(
        self,
        *,
        name: str = "bedrock",
        api_key: str | None = None,
        model: str | None = DEFAULT_BEDROCK_MODEL,
        region: str | None = None,
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
        botocore = import_botocore(name)
        profile = settings.get("profile")
        access_key = settings.get("aws_access_key_id")
        secret_key = settings.get("aws_secret_access_key")
        session = None
        region = (
            region or settings.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        )
        if not region or not (api_key or access_key):
            try:
                session = botocore.session.Session(profile=profile)
                region = region or session.get_config_variable("region")
            except Exception as exc:  # ProfileNotFound, a broken config file ...
                raise ConfigError(
                    f"{name}: could not read the AWS configuration ({type(exc).__name__}: {redact(str(exc))})"
                ) from exc
        if not region:
            raise ValueError(
                f"{name}: Bedrock needs an AWS region: pass region= (or ProviderConfig.region) or set "
                "AWS_REGION or AWS_DEFAULT_REGION"
            )
        if not isinstance(region, str) or not _REGION.fullmatch(region):
            raise ValueError(f"{name}: {region!r} is not an AWS region name such as 'us-east-1'")
        bearer = api_key or (None if access_key else os.environ.get(BEARER_ENV))
        auth: APIKeyAuth | SigV4Auth
        if bearer:
            auth = APIKeyAuth(bearer, env_var=BEARER_ENV)
        else:
            auth = SigV4Auth(
                region=region,
                service=SIGNING_NAME,
                access_key_id=access_key,
                secret_access_key=secret_key,
                session_token=settings.get("aws_session_token"),
                profile=profile,
                session=session,
            )
        extra = settings.get("additional_model_request_fields")
        if extra is not None and not isinstance(extra, Mapping):
            raise TypeError(f"{name}: settings['additional_model_request_fields'] must be a mapping")
        mode = settings.get("health_check", "control_plane")
        if mode not in _HEALTH_MODES:
            raise ValueError(f"{name}: settings['health_check'] must be one of {_HEALTH_MODES}, got {mode!r}")
        model = model or DEFAULT_BEDROCK_MODEL
        runtime = endpoint or f"https://bedrock-runtime.{region}.amazonaws.com"
        super().__init__(
            name=name,
            model=model,
            endpoint=runtime,
            auth=auth,
            max_tokens=max_tokens,
            timeout=timeout,
            http_client=http_client,
            pipeline=pipeline,
            clock=clock,
            capabilities=capabilities_for(model),
            headers=self.settings_headers(name, settings),
            prices=prices,
        )
        self.region = region
        self._additional: Mapping[str, Any] | None = extra
        self._health_mode = mode
        control = settings.get("control_endpoint")
        if control is None:
            base = self.url("")
            control = (
                base.replace("://bedrock-runtime.", "://bedrock.", 1)
                if endpoint
                else (f"https://bedrock.{region}.amazonaws.com")
            )
        self._control_endpoint = str(control).rstrip("/")
        self._buffer_cls = botocore.eventstream.EventStreamBuffer
        self._parser_error = botocore.eventstream.ParserError
        self._model_urls: dict[tuple[str, bool], str] = {}

    # -- mapping ---------------------------------------------------------------------------------------

    def _model_url(self, model: str, stream: bool) -> str:
        url = self._model_urls.get((model, stream))
        if url is None:
            url = self.url(model_path(model, stream=stream))
            if len(self._model_urls) < 256:
                self._model_urls[(model, stream)] = url
        return url

    def build_request(self, request: CompletionRequest, ctx: CallContext) -> httpx.Request:
        model = request.model or self._info.model or DEFAULT_BEDROCK_MODEL
        body = build_body(
            request, model_id=model, max_tokens=self.default_max_tokens, additional_fields=self._additional
        )
        return self.json_request("POST", self._model_url(model, ctx.streaming), body)

    def error_from_response(self, response: httpx.Response) -> APIError:
        """Bedrock names the error in ``x-amzn-errortype``: it goes in front of the message
        (``ThrottlingException: Too many requests``)."""
        err = APIError.from_response(response, provider=self.name, message=_error_message(response))
        return _scrubbed(err, [], self.info.auth)

    def parse_response(
        self, response: httpx.Response, request: CompletionRequest, *, latency: float
    ) -> CompletionResponse:
        return to_response(
            self.decode(response, RESPONSE_DECODER),
            provider=self.name,
            request_id=self.request_id(response),
            latency=latency,
            model=request.model or self._info.model or "",
        )

    def request_id(self, response: httpx.Response) -> str | None:
        return response.headers.get("x-amzn-requestid") or super().request_id(response)

    async def parse_stream(self, response: httpx.Response, request: CompletionRequest) -> AsyncIterator[StreamChunk]:
        ctype = response.headers.get("content-type", "")
        if "json" in ctype:
            data = await response.aread()
            raise self.malformed(f"a stream answered with {ctype!r}, not an AWS event stream", data, response=response)
        state = BedrockStreamState(provider=self.name, request_id=self.request_id(response))
        buffer = self._buffer_cls()
        async for data in response.aiter_bytes():
            buffer.add_data(data)
            try:
                messages = list(buffer)
            except self._parser_error as exc:
                raise self.malformed(
                    f"the AWS event stream is corrupt ({type(exc).__name__}: {exc})", response=response
                ) from exc
            for message in messages:
                if state.finished:
                    continue  # after messageStop and metadata: read to the end of the body
                try:
                    chunk = state.feed(message.headers, message.payload)
                except APIError as err:
                    raise _scrubbed(err, request_secrets(response.request), self._info.auth) from None
                if chunk is not None:
                    yield chunk
                elif state.finished:
                    yield state.final_chunk()

    # -- the rest of the interface ---------------------------------------------------------------------

    async def health_check(self) -> HealthCheckResult:
        base = _base_model_id(self.model or "")
        if self._health_mode == "credentials" or base is None:
            clock = self.info.clock
            start = clock.now()
            try:
                await self.prepare_auth(self.info.auth)
            except Exception as exc:
                return self.health_result(
                    HealthStatus.UNHEALTHY, clock.now() - start, f"{self.name}: AWS credentials: {redact(str(exc))}"
                )
            return self.health_result(
                HealthStatus.HEALTHY, clock.now() - start, f"{self.name}: credentials resolved (no request sent)"
            )
        return await self.probe(
            "GET", f"{self._control_endpoint}/foundation-models/{quote_model_id(base)}", accept_error=_access_denied
        )


def _access_denied(err: APIError) -> str | None:
    """The control plane refused to describe the model: the signature was accepted, so the credentials work."""
    if err.status_code == 403 and "AccessDeniedException" in err.message:
        return "signature accepted; not allowed to read model details"
    return None


def _scrubbed(err: APIError, secrets: list[str], auth: Any) -> APIError:
    """``err`` with ``secrets`` (what the request carried, e.g. the session token) and the auth's own
    secrets (the secret access key, never sent) replaced by ``***`` in its message and body."""
    scrub = getattr(auth, "scrub", None)
    for attr in ("message", "body"):
        text = getattr(err, attr)
        if text:
            text = redact(text, secrets) if secrets else text
            setattr(err, attr, scrub(text) if scrub is not None else text)
    return err


def _error_message(response: httpx.Response) -> str | None:
    """``ThrottlingException: Too many requests`` from ``x-amzn-errortype`` and the body's message."""
    kind = response.headers.get("x-amzn-errortype", "").split(":", 1)[0].strip()
    if not kind:
        return None
    try:
        detail = find_error_message(response.json())
    except ValueError:
        detail = None
    return f"{kind}: {detail}" if detail else kind


def _base_model_id(model_id: str) -> str | None:
    """The foundation model behind an id or a cross-region profile (``us.anthropic.x`` -> ``anthropic.x``);
    ``None`` for an ARN (provisioned, custom, imported models)."""
    if model_id.startswith("arn:") or not model_id:
        return None
    family = model_family(model_id)
    first, _, rest = model_id.partition(".")
    if family is not None and first != family and rest.startswith(family + "."):
        return rest
    return model_id
