"""Credentials applied to each outgoing HTTP request: API keys, basic auth, bearer tokens (refreshable too)."""

from __future__ import annotations

import asyncio
import base64
import math
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from typing import TypeAlias

import httpx

from ..pipeline.clock import Clock, system_clock
from ..pipeline.errors import TokenRefreshError, redact
from .httpx_objects import HeaderItem, header_item, set_header

__all__ = [
    "APIKeyAuth",
    "Auth",
    "BasicAuth",
    "BearerTokenAuth",
    "ChainedAuth",
    "NoAuth",
    "TokenRefreshError",
    "TokenSource",
]

#: ``async source() -> (token, lifetime_seconds)``: fetches a fresh bearer token (OAuth, cloud identity).
TokenSource: TypeAlias = Callable[[], Awaitable[tuple[str, float]]]

_TOKEN_CHARS = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_SECRET_CHARS = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces or control characters


def _check_secret(value: object, owner: str, what: str, env_var: str | None = None) -> str:
    """Validate a credential without ever echoing it."""
    if value is None or (isinstance(value, str) and not value.strip()):
        fix = f"set {env_var}" if env_var else f"pass the {what}, e.g. from os.environ, and check it is set"
        raise ValueError(f"{owner}: the {what} is empty; {fix}")
    if not isinstance(value, str):
        raise TypeError(f"{owner}: the {what} must be a str, got {type(value).__name__}")
    if not _SECRET_CHARS.fullmatch(value):
        raise ValueError(
            f"{owner}: the {what} contains spaces, control or non-ASCII characters "
            "(a trailing newline read from a file?); strip it"
        )
    return value


class Auth(httpx.Auth):
    """Base of every credential: ``apply(request)`` sets it on an ``httpx.Request``, cheaply and synchronously
    (a provider's leaf calls it on every attempt).

    A refreshable credential has ``needs_prepare`` true: ``await prepare(now)`` must run before ``apply`` to
    make sure the token is fresh (``AuthMiddleware`` does it on every attempt), and ``await refresh(stale=g)``
    forces a new token unless ``generation`` already moved past ``g``. Every ``Auth`` is also an
    ``httpx.Auth``: hand it to ``httpx.AsyncClient(auth=...)`` directly. No repr or message shows a secret.
    """

    __slots__ = ()

    @property
    def needs_prepare(self) -> bool:
        return False

    @property
    def generation(self) -> int:
        """Counts the distinct credentials this auth has held; a refresh that changed it moves it on."""
        return 0

    def apply(self, request: httpx.Request) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement apply(request)")

    async def prepare(self, now: float | None = None) -> None:
        """Make sure the credential is fresh at time ``now`` (the auth's own clock if ``None``)."""

    async def refresh(self, *, stale: int | None = None, now: float | None = None) -> bool:
        """Force a new credential unless ``generation`` already differs from ``stale``; True if it changed."""
        return False

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        self.apply(request)
        yield request

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if self.needs_prepare:
            await self.prepare()
        self.apply(request)
        yield request

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class APIKeyAuth(Auth):
    """An API key: ``Authorization: Bearer <key>`` by default, the raw key in ``header=`` (``"X-API-Key"``,
    ``"api-key"``), or a query parameter ``query_param=`` (``"key"``). With ``header=`` or ``query_param=``
    no ``Authorization`` header is sent. ``env_var`` names the variable to set in the empty-key error.
    """

    __slots__ = ("_item", "_name", "_query", "_value")

    def __init__(
        self,
        api_key: str,
        *,
        header: str | None = None,
        query_param: str | None = None,
        env_var: str | None = None,
    ) -> None:
        key = _check_secret(api_key, "APIKeyAuth", "API key", env_var)
        if header is not None and query_param is not None:
            raise ValueError("APIKeyAuth: give header= or query_param=, not both")
        self._query = query_param is not None
        if query_param is not None:
            if not isinstance(query_param, str) or not query_param:
                raise ValueError(f"APIKeyAuth: query_param must be a non-empty name, got {query_param!r}")
            self._name, self._value = query_param, key
        elif header is not None:
            if not isinstance(header, str) or not _TOKEN_CHARS.fullmatch(header):
                raise ValueError(f"APIKeyAuth: header must be a valid HTTP header name, got {header!r}")
            self._name, self._value = header, key
        else:
            self._name, self._value = "Authorization", "Bearer " + key
        self._item = header_item(self._name, self._value)

    def apply(self, request: httpx.Request) -> None:
        if self._query:
            request.url = request.url.copy_set_param(self._name, self._value)
        else:
            set_header(request.headers, self._item)

    def __repr__(self) -> str:
        where = "query_param" if self._query else "header"
        return f"APIKeyAuth({where}={self._name!r}, api_key='***')"


class BasicAuth(Auth):
    """HTTP basic authentication: ``Authorization: Basic base64(username:password)`` (UTF-8)."""

    __slots__ = ("_item", "_username", "_value")

    def __init__(self, username: str, password: str) -> None:
        if not isinstance(username, str) or not username:
            raise ValueError("BasicAuth: username must be a non-empty str")
        if ":" in username:
            raise ValueError("BasicAuth: username must not contain ':' (RFC 7617)")
        if not isinstance(password, str):
            raise TypeError(f"BasicAuth: password must be a str, got {type(password).__name__}")
        self._username = username
        self._value = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        self._item = header_item("Authorization", self._value)

    def apply(self, request: httpx.Request) -> None:
        set_header(request.headers, self._item)

    def __repr__(self) -> str:
        return f"BasicAuth(username={self._username!r}, password='***')"


class NoAuth(Auth):
    """No credentials, for local providers such as Ollama."""

    __slots__ = ()

    def apply(self, request: httpx.Request) -> None:
        return None


def _retrieve(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()  # a refresh whose every waiter was cancelled: do not log it as unretrieved


class BearerTokenAuth(Auth):
    """``Authorization: Bearer <token>``, from a fixed token or from a token source.

    A source is ``async source() -> (token, lifetime_seconds)``. It is asked again ``refresh_margin`` seconds
    before the token expires (default: 60 s or 10 % of the lifetime, whichever is smaller; never more than
    half the lifetime). Concurrent refreshes are coalesced into one call, which a cancelled caller does not
    cancel. A failed refresh raises :class:`TokenRefreshError` (cause chained) and the next attempt tries
    again. ``clock`` times the lifetime when ``prepare()`` is not given ``now``.
    """

    __slots__ = (
        "_clock", "_generation", "_inflight", "_item", "_margin", "_refresh_at", "_source", "_token", "_value",
    )

    def __init__(
        self,
        token: str | TokenSource,
        *,
        refresh_margin: float | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._source: TokenSource | None = None
        self._token: str | None = None
        self._value: str | None = None
        self._item: HeaderItem | None = None
        if callable(token):
            self._source = token
        else:
            self._token = _check_secret(token, "BearerTokenAuth", "token")
            self._value = "Bearer " + self._token
            self._item = header_item("Authorization", self._value)
            if refresh_margin is not None:
                raise ValueError("BearerTokenAuth: refresh_margin applies only to a token source, not a fixed token")
        if refresh_margin is not None and (
            isinstance(refresh_margin, bool)
            or not isinstance(refresh_margin, int | float)
            or not 0 <= refresh_margin < math.inf
        ):
            raise ValueError(f"BearerTokenAuth: refresh_margin must be seconds >= 0, got {refresh_margin!r}")
        self._margin = refresh_margin
        self._clock = system_clock if clock is None else clock
        self._refresh_at = -math.inf
        self._generation = 0
        self._inflight: asyncio.Task[None] | None = None

    @property
    def needs_prepare(self) -> bool:
        return self._source is not None

    @property
    def generation(self) -> int:
        return self._generation

    def apply(self, request: httpx.Request) -> None:
        item = self._item
        if item is None:
            raise RuntimeError(
                "BearerTokenAuth with a token source has no token yet: await auth.prepare() before "
                "apply() (AuthMiddleware does it on every attempt), or use it with httpx.AsyncClient"
            )
        set_header(request.headers, item)

    async def prepare(self, now: float | None = None) -> None:
        if self._source is None:
            return
        if now is None:
            now = self._clock.now()
        if self._value is not None and now < self._refresh_at:
            return
        await self._refresh(now)

    async def refresh(self, *, stale: int | None = None, now: float | None = None) -> bool:
        if self._source is None:
            return False
        before = self._generation
        if stale is not None and stale != before:
            return True  # someone else already replaced the credential that failed
        await self._refresh(self._clock.now() if now is None else now)
        return self._generation != before

    async def _refresh(self, now: float) -> None:
        task = self._inflight
        if task is None:
            task = asyncio.ensure_future(self._fetch(now))
            task.add_done_callback(_retrieve)
            self._inflight = task
        await asyncio.shield(task)

    async def _fetch(self, started: float) -> None:
        assert self._source is not None
        try:
            try:
                result = await self._source()
            except Exception as exc:
                detail = redact(str(exc), [self._token] if self._token else [])[:200]
                raise TokenRefreshError(
                    f"BearerTokenAuth: the token source failed ({type(exc).__name__}: {detail}); "
                    "check its credentials and that the token endpoint is reachable"
                ) from exc
            token, lifetime = self._check_result(result)
            margin = min(60.0, lifetime / 10) if self._margin is None else self._margin
            self._refresh_at = started + lifetime - min(margin, lifetime / 2)
            if token != self._token:
                self._token, self._value = token, "Bearer " + token
                self._item = header_item("Authorization", self._value)
                self._generation += 1
        finally:
            self._inflight = None

    @staticmethod
    def _check_result(result: object) -> tuple[str, float]:
        if not isinstance(result, tuple | list) or len(result) != 2:
            raise TokenRefreshError(
                "BearerTokenAuth: the token source must return (token, lifetime_seconds), "
                f"got {type(result).__name__}"
            )
        token, lifetime = result
        if not isinstance(token, str) or not _SECRET_CHARS.fullmatch(token):
            raise TokenRefreshError(
                "BearerTokenAuth: the token source returned "
                + ("an empty token" if token == "" or token is None else
                   "a token that is not a str of printable ASCII without spaces")
                + "; check what the source reads"
            )
        if isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or not 0 < lifetime < math.inf:
            raise TokenRefreshError(
                f"BearerTokenAuth: the token lifetime must be a number of seconds > 0, got {lifetime!r}"
            )
        return token, float(lifetime)

    def __repr__(self) -> str:
        if self._source is None:
            return "BearerTokenAuth(token='***')"
        name = getattr(self._source, "__qualname__", type(self._source).__name__)
        return f"BearerTokenAuth(source={name}, refresh_margin={self._margin!r})"


class ChainedAuth(Auth):
    """Several credentials applied in order; on the same header or query parameter, the later one wins.

    Prepared and refreshed through each member that needs it.
    """

    __slots__ = ("_auths", "_refreshable")

    def __init__(self, *auths: Auth) -> None:
        if not auths:
            raise ValueError("ChainedAuth needs at least one auth, e.g. ChainedAuth(APIKeyAuth(...), ...)")
        for a in auths:
            if not isinstance(a, Auth):
                raise TypeError(
                    f"ChainedAuth takes Auth objects (APIKeyAuth, BearerTokenAuth, ...), got {type(a).__name__}"
                )
        self._auths = auths
        self._refreshable = tuple(a for a in auths if a.needs_prepare)

    @property
    def needs_prepare(self) -> bool:
        return bool(self._refreshable)

    @property
    def generation(self) -> int:
        return sum(a.generation for a in self._refreshable)

    def apply(self, request: httpx.Request) -> None:
        for a in self._auths:
            a.apply(request)

    async def prepare(self, now: float | None = None) -> None:
        for a in self._refreshable:
            await a.prepare(now)

    async def refresh(self, *, stale: int | None = None, now: float | None = None) -> bool:
        before = self.generation
        if stale is not None and stale != before:
            return True
        for a in self._refreshable:
            await a.refresh(now=now)
        return self.generation != before

    def __repr__(self) -> str:
        return f"ChainedAuth({', '.join(repr(a) for a in self._auths)})"
