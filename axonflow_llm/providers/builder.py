"""The fluent ``ProviderBuilder`` of the seed's quick start: a custom provider and its pipeline in one chain."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..pipeline.clock import Clock
from ..pipeline.models import Capability, CompletionRequest, CostEstimate, ProviderType
from ..pipeline.pipeline import Layer, Pipeline
from .custom import CompleteFunc, CustomProvider, HealthCheckFunc, StreamFunc

if TYPE_CHECKING:
    import httpx

    from ..middleware.circuit_breaker import CircuitBreaker
    from ..middleware.multi_tenant_rate_limiter import MultiTenantRateLimiter
    from ..middleware.pricing import ModelPrice
    from ..middleware.rate_limiter import RateLimiter
    from ..middleware.retry_config import RetryConfig

__all__ = ["ProviderBuilder"]


def _default_client() -> httpx.AsyncClient:
    from .transport import default_http_client

    return default_http_client()


class ProviderBuilder:
    """Builds a :class:`CustomProvider` with its middleware pipeline, fluently::

        provider = (ProviderBuilder("my-provider", ProviderType.CUSTOM)
                    .with_model("my-model-v1")
                    .with_endpoint("https://api.myprovider.com/v1")
                    .with_auth(APIKeyAuth(os.environ["MY_API_KEY"]))
                    .with_rate_limiter(RateLimiter(100, 100))
                    .with_retry(default_retry_config())
                    .with_complete_func(my_completion_handler)
                    .build())

    Only the concerns you ask for are in the pipeline, always in the default order, from outside in:
    logging, cost, retry, circuit breaker, rate limit, timeout, auth, then your function.
    ``with_middleware(cls, before=X)`` puts your middleware just outside ``X`` (nearer the caller),
    ``after=X`` just inside it; with neither it goes innermost, next to your function, where it sees
    every attempt. Several added at the same place keep the order in which they were added.
    """

    def __init__(self, name: str, type: ProviderType | str = ProviderType.CUSTOM) -> None:
        self._name = name
        self._type = type
        self._model: str | None = None
        self._endpoint: str | None = None
        self._auth: Any = None
        self._rate_limit: dict[str, Any] | None = None
        self._retry: RetryConfig | bool = False
        self._breaker: CircuitBreaker | bool = False
        self._timeouts: dict[str, Any] | None = None
        self._logging: dict[str, Any] | None = None
        self._prices: Mapping[str, ModelPrice] | None = None
        self._complete: CompleteFunc | None = None
        self._stream: StreamFunc | None = None
        self._health: HealthCheckFunc | None = None
        self._capabilities: list[Capability] | None = None
        self._http_client: httpx.AsyncClient | None = None
        self._clock: Clock | None = None
        self._user: list[tuple[Layer, Any, Any]] = []

    # -- what the provider is -------------------------------------------------------------------------

    def with_model(self, model: str) -> ProviderBuilder:
        self._model = model
        return self

    def with_endpoint(self, endpoint: str) -> ProviderBuilder:
        self._endpoint = endpoint
        return self

    def with_complete_func(self, func: CompleteFunc) -> ProviderBuilder:
        """``async func(request, ctx) -> CompletionResponse``; ``ctx`` gives model, endpoint, auth,
        http_client and the current attempt."""
        self._complete = func
        return self

    def with_stream_func(self, func: StreamFunc) -> ProviderBuilder:
        """``func(request, ctx)`` returning an async iterator of ``StreamChunk`` (an async generator)."""
        self._stream = func
        return self

    def with_health_check_func(self, func: HealthCheckFunc) -> ProviderBuilder:
        """``async func(ctx) -> HealthCheckResult``. Without one, health is judged passively from calls."""
        self._health = func
        return self

    def with_capabilities(self, *capabilities: Capability) -> ProviderBuilder:
        self._capabilities = [Capability(c) for c in capabilities]
        return self

    def with_http_client(self, client: httpx.AsyncClient) -> ProviderBuilder:
        """Share this client with the functions (``ctx.http_client``); the provider will not close it.

        Without one, ``ctx.http_client`` is a pooled client of the provider's own (the built-in providers'
        default transport), made on first use and closed by ``aclose()``."""
        self._http_client = client
        return self

    def with_clock(self, clock: Clock) -> ProviderBuilder:
        """The clock every time-dependent middleware uses (a ``FakeClock`` in tests)."""
        self._clock = clock
        return self

    # -- the concerns ---------------------------------------------------------------------------------

    def with_auth(self, auth: Any) -> ProviderBuilder:
        self._auth = auth
        return self

    def with_rate_limiter(
        self,
        limiter: RateLimiter | MultiTenantRateLimiter | None = None,
        *,
        tokens_per_minute: float | None = None,
        key: Callable[[CompletionRequest], str] | None = None,
        block: bool = True,
    ) -> ProviderBuilder:
        """Throttle requests (``limiter``) and/or LLM tokens (``tokens_per_minute``); at least one."""
        if limiter is None and tokens_per_minute is None:
            raise ValueError(
                "with_rate_limiter() needs a limiter (e.g. RateLimiter(10, 10): 10 requests/s) "
                "and/or tokens_per_minute=; with neither it would limit nothing"
            )
        self._rate_limit = {"rate_limiter": limiter, "tokens_per_minute": tokens_per_minute,
                            "rate_limit_key": key, "block": block}
        return self

    def with_retry(self, config: RetryConfig | None = None) -> ProviderBuilder:
        """Retry with the given configuration (the defaults when ``None``)."""
        self._retry = config if config is not None else True
        return self

    def with_circuit_breaker(self, breaker: CircuitBreaker | None = None) -> ProviderBuilder:
        """Pass a breaker to share it between providers on purpose; ``None`` makes one for this provider."""
        self._breaker = breaker if breaker is not None else True
        return self

    def with_timeout(
        self, seconds: float | None, *, first_chunk: float | None = None, idle: float | None = None
    ) -> ProviderBuilder:
        """Per-attempt timeout; for streams also time to first chunk and the longest gap between chunks.
        At least one of the three is required."""
        if seconds is None and first_chunk is None and idle is None:
            raise ValueError(
                "with_timeout(None) sets no limit: give seconds (the whole attempt), first_chunk= or idle="
            )
        self._timeouts = {"timeout": seconds, "first_chunk_timeout": first_chunk, "idle_timeout": idle}
        return self

    def with_logging(
        self, logger: Any = None, *, level: str = "info", log_content: bool = False
    ) -> ProviderBuilder:
        self._logging = {"logger": logger, "log_level": level, "log_content": log_content}
        return self

    def with_pricing(self, prices: Mapping[str, ModelPrice]) -> ProviderBuilder:
        """Prices per model (USD per 1M tokens), over the shipped table; attaches ``response.cost``."""
        self._prices = dict(prices)
        return self

    def with_middleware(
        self, cls: Callable[..., Any] | Layer, *, before: Any = None, after: Any = None, **options: Any
    ) -> ProviderBuilder:
        """Add your own middleware ``cls(next_handler, **options)`` (or a ready ``Layer``, such as
        ``hook(func)``); see the class docstring for where it goes."""
        if before is not None and after is not None:
            raise ValueError("with_middleware takes before= or after=, not both")
        if isinstance(cls, Layer):
            if options:
                raise TypeError("with_middleware(layer): the layer carries its options; pass no more")
            layer = cls
        else:
            layer = Layer(cls, **options)
        self._user.append((layer, before, after))
        return self

    # -- build ----------------------------------------------------------------------------------------

    def pipeline(self) -> Pipeline:
        """The pipeline ``build()`` will use, for inspection."""
        from ..middleware.defaults import default_pipeline

        pipeline = default_pipeline(
            auth=self._auth,
            retry=self._retry,
            circuit_breaker=self._breaker,
            logging=self._logging is not None,
            cost=self._prices is not None,
            prices=self._prices,
            clock=self._clock,
            **(self._logging or {}),
            **(self._rate_limit or {}),
            **(self._timeouts or {}),
        )
        after_counts: dict[int, int] = {}
        for layer, before, after in self._user:
            if before is None and after is None:
                pipeline.append(layer)
                continue
            ref = before if before is not None else after
            try:
                index = pipeline.index(ref)
            except LookupError as exc:
                raise ValueError(
                    f"with_middleware({layer.name}, {'before' if before is not None else 'after'}="
                    f"{getattr(ref, '__name__', ref)}): {exc}. Add that middleware first (for example "
                    "with_retry()), or leave out before=/after= to put yours innermost"
                ) from None
            if before is not None:
                pipeline.insert_before(ref, layer)
            else:
                target_id = id(pipeline[index])
                offset = after_counts.get(target_id, 0)
                pipeline.insert(index + 1 + offset, layer)  # after earlier after= insertions
                after_counts[target_id] = offset + 1
        return pipeline

    def build(self) -> CustomProvider:
        """Validate and build; every error says how to fix it."""
        if not isinstance(self._name, str) or not self._name.strip():
            raise ValueError("ProviderBuilder needs a non-empty provider name: ProviderBuilder('my-provider')")
        try:
            ptype = ProviderType(self._type)
        except ValueError:
            allowed = ", ".join(t.value for t in ProviderType)
            raise ValueError(f"unknown provider type {self._type!r}; use one of: {allowed}") from None
        if self._complete is None and self._stream is None:
            raise ValueError(
                f"provider {self._name!r} has nothing to call: add .with_complete_func(fn) "
                "(async fn(request, ctx) -> CompletionResponse) or .with_stream_func(fn)"
            )
        if self._endpoint is not None and not self._endpoint.startswith(("http://", "https://")):
            raise ValueError(
                f"with_endpoint({self._endpoint!r}): the endpoint must be an http:// or https:// URL"
            )
        from ..middleware.pricing import as_price_table, estimate_cost

        pipeline = self.pipeline()
        table = as_price_table(self._prices)  # once, here: its lookups are memoised per table
        model = self._model

        def estimator(request: CompletionRequest) -> CostEstimate | None:
            return estimate_cost(request, model=request.model or model or "", prices=table)

        return CustomProvider(
            name=self._name,
            type=ptype,
            complete_func=self._complete,
            stream_func=self._stream,
            health_check_func=self._health,
            model=model,
            endpoint=self._endpoint,
            auth=self._auth,
            http_client=self._http_client,
            # Without a client of yours, ctx.http_client is a pooled client of the provider's own, made on
            # first use and closed by aclose().
            owns_client=self._http_client is None,
            client_factory=_default_client if self._http_client is None else None,
            pipeline=pipeline,
            clock=self._clock,
            capabilities=self._capabilities,
            cost_estimator=estimator,
        )
