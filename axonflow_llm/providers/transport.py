"""The default pooled HTTP client of a provider: httpx's API, on aiohttp's connection pool when installed."""

from __future__ import annotations

import importlib.util
from typing import Literal

import httpx

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_LIMITS",
    "DEFAULT_TIMEOUT",
    "TransportName",
    "aiohttp_available",
    "default_http_client",
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
    """Whether the aiohttp-backed transport can be used (``pip install axonflow-llm[aiohttp]``)."""
    global _AIOHTTP
    if _AIOHTTP is None:
        _AIOHTTP = (
            importlib.util.find_spec("aiohttp") is not None
            and importlib.util.find_spec("httpx_aiohttp") is not None
        )
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


def default_http_client(
    *,
    timeout: float | httpx.Timeout | None = None,
    transport: TransportName = "auto",
    limits: httpx.Limits = DEFAULT_LIMITS,
) -> httpx.AsyncClient:
    """A new pooled ``httpx.AsyncClient`` for one provider (the provider owns and closes it).

    ``transport="auto"`` uses ``httpx_aiohttp.AiohttpTransport`` when aiohttp is installed: measured on
    loopback (``benchmarks/http_loopback.py``) it costs a fraction of the client CPU of httpx's own pool
    under concurrency and keeps the httpx API (auth, MockTransport, event hooks) for everything above it.
    Without aiohttp, httpx's own pool is used. ``"aiohttp"`` requires it; ``"httpx"`` forces httpx's pool.

    No redirects are followed (an API redirect is a misconfigured endpoint, reported as an error) and no
    proxy is taken from the environment by the aiohttp transport; pass your own ``http_client`` for that.
    """
    if transport not in ("auto", "aiohttp", "httpx"):
        raise ValueError(f"transport must be 'auto', 'aiohttp' or 'httpx', got {transport!r}")
    t = default_timeout(timeout)
    use_aiohttp = transport == "aiohttp" or (transport == "auto" and aiohttp_available())
    if use_aiohttp:
        if not aiohttp_available():
            raise ValueError(
                "transport='aiohttp' needs the aiohttp extra: pip install 'axonflow-llm[aiohttp]'"
            )
        from httpx_aiohttp import AiohttpTransport

        return httpx.AsyncClient(
            transport=AiohttpTransport(limits=limits), timeout=t, limits=limits
        )
    return httpx.AsyncClient(timeout=t, limits=limits)


def transport_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a send may raise for a network problem: httpx's, plus aiohttp's where it is loaded
    (``httpx_aiohttp`` passes some through unmapped)."""
    import sys

    errors: list[type[BaseException]] = [httpx.TransportError, httpx.DecodingError]
    aiohttp = sys.modules.get("aiohttp")
    if aiohttp is not None:
        errors.append(aiohttp.ClientError)
    return tuple(errors)
