"""The circuit breaker in the onion: fail fast while a provider is down, judge each call's outcome."""

from __future__ import annotations

import logging
from collections.abc import Callable

from axonflow_llm.pipeline.clock import Clock
from axonflow_llm.pipeline.context import CallContext
from axonflow_llm.pipeline.errors import CircuitOpenError, is_health_failure, redact
from axonflow_llm.pipeline.middleware import Handler, Middleware, Reply
from axonflow_llm.pipeline.models import CompletionRequest, CompletionResponse
from axonflow_llm.pipeline.stream import StreamEnd, StreamOutcome, observe_stream

from .circuit_breaker import CircuitBreaker, Permit

__all__ = ["CircuitBreakerMiddleware", "default_is_failure"]

_log = logging.getLogger(__name__)
_DETAIL = 200  # characters of the last failure's message kept for the open-circuit error


#: Whether an error counts against the breaker: :func:`axonflow_llm.pipeline.errors.is_health_failure`
#: (5xx, 429, 408, connection errors, timeouts, interrupted streams; never 400/401/403/404/422).
default_is_failure = is_health_failure


class CircuitBreakerMiddleware(Middleware):
    """Fails calls fast with :class:`CircuitOpenError` while its breaker is open, and reports each call's
    outcome to the breaker.

    - ``breaker``: the :class:`CircuitBreaker`, which is the shared state (default: a fresh one, with
      ``clock``). Give several middlewares the same object to share one breaker.
    - ``is_failure(error) -> bool``: which errors count against the provider (default
      :func:`default_is_failure`). Errors that do not count, cancellations, and streams closed or
      abandoned before their end hand the permit back without a verdict, so a half-open probe is
      never left stuck.

    A stream is judged when it ends: exhausted = success, failed = judged by its error, closed early or
    cancelled = no verdict. Sits inside the retry middleware, so each attempt is counted. The
    :class:`CircuitOpenError` names the last failure this middleware counted (its type and message, which
    carry no credentials), so a caller who only sees the open circuit still learns what went wrong.
    """

    __slots__ = ("_breaker", "_is_failure", "_last_failure")

    def __init__(
        self,
        next_handler: Handler,
        /,
        *,
        breaker: CircuitBreaker | None = None,
        is_failure: Callable[[BaseException], bool] | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(next_handler)
        if breaker is None:
            breaker = CircuitBreaker(clock=clock)
        elif not isinstance(breaker, CircuitBreaker):
            raise TypeError(
                f"CircuitBreakerMiddleware breaker= must be a CircuitBreaker, got {type(breaker).__name__}"
            )
        elif clock is not None:
            raise TypeError(
                "CircuitBreakerMiddleware: pass clock= to CircuitBreaker(...) itself when you pass breaker="
            )
        if is_failure is not None and not callable(is_failure):
            raise TypeError(
                f"CircuitBreakerMiddleware is_failure= must be a callable(error) -> bool, got {is_failure!r}"
            )
        self._breaker = breaker
        self._is_failure = default_is_failure if is_failure is None else is_failure
        self._last_failure: str | None = None  # "Type: message" of the last failure counted

    @property
    def breaker(self) -> CircuitBreaker:
        return self._breaker

    async def __call__(self, request: CompletionRequest, ctx: CallContext) -> Reply:
        breaker = self._breaker
        permit = breaker.acquire()
        if permit is None:
            raise self._open_error(ctx)
        try:
            reply = await self.next(request, ctx)
        except Exception as exc:
            self._judge(permit, exc)
            raise
        except BaseException:
            breaker.release(permit)
            raise
        if isinstance(reply, CompletionResponse):
            breaker.success(permit)
            return reply

        def on_end(outcome: StreamOutcome) -> None:
            if outcome.end is StreamEnd.COMPLETED:
                breaker.success(permit)
            elif outcome.end is StreamEnd.FAILED and isinstance(outcome.error, Exception):
                self._judge(permit, outcome.error)
            else:
                breaker.release(permit)

        return observe_stream(reply, on_end)

    def _judge(self, permit: Permit, exc: Exception) -> None:
        try:
            failed = self._is_failure(exc)
        except Exception:
            _log.warning("a breaker's is_failure predicate raised; the call is not counted", exc_info=True)
            failed = False
        if failed:
            self._last_failure = f"{type(exc).__name__}: {redact(str(exc))[:_DETAIL]}"
            self._breaker.failure(permit)
        else:
            self._breaker.release(permit)

    def _open_error(self, ctx: CallContext) -> CircuitOpenError:
        wait = self._breaker.retry_after()
        if wait > 0:
            why = (
                f"is open after repeated failures; calls fail fast for {wait:.3g}s more, "
                "then a probe call is let through"
            )
        else:
            why = "is half-open and its probe calls are still running; try again shortly"
        last = f" (last failure: {self._last_failure})" if self._last_failure else ""
        return CircuitOpenError(
            f"{ctx.provider}: the circuit breaker {why}{last}", retry_after=wait, provider=ctx.provider
        )

    def __repr__(self) -> str:
        return f"CircuitBreakerMiddleware(breaker={self._breaker!r})"
