"""Retry policy: which errors to retry and how long to wait before each retry (pure, synchronous)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeAlias

__all__ = ["RetryConfig", "RetryPredicate", "default_retry_config", "default_retryable", "retry_after_of"]

#: ``retry_if(error)``: ``False`` = give up, ``True`` = retry after the computed wait, a number (not a
#: bool) = retry after exactly that many seconds (no jitter, no cap; the deadline still applies).
RetryPredicate: TypeAlias = Callable[[BaseException], "bool | float"]

_CHAIN_LIMIT = 16  # how far default_retryable / retry_after_of look down a __cause__ chain


def default_retryable(exc: BaseException) -> bool:
    """Whether ``exc`` is worth another attempt.

    Retryable: HTTP 408, 409, 429, 500, 502, 503, 504, 529 (any 5xx), connection errors and timeouts
    (``APIConnectionError``, ``APITimeoutError``, the built-in ``ConnectionError``/``TimeoutError``), and a
    ``RateLimitExceededError`` that says when to come back. Never 400, 401, 403, 404, 422,
    ``CircuitOpenError``, ``BudgetExceededError``. The server's ``x-should-retry`` header
    (``APIError.should_retry``) wins when it was sent. Any error with a boolean ``retryable`` property
    (every ``AxonFlowError``) is judged by it. An error that says nothing either way is judged by its
    ``__cause__``, so a wrapper raised ``from`` an ``APIError`` is judged by the ``APIError``.
    Non-``Exception`` ``BaseException``\\ s (cancellation, ``KeyboardInterrupt``) are never retryable.
    """
    e: BaseException | None = exc
    for _ in range(_CHAIN_LIMIT):
        if e is None or not isinstance(e, Exception):
            return False
        verdict = getattr(e, "retryable", None)
        if isinstance(verdict, bool):
            return verdict
        if isinstance(e, ConnectionError | TimeoutError):
            return True
        e = e.__cause__
    return False


def retry_after_of(exc: BaseException) -> float | None:
    """The server-requested wait carried by ``exc`` or its ``__cause__`` chain (``retry_after``), if any."""
    e: BaseException | None = exc
    for _ in range(_CHAIN_LIMIT):
        if e is None:
            return None
        ra = getattr(e, "retry_after", None)
        if isinstance(ra, int | float) and not isinstance(ra, bool) and ra >= 0:  # NaN fails ra >= 0
            return float(ra)
        e = e.__cause__
    return None


def _check(name: str, value: float, *, low: float = 0.0, allow_inf: bool = False, hint: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"RetryConfig.{name} must be a number, got {type(value).__name__}")
    if math.isnan(value) or value < low or (math.isinf(value) and not allow_inf):
        raise ValueError(f"RetryConfig.{name} must be {hint or f'a finite number >= {low:g}'}, got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryConfig:
    """How to retry: bounded attempts, capped exponential backoff with jitter, and an overall deadline.

    - ``max_retries``: retries after the first attempt (at most ``max_retries + 1`` calls).
    - Wait before retry ``n`` (``n`` from 0): ``initial_backoff * backoff_factor ** n``, capped at
      ``max_backoff``, then jittered by up to ``±jitter`` of itself but never above ``max_backoff``.
      ``full_jitter=True`` draws it uniformly from ``[0, min(max_backoff, initial_backoff * factor ** n)]``.
    - A server-requested wait (an error's ``retry_after``, e.g. ``Retry-After``) replaces the computed
      one on every retry, even above ``max_backoff``, with only positive jitter:
      ``[retry_after, retry_after * (1 + jitter)]``. One above ``max_retry_after`` (``math.inf`` = no
      limit) is not waited out: the error is raised at once.
    - ``retry_if``: see :data:`RetryPredicate`; default :func:`default_retryable`.
    - ``deadline``: seconds from the first call that bound attempts and waits together; a wait that would
      end past it is not started. It does not cut a running attempt short (a timeout middleware does).

    Times are seconds. Frozen and validated on construction: a bad value raises ``ValueError`` saying
    what to write instead.
    """

    max_retries: int = 3
    initial_backoff: float = 0.1
    max_backoff: float = 30.0
    backoff_factor: float = 2.0
    jitter: float = 0.1
    retry_if: RetryPredicate = default_retryable
    full_jitter: bool = False
    max_retry_after: float = 60.0
    deadline: float | None = None
    # First n at which initial_backoff * backoff_factor ** n reaches max_backoff (precomputed).
    _cap_at: float = field(default=math.inf, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int):
            raise TypeError(f"RetryConfig.max_retries must be an int, got {type(self.max_retries).__name__}")
        if self.max_retries < 0:
            raise ValueError(
                f"RetryConfig.max_retries must be >= 0 (0 = no retry), got {self.max_retries!r}"
            )
        _check("initial_backoff", self.initial_backoff)
        _check("max_backoff", self.max_backoff)
        _check("backoff_factor", self.backoff_factor, low=1.0, hint="a finite number >= 1 (1 = constant)")
        _check("jitter", self.jitter, hint="between 0 and 1 (0.1 = ±10%)")
        if self.jitter > 1:
            raise ValueError(f"RetryConfig.jitter must be between 0 and 1 (0.1 = ±10%), got {self.jitter!r}")
        if self.max_backoff < self.initial_backoff:
            raise ValueError(
                f"RetryConfig.max_backoff ({self.max_backoff!r}) must be >= initial_backoff "
                f"({self.initial_backoff!r}); raise max_backoff or lower initial_backoff"
            )
        _check("max_retry_after", self.max_retry_after, allow_inf=True, hint="a number >= 0 (math.inf = any)")
        if self.deadline is not None:
            _check("deadline", self.deadline, hint="a finite number of seconds > 0, or None")
            if self.deadline <= 0:
                raise ValueError(f"RetryConfig.deadline must be > 0 seconds or None, got {self.deadline!r}")
        if not callable(self.retry_if):
            raise TypeError(
                f"RetryConfig.retry_if must be a callable(error) -> bool | float, got {self.retry_if!r}"
            )
        if not isinstance(self.full_jitter, bool):
            raise TypeError(f"RetryConfig.full_jitter must be True or False, got {self.full_jitter!r}")
        cap_at = math.inf
        if self.initial_backoff == 0 or self.max_backoff == self.initial_backoff:
            cap_at = 0.0
        elif self.backoff_factor > 1:
            cap_at = math.log(self.max_backoff / self.initial_backoff) / math.log(self.backoff_factor)
        object.__setattr__(self, "_cap_at", cap_at)

    # -- the pure maths --------------------------------------------------------------------------------

    def nominal_backoff(self, n: int) -> float:
        """The un-jittered wait before retry ``n`` (from 0): ``initial * factor ** n``, capped."""
        if n >= self._cap_at:
            return self.max_backoff if self.initial_backoff > 0 else 0.0
        try:
            value = self.initial_backoff * self.backoff_factor**n
        except OverflowError:  # pragma: no cover - _cap_at keeps n below this
            return self.max_backoff
        return value if value < self.max_backoff else self.max_backoff

    def backoff(self, n: int, rng: random.Random | None = None) -> float:
        """The jittered wait before retry ``n`` (from 0), in ``[0, max_backoff]``. ``rng`` defaults to
        the ``random`` module."""
        nominal = self.nominal_backoff(n)
        u = (rng or random).random()
        if self.full_jitter:
            return nominal * u
        if self.jitter == 0 or nominal == 0:
            return nominal
        low = nominal * (1.0 - self.jitter)
        high = min(nominal * (1.0 + self.jitter), self.max_backoff)
        return low + (high - low) * u

    def server_wait(self, retry_after: float, rng: random.Random | None = None) -> float:
        """The wait for a server-requested ``retry_after``: in ``[retry_after, retry_after * (1+jitter)]``."""
        if self.jitter == 0 or retry_after == 0:
            return retry_after
        return retry_after * (1.0 + self.jitter * (rng or random).random())

    def decide(
        self, exc: BaseException, n: int, elapsed: float = 0.0, rng: random.Random | None = None
    ) -> float | str:
        """After a failed attempt, retry ``n`` (from 0) being next: the wait (a float) before retrying,
        or why to give up (a str). ``elapsed`` is the time since the first call (for the deadline)."""
        if not isinstance(exc, Exception):
            return "not an Exception"
        verdict = self.retry_if(exc)
        if isinstance(verdict, bool):
            if not verdict:
                return "not retryable"
            if n >= self.max_retries:
                return "retries exhausted"
            ra = retry_after_of(exc)
            if ra is None:
                wait = self.backoff(n, rng)
            elif ra > self.max_retry_after:
                return f"server asked to wait {ra:g}s, above max_retry_after={self.max_retry_after:g}s"
            else:
                wait = self.server_wait(ra, rng)
        elif isinstance(verdict, int | float) and verdict >= 0 and not math.isinf(verdict):
            if n >= self.max_retries:
                return "retries exhausted"
            wait = float(verdict)
        else:
            raise ValueError(
                f"RetryConfig.retry_if returned {verdict!r}; "
                "return True/False, or a finite wait in seconds >= 0"
            ) from exc
        if self.deadline is not None and elapsed + wait > self.deadline:
            return f"the next wait ({wait:.3g}s) would end past deadline={self.deadline:g}s"
        return wait


def default_retry_config() -> RetryConfig:
    """3 retries, 0.1 s doubling to at most 30 s, ±10% jitter, ``Retry-After`` honoured up to 60 s."""
    return RetryConfig()

