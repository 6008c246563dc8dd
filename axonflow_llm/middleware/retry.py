"""Retry with backoff: ``retry_with_backoff`` for any async callable; ``RetryMiddleware`` for the onion."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeAlias, TypeVar

from axonflow_llm.pipeline.clock import Clock, system_clock
from axonflow_llm.pipeline.context import CallContext
from axonflow_llm.pipeline.errors import StreamInterruptedError
from axonflow_llm.pipeline.middleware import Handler, Middleware, Reply
from axonflow_llm.pipeline.models import CompletionRequest, CompletionResponse, StreamChunk
from axonflow_llm.pipeline.stream import ChunkStream

from .retry_config import RetryConfig

__all__ = ["ON_RETRY_KEY", "RetryListener", "RetryMiddleware", "retry_with_backoff"]

T = TypeVar("T")

#: ``listener(attempt, error, wait)``, called before each wait; ``attempt`` (1-based) is the one that failed.
RetryListener: TypeAlias = Callable[[int, BaseException, float], object]

#: The ``ctx.state`` key under which a :data:`RetryListener` may be left for ``RetryMiddleware``.
ON_RETRY_KEY = "retry.on_retry"

_log = logging.getLogger(__name__)


def _wait_or_raise(
    config: RetryConfig,
    exc: Exception,
    attempt: int,
    elapsed: float,
    rng: random.Random | None,
    listener: RetryListener | None,
    since: str,
) -> float:
    """The wait before the next attempt, or ``exc`` itself raised (with a note) when it is time to stop."""
    decision = config.decide(exc, attempt - 1, elapsed, rng)
    if isinstance(decision, str):
        if attempt > 1 or decision != "not retryable":
            exc.add_note(
                f"axonflow-llm retry: gave up after {attempt} attempt{'s' if attempt > 1 else ''} "
                f"over {elapsed:.3f}s{since}: {decision}"
            )
        raise exc
    if listener is not None:
        try:
            listener(attempt, exc, decision)
        except Exception:
            _log.warning("a retry listener raised; ignored", exc_info=True)
    return decision


async def retry_with_backoff(
    config: RetryConfig,
    fn: Callable[[], Awaitable[T]],
    *,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    on_retry: RetryListener | None = None,
) -> T:
    """Await ``fn()`` until it succeeds or ``config`` says stop; return its result.

    At most ``config.max_retries + 1`` calls. When retrying stops, the last error itself is raised, with a
    note saying how many attempts were made over what time. Only ``Exception``\\ s are retried:
    cancellation and ``KeyboardInterrupt`` propagate at once, also from a wait. ``rng`` draws the jitter
    (default: the ``random`` module); ``on_retry(attempt, error, wait)`` is called before each wait.
    """
    if not isinstance(config, RetryConfig):
        raise TypeError(f"retry_with_backoff needs a RetryConfig, got {type(config).__name__}")
    clk = system_clock if clock is None else clock
    start = clk.now()
    attempt = 1
    while True:
        try:
            return await fn()
        except Exception as exc:
            wait = _wait_or_raise(config, exc, attempt, clk.now() - start, rng, on_retry, "")
        await clk.sleep(wait)
        attempt += 1


class RetryMiddleware(Middleware):
    """Retries a failed attempt of the inner handlers, with capped, jittered exponential backoff.

    ``config`` (:class:`RetryConfig`, default :func:`default_retry_config`) says which errors, how often
    and how long; ``clock`` sleeps (default: the system clock); ``rng`` draws the jitter. It sets
    ``ctx.attempt`` (1-based) before each attempt and, before each wait, calls the listener found at
    ``ctx.state["retry.on_retry"]`` (if any) as ``listener(attempt, error, wait)``. When retrying stops,
    the last error itself is raised, with a note.

    Streams: the first chunk is fetched inside the retry loop, so a failure before it is retried like any
    other (the failed stream is closed). The caller gets a stream yielding that chunk and then the rest;
    an error after that raises :class:`StreamInterruptedError` from the cause and nothing is replayed.

    Place it outside the circuit breaker and the timeout, so each attempt is judged and timed on its own.
    It shares no state: the counting is per call.
    """

    __slots__ = ("_clock", "_config", "_rng", "_timed")

    def __init__(
        self,
        next_handler: Handler,
        /,
        *,
        config: RetryConfig | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(next_handler)
        if config is None:
            config = RetryConfig()
        elif not isinstance(config, RetryConfig):
            raise TypeError(f"RetryMiddleware config= must be a RetryConfig, got {type(config).__name__}")
        if rng is not None and not isinstance(rng, random.Random):
            raise TypeError(f"RetryMiddleware rng= must be a random.Random or None, got {type(rng).__name__}")
        self._config = config
        self._clock = system_clock if clock is None else clock
        self._rng = rng
        # Without a deadline the clock is not read on the success path; time is then counted from the
        # first failure.
        self._timed = config.deadline is not None

    async def __call__(self, request: CompletionRequest, ctx: CallContext) -> Reply:
        if ctx.streaming:
            return await self._call_stream(request, ctx)
        ctx.attempt = 1
        start = self._clock.now() if self._timed else None
        try:
            return await self.next(request, ctx)
        except Exception as exc:
            error = exc
        return await self._retry(request, ctx, error, start)

    async def _retry(
        self, request: CompletionRequest, ctx: CallContext, exc: Exception, start: float | None
    ) -> Reply:
        clock = self._clock
        since = ""
        if start is None:
            start, since = clock.now(), " (timed from the first failure)"
        attempt = 1
        while True:
            wait = _wait_or_raise(
                self._config, exc, attempt, clock.now() - start, self._rng, ctx.state.get(ON_RETRY_KEY), since
            )
            await clock.sleep(wait)
            attempt += 1
            ctx.attempt = attempt
            try:
                return await self.next(request, ctx)
            except Exception as e:
                exc = e

    async def _call_stream(self, request: CompletionRequest, ctx: CallContext) -> Reply:
        clock = self._clock
        start = clock.now()
        attempt = 1
        while True:
            ctx.attempt = attempt
            stream: ChunkStream | None = None
            try:
                reply = await self.next(request, ctx)
                if isinstance(reply, CompletionResponse):
                    return reply
                stream = reply
                first = await stream.__anext__()
            except StopAsyncIteration:
                if stream is None:
                    raise
                return _PrefetchedStream(None, stream, ctx.provider)  # an empty stream
            except Exception as exc:
                if stream is not None:
                    await _close_quietly(stream)
                listener = ctx.state.get(ON_RETRY_KEY)
                elapsed = clock.now() - start
                wait = _wait_or_raise(self._config, exc, attempt, elapsed, self._rng, listener, "")
            except BaseException:
                if stream is not None:  # cancelled while waiting for the first chunk: still close it
                    await _close_quietly(stream)
                raise
            else:
                return _PrefetchedStream(first, stream, ctx.provider)
            await clock.sleep(wait)
            attempt += 1

    def __repr__(self) -> str:
        return f"RetryMiddleware(config={self._config!r})"


async def _close_quietly(stream: ChunkStream) -> None:
    with contextlib.suppress(Exception):
        await stream.aclose()


class _PrefetchedStream:
    """The stream the caller gets from ``RetryMiddleware``: the prefetched first chunk, then the rest.

    An error once the first chunk is out becomes :class:`StreamInterruptedError` (from the cause).
    Closing it closes the inner stream.
    """

    __slots__ = ("_done", "_first", "_inner", "_provider", "_sent")

    def __init__(self, first: StreamChunk | None, inner: ChunkStream, provider: str | None) -> None:
        self._first = first
        self._inner = inner
        self._provider = provider
        self._sent = 0
        self._done = first is None

    def __aiter__(self) -> _PrefetchedStream:
        return self

    async def __anext__(self) -> StreamChunk:
        first = self._first
        if first is not None:
            self._first = None
            self._sent = 1
            return first
        if self._done:
            raise StopAsyncIteration
        try:
            chunk = await self._inner.__anext__()
        except StopAsyncIteration:
            self._done = True
            raise
        except (StreamInterruptedError, asyncio.CancelledError, GeneratorExit):
            self._done = True
            raise
        except Exception as exc:
            self._done = True
            await _close_quietly(self._inner)
            raise StreamInterruptedError(
                f"the stream broke after {self._sent} chunk{'s' if self._sent != 1 else ''} "
                f"({type(exc).__name__}); nothing is replayed",
                provider=self._provider,
                chunks_received=self._sent,
            ) from exc
        self._sent += 1
        return chunk

    async def aclose(self) -> None:
        self._first = None
        self._done = True
        await self._inner.aclose()

    async def __aenter__(self) -> _PrefetchedStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
