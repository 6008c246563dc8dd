"""The provider interface (the seed's ``llm.Provider``) and the base class that runs calls through a pipeline."""

from __future__ import annotations

import abc
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .clock import Clock
from .context import CallContext, ProviderInfo
from .errors import is_health_failure
from .middleware import Handler, Middleware, Reply
from .models import (
    Capability,
    CompletionRequest,
    CompletionResponse,
    CostEstimate,
    HealthCheckResult,
    HealthStatus,
    ProviderType,
    StreamChunk,
)
from .pipeline import Pipeline
from .stream import ChunkStream
from .sync import iterate_sync, run_sync

if TYPE_CHECKING:
    import httpx

__all__ = ["BaseProvider", "Provider", "StreamResponse"]


@runtime_checkable
class Provider(Protocol):
    """What every provider offers; implement it directly for full control, or subclass ``BaseProvider``."""

    @property
    def name(self) -> str: ...

    @property
    def type(self) -> ProviderType: ...

    async def complete(self, request: CompletionRequest) -> CompletionResponse: ...

    def stream(self, request: CompletionRequest) -> AsyncIterator[StreamChunk]: ...

    async def health_check(self) -> HealthCheckResult: ...

    def capabilities(self) -> list[Capability]: ...

    def supports_streaming(self) -> bool: ...

    def estimate_cost(self, request: CompletionRequest) -> CostEstimate | None: ...

    async def aclose(self) -> None: ...


def _entry(handler: Handler) -> Handler:
    """The outermost handler as called per call: a middleware's bound ``__call__`` (no lookup on its type)."""
    return handler.__call__ if isinstance(handler, Middleware) else handler


class StreamResponse:
    """What ``provider.stream(request)`` returns: an async iterator of chunks and an async context manager.

    Nothing is sent until the first chunk is asked for. Leaving ``async with`` (or ``aclose()``) ends the
    call at once and finalises every middleware; a stream abandoned without either is finalised when it
    is garbage-collected.
    """

    __slots__ = ("_gen",)

    def __init__(self, gen: ChunkStream) -> None:
        self._gen = gen

    def __aiter__(self) -> StreamResponse:
        return self

    def __anext__(self) -> Awaitable[StreamChunk]:
        return self._gen.__anext__()

    async def aclose(self) -> None:
        await self._gen.aclose()

    async def __aenter__(self) -> StreamResponse:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._gen.aclose()


class BaseProvider(abc.ABC):
    """A provider whose every call runs through its middleware pipeline down to :meth:`send`, the leaf.

    Subclasses implement ``send(request, ctx)``: return a :class:`CompletionResponse`, or, when
    ``ctx.streaming``, an async iterator of :class:`StreamChunk`. Everything else (complete, stream, the sync
    variants, a passive health check) comes from here. The pipeline is built once, at construction.

    Arguments: ``name``, ``type``, ``model``, ``endpoint``, ``auth`` (an object with ``apply(httpx.Request)``),
    ``http_client`` (shared ``httpx.AsyncClient``; closed by ``aclose()`` only if ``owns_client``),
    ``client_factory`` (makes the shared client on first use when none is handed in; pass ``owns_client=True``),
    ``pipeline``, ``clock``, ``capabilities`` and ``cost_estimator`` (``request -> CostEstimate | None``).
    """

    def __init__(
        self,
        *,
        name: str,
        type: ProviderType,
        model: str | None = None,
        endpoint: str | None = None,
        auth: Any = None,
        http_client: httpx.AsyncClient | None = None,
        owns_client: bool = False,
        client_factory: Callable[[], httpx.AsyncClient] | None = None,
        pipeline: Pipeline | None = None,
        clock: Clock | None = None,
        capabilities: Iterable[Capability] = (Capability.CHAT, Capability.COMPLETION),
        cost_estimator: Callable[[CompletionRequest], CostEstimate | None] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError("a provider needs a non-empty name")
        self._info = ProviderInfo(
            name=name,
            type=ProviderType(type).value,
            model=model,
            endpoint=endpoint,
            auth=auth,
            http_client=http_client,
            clock=clock,
            client_factory=client_factory,
        )
        self._type = ProviderType(type)
        self._owns_client = owns_client
        self._capabilities = list(capabilities)
        self._cost_estimator = cost_estimator
        self._pipeline = pipeline.copy() if pipeline is not None else Pipeline()
        self._chain: Handler = _entry(self._pipeline.build(self.send))
        self._consecutive_failures = 0
        self._last_outcome_at: float | None = None
        self._closed = False

    # -- identity -------------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._info.name

    @property
    def type(self) -> ProviderType:
        return self._type

    @property
    def model(self) -> str | None:
        return self._info.model

    @property
    def endpoint(self) -> str | None:
        return self._info.endpoint

    @property
    def info(self) -> ProviderInfo:
        return self._info

    @property
    def pipeline(self) -> Pipeline:
        """A copy of the pipeline; change it and hand it to :meth:`use_pipeline` to rebuild."""
        return self._pipeline.copy()

    def use_pipeline(self, pipeline: Pipeline) -> None:
        """Replace the middleware pipeline; it is built here, once."""
        chain = _entry(pipeline.build(self.send))
        self._pipeline, self._chain = pipeline.copy(), chain

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, type={self._type.value!r}, model={self.model!r})"

    # -- the leaf -------------------------------------------------------------------------------------

    @abc.abstractmethod
    async def send(self, request: CompletionRequest, ctx: CallContext) -> Reply:
        """The leaf handler: talk to the provider once (one attempt)."""

    # -- calls ----------------------------------------------------------------------------------------

    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        """One completion through the whole pipeline."""
        if self._closed:
            raise RuntimeError(f"provider {self.name!r} is closed")
        ctx = CallContext(self._info)
        try:
            reply = await self._chain(request, ctx)
        except Exception as exc:
            if is_health_failure(exc):  # a 400 or a local refusal says nothing about the provider
                self._consecutive_failures += 1
            raise
        if not isinstance(reply, CompletionResponse):
            aclose = getattr(reply, "aclose", None)
            if aclose is not None:
                await aclose()
            raise TypeError(
                f"provider {self.name!r}: the pipeline returned {type(reply).__name__} to complete(); "
                "a handler must return a CompletionResponse when ctx.streaming is false"
            )
        self._consecutive_failures = 0
        return reply

    def stream(self, request: CompletionRequest) -> StreamResponse:
        """A streamed completion through the whole pipeline. Use ``async with`` to close it early."""
        return StreamResponse(self._run_stream(request))

    async def _run_stream(self, request: CompletionRequest) -> AsyncGenerator[StreamChunk, None]:
        if self._closed:
            raise RuntimeError(f"provider {self.name!r} is closed")
        ctx = CallContext(self._info, streaming=True)
        try:
            reply = await self._chain(request, ctx)
        except Exception as exc:
            if is_health_failure(exc):  # a 400 or a local refusal says nothing about the provider
                self._consecutive_failures += 1
            raise
        if isinstance(reply, CompletionResponse):
            # A middleware answered without streaming (a cache, say): deliver it as one final chunk.
            self._consecutive_failures = 0
            yield StreamChunk(
                content=reply.content, done=True, finish_reason=reply.finish_reason, usage=reply.usage
            )
            return
        try:
            async for chunk in reply:
                yield chunk
        except Exception as exc:
            if is_health_failure(exc):  # a 400 or a local refusal says nothing about the provider
                self._consecutive_failures += 1
            raise
        finally:
            await reply.aclose()
        self._consecutive_failures = 0

    def complete_sync(self, request: CompletionRequest) -> CompletionResponse:
        """``complete`` for synchronous code; works where an event loop is already running (notebooks)."""
        return run_sync(self.complete(request))

    def stream_sync(self, request: CompletionRequest) -> Iterator[StreamChunk]:
        """``stream`` for synchronous code; close the generator (or leave the loop) to end the call."""
        return iterate_sync(self.stream(request))

    # -- the rest of the interface --------------------------------------------------------------------

    async def health_check(self) -> HealthCheckResult:
        """Passive health from the outcome of recent calls; spends no tokens. Providers override it.

        Only failures that say something about the provider count (:func:`is_health_failure`): a 400, a
        budget or local rate-limit refusal, or an open circuit do not make a provider unhealthy.
        """
        failures = self._consecutive_failures
        if failures == 0:
            status = HealthStatus.HEALTHY
            message = "recent calls succeeded (passive check)"
        elif failures < 3:
            status = HealthStatus.DEGRADED
            message = f"{failures} consecutive failed calls (passive check)"
        else:
            status = HealthStatus.UNHEALTHY
            message = f"{failures} consecutive failed calls (passive check)"
        return HealthCheckResult(
            status=status, message=message, checked_at=time.time(), consecutive_failures=failures
        )

    def capabilities(self) -> list[Capability]:
        return list(self._capabilities)

    def supports_streaming(self) -> bool:
        return Capability.STREAMING in self._capabilities

    def estimate_cost(self, request: CompletionRequest) -> CostEstimate | None:
        if self._cost_estimator is None:
            return None
        return self._cost_estimator(request)

    async def aclose(self) -> None:
        """Close the provider's own HTTP connections (not a client handed in by the user). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._owns_client and self._info.client_created:  # never make a client just to close it
            client = self._info.http_client
            assert client is not None
            await client.aclose()

    async def __aenter__(self) -> BaseProvider:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
