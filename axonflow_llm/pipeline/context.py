"""The per-call context that travels with a request through the onion."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

    from .clock import Clock

__all__ = ["CallContext", "ProviderInfo"]


class ProviderInfo:
    """What a provider's handlers may know about it: fixed when the provider is built, shared by all calls.

    ``auth`` is any object with ``apply(httpx.Request)`` (the auth module's classes), or ``None``.
    ``client_factory`` makes the shared ``http_client`` on first use when none was handed in.
    """

    __slots__ = ("_client_factory", "_http_client", "auth", "clock", "endpoint", "model", "name", "type")

    def __init__(
        self,
        *,
        name: str,
        type: str,
        model: str | None = None,
        endpoint: str | None = None,
        auth: Any = None,
        http_client: httpx.AsyncClient | None = None,
        clock: Clock | None = None,
        client_factory: Callable[[], httpx.AsyncClient] | None = None,
    ) -> None:
        from .clock import system_clock

        self.name = name
        self.type = type
        self.model = model
        self.endpoint = endpoint
        self.auth = auth
        self._http_client = http_client
        self._client_factory = client_factory
        self.clock = clock if clock is not None else system_clock

    @property
    def http_client(self) -> httpx.AsyncClient | None:
        """The shared client; made on first use by ``client_factory`` when one was given and no client."""
        client = self._http_client
        if client is None and self._client_factory is not None:
            client = self._http_client = self._client_factory()
        return client

    @http_client.setter
    def http_client(self, client: httpx.AsyncClient | None) -> None:
        self._http_client = client

    @property
    def client_created(self) -> bool:
        """Whether a client exists (handed in, or already made by the factory)."""
        return self._http_client is not None

    def __repr__(self) -> str:
        return f"ProviderInfo(name={self.name!r}, type={self.type!r}, model={self.model!r})"


class CallContext:
    """One logical call (``complete`` or ``stream``), as seen by the middleware and the leaf.

    - ``info``: the provider's :class:`ProviderInfo` (``model``, ``endpoint``, ``http_client`` are shortcuts).
    - ``streaming``: ``True`` for ``stream()``; the leaf then returns an async iterator of chunks.
    - ``attempt``: 1 for the first attempt; the retry middleware counts it up.
    - ``auth``: the credentials for this attempt, set by the auth middleware (default: the provider's).
    - ``state``: a dict for middleware to leave notes for each other. Keys are namespaced by convention:
      ``"retry.on_retry"`` (a listener the retry middleware calls before each wait), ``"cost.usd"`` (the
      call's cost, left by the cost middleware for the logging middleware).

    Middleware must not keep a context after the call: it is per call, the middleware is not.
    """

    __slots__ = ("attempt", "auth", "info", "state", "streaming")

    def __init__(self, info: ProviderInfo, *, streaming: bool = False) -> None:
        self.info = info
        self.streaming = streaming
        self.attempt = 1
        self.auth = info.auth
        self.state: dict[str, Any] = {}

    @property
    def provider(self) -> str:
        return self.info.name

    @property
    def model(self) -> str | None:
        return self.info.model

    @property
    def endpoint(self) -> str | None:
        return self.info.endpoint

    @property
    def http_client(self) -> httpx.AsyncClient | None:
        return self.info.http_client

    def __repr__(self) -> str:
        return (
            f"CallContext(provider={self.info.name!r}, streaming={self.streaming}, attempt={self.attempt})"
        )
