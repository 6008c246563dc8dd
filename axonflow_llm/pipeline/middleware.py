"""The core contract: a handler maps a request to a reply; a middleware is a handler that wraps another.

A **handler** is an async callable ``handler(request, ctx) -> Reply``. The reply is a
:class:`CompletionResponse` for ``complete()`` (``ctx.streaming`` is false) or a :class:`ChunkStream`
for ``stream()`` (``ctx.streaming`` is true). One middleware class therefore serves both kinds of call:

* a middleware that only acts *before* the call (auth, rate limiting) or around *getting* the reply
  (retry, timeout, circuit breaker) handles both the same way, by awaiting ``self.next``;
* a middleware that needs the *end* of the call (logging, cost, the breaker's verdict on a stream) looks
  at the reply: a response is finished; a stream is wrapped with :func:`observe_stream`, whose callback
  runs exactly once whether the stream was exhausted, failed, closed early or cancelled.

A middleware is stateless per call: nothing about one request is kept on ``self``. Shared state (a rate
limiter, a breaker) is an object passed in as an option, shared on purpose.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeAlias

from .context import CallContext
from .models import CompletionRequest, CompletionResponse
from .stream import ChunkStream

__all__ = ["FunctionMiddleware", "Handler", "HookFunction", "Middleware", "Reply"]

#: What a handler returns: a finished response, or a stream of chunks when ``ctx.streaming``.
Reply: TypeAlias = CompletionResponse | ChunkStream

#: ``async handler(request, ctx) -> Reply``: a provider's leaf, or a middleware.
Handler: TypeAlias = Callable[[CompletionRequest, CallContext], Awaitable[Reply]]

#: ``async hook(request, ctx, call_next) -> Reply``: a plain function made into a middleware by ``hook()``.
HookFunction: TypeAlias = Callable[[CompletionRequest, CallContext, Handler], Awaitable[Reply]]


class Middleware:
    """Base class for middleware: ``SomeMiddleware(next_handler, **options)`` is itself a handler.

    Subclasses validate their options in ``__init__`` (raise ``ValueError``/``TypeError`` naming the fix)
    and override ``__call__``. The base passes every call through unchanged::

        class HeaderStamp(Middleware):
            def __init__(self, next_handler: Handler, /, *, tag: str) -> None:
                super().__init__(next_handler)
                self.tag = tag

            async def __call__(self, request: CompletionRequest, ctx: CallContext) -> Reply:
                ctx.state["stamp"] = self.tag
                return await self.next(request, ctx)

    ``__call__`` may also be a plain ``def`` that returns ``self.next(request, ctx)`` unawaited (or another
    awaitable): a layer that only acts before the call then costs no coroutine of its own, which is how
    the built-in auth and logging middleware pass a call through. Callers only ever ``await`` a handler.
    """

    __slots__ = ("next",)

    def __init__(self, next_handler: Handler, /) -> None:
        if not callable(next_handler):
            raise TypeError(
                f"{type(self).__name__} needs the next handler as its first argument, "
                f"got {type(next_handler).__name__}"
            )
        # A middleware's bound __call__ skips the per-call lookup of __call__ on its type (~0.1 us a layer).
        self.next: Handler = next_handler.__call__ if isinstance(next_handler, Middleware) else next_handler

    def __call__(self, request: CompletionRequest, ctx: CallContext) -> Awaitable[Reply]:
        # A plain def handing back the next handler's awaitable: a layer with nothing to do after the call
        # costs no coroutine of its own. Overrides are usually ``async def``; both are handlers.
        return self.next(request, ctx)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class FunctionMiddleware(Middleware):
    """A plain async function ``func(request, ctx, call_next)`` as a middleware; see :func:`hook`."""

    __slots__ = ("func",)

    def __init__(self, next_handler: Handler, /, *, func: HookFunction) -> None:
        super().__init__(next_handler)
        if not callable(func):
            raise TypeError(f"FunctionMiddleware needs an async function, got {type(func).__name__}")
        self.func = func

    async def __call__(self, request: CompletionRequest, ctx: CallContext) -> Reply:
        return await self.func(request, ctx, self.next)

    def __repr__(self) -> str:
        return f"FunctionMiddleware({getattr(self.func, '__name__', 'hook')})"
