"""LoggingMiddleware: one event per call with its fields, retries at debug, streams at their end, no secrets."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from axonflow_llm.middleware.cost import COST_STATE_KEY, CostMiddleware
from axonflow_llm.middleware.logging import RETRY_LISTENER_KEY, LoggingMiddleware
from axonflow_llm.middleware.pricing import ModelPrice
from axonflow_llm.middleware.retry import RetryMiddleware
from axonflow_llm.middleware.retry_config import RetryConfig
from axonflow_llm.pipeline.context import CallContext, ProviderInfo
from axonflow_llm.pipeline.errors import (
    APIConnectionError,
    RateLimitError,
    ServerError,
    StreamInterruptedError,
)
from axonflow_llm.pipeline.middleware import Handler, Middleware, Reply
from axonflow_llm.pipeline.models import CompletionRequest, CompletionResponse, UsageStats
from axonflow_llm.pipeline.stream import ChunkStream
from axonflow_llm.testing import FakeClock, ScriptedHandler, delay, response, stream

SECRET = "sk-test-SECRET123456"
USAGE = UsageStats(prompt_tokens=12, completion_tokens=30, total_tokens=42)
REQUEST = CompletionRequest(prompt="tell me a joke", model="m-1")


@pytest.fixture(autouse=True)
def fresh_structlog() -> Iterator[None]:
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


def ctx(*, streaming: bool = False) -> CallContext:
    return CallContext(ProviderInfo(name="acme", type="custom", model="default-model"), streaming=streaming)


def json_output(level: int = logging.DEBUG) -> io.StringIO:
    out = io.StringIO()
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.WriteLoggerFactory(out),
    )
    return out


def only_info() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))


class FakeRetry(Middleware):
    """Stands in for the retry middleware: on an error, calls the listener, counts the attempt, tries again."""

    def __init__(self, next_handler: Handler, /, *, waits: list[float]) -> None:
        super().__init__(next_handler)
        self.waits = waits

    async def __call__(self, request: CompletionRequest, ctx: CallContext) -> Reply:
        while True:
            try:
                return await self.next(request, ctx)
            except Exception as exc:
                if not self.waits:
                    raise
                listener = ctx.state.get("retry.on_retry")
                if listener is not None:
                    listener(ctx.attempt, exc, self.waits[0])
                self.waits.pop(0)
                ctx.attempt += 1


async def drain(reply: object) -> list[str]:
    assert isinstance(reply, ChunkStream)
    return [chunk.content async for chunk in reply]


# -- one event per call -------------------------------------------------------------------------------


async def test_a_call_logs_one_info_event_with_its_fields() -> None:
    clock = FakeClock()
    ok = response("ha", model="m-1-2025", usage=USAGE, cost=0.25, request_id="req_1")
    mw = LoggingMiddleware(ScriptedHandler(delay(2.5, ok), clock=clock), clock=clock)
    with capture_logs() as logs:
        reply = await mw(REQUEST, ctx())
    assert reply is ok
    assert logs == [
        {
            "event": "llm.call",
            "log_level": "info",
            "provider": "acme",
            "model": "m-1-2025",
            "streaming": False,
            "status": "ok",
            "attempts": 1,
            "latency_s": 2.5,
            "prompt_tokens": 12,
            "completion_tokens": 30,
            "total_tokens": 42,
            "cost_usd": 0.25,
            "finish_reason": "stop",
            "request_id": "req_1",
        }
    ]


async def test_the_model_falls_back_to_the_request_then_the_provider() -> None:
    mw = LoggingMiddleware(ScriptedHandler(then=response("x")))
    with capture_logs() as logs:
        await mw(REQUEST, ctx())
        await mw(CompletionRequest(prompt="x"), ctx())
    assert [e["model"] for e in logs] == ["m-1", "default-model"]


async def test_the_level_is_configurable() -> None:
    mw = LoggingMiddleware(ScriptedHandler(), level="debug")
    with capture_logs() as logs:
        await mw(REQUEST, ctx())
    assert [e["log_level"] for e in logs] == ["debug"]


async def test_an_error_is_logged_once_with_its_type_status_and_request_id_then_raised() -> None:
    clock = FakeClock()
    error = RateLimitError("slow down", status_code=429, provider="acme", request_id="req_9")
    mw = LoggingMiddleware(ScriptedHandler(delay(1.0, error), clock=clock), clock=clock)
    with capture_logs() as logs, pytest.raises(RateLimitError):
        await mw(REQUEST, ctx())
    assert logs == [
        {
            "event": "llm.call",
            "log_level": "error",
            "provider": "acme",
            "model": "m-1",
            "streaming": False,
            "status": "error",
            "attempts": 1,
            "latency_s": 1.0,
            "error_type": "RateLimitError",
            "error": "acme: HTTP 429: slow down (request id req_9)",
            "status_code": 429,
            "request_id": "req_9",
            "retryable": True,
        }
    ]


async def test_errors_can_be_logged_at_warning() -> None:
    mw = LoggingMiddleware(ScriptedHandler(ValueError("bad")), error_level="warning")
    with capture_logs() as logs, pytest.raises(ValueError, match="bad"):
        await mw(REQUEST, ctx())
    assert [(e["log_level"], e["error_type"], e["error"]) for e in logs] == [("warning", "ValueError", "bad")]
    assert "status_code" not in logs[0] and "retryable" not in logs[0]


async def test_a_cancelled_call_is_logged_as_cancelled_and_stays_cancelled() -> None:
    clock = FakeClock(auto_advance=False)
    mw = LoggingMiddleware(ScriptedHandler(delay(5, response()), clock=clock), clock=clock)
    with capture_logs() as logs:
        task = asyncio.create_task(mw(REQUEST, ctx()))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert [(e["status"], e["log_level"]) for e in logs] == [("cancelled", "info")]


async def test_attempts_is_the_attempt_count_after_the_call() -> None:
    handler = ScriptedHandler(ServerError("a", status_code=503), ServerError("b", status_code=502), response())
    mw = LoggingMiddleware(FakeRetry(handler, waits=[0.5, 1.0]))
    with capture_logs() as logs:
        await mw(REQUEST, ctx())
    assert [e["attempts"] for e in logs if e["event"] == "llm.call"] == [3]


# -- retries ------------------------------------------------------------------------------------------


async def test_each_retry_logs_a_debug_event_with_the_wait_chosen() -> None:
    handler = ScriptedHandler(
        ServerError("boom", status_code=503, request_id="r1"), APIConnectionError("refused"), response()
    )
    mw = LoggingMiddleware(FakeRetry(handler, waits=[0.5, 1.25]))
    with capture_logs() as logs:
        await mw(REQUEST, ctx())
    retries = [e for e in logs if e["event"] == "llm.retry"]
    assert retries == [
        {
            "event": "llm.retry",
            "log_level": "debug",
            "provider": "acme",
            "model": "m-1",
            "streaming": False,
            "attempt": 1,
            "wait_s": 0.5,
            "error_type": "ServerError",
            "error": "HTTP 503: boom (request id r1)",
            "status_code": 503,
            "request_id": "r1",
            "retryable": True,
        },
        {
            "event": "llm.retry",
            "log_level": "debug",
            "provider": "acme",
            "model": "m-1",
            "streaming": False,
            "attempt": 2,
            "wait_s": 1.25,
            "error_type": "APIConnectionError",
            "error": "refused",
            "retryable": True,
        },
    ]
    assert [e["event"] for e in logs] == ["llm.retry", "llm.retry", "llm.call"]


async def test_the_retry_listener_is_installed_only_when_debug_is_enabled() -> None:
    seen: list[CallContext] = []

    async def leaf(request: CompletionRequest, c: CallContext) -> Reply:
        seen.append(c)
        return response()

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    await LoggingMiddleware(leaf)(REQUEST, ctx())
    assert RETRY_LISTENER_KEY in seen[-1].state
    only_info()
    await LoggingMiddleware(leaf)(REQUEST, ctx())
    assert RETRY_LISTENER_KEY not in seen[-1].state


async def test_the_default_logger_stays_silent_until_the_application_configures_structlog(
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen: list[CallContext] = []

    async def leaf(request: CompletionRequest, c: CallContext) -> Reply:
        seen.append(c)
        return response()

    mw = LoggingMiddleware(leaf)
    await mw(REQUEST, ctx())
    assert capsys.readouterr().out == ""  # structlog's own default would print the event
    assert RETRY_LISTENER_KEY not in seen[-1].state
    out = json_output()
    await mw(REQUEST, ctx())  # the same middleware notices the configuration
    assert '"event": "llm.call"' in out.getvalue()


async def test_a_listener_already_in_place_is_still_called() -> None:
    calls: list[tuple[int, float]] = []
    c = ctx()
    c.state[RETRY_LISTENER_KEY] = lambda attempt, error, wait: calls.append((attempt, wait))
    mw = LoggingMiddleware(FakeRetry(ScriptedHandler(ServerError("x", status_code=500)), waits=[2.0]))
    with capture_logs() as logs:
        await mw(REQUEST, c)
    assert calls == [(1, 2.0)]
    assert [e["event"] for e in logs] == ["llm.retry", "llm.call"]


async def test_with_the_real_retry_middleware_waits_and_attempts_are_logged() -> None:
    clock = FakeClock()
    handler = ScriptedHandler(ServerError("x", status_code=503), response(), clock=clock)
    retry = RetryMiddleware(handler, config=RetryConfig(jitter=0), clock=clock)
    with capture_logs() as logs:
        await LoggingMiddleware(retry, clock=clock)(REQUEST, ctx())
    assert [(e["event"], e.get("wait_s"), e.get("attempts")) for e in logs] == [
        ("llm.retry", clock.sleeps[0], None),
        ("llm.call", None, 2),
    ]


# -- secrets and content ------------------------------------------------------------------------------


async def test_an_api_key_in_metadata_or_an_error_never_reaches_the_rendered_log() -> None:
    out = json_output()
    request = CompletionRequest(prompt="hi", metadata={"api_key": SECRET, "authorization": f"Bearer {SECRET}"})
    handler = ScriptedHandler(
        APIConnectionError(f"could not connect with key {SECRET}"),
        RateLimitError(f"quota for {SECRET}", status_code=429, body=f"key={SECRET}"),
        response(f"echo {SECRET}"),
        then=stream("a", SECRET),
    )
    mw = LoggingMiddleware(FakeRetry(handler, waits=[0.1, 0.2]))
    await mw(request, ctx())
    await drain(await mw(request, ctx(streaming=True)))
    with pytest.raises(ValueError, match="SECRET"):
        await LoggingMiddleware(ScriptedHandler(ValueError(f"oops {SECRET}")))(request, ctx())
    text = out.getvalue()
    assert text.count("llm.call") == 3 and text.count("llm.retry") == 2
    assert SECRET not in text and "SECRET123456" not in text
    assert "authorization" not in text.lower() and "metadata" not in text


async def test_the_prompt_and_completion_are_not_logged_unless_asked() -> None:
    mw = LoggingMiddleware(ScriptedHandler(then=response("the punchline")))
    with capture_logs() as logs:
        await mw(REQUEST, ctx())
    assert "prompt" not in logs[0] and "completion" not in logs[0]
    assert "tell me a joke" not in repr(logs) and "punchline" not in repr(logs)


async def test_with_log_content_the_prompt_and_completion_are_logged_truncated_and_scrubbed() -> None:
    request = CompletionRequest(system_prompt="be brief", prompt=f"x {SECRET} " + "y" * 5000)
    mw = LoggingMiddleware(ScriptedHandler(response("z" * 1500), then=stream("a", "b")), log_content=True)
    with capture_logs() as logs:
        await mw(request, ctx())
        await drain(await mw(request, ctx(streaming=True)))
    first, second = logs
    assert first["prompt"].startswith("system: be brief\nuser: x *** yyy")
    assert first["prompt"].endswith("more chars]") and len(first["prompt"]) < 1100
    assert first["completion"] == "z" * 1000 + "...[500 more chars]"
    assert second["completion"] == "ab"
    assert SECRET not in repr(logs)


# -- streams ------------------------------------------------------------------------------------------


async def test_an_exhausted_stream_logs_once_at_its_end_with_time_to_first_chunk() -> None:
    clock = FakeClock()
    handler = ScriptedHandler(
        delay(1.0, stream("a", "b", "c", usage=USAGE, chunk_delay=0.5, clock=clock)), clock=clock
    )
    mw = LoggingMiddleware(handler, clock=clock)
    c = ctx(streaming=True)
    with capture_logs() as logs:
        reply = await mw(REQUEST, c)
        assert logs == []
        c.state[COST_STATE_KEY] = 0.125  # as the cost middleware leaves it
        assert await drain(reply) == ["a", "b", "c"]
    assert logs == [
        {
            "event": "llm.call",
            "log_level": "info",
            "provider": "acme",
            "model": "m-1",
            "streaming": True,
            "status": "ok",
            "attempts": 1,
            "latency_s": 2.5,
            "time_to_first_chunk_s": 1.5,
            "chunks": 3,
            "prompt_tokens": 12,
            "completion_tokens": 30,
            "total_tokens": 42,
            "cost_usd": 0.125,
            "finish_reason": "stop",
        }
    ]


async def test_a_failed_stream_logs_one_error_event() -> None:
    error = StreamInterruptedError("connection dropped", provider="acme", chunks_received=1)
    mw = LoggingMiddleware(ScriptedHandler(stream("a", error=error)))
    with capture_logs() as logs:
        reply = await mw(REQUEST, ctx(streaming=True))
        with pytest.raises(StreamInterruptedError):
            await drain(reply)
    assert len(logs) == 1
    event = logs[0]
    assert (event["status"], event["log_level"], event["chunks"]) == ("error", "error", 1)
    assert (event["error_type"], event["error"]) == ("StreamInterruptedError", "acme: connection dropped")
    assert event["prompt_tokens"] is None and event["cost_usd"] is None


async def test_a_stream_closed_early_logs_closed_even_before_its_first_chunk() -> None:
    mw = LoggingMiddleware(ScriptedHandler(then=stream("a", "b", "c")))
    with capture_logs() as logs:
        reply = await mw(REQUEST, ctx(streaming=True))
        assert isinstance(reply, ChunkStream)
        await reply.__anext__()
        await reply.aclose()
        await reply.aclose()
        untouched = await mw(REQUEST, ctx(streaming=True))
        assert isinstance(untouched, ChunkStream)
        await untouched.aclose()
    assert [(e["status"], e["chunks"], e["time_to_first_chunk_s"] is None) for e in logs] == [
        ("closed", 1, False),
        ("closed", 0, True),
    ]


async def test_a_cancelled_stream_logs_cancelled() -> None:
    clock = FakeClock(auto_advance=False)
    mw = LoggingMiddleware(ScriptedHandler(stream("a", "b", chunk_delay=1.0, clock=clock)), clock=clock)
    with capture_logs() as logs:
        reply = await mw(REQUEST, ctx(streaming=True))
        task = asyncio.create_task(drain(reply))
        await clock.advance(1.0)  # the first chunk arrives; the task waits for the second
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert [(e["status"], e["chunks"], e["time_to_first_chunk_s"], e["log_level"]) for e in logs] == [
        ("cancelled", 1, 1.0, "info")
    ]


async def test_a_stream_that_fails_before_it_starts_logs_one_streaming_error() -> None:
    mw = LoggingMiddleware(ScriptedHandler(ServerError("down", status_code=500)))
    with capture_logs() as logs, pytest.raises(ServerError):
        await mw(REQUEST, ctx(streaming=True))
    assert [(e["status"], e["streaming"], e["status_code"]) for e in logs] == [("error", True, 500)]


async def test_with_the_cost_middleware_inside_a_stream_logs_its_cost() -> None:
    cost = CostMiddleware(
        ScriptedHandler(stream("a", usage=USAGE)),
        prices={"m-1": ModelPrice(input_per_1m=1_000_000, output_per_1m=0)},
    )
    with capture_logs() as logs:
        await drain(await LoggingMiddleware(cost)(REQUEST, ctx(streaming=True)))
    assert logs[0]["cost_usd"] == pytest.approx(12.0)


# -- levels and configuration -------------------------------------------------------------------------


async def test_a_disabled_level_logs_nothing_and_passes_the_reply_through_untouched() -> None:
    out = json_output(logging.CRITICAL)
    handler = ScriptedHandler(response("x"), stream("a"), ServerError("e", status_code=500))
    mw = LoggingMiddleware(handler)
    c = ctx()
    reply = await mw(REQUEST, c)
    assert isinstance(reply, CompletionResponse) and reply.content == "x"
    s = await mw(REQUEST, ctx(streaming=True))
    assert s is handler.streams[0]  # not wrapped
    with pytest.raises(ServerError):
        await mw(REQUEST, ctx())
    assert out.getvalue() == ""
    assert RETRY_LISTENER_KEY not in c.state


async def test_errors_are_still_logged_when_only_the_success_level_is_filtered_out() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    mw = LoggingMiddleware(ScriptedHandler(response(), ServerError("e", status_code=500)))
    with capture_logs() as logs:
        await mw(REQUEST, ctx())
        with pytest.raises(ServerError):
            await mw(REQUEST, ctx())
    assert [(e["status"], e["log_level"]) for e in logs] == [("error", "error")]


async def test_a_reconfiguration_after_construction_is_followed() -> None:
    mw = LoggingMiddleware(ScriptedHandler())
    with capture_logs() as logs:
        await mw(REQUEST, ctx())
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
        await mw(REQUEST, ctx())
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
        await mw(REQUEST, ctx())
    assert len(logs) == 2
    out = json_output(logging.INFO)  # new processors and logger factory
    await mw(REQUEST, ctx())
    assert json.loads(out.getvalue())["event"] == "llm.call"


async def test_a_logger_structlog_caches_on_first_use_keeps_its_first_configuration() -> None:
    out = json_output(logging.INFO)
    structlog.configure(cache_logger_on_first_use=True)
    mw = LoggingMiddleware(ScriptedHandler())
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    await mw(REQUEST, ctx())
    assert out.getvalue().count("llm.call") == 1


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_a_stdlib_logger_is_asked_is_enabled_for_on_every_call() -> None:
    std = logging.getLogger("axonflow_llm.test_stdlib")
    std.propagate = False
    std.setLevel(logging.WARNING)
    handler = ListHandler()
    std.addHandler(handler)
    structlog.configure(processors=[structlog.processors.KeyValueRenderer(key_order=["event", "status"])])
    mw = LoggingMiddleware(ScriptedHandler(), logger=std)
    try:
        await mw(REQUEST, ctx())
        assert handler.records == []
        std.setLevel(logging.INFO)
        await mw(REQUEST, ctx())
    finally:
        std.removeHandler(handler)
    assert [r.getMessage().split(" ")[:2] for r in handler.records] == [["event='llm.call'", "status='ok'"]]
    assert handler.records[0].levelno == logging.INFO


async def test_a_broken_processor_never_fails_the_call() -> None:
    def explode(logger: Any, name: str, event: Any) -> Any:
        raise RuntimeError("renderer broke")

    structlog.configure(processors=[explode])
    handler = ScriptedHandler(response("x"), stream("a"), ServerError("e", status_code=500))
    mw = LoggingMiddleware(handler)
    assert isinstance(await mw(REQUEST, ctx()), CompletionResponse)
    assert await drain(await mw(REQUEST, ctx(streaming=True))) == ["a"]
    with pytest.raises(ServerError):
        await mw(REQUEST, ctx())


def test_bad_options_are_rejected_with_the_fix() -> None:
    leaf = ScriptedHandler()
    with pytest.raises(ValueError, match="debug, info, warning, error, critical"):
        LoggingMiddleware(leaf, level="verbose")
    with pytest.raises(ValueError, match="error_level"):
        LoggingMiddleware(leaf, error_level=25)
    with pytest.raises(TypeError, match="structlog logger"):
        LoggingMiddleware(leaf, logger=42)
    with pytest.raises(TypeError, match="log_content"):
        LoggingMiddleware(leaf, log_content="yes")  # type: ignore[arg-type]
