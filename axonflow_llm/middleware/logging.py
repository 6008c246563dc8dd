"""Structured logging of each logical call (one event at its end) and of each retry (a debug event)."""

from __future__ import annotations

import asyncio
import contextlib
import logging as stdlib_logging
from collections.abc import Awaitable
from typing import Any

import structlog

from ..pipeline.clock import Clock, system_clock
from ..pipeline.context import CallContext
from ..pipeline.errors import APIError, AxonFlowError, redact
from ..pipeline.middleware import Handler, Middleware, Reply
from ..pipeline.models import CompletionRequest, CompletionResponse, StreamChunk
from ..pipeline.stream import StreamEnd, StreamOutcome, observe_stream
from .cost import COST_STATE_KEY
from .retry import ON_RETRY_KEY

# structlog's global configuration, watched so that a reconfiguration is noticed cheaply; a structlog
# without it makes the middleware resolve its logger once.
_STRUCTLOG_CONFIG: Any = getattr(structlog._config, "_CONFIG", None)

__all__ = ["CALL_EVENT", "RETRY_EVENT", "RETRY_LISTENER_KEY", "LoggingMiddleware"]

#: The event logged once per logical call, and the debug event logged before each retry's wait.
CALL_EVENT = "llm.call"
RETRY_EVENT = "llm.retry"
#: ``ctx.state`` key of the retry listener ``listener(attempt, error, wait)`` the retry middleware calls
#: (the retry middleware's own :data:`~axonflow_llm.middleware.retry.ON_RETRY_KEY`, under a second name).
RETRY_LISTENER_KEY = ON_RETRY_KEY

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "warn": 30, "error": 40, "critical": 50}
_NAMES = {10: "debug", 20: "info", 30: "warning", 40: "error", 50: "critical"}
_DEBUG = 10
_CONTENT_LIMIT = 1000  # characters of prompt/completion kept when log_content=True
_STATIC_CLASSES = frozenset(structlog.make_filtering_bound_logger(lvl) for lvl in (0, *_NAMES))


def _level(value: str | int, what: str) -> int:
    if isinstance(value, str) and value.lower() in _LEVELS:
        return _LEVELS[value.lower()]
    if isinstance(value, int) and not isinstance(value, bool) and value in _NAMES:
        return value
    raise ValueError(f"LoggingMiddleware {what} must be one of debug, info, warning, error, critical; got {value!r}")


def _clip(text: str) -> str:
    text = redact(text)
    if len(text) > _CONTENT_LIMIT:
        return f"{text[:_CONTENT_LIMIT]}...[{len(text) - _CONTENT_LIMIT} more chars]"
    return text


def _prompt_text(request: CompletionRequest) -> str:
    parts = [f"system: {request.system_prompt}"] if request.system_prompt else []
    parts += [f"{m.role}: {m.content}" for m in request.chat_messages()]
    return _clip("\n".join(parts))


def _error_fields(fields: dict[str, Any], error: BaseException) -> None:
    fields["error_type"] = type(error).__name__
    fields["error"] = redact(str(error))  # already credential-free by contract; key-shaped text scrubbed
    if isinstance(error, APIError):
        fields["status_code"] = error.status_code
        fields["request_id"] = error.request_id
    if isinstance(error, AxonFlowError):
        fields["retryable"] = error.retryable


class LoggingMiddleware(Middleware):
    """Logs one structured event per logical call, and a debug event before each retry, with structlog.

    Place it outermost (outside retry): the ``llm.call`` event carries ``provider``, ``model`` (the
    response's, else the request's, else the provider's), ``streaming``, ``status`` (``ok``/``error``;
    streams also ``closed``/``cancelled``), ``attempts`` (``ctx.attempt`` after the call), ``latency_s``,
    ``prompt_tokens``/``completion_tokens``/``total_tokens``, ``cost_usd`` (the response's cost, or for a
    stream ``ctx.state["cost.usd"]`` left by the cost middleware), ``finish_reason``, ``request_id``; a
    stream adds ``chunks`` and ``time_to_first_chunk_s`` and is logged once, when it ends however it ends.
    An error adds ``error_type``, ``error`` (its ``str()``, key-shaped text scrubbed), ``retryable`` and for
    HTTP errors ``status_code``. Successes log at ``level``, errors at ``error_level``, retries at debug
    (``llm.retry`` with ``attempt``, ``wait_s`` and the error), through a listener put in
    ``ctx.state["retry.on_retry"]`` only when debug is enabled. Never logged: credentials, headers,
    metadata, tracebacks; the prompt and completion only with ``log_content=True`` (first 1000 chars).

    ``logger``: a structlog logger (default ``structlog.get_logger("axonflow_llm")``) or a stdlib
    ``logging.Logger``. With the default logger nothing is logged until the application calls
    ``structlog.configure()``: a library should not print to your stdout unasked (structlog's own default
    would print every event). A filtered-out level costs next to nothing: a structlog filtering logger
    (``make_filtering_bound_logger``) is asked once and the answer kept; a stdlib-backed one is asked
    ``isEnabledFor`` on each call, so its level may change at run time. A lazy logger from
    ``get_logger()`` follows ``structlog.configure()`` done after construction, as structlog itself does
    (the middleware notices a new wrapper class, processor list or logger factory on the next call),
    until structlog caches it (``cache_logger_on_first_use=True``). ``clock`` times the call.
    Logging never changes a call's outcome: a failing processor is ignored.
    """

    __slots__ = (
        "_clock",
        "_configured_seen",
        "_content",
        "_debug_on",
        "_emit_debug",
        "_emit_err",
        "_emit_ok",
        "_err_level",
        "_err_on",
        "_factory_seen",
        "_gate_level",
        "_is_enabled",
        "_level",
        "_logger",
        "_ok_on",
        "_on",
        "_procs_seen",
        "_unasked",
        "_watch",
        "_wrapper_seen",
    )

    def __init__(
        self,
        next_handler: Handler,
        /,
        *,
        logger: Any = None,
        level: str | int = "info",
        error_level: str | int = "error",
        log_content: bool = False,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(next_handler)
        self._level = _level(level, "level")
        self._err_level = _level(error_level, "error_level")
        self._gate_level = max(self._level, self._err_level)
        if not isinstance(log_content, bool):
            raise TypeError(f"log_content must be True or False, got {log_content!r}")
        self._content = log_content
        self._clock = clock if clock is not None else system_clock
        self._unasked = logger is None
        if logger is None:
            logger = structlog.get_logger("axonflow_llm")
        elif isinstance(logger, stdlib_logging.Logger):
            logger = structlog.wrap_logger(logger, wrapper_class=structlog.stdlib.BoundLogger)
        elif not callable(getattr(logger, "bind", None)):
            raise TypeError(
                f"logger must be a structlog logger (structlog.get_logger()) or a logging.Logger, got {logger!r}"
            )
        self._logger = logger
        self._watch: Any = None
        self._resolve()

    def _resolve(self) -> None:
        """Bind the logger as configured now and decide, once, how to ask whether a level is enabled."""
        logger = self._logger
        proxy = isinstance(logger, structlog._config.BoundLoggerLazyProxy)
        bound = logger.bind() if proxy else logger
        self._watch = None
        if proxy and "bind" not in vars(logger) and _STRUCTLOG_CONFIG is not None:
            # structlog re-reads its configuration on every use of a lazy logger: so do we, cheaply.
            cfg = self._watch = _STRUCTLOG_CONFIG
            self._wrapper_seen = cfg.default_wrapper_class
            self._procs_seen = cfg.default_processors
            self._factory_seen = cfg.logger_factory
            self._configured_seen = cfg.is_configured
        self._emit_ok = getattr(bound, _NAMES[self._level])
        self._emit_err = getattr(bound, _NAMES[self._err_level])
        self._emit_debug = bound.debug
        check = getattr(bound, "is_enabled_for", None) or getattr(bound, "isEnabledFor", None)
        if check is None:  # no level introspection: everything is enabled
            self._is_enabled = None
            self._ok_on = self._err_on = self._debug_on = True
        elif type(bound) in _STATIC_CLASSES:  # a fixed level: ask once
            self._is_enabled = None
            self._ok_on = bool(check(self._level))
            self._err_on = bool(check(self._err_level))
            self._debug_on = bool(check(_DEBUG))
        else:  # stdlib-backed: the level may change at any time, ask on each call
            self._is_enabled = check
            self._ok_on = self._err_on = self._debug_on = True
        if self._unasked and not structlog.is_configured():
            # A library does not write to your stdout unasked: with the default logger, events start once
            # the application configures structlog (noticed on the next call, like any reconfiguration).
            self._is_enabled = None
            self._ok_on = self._err_on = self._debug_on = False
        self._on = self._ok_on or self._err_on

    def _allowed(self, level: int, static: bool) -> bool:
        check = self._is_enabled
        return static if check is None else bool(check(level))

    def __call__(self, request: CompletionRequest, ctx: CallContext) -> Awaitable[Reply]:
        cfg = self._watch
        if cfg is not None and (
            cfg.default_wrapper_class is not self._wrapper_seen
            or cfg.default_processors is not self._procs_seen
            or cfg.logger_factory is not self._factory_seen
            or cfg.is_configured is not self._configured_seen
        ):
            with contextlib.suppress(Exception):  # broken reconfiguration: keep the logger we had
                self._resolve()
        check = self._is_enabled
        if check is None:
            if not self._on:  # filtered out: the call passes through, no coroutine of our own
                return self.next(request, ctx)
        elif not check(self._gate_level):  # levels are ordered: the higher one decides if any is on
            return self.next(request, ctx)
        return self._logged(request, ctx, check)

    async def _logged(self, request: CompletionRequest, ctx: CallContext, check: Any) -> Reply:
        if self._debug_on if check is None else check(_DEBUG):
            state = ctx.state
            state[RETRY_LISTENER_KEY] = _RetryLog(self, request, ctx, state.get(RETRY_LISTENER_KEY)).on_retry
        start = self._clock.now()
        try:
            reply = await self.next(request, ctx)
        except asyncio.CancelledError:
            self._log_failure(request, ctx, start, None)
            raise
        except Exception as exc:
            self._log_failure(request, ctx, start, exc)
            raise
        if isinstance(reply, CompletionResponse):
            # Inlined: this is the per-call path of an enabled logger.
            if self._ok_on if check is None else check(self._level):
                usage = reply.usage
                finish = reply.finish_reason
                fields: dict[str, Any] = {
                    "provider": ctx.info.name,
                    "model": reply.model or request.model or ctx.info.model,
                    "streaming": False,
                    "status": "ok",
                    "attempts": ctx.attempt,
                    "latency_s": self._clock.now() - start,
                    "prompt_tokens": usage.prompt_tokens,
                    "completion_tokens": usage.completion_tokens,
                    "total_tokens": usage.total_tokens,
                    "cost_usd": reply.cost,
                    "finish_reason": None if finish is None else finish.value,
                    "request_id": reply.request_id,
                }
                if self._content:
                    fields["prompt"] = _prompt_text(request)
                    fields["completion"] = _clip(reply.content)
                try:  # noqa: SIM105 - free when nothing is raised, unlike contextlib.suppress
                    self._emit_ok(CALL_EVENT, **fields)
                except Exception:  # a broken processor must not fail a finished call
                    pass
            return reply
        call = _StreamLog(self, request, ctx, start)
        return observe_stream(reply, call.on_end, on_chunk=call.on_chunk)

    # -- events ---------------------------------------------------------------------------------------

    def _log_failure(
        self, request: CompletionRequest, ctx: CallContext, start: float, error: BaseException | None
    ) -> None:
        if not (self._allowed(self._level, self._ok_on) if error is None
                else self._allowed(self._err_level, self._err_on)):
            return
        fields: dict[str, Any] = {
            "provider": ctx.info.name,
            "model": request.model or ctx.info.model,
            "streaming": ctx.streaming,
            "status": "cancelled" if error is None else "error",
            "attempts": ctx.attempt,
            "latency_s": self._clock.now() - start,
        }
        if error is not None:
            _error_fields(fields, error)
        if self._content:
            fields["prompt"] = _prompt_text(request)
        self._emit(self._emit_ok if error is None else self._emit_err, fields)

    def _log_stream_end(self, call: _StreamLog, outcome: StreamOutcome) -> None:
        end = outcome.end
        failed = end is StreamEnd.FAILED
        if not (self._allowed(self._err_level, self._err_on) if failed
                else self._allowed(self._level, self._ok_on)):
            return
        ctx, request, usage = call.ctx, call.request, outcome.usage
        fields: dict[str, Any] = {
            "provider": ctx.info.name,
            "model": request.model or ctx.info.model,
            "streaming": True,
            "status": _STREAM_STATUS[end],
            "attempts": ctx.attempt,
            "latency_s": self._clock.now() - call.start,
            "time_to_first_chunk_s": None if call.first is None else call.first - call.start,
            "chunks": outcome.chunks,
            "prompt_tokens": usage.prompt_tokens if usage is not None else None,
            "completion_tokens": usage.completion_tokens if usage is not None else None,
            "total_tokens": usage.total_tokens if usage is not None else None,
            "cost_usd": ctx.state.get(COST_STATE_KEY),
            "finish_reason": outcome.finish_reason.value if outcome.finish_reason is not None else None,
        }
        if failed and outcome.error is not None:
            _error_fields(fields, outcome.error)
        if self._content:
            fields["prompt"] = _prompt_text(request)
            fields["completion"] = _clip("".join(call.parts or ()))
        self._emit(self._emit_err if failed else self._emit_ok, fields)

    def _log_retry(
        self, request: CompletionRequest, ctx: CallContext, attempt: int, error: BaseException, wait: float
    ) -> None:
        fields: dict[str, Any] = {
            "provider": ctx.info.name,
            "model": request.model or ctx.info.model,
            "streaming": ctx.streaming,
            "attempt": attempt,
            "wait_s": wait,
        }
        _error_fields(fields, error)
        self._emit(self._emit_debug, fields, RETRY_EVENT)

    @staticmethod
    def _emit(method: Any, fields: dict[str, Any], event: str = CALL_EVENT) -> None:
        try:  # noqa: SIM105 - try/except costs nothing when nothing is raised; suppress() does
            method(event, **fields)
        except Exception:  # a broken processor must not turn a finished call into a failure
            pass

    def __repr__(self) -> str:
        return f"LoggingMiddleware(level={_NAMES[self._level]!r}, error_level={_NAMES[self._err_level]!r})"


_STREAM_STATUS = {
    StreamEnd.COMPLETED: "ok",
    StreamEnd.FAILED: "error",
    StreamEnd.CLOSED: "closed",
    StreamEnd.CANCELLED: "cancelled",
}


class _StreamLog:
    """Per-call state of a logged stream: start, first-chunk time and (with log_content) the text."""

    __slots__ = ("ctx", "first", "middleware", "parts", "request", "size", "start")

    def __init__(self, middleware: LoggingMiddleware, request: CompletionRequest, ctx: CallContext,
                 start: float) -> None:
        self.middleware = middleware
        self.request = request
        self.ctx = ctx
        self.start = start
        self.first: float | None = None
        self.parts: list[str] | None = [] if middleware._content else None
        self.size = 0

    def on_chunk(self, chunk: StreamChunk) -> None:
        if self.first is None:
            self.first = self.middleware._clock.now()
        parts = self.parts
        if parts is not None and self.size <= _CONTENT_LIMIT and chunk.content:
            parts.append(chunk.content)
            self.size += len(chunk.content)

    def on_end(self, outcome: StreamOutcome) -> None:
        self.middleware._log_stream_end(self, outcome)


class _RetryLog:
    """The retry listener installed in ``ctx.state`` for one call; chains to one already there."""

    __slots__ = ("ctx", "middleware", "previous", "request")

    def __init__(self, middleware: LoggingMiddleware, request: CompletionRequest, ctx: CallContext,
                 previous: Any) -> None:
        self.middleware = middleware
        self.request = request
        self.ctx = ctx
        self.previous = previous

    def on_retry(self, attempt: int, error: BaseException, wait: float) -> None:
        self.middleware._log_retry(self.request, self.ctx, attempt, error, wait)
        if self.previous is not None:
            self.previous(attempt, error, wait)
