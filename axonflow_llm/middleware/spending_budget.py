"""SpendingBudget: at most so many USD per tenant over a rolling window, reserved before a call and settled after."""

from __future__ import annotations

import collections
import math
import threading

from ..pipeline.clock import Clock, system_clock
from ..pipeline.errors import BudgetExceededError

__all__ = ["SpendingBudget"]

_SLICES = 60  # a budget window is tracked in 1/60ths
_EPSILON = 1e-9  # USD; float noise never blocks a call that fits exactly


class _Ledger:
    __slots__ = ("reserved", "slices", "spent")

    def __init__(self) -> None:
        self.slices: collections.deque[tuple[int, float]] = collections.deque()  # (slice index, USD)
        self.spent = 0.0
        self.reserved = 0.0


class SpendingBudget:
    """At most ``limit_usd`` of spending per tenant over a rolling ``window`` of seconds (default a day).

    Shared state: hand one budget to every provider whose calls should count against it. The cost
    middleware *reserves* each call's estimated cost before the call (raising
    :class:`BudgetExceededError` if spent + reserved + estimate would pass the limit) and *settles* it
    after, replacing the estimate with the actual cost; so concurrent calls cannot all slip under the
    limit. A call whose actual cost exceeds its estimate can take spending past the limit by the
    difference; the next call is then refused.

    The window rolls: spending is recorded in slices of ``window / 60`` and leaves the window between
    ``window`` and ``window * 61/60`` after it was recorded (never early). Memory is bounded: at most
    ``max_tenants`` tenants are tracked; past that the least recently seen tenant with nothing in flight
    is forgotten (its past spending with it), so size ``max_tenants`` above your active tenants per window.
    Thread-safe; time comes from ``clock`` (monotonic seconds).
    """

    __slots__ = ("_clock", "_ledgers", "_limit", "_lock", "_max_tenants", "_slice", "_window")

    def __init__(
        self,
        limit_usd: float,
        window: float = 86400.0,
        *,
        clock: Clock | None = None,
        max_tenants: int = 10_000,
    ) -> None:
        if isinstance(limit_usd, bool) or not isinstance(limit_usd, int | float) or not (
            math.isfinite(limit_usd) and limit_usd >= 0
        ):
            raise ValueError(f"SpendingBudget limit_usd must be a finite number of USD >= 0, got {limit_usd!r}")
        if isinstance(window, bool) or not isinstance(window, int | float) or not (
            math.isfinite(window) and window > 0
        ):
            raise ValueError(f"SpendingBudget window must be a positive number of seconds, got {window!r}")
        if isinstance(max_tenants, bool) or not isinstance(max_tenants, int) or max_tenants < 1:
            raise ValueError(f"SpendingBudget max_tenants must be a positive integer, got {max_tenants!r}")
        self._limit = float(limit_usd)
        self._window = float(window)
        self._slice = self._window / _SLICES
        self._clock = clock if clock is not None else system_clock
        self._max_tenants = max_tenants
        self._ledgers: collections.OrderedDict[str, _Ledger] = collections.OrderedDict()
        self._lock = threading.Lock()

    @property
    def limit_usd(self) -> float:
        return self._limit

    @property
    def window(self) -> float:
        return self._window

    def reserve(self, tenant: str, amount: float) -> None:
        """Hold ``amount`` USD for a call about to start, or raise :class:`BudgetExceededError`."""
        with self._lock:
            ledger, now_slice = self._ledger(tenant)
            if ledger.spent + ledger.reserved + amount > self._limit + _EPSILON:
                raise self._refusal(tenant, ledger, amount, now_slice)
            ledger.reserved += amount

    def settle(self, tenant: str, reserved: float, actual: float) -> None:
        """Release a reservation made by :meth:`reserve` and record what the call really cost."""
        with self._lock:
            ledger, now_slice = self._ledger(tenant)
            ledger.reserved = max(0.0, ledger.reserved - reserved)
            if actual > 0:
                slices = ledger.slices
                if slices and slices[-1][0] == now_slice:
                    slices[-1] = (now_slice, slices[-1][1] + actual)
                else:
                    slices.append((now_slice, actual))
                ledger.spent += actual

    def record(self, tenant: str, amount: float) -> None:
        """Count ``amount`` USD of spending that was not reserved (made outside the middleware)."""
        self.settle(tenant, 0.0, amount)

    def spent(self, tenant: str) -> float:
        """USD settled for ``tenant`` within the current window."""
        with self._lock:
            return self._ledger(tenant, create=False)[0].spent

    def in_flight(self, tenant: str) -> float:
        """USD reserved for ``tenant``'s calls that have not finished."""
        with self._lock:
            return self._ledger(tenant, create=False)[0].reserved

    def remaining(self, tenant: str) -> float:
        """USD ``tenant`` may still reserve now."""
        with self._lock:
            ledger = self._ledger(tenant, create=False)[0]
            return max(0.0, self._limit - ledger.spent - ledger.reserved)

    def __repr__(self) -> str:
        return f"SpendingBudget(limit_usd={self._limit}, window={self._window}, tenants={len(self._ledgers)})"

    # -- internals (under the lock) -------------------------------------------------------------------

    def _ledger(self, tenant: str, *, create: bool = True) -> tuple[_Ledger, int]:
        now_slice = int(self._clock.now() // self._slice)
        ledgers = self._ledgers
        ledger = ledgers.get(tenant)
        if ledger is None:
            ledger = _Ledger()
            if not create:
                return ledger, now_slice
            if len(ledgers) >= self._max_tenants:
                self._evict()
            ledgers[tenant] = ledger
        else:
            ledgers.move_to_end(tenant)
        slices = ledger.slices
        oldest_kept = now_slice - _SLICES  # the current slice plus 60 whole ones: never leaves early
        while slices and slices[0][0] < oldest_kept:
            ledger.spent -= slices.popleft()[1]
        if not slices:
            ledger.spent = 0.0  # no float drift survives an empty window
        return ledger, now_slice

    def _evict(self) -> None:
        for name, ledger in self._ledgers.items():  # least recently seen first
            if ledger.reserved <= 0:
                del self._ledgers[name]
                return
        # Every tracked tenant has a call in flight: go over the bound until one settles.

    def _refusal(self, tenant: str, ledger: _Ledger, amount: float, now_slice: int) -> BudgetExceededError:
        over = ledger.spent + ledger.reserved + amount - self._limit
        retry_after: float | None = None
        if amount > self._limit:
            when = "this call alone costs more than the whole budget"
        elif ledger.reserved + amount > self._limit:
            when = "it may fit once the calls in flight finish"
        else:
            freed, wait = 0.0, 0.0
            for index, usd in ledger.slices:
                freed += usd
                if freed >= over - _EPSILON:
                    wait = (index + _SLICES + 1) * self._slice - self._clock.now()
                    break
            retry_after = max(wait, 0.0)
            when = f"enough earlier spending leaves the window in about {retry_after:.0f}s"
        return BudgetExceededError(
            f"spending budget exceeded for tenant {tenant!r}: ${ledger.spent:.6f} spent and "
            f"${ledger.reserved:.6f} in flight of ${self._limit:.2f} per {self._window:g}s window; "
            f"this call is estimated at ${amount:.6f}; {when}. Raise SpendingBudget(limit_usd=...), "
            "lower the request's max_tokens, or wait.",
            tenant=tenant,
            limit_usd=self._limit,
            spent_usd=ledger.spent,
            in_flight_usd=ledger.reserved,
            estimate_usd=amount,
            retry_after=retry_after,
        )
