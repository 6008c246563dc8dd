"""Per-call overhead of each middleware and of the full default stack on a successful call.

Every case awaits the same leaf handler (it returns a prebuilt response) through one layer or a whole
stack, with a fresh ``CallContext`` per call as a provider makes it; the bare case awaits the leaf alone.
The peers a user would otherwise assemble (tenacity, aiolimiter, purgatory, structlog) are measured in the
same run when installed (``pip install -r benchmarks/requirements.txt``).

Run: ``python benchmarks/middleware_overhead.py [--calls 50000] [--repeats 7]``. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import structlog

from axonflow_llm import (
    APIKeyAuth,
    AuthMiddleware,
    CallContext,
    CircuitBreaker,
    CircuitBreakerMiddleware,
    CompletionRequest,
    CompletionResponse,
    CostMiddleware,
    Layer,
    LoggingMiddleware,
    Pipeline,
    ProviderInfo,
    RateLimiter,
    RateLimitMiddleware,
    RetryMiddleware,
    TimeoutMiddleware,
    UsageStats,
    default_pipeline,
)

REQUEST = CompletionRequest(prompt="Hello, world!", max_tokens=100, model="gpt-4o-mini")
RESPONSE = CompletionResponse(
    content="Hi there", model="gpt-4o-mini", usage=UsageStats(prompt_tokens=10, completion_tokens=20, total_tokens=30)
)
INFO = ProviderInfo(name="bench", type="custom", model="gpt-4o-mini")

Case = Callable[[], Awaitable[Any]]


async def leaf(request: CompletionRequest, ctx: CallContext) -> CompletionResponse:
    return RESPONSE


def quiet_logger(level: int = 50) -> Any:
    """A structlog logger that drops what the middleware would log: at CRITICAL (50) both its INFO call
    events and its ERROR failure events are filtered out; at WARNING (30) only the INFO events are."""
    return structlog.wrap_logger(
        structlog.PrintLogger(open(os.devnull, "w")),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        processors=[structlog.processors.JSONRenderer()],
    )


_ENCODER = msgspec.json.Encoder()


def _msgspec_dumps(obj: Any, **_: Any) -> bytes:
    return _ENCODER.encode(obj)


def json_logger(fast: bool = False) -> Any:
    """A structlog logger that renders every INFO event as one JSON line (to /dev/null).

    ``fast=False`` is structlog's documented production setup (log level, ISO timestamp, ``json.dumps``);
    ``fast=True`` the one docs/benchmarks.md recommends (epoch timestamp, msgspec's encoder, bytes out).
    """
    if fast:
        return structlog.wrap_logger(
            structlog.BytesLogger(open(os.devnull, "wb")),
            wrapper_class=structlog.make_filtering_bound_logger(20),
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(),
                structlog.processors.JSONRenderer(serializer=_msgspec_dumps),
            ],
        )
    return structlog.wrap_logger(
        structlog.PrintLogger(open(os.devnull, "w")),
        wrapper_class=structlog.make_filtering_bound_logger(20),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.JSONRenderer(),
        ],
    )


def through(*layers: Layer) -> Case:
    chain = Pipeline(layers).build(leaf)
    return lambda: chain(REQUEST, CallContext(INFO))


def stack(logger: Any) -> Case:
    """Every layer of the default order: logging, cost, retry, breaker, rate limit, timeout, auth."""
    pipeline = default_pipeline(
        auth=APIKeyAuth("sk-bench-not-a-real-key"),
        rate_limiter=RateLimiter(1e9, 1_000_000_000),
        timeout=30.0,
        logger=logger,
    )
    chain = pipeline.build(leaf)
    return lambda: chain(REQUEST, CallContext(INFO))


def builtin(logger: Any) -> Case:
    """What a built-in provider gets with no rate limit or timeout configured."""
    chain = default_pipeline(auth=APIKeyAuth("sk-bench-not-a-real-key"), logger=logger).build(leaf)
    return lambda: chain(REQUEST, CallContext(INFO))


def our_cases() -> dict[str, Case]:
    return {
        "bare handler": lambda: leaf(REQUEST, CallContext(INFO)),
        "AuthMiddleware": through(Layer(AuthMiddleware, auth=APIKeyAuth("sk-bench-not-a-real-key"))),
        "RateLimitMiddleware": through(Layer(RateLimitMiddleware, limiter=RateLimiter(1e9, 1_000_000_000))),
        "RetryMiddleware": through(Layer(RetryMiddleware)),
        "CircuitBreakerMiddleware": through(Layer(CircuitBreakerMiddleware, breaker=CircuitBreaker())),
        "TimeoutMiddleware": through(Layer(TimeoutMiddleware, timeout=30.0)),
        "CostMiddleware": through(Layer(CostMiddleware)),
        "LoggingMiddleware, filtered out": through(Layer(LoggingMiddleware, logger=quiet_logger())),
        "LoggingMiddleware, INFO filtered out, errors on": through(Layer(LoggingMiddleware, logger=quiet_logger(30))),
        "LoggingMiddleware, JSON line (json.dumps, ISO time)": through(Layer(LoggingMiddleware, logger=json_logger())),
        "LoggingMiddleware, JSON line (msgspec, epoch time)": through(
            Layer(LoggingMiddleware, logger=json_logger(fast=True))
        ),
        "built-in provider default (logging filtered out, cost, retry, breaker, auth)": builtin(quiet_logger()),
        "default stack, logging filtered out": stack(quiet_logger()),
        "default stack, INFO filtered out, errors on": stack(quiet_logger(30)),
        "default stack, one JSON line (json.dumps, ISO time)": stack(json_logger()),
        "default stack, one JSON line (msgspec, epoch time)": stack(json_logger(fast=True)),
    }


def peer_cases() -> dict[str, Case]:
    cases: dict[str, Case] = {}
    try:
        import tenacity
    except ImportError:
        tenacity = None  # type: ignore[assignment]
    try:
        import aiolimiter
    except ImportError:
        aiolimiter = None  # type: ignore[assignment]
    try:
        import purgatory
    except ImportError:
        purgatory = None  # type: ignore[assignment]

    if tenacity is not None:
        retrying = tenacity.retry(
            stop=tenacity.stop_after_attempt(4), wait=tenacity.wait_exponential_jitter(multiplier=0.1, max=30)
        )(leaf)
        cases["peer: tenacity @retry"] = lambda: retrying(REQUEST, CallContext(INFO))
    if aiolimiter is not None:
        limiter = aiolimiter.AsyncLimiter(1e9, 1)

        async def limited() -> Any:
            async with limiter:
                return await leaf(REQUEST, CallContext(INFO))

        cases["peer: aiolimiter"] = limited
    if purgatory is not None:
        breaker = purgatory.AsyncCircuitBreakerFactory()(circuit="bench")(leaf)
        cases["peer: purgatory breaker"] = lambda: breaker(REQUEST, CallContext(INFO))
    for label, log in (("json.dumps, ISO time", json_logger()), ("msgspec, epoch time", json_logger(fast=True))):

        async def logged(log: Any = log) -> Any:
            response = await leaf(REQUEST, CallContext(INFO))
            log.info("llm.call", provider="bench", model=response.model, attempts=1, status="ok",
                     latency_s=0.001, prompt_tokens=10, completion_tokens=20, total_tokens=30)
            return response

        cases[f"peer: structlog JSON event ({label})"] = logged
    if tenacity is not None and aiolimiter is not None and purgatory is not None:
        peer_limiter = aiolimiter.AsyncLimiter(1e9, 1)
        peer_log = json_logger()

        @tenacity.retry(stop=tenacity.stop_after_attempt(4),
                        wait=tenacity.wait_exponential_jitter(multiplier=0.1, max=30))
        @purgatory.AsyncCircuitBreakerFactory()(circuit="bench-stack")
        async def assembled(request: CompletionRequest) -> Any:
            async with peer_limiter:
                started = time.monotonic()
                response = await leaf(request, CallContext(INFO))
                peer_log.info("llm.call", provider="bench", model=response.model, attempts=1, status="ok",
                              latency_s=time.monotonic() - started, prompt_tokens=10, completion_tokens=20,
                              total_tokens=30)
                return response

        cases["peer stack: tenacity+aiolimiter+purgatory+structlog"] = lambda: assembled(REQUEST)
    return cases


async def measure(case: Case, calls: int, repeats: int) -> float:
    """Best (lowest) mean seconds per call over ``repeats`` runs of ``calls`` calls."""
    for _ in range(min(2000, calls)):  # warm up
        await case()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            await case()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


async def main(calls: int, repeats: int) -> None:
    cases = {**our_cases(), **peer_cases()}
    results = {name: await measure(case, calls, repeats) for name, case in cases.items()}
    bare = results["bare handler"]
    print(f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores; "
          f"{calls} calls x {repeats} repeats, best run\n")
    print("| case | µs per call | added over bare (µs) | ratio to bare |")
    print("|---|---:|---:|---:|")
    for name, seconds in results.items():
        print(f"| {name} | {seconds * 1e6:.2f} | {(seconds - bare) * 1e6:+.2f} | {seconds / bare:.1f}x |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.repeats))
