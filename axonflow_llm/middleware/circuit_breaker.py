"""The circuit breaker state machine: closed, open, half-open; pure and synchronous, time from a clock."""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Callable

from axonflow_llm.pipeline.clock import Clock, system_clock

__all__ = ["CircuitBreaker", "CircuitState", "Permit", "StateListener"]

_log = logging.getLogger(__name__)
_BUCKETS = 10  # the failure-rate window is kept as this many counters
_NEVER = -(1 << 62)


class CircuitState(enum.StrEnum):
    """Where a breaker is. ``OPEN`` reads as ``HALF_OPEN`` once its ``reset_timeout`` has passed."""

    CLOSED = "closed"  #: calls flow; failures are counted
    OPEN = "open"  #: calls fail fast until reset_timeout has passed
    HALF_OPEN = "half_open"  #: a few probe calls are let through; the first result decides


# Module-level aliases: reading an enum member off its class is slow on the per-call path (Python 3.11).
_CLOSED, _OPEN, _HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN

#: ``callback(old, new)``, called on every state change.
StateListener = Callable[[CircuitState, CircuitState], object]


class Permit:
    """Leave to make one call, from :meth:`CircuitBreaker.acquire`. Hand it back exactly once, through
    ``success``, ``failure`` or ``release``. A permit from an earlier state (its ``generation`` is past)
    is ignored when handed back, so a late result cannot flip the breaker."""

    __slots__ = ("generation", "probe", "settled")

    def __init__(self, generation: int, probe: bool) -> None:
        self.generation = generation
        self.probe = probe
        self.settled = False

    def __repr__(self) -> str:
        return f"Permit(generation={self.generation}, probe={self.probe})"


class CircuitBreaker:
    """Stops calling a provider that keeps failing; now and then lets a probe through to see if it is back.

    - ``failure_threshold``: consecutive failures that open a closed breaker (a success resets the
      count); ``None`` turns this off (then ``failure_rate_threshold`` is required).
    - ``reset_timeout``: seconds an open breaker fails fast before it reads ``HALF_OPEN``.
    - ``half_open_max_calls``: probes let through at once while half-open. The first probe result decides:
      a success closes the breaker, a failure opens it again with a fresh timer.
    - ``failure_rate_threshold`` (in (0, 1]), ``window`` (seconds, default 60) and ``minimum_calls``
      (default 10): also open when, over the last ``window`` seconds (kept in 10 buckets, so to within
      a tenth of it), at least ``minimum_calls`` outcomes were recorded and the share of failures is at
      least the threshold.
    - ``clock``: where time comes from (default: the system clock).

    Two APIs: ``acquire() -> Permit | None`` then ``success``/``failure``/``release(permit)`` is exact
    (the middleware uses it); ``allow()`` then ``record_success()``/``record_failure()`` is the seed's
    simpler one, which cannot tell a late result from a current one. ``on_state_change(callback)``
    listens to transitions (a listener that raises is logged and ignored; the change to ``HALF_OPEN``
    is seen when the breaker is next used).

    The breaker is the shared state: pass the same object to several middlewares to share it. It is
    synchronous (nothing awaits inside), so any number of asyncio tasks on one event loop may use it;
    it is not meant to be shared between threads.
    """

    __slots__ = (
        "_buckets_calls",
        "_buckets_fails",
        "_buckets_id",
        "_clock",
        "_consecutive",
        "_generation",
        "_half_open_max",
        "_listeners",
        "_min_calls",
        "_opened_at",
        "_permit",
        "_probes",
        "_rate",
        "_reset_timeout",
        "_state",
        "_threshold",
        "_width",
    )

    def __init__(
        self,
        failure_threshold: int | None = 5,
        reset_timeout: float = 30.0,
        *,
        half_open_max_calls: int = 1,
        clock: Clock | None = None,
        failure_rate_threshold: float | None = None,
        window: float | None = None,
        minimum_calls: int = 10,
    ) -> None:
        if failure_threshold is not None:
            _check_int("failure_threshold", failure_threshold, "e.g. 5, or None with failure_rate_threshold=")
        elif failure_rate_threshold is None:
            raise ValueError("CircuitBreaker needs failure_threshold= or failure_rate_threshold= (or both)")
        if not _is_number(reset_timeout) or not (math.isfinite(reset_timeout) and reset_timeout >= 0):
            raise ValueError(
                f"CircuitBreaker reset_timeout must be a number of seconds >= 0, got {reset_timeout!r}"
            )
        _check_int("half_open_max_calls", half_open_max_calls, "e.g. 1")
        _check_int("minimum_calls", minimum_calls, "e.g. 10")
        if failure_rate_threshold is not None:
            if not _is_number(failure_rate_threshold) or not 0 < failure_rate_threshold <= 1:
                raise ValueError(
                    "CircuitBreaker failure_rate_threshold must be in (0, 1] (0.5 = half the calls failed), "
                    f"got {failure_rate_threshold!r}"
                )
            window = 60.0 if window is None else window
            if not _is_number(window) or not (math.isfinite(window) and window > 0):
                raise ValueError(f"CircuitBreaker window must be a number of seconds > 0, got {window!r}")
        elif window is not None:
            raise ValueError("CircuitBreaker window= only applies with failure_rate_threshold=; pass both")
        self._threshold = failure_threshold
        self._reset_timeout = float(reset_timeout)
        self._half_open_max = half_open_max_calls
        self._clock = system_clock if clock is None else clock
        self._rate = failure_rate_threshold
        self._min_calls = minimum_calls
        self._width = (window or 1.0) / _BUCKETS
        self._buckets_id = [_NEVER] * _BUCKETS
        self._buckets_calls = [0] * _BUCKETS
        self._buckets_fails = [0] * _BUCKETS
        self._listeners: list[StateListener] = []
        self._state = _CLOSED
        self._generation = 0
        self._permit = Permit(0, False)  # every closed-state call shares its generation's permit
        self._consecutive = 0
        self._probes = 0
        self._opened_at = 0.0

    # -- reading ---------------------------------------------------------------------------------------

    @property
    def state(self) -> CircuitState:
        if self._state is _OPEN:
            self._refresh()
        return self._state

    @property
    def failure_count(self) -> int:
        """Consecutive failures counted while closed."""
        return self._consecutive

    def retry_after(self) -> float:
        """Seconds until an open breaker half-opens; 0 when it is not open."""
        if self.state is not _OPEN:
            return 0.0
        return max(0.0, self._opened_at + self._reset_timeout - self._clock.now())

    def on_state_change(self, callback: StateListener) -> StateListener:
        """Call ``callback(old, new)`` on every transition; returns it, so it works as a decorator."""
        if not callable(callback):
            raise TypeError(f"on_state_change needs a callable(old, new), got {callback!r}")
        self._listeners.append(callback)
        return callback

    # -- the exact API: permits ------------------------------------------------------------------------

    def acquire(self) -> Permit | None:
        """A permit to make one call, or ``None`` when the call must fail fast."""
        state = self._state
        if state is _CLOSED:
            return self._permit
        if state is _OPEN:
            self._refresh()
            if self._state is not _HALF_OPEN:
                return None
        if self._probes >= self._half_open_max:
            return None
        self._probes += 1
        return Permit(self._generation, True)

    def success(self, permit: Permit) -> None:
        """The call made under ``permit`` succeeded."""
        if permit.generation != self._generation:
            return
        if not permit.probe:
            self._consecutive = 0
            if self._rate is not None:
                self._record(False)
        elif not permit.settled:
            permit.settled = True
            self._transition(_CLOSED)

    def failure(self, permit: Permit) -> None:
        """The call made under ``permit`` failed in a way that says the provider is unwell."""
        if permit.generation != self._generation:
            return
        if not permit.probe:
            self._closed_failure()
        elif not permit.settled:
            permit.settled = True
            self._transition(_OPEN)

    def release(self, permit: Permit) -> None:
        """The call made under ``permit`` says nothing either way (cancelled, closed early, a 400)."""
        if permit.probe and not permit.settled and permit.generation == self._generation:
            permit.settled = True
            self._probes -= 1

    # -- the seed's simple API -------------------------------------------------------------------------

    def allow(self) -> bool:
        """Whether a call may go ahead now. While half-open this takes a probe slot: report its result."""
        return self.acquire() is not None

    def record_success(self) -> None:
        """A call succeeded: resets the failure count, or closes a half-open breaker."""
        state = self.state
        if state is _CLOSED:
            self.success(self._permit)
        elif state is _HALF_OPEN:
            self._transition(_CLOSED)

    def record_failure(self) -> None:
        """A call failed: counts toward opening, or reopens a half-open breaker. Ignored while open."""
        state = self.state
        if state is _CLOSED:
            self._closed_failure()
        elif state is _HALF_OPEN:
            self._transition(_OPEN)

    def reset(self) -> None:
        """Close the breaker and forget every count (results of calls already running are ignored)."""
        self._transition(_CLOSED)

    # -- internals -------------------------------------------------------------------------------------

    def _refresh(self) -> None:
        if self._clock.now() - self._opened_at >= self._reset_timeout:
            self._transition(_HALF_OPEN)

    def _closed_failure(self) -> None:
        self._consecutive += 1
        tripped = self._threshold is not None and self._consecutive >= self._threshold
        if self._rate is not None and self._record(True):
            tripped = True
        if tripped:
            self._transition(_OPEN)

    def _record(self, failed: bool) -> bool:
        """Count one outcome in the window; whether the failure rate now trips the breaker."""
        bucket = math.floor(self._clock.now() / self._width)
        i = bucket % _BUCKETS
        ids, calls, fails = self._buckets_id, self._buckets_calls, self._buckets_fails
        if ids[i] != bucket:
            ids[i], calls[i], fails[i] = bucket, 0, 0
        calls[i] += 1
        if not failed:
            return False
        fails[i] += 1
        oldest = bucket - _BUCKETS + 1
        total = failures = 0
        for j in range(_BUCKETS):
            if ids[j] >= oldest:
                total += calls[j]
                failures += fails[j]
        assert self._rate is not None
        return total >= self._min_calls and failures >= self._rate * total

    def _transition(self, new: CircuitState) -> None:
        old = self._state
        self._state = new
        self._generation += 1
        self._permit = Permit(self._generation, False)
        self._consecutive = 0
        self._probes = 0
        if new is _OPEN:
            self._opened_at = self._clock.now()
        if new is not _HALF_OPEN:
            self._buckets_id[:] = [_NEVER] * _BUCKETS
        if old is new:  # reset() of a closed breaker: counts forgotten, nothing to announce
            return
        for listener in tuple(self._listeners):
            try:
                listener(old, new)
            except Exception:
                _log.warning("a circuit breaker state listener raised; ignored", exc_info=True)

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(state={self.state.name}, failures={self._consecutive}, "
            f"threshold={self._threshold}, reset_timeout={self._reset_timeout})"
        )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)


def _check_int(name: str, value: object, example: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"CircuitBreaker {name} must be an integer >= 1 ({example}), got {value!r}")
