"""The default pooled HTTP client of a provider: httpx's API, on aiohttp's connection pool when installed."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import Any, Literal, NamedTuple, NoReturn

import httpx

from ..pipeline.deadlines import SameDelayDeadlines
from .httpx_objects import build_response, items_of

__all__ = [
    "AiohttpTransport",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_LIMITS",
    "DEFAULT_TIMEOUT",
    "TransportName",
    "aiohttp_available",
    "default_http_client",
    "default_transport",
    "default_timeout",
    "transport_errors",
    "user_agent",
]

#: Seconds to wait for a TCP/TLS connection; a provider that cannot be reached in 5 s is better failed over.
DEFAULT_CONNECT_TIMEOUT = 5.0
#: Seconds to wait for a read (a whole non-streamed answer can take minutes on a long generation).
DEFAULT_READ_TIMEOUT = 600.0
DEFAULT_TIMEOUT = httpx.Timeout(DEFAULT_READ_TIMEOUT, connect=DEFAULT_CONNECT_TIMEOUT)
#: Like the official OpenAI SDK: many concurrent calls, a warm pool kept between bursts.
DEFAULT_LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=100, keepalive_expiry=30.0)

TransportName = Literal["auto", "aiohttp", "httpx"]

_AIOHTTP: bool | None = None


def aiohttp_available() -> bool:
    """Whether the aiohttp-backed transport can be used (aiohttp is a dependency; an install that left it
    out gets httpx's own pool)."""
    global _AIOHTTP
    if _AIOHTTP is None:
        _AIOHTTP = importlib.util.find_spec("aiohttp") is not None
    return _AIOHTTP


def default_timeout(timeout: float | httpx.Timeout | None) -> httpx.Timeout:
    """The client timeout: ``None`` gives connect 5 s / read 600 s; a number bounds every phase, connect
    at most 5 s of it; an ``httpx.Timeout`` is used as given."""
    if timeout is None:
        return DEFAULT_TIMEOUT
    if isinstance(timeout, httpx.Timeout):
        return timeout
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds or an httpx.Timeout, got {timeout!r}")
    return httpx.Timeout(float(timeout), connect=min(float(timeout), DEFAULT_CONNECT_TIMEOUT))


def user_agent() -> str:
    """``axonflow-llm/<version>``, the User-Agent every built-in provider sends."""
    try:
        # Read lazily: the package is fully imported by the time a provider is built.
        from axonflow_llm import __version__

        version = str(__version__)
    except ImportError:  # pragma: no cover - only while the package itself is being imported
        version = "0"
    return f"axonflow-llm/{version}"


def default_transport(
    *, limits: httpx.Limits = DEFAULT_LIMITS, transport: TransportName = "auto"
) -> httpx.AsyncBaseTransport:
    """The transport a provider's own client uses. ``"auto"``: :class:`AiohttpTransport` when aiohttp is
    installed and no proxy is configured in the environment (``HTTPS_PROXY``...), else httpx's own pool,
    which honours those variables as httpx always does."""
    if transport not in ("auto", "aiohttp", "httpx"):
        raise ValueError(f"transport must be 'auto', 'aiohttp' or 'httpx', got {transport!r}")
    if transport == "aiohttp" or (transport == "auto" and aiohttp_available() and not _env_proxies()):
        if not aiohttp_available():
            raise ValueError("transport='aiohttp' needs aiohttp, which is not installed: pip install aiohttp")
        return AiohttpTransport(limits=limits)
    return httpx.AsyncHTTPTransport(limits=limits)


def _env_proxies() -> bool:
    import urllib.request

    return any(k in ("http", "https", "all") for k in urllib.request.getproxies())


_SSL_CONTEXT: Any = None


def _ssl_context() -> Any:
    """httpx's default TLS context (certifi's CA bundle, or ``SSL_CERT_FILE``/``SSL_CERT_DIR``), built once
    per process and shared: the same certificates whichever transport is used."""
    global _SSL_CONTEXT
    if _SSL_CONTEXT is None:
        _SSL_CONTEXT = httpx.create_ssl_context()
    return _SSL_CONTEXT


def default_http_client(
    *,
    timeout: float | httpx.Timeout | None = None,
    transport: TransportName = "auto",
    limits: httpx.Limits = DEFAULT_LIMITS,
) -> httpx.AsyncClient:
    """A new pooled ``httpx.AsyncClient`` on :func:`default_transport` (the caller owns and closes it).

    Measured on loopback (``benchmarks/http_loopback.py``), the aiohttp-backed transport costs a fraction
    of the client CPU of httpx's own pool under concurrency, and keeps the httpx API (auth, MockTransport,
    event hooks) for everything above it. No redirects are followed (an API redirect is a misconfigured
    endpoint, reported as an error); environment proxies are not used by the aiohttp transport: hand a
    provider your own ``http_client`` for a proxy.
    """
    return httpx.AsyncClient(
        transport=default_transport(limits=limits, transport=transport), timeout=default_timeout(timeout)
    )


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An ``httpx`` transport on one pooled ``aiohttp.ClientSession``: httpx's API, aiohttp's speed.

    Leaner than ``httpx_aiohttp``'s: timeouts, URLs and header strings are converted once per distinct
    value, the body is streamed with ``iter_any`` (each network read as it arrives, which is what SSE
    wants), a non-streamed answer (:meth:`handle_buffered`) is bounded by one shared deadline timer instead
    of a timer per network read, and every aiohttp error is mapped to the httpx exception of the same
    meaning (a dropped connection is ``RemoteProtocolError``, not a timeout). The request's headers are
    sent as they are: aiohttp adds no User-Agent of its own (it still adds ``Accept``/``Accept-Encoding``
    where absent, and decodes nothing: httpx does). The session is opened lazily, on the event loop of
    the first request, and closed by ``aclose()``. ``limits.max_connections`` bounds the pool;
    ``keepalive_expiry`` how long an idle connection is kept. Cookies are not stored (API calls do not
    need them).
    """

    def __init__(self, *, limits: httpx.Limits = DEFAULT_LIMITS, verify: bool | Any = True) -> None:
        self._limit = limits.max_connections or 0
        self._keepalive = limits.keepalive_expiry
        self._verify = verify
        self._session: Any = None
        self._timings: dict[tuple[Any, ...], _Timing] = {}
        self._last_timing: tuple[Any, _Timing] = (object(), _NO_TIMING)
        self._deadlines: dict[float, SameDelayDeadlines] = {}
        self._targets: dict[int, tuple[httpx.URL, Any, bytes]] = {}
        # The str form aiohttp takes of each header item seen (the common headers recur on every call);
        # bounded. Credentials and per-request signing headers are never kept (see _UNCACHED).
        self._header_strs: dict[tuple[bytes, bytes, bytes], tuple[str, str]] = {}
        self._closed = False

    def _open(self) -> Any:
        import aiohttp

        if self._closed:
            raise RuntimeError("the transport is closed")
        ssl: Any = _ssl_context() if self._verify is True else httpx.create_ssl_context(verify=self._verify)
        connector = aiohttp.TCPConnector(limit=self._limit, keepalive_timeout=self._keepalive or 15.0, ssl=ssl)
        # No session-wide skip_auto_headers: aiohttp would then rebuild the skip set on every request
        # (about 3 % of a small call's client instructions); a request without a User-Agent asks for it.
        self._session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
        )
        return self._session

    def _timing(self, t: Mapping[str, float | None] | None) -> _Timing:
        """The aiohttp timeouts for an httpx timeout dict, made once per distinct value."""
        if t is self._last_timing[0]:  # a provider passes the same dict on every call
            return self._last_timing[1]
        key = (t.get("connect"), t.get("read"), t.get("pool")) if t else (None, None, None)
        timing = self._timings.get(key)
        if timing is None:
            import aiohttp

            connect, read, pool = key
            timing = _Timing(
                aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read, connect=pool),
                aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=None, connect=pool),
                read,
            )
            if len(self._timings) < 64:
                self._timings[key] = timing
        if t is not None:
            self._last_timing = (t, timing)
        return timing

    def _deadlines_for(self, read: float, task: asyncio.Task[Any]) -> SameDelayDeadlines | None:
        """The shared deadline queue for answers bounded by ``read`` seconds on ``task``'s loop (``None``
        past a few distinct values: those fall back to aiohttp's per-read timeout)."""
        loop = task.get_loop()
        deadlines = self._deadlines.get(read)
        if deadlines is None:
            if len(self._deadlines) >= 8:
                return None
            deadlines = self._deadlines[read] = SameDelayDeadlines(loop, read)
        return deadlines if deadlines.loop is loop else None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._send(request)
        return build_response(response.status, response.raw_headers, request, _extensions(response),
                              stream=_AiohttpBody(response))

    def _target(self, url: httpx.URL) -> tuple[Any, bytes]:
        """The ``yarl.URL`` for ``url`` and the ``Host`` value aiohttp derives from it, cached by identity:
        a provider sends every call to one of a few parsed URLs, and ``str()`` of an ``httpx.URL`` rebuilds
        the string each time. An entry holds its ``httpx.URL``, so its ``id`` cannot be reused while it is
        cached."""
        entry = self._targets.get(id(url))
        if entry is not None and entry[0] is url:
            return entry[1], entry[2]
        import yarl

        target = yarl.URL(str(url), encoded=True)  # httpx has already percent-encoded it
        # The Host aiohttp derives (b"" with a yarl too old to say: Host is then always passed on).
        host = (getattr(target, "host_port_subcomponent", None) or "").encode("latin-1")
        if len(self._targets) < 256:
            self._targets[id(url)] = (url, target, host)
        return target, host

    async def _send(self, request: httpx.Request) -> Any:
        try:
            return await self._start(request, self._timing(request.extensions.get("timeout")).per_read)
        except BaseException as exc:
            _raise_mapped(exc)

    def _start(self, request: httpx.Request, timeout: Any) -> Awaitable[Any]:
        """The ``aiohttp`` request for ``request``, not yet awaited (the caller maps its errors)."""
        session = self._session or self._open()
        data: Any
        try:
            data = request.content or None
        except httpx.RequestNotRead:
            data = request.stream
        target, host = self._target(request.url)
        # Content-Length: aiohttp frames the body itself (a length for bytes, chunked for a stream). A Host
        # equal to the one aiohttp derives from the URL is left to it (each header costs aiohttp three passes).
        known = self._header_strs
        headers = []
        agent = False
        for item in items_of(request.headers):
            key = item[1]
            if key in _DERIVED or (key == b"host" and item[2] == host):
                continue
            agent = agent or key == b"user-agent"
            pair = known.get(item)
            if pair is None:
                pair = (item[0].decode("latin-1"), item[2].decode("latin-1"))
                if len(known) < 256 and key not in _UNCACHED:
                    known[item] = pair
            headers.append(pair)
        # Without a User-Agent of its own the request goes without one, as over httpx's own transport.
        return session._request(  # type: ignore[no-any-return]
            request.method, target, headers=headers, data=data, allow_redirects=False, timeout=timeout,
            skip_auto_headers=None if agent else _NO_AGENT,
        )

    async def handle_buffered(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` and read the whole body: a read ``httpx.Response`` (decoded per its
        ``Content-Encoding``), the connection already back in the pool. For answers that are not streamed.

        The ``read`` timeout bounds the whole wait for the answer, from handing the request over to the
        last byte (``httpx.ReadTimeout``). Every such deadline of one value lies the same delay after it
        is set, so they share one event-loop timer (:class:`SameDelayDeadlines`) instead of the timer
        aiohttp would create, cancel and re-create on every network read: about 7 % of a small
        call's client instructions. A streamed answer keeps the per-read timeout.
        """
        timing = self._timing(request.extensions.get("timeout"))
        read = timing.read
        task = asyncio.current_task() if read else None  # (0 or None: aiohttp's own meaning, no timeout)
        deadlines = None
        cancelling = 0
        if task is not None:
            assert read is not None
            deadlines = self._deadlines_for(read, task)
            cancelling = task.cancelling()
            if deadlines is not None and not deadlines.arm(task):  # the task is in a buffered send here already
                deadlines = None
        try:
            try:
                response = await self._start(request, timing.per_read if deadlines is None else timing.unread)
                try:
                    body = await response.read()
                except (Exception, TimeoutError):
                    response.close()
                    raise
                finally:
                    response.release()
            except asyncio.CancelledError as exc:
                if deadlines is not None and task is not None and deadlines.caused(task, cancelling):
                    what = f"no answer within the read timeout ({read} s)"
                    expired = TimeoutError(what)  # as asyncio.timeout says it, for whoever maps the cause
                    expired.__cause__ = exc
                    raise httpx.ReadTimeout(what) from expired
                raise
            finally:
                if deadlines is not None and task is not None:
                    deadlines.disarm(task)
        except BaseException as exc:
            _raise_mapped(exc)
        if "content-encoding" in response.headers:
            out = build_response(response.status, response.raw_headers, request, _extensions(response),
                                 stream=httpx.ByteStream(body))
            out.read()  # httpx decodes gzip/deflate/br as usual
            return out
        # An identity body is its own content: what read() would leave, without its generator machinery.
        return build_response(response.status, response.raw_headers, request, _extensions(response),
                              content=body)

    async def aclose(self) -> None:
        self._closed = True
        for deadlines in self._deadlines.values():
            deadlines.close()
        session, self._session = self._session, None
        if session is not None:
            await session.close()


_DERIVED = frozenset({b"content-length", b"transfer-encoding"})


class _Timing(NamedTuple):
    """The aiohttp timeouts for one httpx timeout value."""

    per_read: Any  # ClientTimeout with sock_read: for streams, and where no shared deadline applies
    unread: Any  # the same without sock_read: the buffered send bounds the whole wait itself
    read: float | None


_NO_TIMING = _Timing(None, None, None)
_HTTP11 = b"HTTP/1.1"
_NO_AGENT = ("User-Agent",)
#: Headers whose values are secrets (an expired token is not kept alive here) or change on every request.
_UNCACHED = frozenset({
    b"authorization", b"proxy-authorization", b"x-api-key", b"api-key", b"x-goog-api-key",
    b"x-amz-security-token", b"x-amz-date", b"x-amz-content-sha256", b"content-length",
})


def _extensions(response: Any) -> dict[str, Any]:
    reason = response.reason
    return {"http_version": _HTTP11, "reason_phrase": reason.encode() if reason else b""}


class _AiohttpBody(httpx.AsyncByteStream):
    __slots__ = ("_response",)

    def __init__(self, response: Any) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (TimeoutError, Exception) as exc:
            _raise_mapped(exc)

    async def aclose(self) -> None:
        # Back to the pool if the body was read to the end; otherwise the connection is closed.
        self._response.release()


def _raise_mapped(exc: BaseException) -> NoReturn:
    """Raise the httpx exception for ``exc`` (caused by it), or ``exc`` itself if it needs no mapping."""
    mapped = _mapped(exc)
    if mapped is exc:
        raise exc
    raise mapped from exc


def _mapped(exc: BaseException) -> BaseException:
    """The httpx exception for an aiohttp one (others pass through unchanged)."""
    import aiohttp

    if isinstance(exc, httpx.HTTPError) or not isinstance(exc, aiohttp.ClientError | TimeoutError):
        return exc
    msg = str(exc) or type(exc).__name__
    cls: type[httpx.TransportError]
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        cls = httpx.ConnectTimeout
    elif isinstance(exc, TimeoutError):
        cls = httpx.ReadTimeout
    elif isinstance(exc, aiohttp.ClientConnectorError):
        cls = httpx.ConnectError
    elif isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientResponseError):
        cls = httpx.RemoteProtocolError
    elif isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientOSError):
        cls = httpx.ReadError
    elif isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        cls = httpx.UnsupportedProtocol
    else:
        cls = httpx.NetworkError
    return cls(msg)


def transport_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a send may raise for a network problem: httpx's, plus aiohttp's where it is loaded
    (``httpx_aiohttp`` passes some through unmapped)."""
    import sys

    errors: list[type[BaseException]] = [httpx.TransportError, httpx.DecodingError]
    aiohttp = sys.modules.get("aiohttp")
    if aiohttp is not None:
        errors.append(aiohttp.ClientError)
    return tuple(errors)
