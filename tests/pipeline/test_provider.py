"""BaseProvider: calls through the pipeline, sync variants, passive health, closing."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from axonflow_llm import (
    AxonFlowError,
    BadRequestError,
    BaseProvider,
    CallContext,
    Capability,
    CircuitOpenError,
    CompletionRequest,
    CompletionResponse,
    HealthStatus,
    Pipeline,
    Provider,
    ProviderType,
    RateLimitExceededError,
    Reply,
    ServerError,
    hook,
)
from axonflow_llm.testing import ScriptedHandler, stream

REQ = CompletionRequest(prompt="hi")


class Scripted(BaseProvider):
    def __init__(self, handler: ScriptedHandler, pipeline: Pipeline | None = None) -> None:
        super().__init__(name="scripted", type=ProviderType.CUSTOM, model="m1", pipeline=pipeline,
                         capabilities=[Capability.CHAT, Capability.STREAMING])
        self.handler = handler

    async def send(self, request: CompletionRequest, ctx: CallContext) -> Reply:
        return await self.handler(request, ctx)


def test_base_provider_satisfies_the_provider_protocol() -> None:
    p = Scripted(ScriptedHandler())
    assert isinstance(p, Provider)
    assert p.name == "scripted" and p.type is ProviderType.CUSTOM and p.model == "m1"
    assert p.supports_streaming()
    assert p.capabilities() == [Capability.CHAT, Capability.STREAMING]
    assert p.estimate_cost(REQ) is None
    assert repr(p) == "Scripted(name='scripted', type='custom', model='m1')"


async def test_complete_passes_a_fresh_context_each_call() -> None:
    handler = ScriptedHandler()
    p = Scripted(handler)
    await p.complete(REQ)
    await p.complete(REQ)
    assert handler.calls[0].ctx is not handler.calls[1].ctx
    assert handler.calls[0].ctx.model == "m1"
    assert handler.calls[0].streaming is False


async def test_complete_rejects_a_stream_reply_and_closes_it() -> None:
    handler = ScriptedHandler(stream("a"))

    async def force_stream(request: CompletionRequest, ctx: CallContext, call_next: Any) -> Reply:
        ctx.streaming = True
        return await call_next(request, ctx)

    p = Scripted(handler, Pipeline([hook(force_stream)]))
    with pytest.raises(TypeError, match="must return a CompletionResponse"):
        await p.complete(REQ)
    assert handler.streams[0].closed


def test_complete_sync_without_a_loop() -> None:
    p = Scripted(ScriptedHandler())
    assert p.complete_sync(REQ).content == "ok"


async def test_complete_sync_works_inside_a_running_loop_like_a_notebook() -> None:
    p = Scripted(ScriptedHandler())
    # Called from a coroutine, with this loop running: the call runs on the background loop.
    assert p.complete_sync(REQ).content == "ok"


def test_stream_sync_yields_chunks_and_closing_early_closes_the_stream() -> None:
    handler = ScriptedHandler(stream("a", "b"), stream("x", "y", "z"))
    p = Scripted(handler)
    assert [c.content for c in p.stream_sync(REQ)] == ["a", "b"]
    gen = p.stream_sync(REQ)
    assert next(gen).content == "x"
    gen.close()
    assert handler.streams[1].closed


def test_sync_errors_propagate() -> None:
    p = Scripted(ScriptedHandler(ServerError("down", status_code=503)))
    with pytest.raises(ServerError):
        p.complete_sync(REQ)


async def test_passive_health_follows_consecutive_failures() -> None:
    err = ServerError("down", status_code=503)
    p = Scripted(ScriptedHandler(err, err, err, then=CompletionResponse(content="ok")))
    assert (await p.health_check()).status is HealthStatus.HEALTHY
    for expected in (HealthStatus.DEGRADED, HealthStatus.DEGRADED, HealthStatus.UNHEALTHY):
        with pytest.raises(ServerError):
            await p.complete(REQ)
        assert (await p.health_check()).status is expected
    await p.complete(REQ)
    result = await p.health_check()
    assert result.status is HealthStatus.HEALTHY and result.consecutive_failures == 0


async def test_passive_health_ignores_errors_that_say_nothing_about_the_provider() -> None:
    bad_request = BadRequestError("bad", status_code=400)
    refused = RateLimitExceededError("local limiter", retry_after=1.0)
    p = Scripted(ScriptedHandler(bad_request, refused, bad_request, CircuitOpenError("open")))
    for _ in range(4):
        with pytest.raises(AxonFlowError):
            await p.complete(REQ)
    result = await p.health_check()
    assert result.status is HealthStatus.HEALTHY and result.consecutive_failures == 0


async def test_a_closed_provider_refuses_calls() -> None:
    async with Scripted(ScriptedHandler()) as p:
        pass
    with pytest.raises(RuntimeError, match="closed"):
        await p.complete(REQ)
    await p.aclose()  # idempotent


async def test_use_pipeline_rebuilds_once() -> None:
    seen: list[str] = []

    async def tag(request: CompletionRequest, ctx: CallContext, call_next: Any) -> Reply:
        seen.append("tag")
        return await call_next(request, ctx)

    p = Scripted(ScriptedHandler())
    copy = p.pipeline.append(hook(tag))
    await p.complete(REQ)
    assert seen == []  # the property is a copy
    p.use_pipeline(copy)
    await p.complete(REQ)
    assert seen == ["tag"]
    assert p.pipeline.names() == ["tag"]


def test_sync_from_the_background_loop_is_refused() -> None:
    p = Scripted(ScriptedHandler())
    errors: list[BaseException] = []

    async def inner(request: CompletionRequest, ctx: CallContext, call_next: Any) -> Reply:
        try:
            p.complete_sync(REQ)
        except RuntimeError as exc:
            errors.append(exc)
        return await call_next(request, ctx)

    p.use_pipeline(Pipeline([hook(inner)]))
    p.complete_sync(REQ)
    assert errors and "await the async method" in str(errors[0])
    assert threading.active_count() >= 1
    assert asyncio.iscoroutinefunction(p.complete)
