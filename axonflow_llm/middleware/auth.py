"""``AuthMiddleware``: hands each attempt fresh credentials (``ctx.auth``) for the leaf to apply."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from ..pipeline.clock import Clock
from ..pipeline.context import CallContext
from ..pipeline.errors import AuthenticationError
from ..pipeline.middleware import Handler, Middleware, Reply
from ..pipeline.models import CompletionRequest

if TYPE_CHECKING:
    from ..providers.auth import Auth

__all__ = ["AuthMiddleware"]


class AuthMiddleware(Middleware):
    """Sets ``ctx.auth = auth`` for every attempt; the provider's leaf applies it to the HTTP request.

    Arguments: ``auth``, an :class:`~axonflow_llm.providers.auth.Auth` (``APIKeyAuth``, ``BearerTokenAuth``,
    ...) or any object with ``apply(request)``; ``clock``, whose ``now()`` is passed to ``auth.prepare()``
    (default: the auth's own clock); ``refresh_on_401`` (default on).

    For a refreshable credential (``auth.needs_prepare``) it first awaits ``auth.prepare(now)``, which fetches
    a new token when the current one is about to expire. If the provider then answers 401, it forces one
    refresh and, only if that produced a different token, sends the request once more (a token revoked early
    is replaced without spending a retry); any other outcome is raised as is.

    Place it inside retry and timeout (``... -> retry -> rate limit -> timeout -> auth -> provider``) so every
    attempt is authenticated afresh and a hung token source is bounded by the timeout. It keeps no state;
    the credential object is shared, on purpose, by every call of the provider.
    """

    __slots__ = ("_auth", "_clock", "_prepare", "_refresh")

    def __init__(
        self,
        next_handler: Handler,
        /,
        *,
        auth: Auth | Any,
        clock: Clock | None = None,
        refresh_on_401: bool = True,
    ) -> None:
        super().__init__(next_handler)
        if not callable(getattr(auth, "apply", None)):
            raise TypeError(
                "AuthMiddleware needs auth= with an apply(request) method, e.g. APIKeyAuth(key) "
                f"(or NoAuth() for none); got {type(auth).__name__}"
            )
        if clock is not None and not callable(getattr(clock, "now", None)):
            raise TypeError(f"AuthMiddleware: clock must be a Clock (with now()), got {type(clock).__name__}")
        prepare = getattr(auth, "prepare", None)
        needs = getattr(auth, "needs_prepare", None)
        if needs is None:
            needs = callable(prepare)
        refresh = getattr(auth, "refresh", None)
        self._auth = auth
        self._clock = clock
        self._prepare = prepare if needs and callable(prepare) else None
        self._refresh = (
            refresh
            if refresh_on_401 and self._prepare is not None and callable(refresh) and hasattr(auth, "generation")
            else None
        )

    def __call__(self, request: CompletionRequest, ctx: CallContext) -> Awaitable[Reply]:
        prepare = self._prepare
        if prepare is None:  # a fixed key: nothing to do after the call, so no coroutine of our own
            ctx.auth = self._auth
            return self.next(request, ctx)
        return self._prepared_call(request, ctx, prepare)

    async def _prepared_call(self, request: CompletionRequest, ctx: CallContext, prepare: Any) -> Reply:
        clock = self._clock
        await prepare(None if clock is None else clock.now())
        ctx.auth = self._auth
        if self._refresh is None:
            return await self.next(request, ctx)
        generation = self._auth.generation
        try:
            return await self.next(request, ctx)
        except AuthenticationError as exc:
            if exc.status_code != 401:
                raise
            changed = await self._refresh(stale=generation, now=None if clock is None else clock.now())
            if not changed:
                raise
        return await self.next(request, ctx)

    def __repr__(self) -> str:
        return f"AuthMiddleware(auth={self._auth!r})"
