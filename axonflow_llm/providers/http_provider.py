"""The shared base of HTTP providers: one pooled client, the leaf's send, error mapping, safe streams."""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import httpx
import msgspec

from axonflow_llm.pipeline.clock import Clock
from axonflow_llm.pipeline.context import CallContext
from axonflow_llm.pipeline.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    AxonFlowError,
    BadRequestError,
    MalformedResponseError,
    OverloadedError,
    RateLimitError,
    ServerError,
    redact,
    request_id_from_header_items,
)
from axonflow_llm.pipeline.middleware import Reply
from axonflow_llm.pipeline.models import (
    Capability,
    CompletionRequest,
    CompletionResponse,
    CostEstimate,
    HealthCheckResult,
    HealthStatus,
    ProviderConfig,
    ProviderType,
    StreamChunk,
)
from axonflow_llm.pipeline.pipeline import Pipeline
from axonflow_llm.pipeline.provider import BaseProvider

from .http_chunk_stream import HTTPChunkStream
from .httpx_objects import HeaderItem, build_request, header_items, items_of
from .provider_settings import check_settings, from_config_kwargs, settings_headers
from .transport import AiohttpTransport, default_timeout, default_transport, transport_errors, user_agent
from .wire import (
    _EXCERPT,
    RAW_FINISH_REASON,
    TOOL_RESULT_PREFIX,
    _checked_headers,
    excerpt,
    scrub_error,
    tool_as_user,
    type_name,
)

if TYPE_CHECKING:
    from axonflow_llm.middleware.pricing import ModelPrice, PriceTable

__all__ = ["RAW_FINISH_REASON", "TOOL_RESULT_PREFIX", "HTTPChunkStream", "HTTPProvider", "tool_as_user"]

T = TypeVar("T")
P = TypeVar("P", bound="HTTPProvider")

#: Health checks are cheap calls; they must not take the 600 s an LLM answer may.
HEALTH_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
_NO_CONTENT: HeaderItem = (b"content-length", b"content-length", b"0")
_FIXED = object()  # marks "the provider's auth needs preparing" (no auth object is this one)


def _needs_prepare(auth: Any) -> bool:
    """Whether ``auth`` must be made ready (resolved, refreshed) before it is applied; as AuthMiddleware
    decides: its ``needs_prepare``, else whether it has a ``prepare`` method."""
    if auth is None:
        return False
    prepare = getattr(auth, "prepare", None)
    if not callable(prepare):
        return False
    needs = getattr(auth, "needs_prepare", None)
    return True if needs is None else bool(needs)


def _price_table(prices: Any) -> PriceTable | None:
    try:
        from axonflow_llm.middleware.pricing import as_price_table
    except ImportError:  # pragma: no cover - the middleware package is optional for a bare provider
        if prices is not None:
            raise
        return None
    return as_price_table(prices)


class HTTPProvider(BaseProvider):
    """Base class of the built-in HTTP providers (and of yours): the leaf ``send`` is written once, here.

    A subclass says how to *map* (request to HTTP, HTTP to response/chunks); this class does the *I/O*: one
    pooled ``httpx.AsyncClient`` (the user's, if handed in, never closed by ``aclose()``), ``ctx.auth``
    made ready (a refreshable credential is refreshed when due, even without an ``AuthMiddleware``) and
    applied to every request, ``httpx`` errors mapped to the hierarchy in ``pipeline/errors.py`` with the
    cause chained, non-2xx answers read and raised as :meth:`error_from_response`, latency on the
    provider's clock, and streams that always close their HTTP response (exhausted, failed,
    ``aclose()``\\ d, cancelled). It is the leaf of the onion: every middleware runs before ``send``. With
    its own client (the default, see :func:`~axonflow_llm.providers.transport.default_transport`) a
    request goes straight to the pooled transport; a client handed in is used through ``client.send()``,
    so its own configuration applies.

    A subclass implements three methods and usually ``health_check``::

        class MyProvider(HTTPProvider):
            provider_type = ProviderType.CUSTOM

            def build_request(self, request, ctx) -> httpx.Request:
                body = {"model": request.model or self.model, "messages": [...], "stream": ctx.streaming}
                return self.json_request("POST", self.url("/chat"), body)   # headers, timeout: done

            def parse_response(self, response, request, *, latency) -> CompletionResponse:
                data = self.decode(response, MyAnswer)        # msgspec Struct; MalformedResponseError if not
                return CompletionResponse(content=..., latency=latency, provider=self.name,
                                          request_id=self.request_id(response), ...)

            async def parse_stream(self, response, request) -> AsyncIterator[StreamChunk]:
                async for event in self.sse_events(response):    # or self.ndjson_lines(response)
                    ...
                    yield StreamChunk(content=delta)
                    # at the provider's end marker: yield ONE final StreamChunk(done=True, usage=...,
                    # finish_reason=...) and keep looping to the end of the body (usually nothing).
                    # An error event: raise self.stream_error(message, kind="overloaded").

            async def health_check(self) -> HealthCheckResult:
                return await self.probe("GET", self.url("/models"))

    ``parse_stream`` need not handle transport errors or the missing end marker: the base wraps it in an
    :class:`HTTPChunkStream`, which raises ``APIConnectionError``/``APITimeoutError`` for a drop before the
    first chunk, ``StreamInterruptedError`` (cause chained) after it, and ``StreamInterruptedError`` when
    the body ends without a ``done=True`` chunk. To read a provider's own error header or body shape,
    override :meth:`error_from_response`.

    Constructor arguments (keyword-only): ``name``, ``type`` (defaults to the class's ``provider_type``),
    ``model``, ``endpoint`` (the base URL; a trailing slash is dropped), ``auth`` (an object with
    ``apply(httpx.Request)``, or an ``httpx.Auth``), ``max_tokens`` (default for requests without one:
    ``self.default_max_tokens``), ``timeout`` (seconds or ``httpx.Timeout``; default connect 5 s, read
    600 s), ``http_client``, ``pipeline`` (``None``: :func:`default_pipeline` with this ``auth`` and
    ``prices``), ``clock``, ``capabilities``, ``cost_estimator`` (default: the price table),
    ``headers`` (extra headers on every request; a credential or framing header such as
    ``Authorization``, ``x-api-key`` or ``Host`` is refused: pass credentials as ``auth``), ``prices``
    (a ``PriceTable``, or ``{model: ModelPrice}`` laid over the shipped table: used by
    :meth:`estimate_cost` and the default pipeline's ``CostMiddleware``).

    Stable API for subclasses: ``provider_type``, ``fallback_output_tokens``, ``url()``,
    ``json_request()``, ``decode()``, ``malformed()``, ``request_id()``, ``sse_events()``,
    ``ndjson_lines()``, ``stream_error()``, ``error_from_response()``, ``prepare_auth()``, ``probe()``,
    ``health_result()``, ``settings_keys``, ``checked_settings()``, ``settings_headers()``,
    ``default_max_tokens``, ``prices``, ``client``,
    ``from_config()``, ``resolve_pipeline()``.
    """

    provider_type: ClassVar[ProviderType] = ProviderType.CUSTOM
    #: Output tokens a cost estimate assumes when neither the request nor the provider sets ``max_tokens``
    #: (a provider that always sends a limit, as Anthropic must, sets it to that limit).
    fallback_output_tokens: ClassVar[int] = 1024
    #: The ``settings`` keys the constructor reads (:meth:`checked_settings` refuses any other).
    settings_keys: ClassVar[frozenset[str]] = frozenset({"headers"})

    def __init__(
        self,
        *,
        name: str,
        type: ProviderType | None = None,
        model: str | None = None,
        endpoint: str,
        auth: Any = None,
        max_tokens: int | None = None,
        timeout: float | httpx.Timeout | None = None,
        http_client: httpx.AsyncClient | None = None,
        pipeline: Pipeline | None = None,
        clock: Clock | None = None,
        capabilities: Iterable[Capability] = (Capability.CHAT, Capability.COMPLETION, Capability.STREAMING),
        cost_estimator: Callable[[CompletionRequest], CostEstimate | None] | None = None,
        headers: Mapping[str, str] | None = None,
        prices: PriceTable | Mapping[str, ModelPrice] | None = None,
    ) -> None:
        if not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
            raise ValueError(f"{name}: endpoint must be an http:// or https:// URL, got {endpoint!r}")
        if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)
                                       or max_tokens < 1):
            raise ValueError(f"{name}: max_tokens must be a positive integer, got {max_tokens!r}")
        if http_client is not None and not isinstance(http_client, httpx.AsyncClient):
            raise TypeError(
                f"{name}: http_client must be an httpx.AsyncClient, got {type_name(http_client)}"
            )
        extra_headers = _checked_headers(name, headers)
        t = default_timeout(timeout)
        owns = http_client is None
        # Our own client: requests go straight to its transport (no per-call cookie, hook, redirect or auth
        # machinery, none of which it uses). A client handed in is used through client.send(), so its
        # configuration (base headers, event hooks, httpx.Auth, mounts) applies.
        self._direct: httpx.AsyncBaseTransport | None = None
        self._buffered: Callable[[httpx.Request], Awaitable[httpx.Response]] | None = None
        if http_client is None:
            self._direct = default_transport()
            if isinstance(self._direct, AiohttpTransport):
                self._buffered = self._direct.handle_buffered
            client = httpx.AsyncClient(transport=self._direct, timeout=t)
        else:
            client = http_client
        self._urls: dict[str, tuple[httpx.URL, list[HeaderItem]]] = {}
        self._base_url = endpoint.rstrip("/")
        self.default_max_tokens = max_tokens
        # A client handed in keeps its own timeout unless one was asked for here.
        self._timeout_ext: dict[str, float | None] | None = (
            t.as_dict() if owns or timeout is not None else None
        )
        self._headers: dict[str, str] = {
            "user-agent": user_agent(),
            "content-type": "application/json",
            "accept": "application/json",
            **extra_headers,
        }
        self._merge_client_config = not owns
        self._transport_errors = transport_errors()
        # The leaf prepares ctx.auth unless it is the provider's own auth and that needs no preparing: one
        # identity test on the fixed-key path.
        self._ready_auth: Any = _FIXED if _needs_prepare(auth) else auth
        self._auth_clock = clock  # as the default AuthMiddleware: None lets the auth use its own clock
        self._prices = _price_table(prices)
        ptype = ProviderType(type or self.provider_type)
        super().__init__(
            name=name,
            type=ptype,
            model=model,
            endpoint=self._base_url,
            auth=auth,
            http_client=client,
            owns_client=owns,
            pipeline=self.resolve_pipeline(
                pipeline, auth=auth, clock=clock,
                timeout=float(timeout) if isinstance(timeout, int | float) else None,
                prices=self._prices if prices is not None else None,
            ),
            clock=clock,
            capabilities=capabilities,
            cost_estimator=(
                cost_estimator if cost_estimator is not None
                else self._estimate_cost if self._prices is not None else None
            ),
        )

    # -- construction helpers -------------------------------------------------------------------------

    @staticmethod
    def resolve_pipeline(
        pipeline: Pipeline | None,
        *,
        auth: Any,
        clock: Clock | None,
        timeout: float | None = None,
        prices: PriceTable | Mapping[str, ModelPrice] | None = None,
    ) -> Pipeline:
        """``pipeline`` if given, else ``default_pipeline(auth=, clock=, timeout=, prices=)`` for this
        provider."""
        if pipeline is not None:
            if not isinstance(pipeline, Pipeline):
                raise TypeError(f"pipeline must be a Pipeline, got {type_name(pipeline)}")
            return pipeline
        try:
            from axonflow_llm.middleware.defaults import default_pipeline
        except ImportError:  # the middleware package is optional for a bare provider
            return Pipeline()
        return default_pipeline(auth=auth, clock=clock, timeout=timeout, prices=prices)

    @property
    def prices(self) -> PriceTable | None:
        """The price table :meth:`estimate_cost` reads (the shipped one, with the ``prices`` given laid
        over it); ``None`` without the middleware package."""
        return self._prices

    def _estimate_cost(self, request: CompletionRequest) -> CostEstimate | None:
        """From :attr:`prices`: output tokens are ``request.max_tokens``, else the provider's
        ``max_tokens``, else :attr:`fallback_output_tokens`; ``None`` for a model without a price."""
        from axonflow_llm.middleware.pricing import estimate_cost

        model = request.model or self._info.model
        if not model:
            return None
        result: CostEstimate | None = estimate_cost(
            request, model=model, prices=self._prices, provider_type=self._info.type,
            default_output_tokens=self.default_max_tokens or self.fallback_output_tokens,
        )
        return result

    @classmethod
    def checked_settings(cls, name: str, settings: Mapping[str, Any] | None) -> dict[str, Any]:
        """``settings`` as a new dict; ``TypeError`` if it is not a mapping, ``ValueError`` naming every key
        that :attr:`settings_keys` does not list (a misspelt key would otherwise be silently ignored)."""
        return check_settings(cls, name, settings)

    @staticmethod
    def settings_headers(name: str, settings: Mapping[str, Any] | None) -> dict[str, str]:
        """``settings["headers"]`` as a dict of lower-cased names to str values (``{}`` if absent);
        ``TypeError`` if it is not a mapping. The constructor then refuses credential and framing
        headers (see the class docstring)."""
        return settings_headers(name, settings)

    @classmethod
    def from_config(
        cls: type[P],
        config: ProviderConfig,
        *,
        http_client: httpx.AsyncClient | None = None,
        pipeline: Pipeline | None = None,
        clock: Clock | None = None,
    ) -> P:
        """Build from a :class:`ProviderConfig`; fields left ``None`` take the constructor's defaults.

        The contract, for your subclasses too: the constructor takes ``name``, ``http_client``,
        ``pipeline`` and ``clock`` (as this class's does), and each config field goes to the keyword of
        the same name where the constructor has one (``type``, ``api_key``, ``endpoint``, ``model``,
        ``region``, ``max_tokens``, ``timeout``, ``settings``; ``**kwargs`` passed on to a base class
        count as that class's keywords). Where it has none:

        - ``api_key`` becomes ``auth=APIKeyAuth(api_key)`` (``Authorization: Bearer``) if it takes
          ``auth``;
        - ``settings["headers"]`` becomes ``headers=``; the middleware settings (``retry``,
          ``rate_limit``, ``circuit_breaker``, ``timeouts``, ``pricing``) are left to the registry, which
          builds the pipeline from them;
        - ``settings["pricing"]`` also becomes ``prices=`` when the constructor takes ``prices``, so that
          :meth:`estimate_cost` honours it;
        - anything else that is set raises ``ConfigError`` naming it: accept the keyword, or override
          ``from_config``.
        """
        return cls(**from_config_kwargs(cls, config, http_client=http_client, pipeline=pipeline, clock=clock))

    # -- the subclass's part ----------------------------------------------------------------------------

    def build_request(self, request: CompletionRequest, ctx: CallContext) -> httpx.Request:
        """The HTTP request for one attempt; ask for a stream when ``ctx.streaming``."""
        raise NotImplementedError(f"{type(self).__name__} must implement build_request()")

    def parse_response(
        self, response: httpx.Response, request: CompletionRequest, *, latency: float
    ) -> CompletionResponse:
        """Map a 2xx non-streamed answer (body already read) to a response."""
        raise NotImplementedError(f"{type(self).__name__} must implement parse_response()")

    def parse_stream(
        self, response: httpx.Response, request: CompletionRequest
    ) -> AsyncIterator[StreamChunk]:
        """Async generator of chunks from a 2xx streamed answer; see the class docstring."""
        raise NotImplementedError(f"{type(self).__name__} must implement parse_stream()")

    # -- helpers for subclasses -------------------------------------------------------------------------

    @property
    def client(self) -> httpx.AsyncClient:
        client = self._info.http_client
        assert client is not None
        return client

    def url(self, path: str) -> str:
        """``endpoint`` + ``path`` (``path`` starts with ``/``)."""
        return self._base_url + path

    def json_request(
        self,
        method: str,
        url: str,
        body: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Request:
        """An ``httpx.Request`` with the JSON body (msgspec-encoded), the common headers and the timeout."""
        hdrs = self._headers if headers is None else {**self._headers, **headers}
        content = msgspec.json.encode(body) if body is not None else None
        if self._merge_client_config:
            req = self.client.build_request(method, url, content=content, headers=hdrs, params=params)
        elif params is not None or headers is not None:
            req = httpx.Request(method, url, content=content, headers=hdrs, params=params)
        else:
            return self._fast_request(method, url, content)
        if self._timeout_ext is not None:
            req.extensions["timeout"] = self._timeout_ext
        return req

    def _fast_request(self, method: str, url: str, content: bytes | None) -> httpx.Request:
        """``httpx.Request`` without re-parsing the URL or re-normalising the common headers on every call:
        each distinct URL is parsed once, with its ``Host`` and the common headers normalised once, and
        :func:`~axonflow_llm.providers.httpx_objects.build_request` fills in the same request httpx would
        build (httpx's URL parser and header rebuild were most of a request's construction cost)."""
        template = self._urls.get(url)
        if template is None:
            parsed = httpx.URL(url)
            template = (parsed, header_items({"host": parsed.netloc.decode("ascii"), **self._headers}))
            if len(self._urls) < 256:
                self._urls[url] = template
        parsed, base = template
        items = base.copy()
        if content is None:
            content = b""
            if method in ("POST", "PUT", "PATCH"):
                items.append(_NO_CONTENT)
        else:
            length = b"%d" % len(content)
            items.append((b"content-length", b"content-length", length))
        extensions = {} if self._timeout_ext is None else {"timeout": self._timeout_ext}
        return build_request(method.upper(), parsed, items, content, extensions)

    def decode(self, response: httpx.Response, type: type[T] | msgspec.json.Decoder[T]) -> T:
        """Decode a read body into ``type``; ``MalformedResponseError`` (redacted excerpt) if it is not."""
        data = response.content
        try:
            if isinstance(type, msgspec.json.Decoder):
                return type.decode(data)
            return msgspec.json.decode(data, type=type)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise self.malformed(f"the answer is not the documented JSON ({exc})", data,
                                 response=response) from exc

    def malformed(
        self, what: str, data: bytes | str = b"", *, response: httpx.Response | None = None
    ) -> MalformedResponseError:
        """The error for an answer that is not the documented shape, with a short redacted excerpt."""
        request = response.request if response is not None else None
        body = excerpt(data, request) if data else None
        return MalformedResponseError(
            what, provider=self.name, status_code=response.status_code if response is not None else None,
            body=body,
        )

    def request_id(self, response: httpx.Response) -> str | None:
        return request_id_from_header_items(items_of(response.headers))

    async def sse_events(self, response: httpx.Response) -> AsyncIterator[Any]:
        """The server-sent events of a streamed answer (``httpx_sse.ServerSentEvent``)."""
        from httpx_sse import EventSource, SSEError

        source = EventSource(response)
        events = source.aiter_sse()
        try:
            async for event in events:
                yield event
        except SSEError as exc:
            raise self.malformed(f"the stream is not server-sent events ({exc})", response=response) from exc
        finally:
            await events.aclose()

    async def ndjson_lines(self, response: httpx.Response) -> AsyncIterator[str]:
        """The non-empty lines of a newline-delimited JSON stream."""
        async for line in response.aiter_lines():
            if line.strip():
                yield line

    def stream_error(self, message: str, *, kind: str | None = None, body: str | None = None) -> APIError:
        """The typed error for an error object inside a 200 stream. ``kind`` is the provider's error type.

        There is no HTTP status, so the nearest one is used: rate limit 429, authentication 401,
        invalid request 400, overloaded 529, anything else (server error) 500.
        """
        k = (kind or "").lower()
        cls: type[APIError]
        if "rate" in k or "quota" in k:
            cls, status = RateLimitError, 429
        elif "auth" in k or "permission" in k:
            cls, status = AuthenticationError, 401
        elif "invalid" in k or "not_found" in k or "request" in k:
            cls, status = BadRequestError, 400
        elif "overload" in k:
            cls, status = OverloadedError, 529
        else:
            cls, status = ServerError, 500
        return cls(redact(message), status_code=status, provider=self.name,
                   body=redact(body[:_EXCERPT]) if body else None)

    async def probe(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        check: Callable[[httpx.Response], str | None] | None = None,
        accept_error: Callable[[APIError], str | None] | None = None,
    ) -> HealthCheckResult:
        """A cheap request as a health check: HEALTHY on 2xx (``check`` may return a problem to report as
        UNHEALTHY), UNHEALTHY with the reason otherwise. ``accept_error`` may turn an error answer (the
        :meth:`error_from_response` error) into HEALTHY by returning a message (Bedrock: access denied
        means the signature was accepted). The credentials are made ready first. Never raises."""
        clock = self._info.clock
        start = clock.now()
        auth = self._info.auth
        try:
            await self.prepare_auth(auth)
        except Exception as exc:  # a token source or credential chain that failed: unhealthy, not raised
            return self.health_result(
                HealthStatus.UNHEALTHY, clock.now() - start,
                f"{self.name}: the credentials could not be prepared ({type_name(exc)}: {redact(str(exc))})",
            )
        req = self.json_request(method, url, params=params)
        req.extensions["timeout"] = HEALTH_TIMEOUT.as_dict()
        try:
            response = await self._send(req, auth, stream=False)
        except AxonFlowError as exc:  # unreachable
            return self.health_result(HealthStatus.UNHEALTHY, clock.now() - start, str(exc))
        latency = clock.now() - start
        if not response.is_success:  # 3xx too: redirects are not followed
            err = self.error_from_response(response)
            accepted = accept_error(err) if accept_error is not None else None
            if accepted:
                return self.health_result(HealthStatus.HEALTHY, latency, f"{self.name}: {accepted}")
            return self.health_result(HealthStatus.UNHEALTHY, latency, str(err))
        try:
            problem = check(response) if check is not None else None
        except AxonFlowError as exc:  # e.g. the listing did not decode
            problem = str(exc)
        if problem:
            return self.health_result(HealthStatus.UNHEALTHY, latency, f"{self.name}: {problem}")
        return self.health_result(
            HealthStatus.HEALTHY, latency, f"{self.name}: reachable ({response.status_code})"
        )

    def health_result(self, status: HealthStatus, latency: float, message: str) -> HealthCheckResult:
        """A :class:`HealthCheckResult` stamped now, counting this failure onto the recent ones."""
        failures = 0 if status is HealthStatus.HEALTHY else self._consecutive_failures + 1
        return HealthCheckResult(status=status, latency=latency, message=message, checked_at=time.time(),
                                 consecutive_failures=failures)

    async def prepare_auth(self, auth: Any) -> None:
        """Make ``auth`` ready to apply: resolve or refresh a credential that needs it (a token source, an
        Entra ID token provider, the AWS credential chain), as ``AuthMiddleware`` would, with the
        provider's clock if one was given. Fixed keys need nothing. The leaf calls it for every attempt
        whose ``ctx.auth`` is not a fixed key, so a pipeline without ``AuthMiddleware`` works too; a
        fresh token costs only the check."""
        if not _needs_prepare(auth):
            return
        clock = self._auth_clock
        result = auth.prepare() if clock is None else auth.prepare(clock.now())
        if inspect.isawaitable(result):
            await result

    def error_from_response(self, response: httpx.Response) -> APIError:
        """The error to raise for a non-2xx answer, its body already read: by default
        ``APIError.from_response`` (the subclass for the status, the service's message from the JSON body,
        ``Retry-After``, the request id, the request's credentials scrubbed). Override it to read a
        provider's own error header or body shape; keep the result an :class:`APIError` from
        ``APIError.from_response`` (pass ``message=``) so it stays typed and scrubbed."""
        if 300 <= response.status_code < 400:
            where = response.headers.get("location")
            return APIError.from_response(
                response, provider=self.name,
                message=f"redirected{f' to {where}' if where else ''}; redirects are not followed: "
                        "set the provider's endpoint to the URL the service answers at",
            )
        return APIError.from_response(response, provider=self.name)

    # -- the leaf ----------------------------------------------------------------------------------------

    async def send(self, request: CompletionRequest, ctx: CallContext) -> Reply:
        """One attempt: prepare the credentials if due, build, authenticate, send, then parse (or hand back
        an :class:`HTTPChunkStream`)."""
        auth = ctx.auth
        if auth is not self._ready_auth:
            await self.prepare_auth(auth)
        http_request = self.build_request(request, ctx)
        clock = ctx.info.clock
        start = clock.now()
        if not ctx.streaming:
            try:
                response = await self._start(http_request, auth, stream=False)
            except self._transport_errors as exc:
                raise self._connection_error(exc) from exc
            latency = clock.now() - start
            if not 200 <= response.status_code < 300:  # 3xx too: redirects are not followed
                raise self.error_from_response(response)
            try:
                return self.parse_response(response, request, latency=latency)
            except AxonFlowError as exc:  # an error inside a 2xx answer (Ollama's): it may echo the key
                scrub_error(exc, response)
                raise
        response = await self._send(http_request, auth, stream=True)
        if not response.is_success:  # 3xx too: redirects are not followed
            try:
                await response.aread()
            except self._transport_errors as exc:
                raise self._connection_error(exc) from exc
            finally:
                await response.aclose()
            raise self.error_from_response(response)
        try:
            chunks = self.parse_stream(response, request)
        except BaseException:  # a parse_stream that is not a generator, or not implemented: release it
            await response.aclose()
            raise
        return HTTPChunkStream(self, response, chunks)

    async def _send(self, http_request: httpx.Request, auth: Any, *, stream: bool) -> httpx.Response:
        """Authenticate and send; transport errors mapped to ``APIConnectionError``/``APITimeoutError``."""
        try:
            return await self._start(http_request, auth, stream=stream)
        except self._transport_errors as exc:
            raise self._connection_error(exc) from exc

    def _start(self, http_request: httpx.Request, auth: Any, *, stream: bool) -> Awaitable[httpx.Response]:
        """Apply ``auth`` and start the send (the caller awaits it and maps its errors): a plain answer on
        our own aiohttp transport goes straight to its buffered send, one coroutine fewer per call."""
        if auth is not None:
            apply = getattr(auth, "apply", None)
            if apply is not None:
                apply(http_request)
            elif isinstance(auth, httpx.Auth):  # a plain httpx.Auth runs its own flow
                return self.client.send(http_request, stream=stream, auth=auth)
            else:
                raise TypeError(
                    f"{self.name}: auth must have apply(request) or be an httpx.Auth, got {type_name(auth)}"
                )
        if not stream and self._buffered is not None:
            return self._buffered(http_request)
        return self._send_unbuffered(http_request, stream=stream)

    async def _send_unbuffered(self, http_request: httpx.Request, *, stream: bool) -> httpx.Response:
        direct = self._direct
        if direct is None:
            return await self.client.send(http_request, stream=stream)
        response = await direct.handle_async_request(http_request)
        response.request = http_request
        if not stream:
            try:
                await response.aread()
            except BaseException:
                await response.aclose()
                raise
        return response

    def _connection_error(self, exc: BaseException, *, after: str = "") -> APIConnectionError:
        """Map a transport exception. aiohttp's transport reports a dropped connection as ``ConnectTimeout``;
        only a real timeout (its cause a ``TimeoutError``, or no foreign cause) is a timeout here."""
        cause = exc.__cause__
        timeout = isinstance(exc, TimeoutError) or (
            isinstance(exc, httpx.TimeoutException) and (cause is None or isinstance(cause, TimeoutError))
        )
        detail = redact(str(exc)) or type(exc).__name__
        if timeout:
            return APITimeoutError(f"timed out{after} ({type(exc).__name__}: {detail})", provider=self.name)
        return APIConnectionError(f"connection failed{after} ({type(exc).__name__}: {detail})",
                                  provider=self.name)
