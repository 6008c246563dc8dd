"""The one exception hierarchy of axonflow-llm.

::

    AxonFlowError
    ├── APIError                     the provider answered with an HTTP error
    │   ├── BadRequestError          400, 404, 422 (and other 4xx)   not retryable (408, 409: retryable)
    │   ├── AuthenticationError      401, 403                        not retryable
    │   ├── RateLimitError           429                             retryable
    │   └── ServerError              5xx                             retryable
    │       └── OverloadedError      529 (or an "overloaded" event)  retryable
    ├── APIConnectionError           could not reach the provider    retryable
    │   └── APITimeoutError          the call or a stream stalled    retryable
    ├── MalformedResponseError       the provider's answer is not    not retryable
    │                                what its API documents
    ├── StreamInterruptedError       a stream broke after it began   never replayed
    ├── CircuitOpenError             the breaker fails fast          not retryable here
    ├── RateLimitExceededError       the local limiter said no       retryable
    ├── BudgetExceededError          the spending budget is used up  not retryable
    ├── TokenRefreshError            a refreshable credential failed as its cause
    └── ConfigError (ValueError)     a configuration cannot work     not retryable

Every error has ``retryable``. Foreign exceptions (httpx, JSON decoding) are mapped at the leaf, in
``providers/``, with the cause chained. No message, repr or attribute ever holds a credential:
``APIError.from_response`` scrubs the request's own credentials out of whatever the server echoed.
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AuthenticationError",
    "AxonFlowError",
    "BadRequestError",
    "BudgetExceededError",
    "CircuitOpenError",
    "ConfigError",
    "MalformedResponseError",
    "OverloadedError",
    "RateLimitError",
    "RateLimitExceededError",
    "ServerError",
    "StreamInterruptedError",
    "TokenRefreshError",
    "is_health_failure",
    "redact",
    "request_secrets",
]

#: Statuses worth another attempt when the server says nothing either way.
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})

_BODY_EXCERPT = 500


class AxonFlowError(Exception):
    """Base of every error raised by axonflow-llm."""

    @property
    def retryable(self) -> bool:
        return False


class APIError(AxonFlowError):
    """The provider answered with an HTTP error status.

    ``retry_after`` is in seconds (from ``Retry-After`` or ``retry-after-ms``); ``should_retry`` is the
    server's ``x-should-retry`` header where it sent one; ``body`` is a short, redacted excerpt.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        provider: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
        should_retry: bool | None = None,
        body: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.provider = provider
        self.request_id = request_id
        self.retry_after = retry_after
        self.should_retry = should_retry
        self.body = body

    @property
    def retryable(self) -> bool:
        if self.should_retry is not None:
            return self.should_retry
        return self.status_code in RETRYABLE_STATUSES or self.status_code >= 500

    def __str__(self) -> str:
        who = f"{self.provider}: " if self.provider else ""
        rid = f" (request id {self.request_id})" if self.request_id else ""
        return f"{who}HTTP {self.status_code}: {self.message}{rid}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status_code={self.status_code}, provider={self.provider!r}, "
            f"message={self.message!r}, request_id={self.request_id!r}, retry_after={self.retry_after!r})"
        )

    @classmethod
    def from_response(
        cls, response: httpx.Response, *, provider: str | None, message: str | None = None
    ) -> APIError:
        """Build the right subclass from an HTTP error response (the body must have been read).

        Reads the status, ``retry-after-ms`` then ``Retry-After`` (seconds or an HTTP-date), the request
        id, ``x-should-retry``, and the provider's own error message from the JSON body. Credentials the
        request carried are scrubbed from the message and body.
        """
        status = response.status_code
        headers = response.headers
        secrets = _response_secrets(response)
        try:
            text = response.text
        except Exception:  # the body was streamed and not read
            text = ""
        body = redact(text[:_BODY_EXCERPT], secrets) if text else None
        msg = message or _error_message(response, text) or response.reason_phrase or "error"
        msg = redact(msg, secrets)
        should: bool | None = None
        raw_should = headers.get("x-should-retry")
        if raw_should is not None:
            low = raw_should.strip().lower()
            if low == "true":
                should = True
            elif low == "false":
                should = False
        err_cls = error_class_for_status(status, text)
        return err_cls(
            msg,
            status_code=status,
            provider=provider,
            request_id=request_id_from_headers(headers),
            retry_after=parse_retry_after(headers),
            should_retry=should,
            body=body,
        )


class BadRequestError(APIError):
    """400, 404, 422 and any other 4xx not named below: fix the request, do not retry it.

    Except 408 (request timeout) and 409 (conflict), which are retryable: the same request may succeed.
    """


class AuthenticationError(APIError):
    """401 or 403: the credentials are missing, wrong or not allowed this model."""


class RateLimitError(APIError):
    """429: the provider's quota. Honour ``retry_after``."""


class ServerError(APIError):
    """5xx: the provider failed."""


class OverloadedError(ServerError):
    """529, or an ``overloaded_error`` event inside a stream: the provider is shedding load."""


class APIConnectionError(AxonFlowError):
    """The provider could not be reached, or the connection broke before an answer."""

    def __init__(self, message: str, *, provider: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider

    @property
    def retryable(self) -> bool:
        return True

    def __str__(self) -> str:
        return f"{self.provider}: {self.message}" if self.provider else self.message


class APITimeoutError(APIConnectionError):
    """The call, its first chunk, or the gap between two chunks took longer than allowed."""


class MalformedResponseError(AxonFlowError):
    """The provider answered, but not in the shape its API documents (bad JSON, missing fields).

    ``body`` is a short, redacted excerpt of what came back.
    """

    def __init__(
        self, message: str, *, provider: str | None = None, status_code: int | None = None,
        body: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.status_code = status_code
        self.body = body

    def __str__(self) -> str:
        return f"{self.provider}: {self.message}" if self.provider else self.message


class StreamInterruptedError(AxonFlowError):
    """A stream broke after it began, or ended without the provider's end marker.

    Chunks already delivered stay delivered; nothing is replayed. ``chunks_received`` says how many got
    through.
    """

    def __init__(self, message: str, *, provider: str | None = None, chunks_received: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.chunks_received = chunks_received

    @property
    def retryable(self) -> bool:
        # Transient in nature; but retry and failover never act once a chunk reached the caller.
        return True

    def __str__(self) -> str:
        return f"{self.provider}: {self.message}" if self.provider else self.message


class CircuitOpenError(AxonFlowError):
    """The circuit breaker is open and failed the call fast. ``retry_after`` says when it half-opens."""

    def __init__(self, message: str, *, retry_after: float = 0.0, provider: str | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.provider = provider


class RateLimitExceededError(AxonFlowError):
    """The local rate limiter could not grant the tokens (non-blocking, or not within the timeout).

    ``retry_after`` is the time until the tokens would be available, or ``None`` if never.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.retry_after is not None


class BudgetExceededError(AxonFlowError):
    """The call would take a tenant's spending over its budget for the current window.

    ``retry_after`` is the time until enough earlier spending leaves the window, where that is known.
    """

    def __init__(
        self,
        message: str,
        *,
        tenant: str | None = None,
        limit_usd: float | None = None,
        spent_usd: float | None = None,
        in_flight_usd: float | None = None,
        estimate_usd: float | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.tenant = tenant
        self.limit_usd = limit_usd
        self.spent_usd = spent_usd
        self.in_flight_usd = in_flight_usd
        self.estimate_usd = estimate_usd
        self.retry_after = retry_after


class TokenRefreshError(AxonFlowError):
    """A refreshable credential could not be refreshed; the cause is chained, the token is never shown.

    Retryable when the cause is (a dropped connection to the token endpoint, a retryable provider error).
    """

    @property
    def retryable(self) -> bool:
        cause = self.__cause__
        if isinstance(cause, AxonFlowError):
            return cause.retryable
        if isinstance(cause, OSError | TimeoutError):
            return True
        import httpx  # only on this error path; the providers have imported it already

        return isinstance(cause, httpx.TransportError)


class ConfigError(AxonFlowError, ValueError):
    """A configuration cannot work. The message names the field (``llm_providers.x.weight``) and the fix."""


# --- helpers -------------------------------------------------------------------------------------------


_CHAIN_LIMIT = 16


def is_health_failure(exc: BaseException) -> bool:
    """Whether ``exc`` says something about the provider's health (what a breaker or a health check counts).

    Counted: HTTP 5xx (529 included), 429 and 408, connection errors and timeouts (``APIConnectionError``,
    ``APITimeoutError``, the built-in ``ConnectionError``/``TimeoutError``), ``StreamInterruptedError``.
    Not counted: any other 4xx (400, 401, 403, 404, 422: the request or the key is wrong, not the
    provider), any other ``AxonFlowError`` (``CircuitOpenError``, ``RateLimitExceededError``,
    ``BudgetExceededError``, ``ConfigError``, ``MalformedResponseError``). An error it does not know is
    judged by its ``__cause__``; one with no known cause does not count.
    """
    e: BaseException | None = exc
    for _ in range(_CHAIN_LIMIT):
        if e is None:
            return False
        if isinstance(e, APIError):
            return e.status_code >= 500 or e.status_code in (408, 429)
        if isinstance(e, APIConnectionError | StreamInterruptedError | ConnectionError | TimeoutError):
            return True
        if isinstance(e, AxonFlowError):
            return False
        e = e.__cause__
    return False



def error_class_for_status(status: int, text: str = "") -> type[APIError]:
    if status == 529 or (status >= 500 and "overloaded" in text[:300].lower()):
        return OverloadedError
    if status >= 500:
        return ServerError
    if status == 429:
        return RateLimitError
    if status in (401, 403):
        return AuthenticationError
    if status >= 400:
        return BadRequestError
    return APIError


_REQUEST_ID_HEADERS = (
    "x-request-id",
    "request-id",
    "x-amzn-requestid",
    "x-amz-request-id",
    "apim-request-id",
    "x-goog-request-id",
)


_REQUEST_ID_RANK = {name.encode("ascii"): rank for rank, name in enumerate(_REQUEST_ID_HEADERS)}


def request_id_from_headers(headers: Any) -> str | None:
    """The request id the provider sent, by the first of ``_REQUEST_ID_HEADERS`` present.

    ``httpx.Headers`` are read in one pass over their raw list (this runs on every successful call);
    any other mapping with ``get`` by name.
    """
    raw = getattr(headers, "raw", None)
    if raw is None:
        for name in _REQUEST_ID_HEADERS:
            value = headers.get(name)
            if value:
                return str(value)
        return None
    return request_id_from_header_items((k, k.lower(), v) for k, v in raw)


def request_id_from_header_items(items: Iterable[tuple[bytes, bytes, bytes]]) -> str | None:
    """:func:`request_id_from_headers` over ``(raw name, lower-cased name, value)`` byte triples, the form
    ``httpx.Headers`` keeps them in (one pass, no re-lowering)."""
    ranks = _REQUEST_ID_RANK
    best_rank, best = len(_REQUEST_ID_HEADERS), None
    for _, key, value in items:
        if key in ranks and value:
            rank = ranks[key]
            if rank < best_rank:
                if rank == 0:  # the first choice: nothing later can beat it
                    return value.decode("latin-1")
                best_rank, best = rank, value
    return best.decode("latin-1") if best is not None else None


def parse_retry_after(headers: Any, *, now: float | None = None) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` or ``Retry-After`` (delta-seconds or HTTP-date).

    ``now`` is wall-clock epoch seconds for the HTTP-date form (defaults to ``time.time()``).
    Garbage, negative and non-finite values give ``None``.
    """
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            ms = float(raw_ms)
        except ValueError:
            ms = math.nan
        if math.isfinite(ms) and ms >= 0:
            return ms / 1000.0
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
        return max(0.0, seconds)
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


def _error_message(response: httpx.Response, text: str) -> str | None:
    if not text:
        return None
    try:
        data = response.json()
    except ValueError:
        return text.strip()[:200] or None
    return find_error_message(data)


def find_error_message(data: Any) -> str | None:
    """The human message in a provider's JSON error body, whatever its shape."""
    if isinstance(data, list) and data:
        data = data[0]  # Gemini sometimes wraps the error in a list
    if not isinstance(data, dict):
        return None
    err = data.get("error")
    if isinstance(err, dict):
        msg = err.get("message")
        if isinstance(msg, str):
            return msg
    if isinstance(err, str):
        return err
    for key in ("message", "Message", "detail"):
        msg = data.get(key)
        if isinstance(msg, str):
            return msg
    return None


_SECRET_HEADERS = (
    "authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "proxy-authorization",
    "x-amz-security-token",
)
_SECRET_QUERY = ("key", "api_key", "apikey", "api-key", "token", "access_token")


def request_secrets(request: httpx.Request) -> list[str]:
    """The credentials ``request`` carries, to scrub from anything echoed back: the values of the
    ``Authorization``/``Proxy-Authorization`` (and the bare token after ``Bearer``/``Basic``),
    ``x-api-key``, ``api-key``, ``x-goog-api-key`` and ``x-amz-security-token`` headers, and key-like
    query parameters (``key``, ``api_key``, ``apikey``, ``api-key``, ``token``, ``access_token``)."""
    found: list[str] = []
    headers = request.headers
    for name in _SECRET_HEADERS:
        value = headers.get(name)
        if value:
            found.append(value)
            scheme, _, rest = value.partition(" ")
            if rest and scheme.lower() in ("bearer", "basic"):
                found.append(rest)
    params = request.url.params
    if params:
        for name in _SECRET_QUERY:
            value = params.get(name)
            if value:
                found.append(value)
    return found


def _response_secrets(response: httpx.Response) -> list[str]:
    try:
        request = response.request
    except RuntimeError:
        return []
    return request_secrets(request)


_KEY_LIKE = re.compile(r"\b(sk-[A-Za-z0-9_\-]{8,}|AIza[0-9A-Za-z_\-]{20,}|AKIA[0-9A-Z]{16})")


def redact(text: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """Replace every given secret, and anything shaped like a well-known API key, with ``***``."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return _KEY_LIKE.sub("***", text)
