"""A provider whose leaf is the user's own complete/stream functions (what ``ProviderBuilder`` builds)."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeAlias

import msgspec

from ..pipeline.clock import Clock
from ..pipeline.context import CallContext
from ..pipeline.middleware import Reply
from ..pipeline.models import (
    Capability,
    CompletionRequest,
    CompletionResponse,
    CostEstimate,
    FinishReason,
    HealthCheckResult,
    ProviderType,
    StreamChunk,
    UsageStats,
)
from ..pipeline.pipeline import Pipeline
from ..pipeline.provider import BaseProvider
from ..pipeline.stream import ChunkStream

if TYPE_CHECKING:
    import httpx

__all__ = ["CompleteFunc", "CustomProvider", "HealthCheckFunc", "StreamFunc"]

#: ``async func(request, ctx) -> CompletionResponse``
CompleteFunc: TypeAlias = Callable[[CompletionRequest, CallContext], Awaitable[CompletionResponse]]
#: ``func(request, ctx) -> async iterator of StreamChunk`` (an async generator function is the usual form)
StreamFunc: TypeAlias = Callable[[CompletionRequest, CallContext], AsyncIterator[StreamChunk]]
#: ``async func(ctx) -> HealthCheckResult``
HealthCheckFunc: TypeAlias = Callable[[CallContext], Awaitable[HealthCheckResult]]


class _ClosableIterator:
    """Gives a plain async iterator the ``aclose()`` every stream in the onion has."""

    __slots__ = ("_it",)

    def __init__(self, it: AsyncIterator[StreamChunk]) -> None:
        self._it = it

    def __aiter__(self) -> _ClosableIterator:
        return self

    def __anext__(self) -> Awaitable[StreamChunk]:
        return self._it.__anext__()

    async def aclose(self) -> None:
        return None


async def _collect(stream: AsyncIterator[StreamChunk], model: str) -> CompletionResponse:
    """The whole stream as one response: its text, the last finish reason and the last usage it reported
    (a stream may send them in different chunks: the finish reason, then a usage-only chunk)."""
    parts: list[str] = []
    finish: FinishReason | None = None
    usage: UsageStats | None = None
    try:
        async for chunk in stream:
            parts.append(chunk.content)
            if chunk.finish_reason is not None:
                finish = chunk.finish_reason
            if chunk.usage is not None:
                usage = chunk.usage
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
    return CompletionResponse(
        content="".join(parts), model=model, finish_reason=finish, usage=usage if usage is not None else UsageStats()
    )


class CustomProvider(BaseProvider):
    """A provider that calls your functions as its leaf, inside its middleware pipeline.

    ``complete_func(request, ctx)`` answers ``complete()``; ``stream_func(request, ctx)`` answers ``stream()``.
    With only a stream function, ``complete()`` collects the stream; with only a complete function,
    ``stream()`` delivers the whole answer as one final chunk. ``ctx`` gives the function the provider's
    ``model``, ``endpoint``, ``auth``, shared ``http_client`` and the current ``attempt``.

    The response's ``provider`` is filled in with this provider's name, and ``model`` with the request's or
    provider's model, where the function left them empty.
    """

    def __init__(
        self,
        *,
        name: str,
        type: ProviderType = ProviderType.CUSTOM,
        complete_func: CompleteFunc | None = None,
        stream_func: StreamFunc | None = None,
        health_check_func: HealthCheckFunc | None = None,
        model: str | None = None,
        endpoint: str | None = None,
        auth: Any = None,
        http_client: httpx.AsyncClient | None = None,
        owns_client: bool = False,
        client_factory: Callable[[], httpx.AsyncClient] | None = None,
        pipeline: Pipeline | None = None,
        clock: Clock | None = None,
        capabilities: Iterable[Capability] | None = None,
        cost_estimator: Callable[[CompletionRequest], CostEstimate | None] | None = None,
    ) -> None:
        if complete_func is None and stream_func is None:
            raise ValueError(
                f"custom provider {name!r} needs a complete function or a stream function: "
                "call with_complete_func(fn) or with_stream_func(fn)"
            )
        if complete_func is not None and not inspect.iscoroutinefunction(complete_func) and not (
            inspect.iscoroutinefunction(getattr(complete_func, "__call__", None))  # noqa: B004
        ):
            raise TypeError(
                "the complete function must be async: `async def fn(request, ctx) -> CompletionResponse`"
            )
        if stream_func is not None and not callable(stream_func):
            raise TypeError("the stream function must be callable: `async def fn(request, ctx): yield ...`")
        if capabilities is None:
            caps = [Capability.CHAT, Capability.COMPLETION]
            if stream_func is not None:
                caps.append(Capability.STREAMING)
            capabilities = caps
        super().__init__(
            name=name,
            type=type,
            model=model,
            endpoint=endpoint,
            auth=auth,
            http_client=http_client,
            owns_client=owns_client,
            client_factory=client_factory,
            pipeline=pipeline,
            clock=clock,
            capabilities=capabilities,
            cost_estimator=cost_estimator,
        )
        self._complete_func = complete_func
        self._stream_func = stream_func
        self._health_check_func = health_check_func

    async def send(self, request: CompletionRequest, ctx: CallContext) -> Reply:
        if ctx.streaming and self._stream_func is not None:
            return await self._open_stream(request, ctx)
        model = request.model or self._info.model or ""
        clock = self._info.clock
        started = clock.now()
        if self._complete_func is None:
            response = await _collect(await self._open_stream(request, ctx), model)
        else:
            response = await self._complete_func(request, ctx)
            if not isinstance(response, CompletionResponse):
                raise TypeError(
                    f"provider {self.name!r}: the complete function returned {type(response).__name__}; "
                    "it must return a CompletionResponse"
                )
        updates: dict[str, Any] = {}
        if not response.latency:
            updates["latency"] = clock.now() - started
        if not response.provider:
            updates["provider"] = self.name
        if not response.model and model:
            updates["model"] = model
        return msgspec.structs.replace(response, **updates) if updates else response

    async def _open_stream(self, request: CompletionRequest, ctx: CallContext) -> ChunkStream:
        """Call the stream function (awaiting it if it is a coroutine returning the iterator)."""
        assert self._stream_func is not None
        it: Any = self._stream_func(request, ctx)
        if inspect.iscoroutine(it):
            it = await it
        if not hasattr(it, "__anext__"):
            raise TypeError(
                f"provider {self.name!r}: the stream function returned {type(it).__name__}, "
                "not an async iterator of StreamChunk (write it as `async def fn(request, ctx): yield ...`)"
            )
        return it if hasattr(it, "aclose") else _ClosableIterator(it)

    async def health_check(self) -> HealthCheckResult:
        """The health check function if one was given, else the passive check (spends no tokens)."""
        if self._health_check_func is None:
            return await super().health_check()
        return await self._health_check_func(CallContext(self._info))
