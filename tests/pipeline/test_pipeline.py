"""Ordering, insertion, replacement and removal of middleware, checked with a recording middleware."""

from __future__ import annotations

from typing import Any

import pytest

from axonflow_llm import (
    CallContext,
    CompletionRequest,
    CompletionResponse,
    Layer,
    Middleware,
    Pipeline,
    ProviderInfo,
    Reply,
    hook,
)
from axonflow_llm.testing import ScriptedHandler

REQ = CompletionRequest(prompt="hi")


class Recorder(Middleware):
    """Appends its tag to a shared log on the way in and on the way out."""

    __slots__ = ("log", "tag")

    def __init__(self, next_handler: Any, /, *, tag: str, log: list[str]) -> None:
        super().__init__(next_handler)
        self.tag = tag
        self.log = log

    async def __call__(self, request: CompletionRequest, ctx: CallContext) -> Reply:
        self.log.append(f">{self.tag}")
        reply = await self.next(request, ctx)
        self.log.append(f"<{self.tag}")
        return reply


def ctx() -> CallContext:
    return CallContext(ProviderInfo(name="p", type="custom"))


def rec(tag: str, log: list[str]) -> Layer:
    return Layer(Recorder, name=tag, tag=tag, log=log)


async def test_first_layer_is_outermost() -> None:
    log: list[str] = []
    handler = Pipeline([rec("a", log), rec("b", log), rec("c", log)]).build(ScriptedHandler())
    await handler(REQ, ctx())
    assert log == [">a", ">b", ">c", "<c", "<b", "<a"]


async def test_insert_before_and_after_a_named_layer() -> None:
    log: list[str] = []
    p = Pipeline([rec("a", log), rec("c", log)])
    p.insert_before("c", rec("b", log)).insert_after("c", rec("d", log))
    assert p.names() == ["a", "b", "c", "d"]
    await p.build(ScriptedHandler())(REQ, ctx())
    assert log[:4] == [">a", ">b", ">c", ">d"]


async def test_insert_by_class_reference() -> None:
    log: list[str] = []
    p = Pipeline([Layer(Recorder, tag="x", log=log)])
    p.insert_before(Recorder, rec("first", log))
    assert p.names() == ["first", "Recorder"]


async def test_replace_and_remove() -> None:
    log: list[str] = []
    p = Pipeline([rec("a", log), rec("b", log), rec("c", log)])
    p.replace("b", rec("B", log)).remove("a")
    assert p.names() == ["B", "c"]
    await p.build(ScriptedHandler())(REQ, ctx())
    assert log == [">B", ">c", "<c", "<B"]


def test_unknown_reference_names_what_the_pipeline_has() -> None:
    p = Pipeline([rec("a", [])])
    with pytest.raises(LookupError, match=r"no middleware 'zzz'.*it has: a"):
        p.remove("zzz")


async def test_build_is_once_and_editing_afterwards_does_not_change_a_built_chain() -> None:
    log: list[str] = []
    p = Pipeline([rec("a", log)])
    handler = p.build(ScriptedHandler())
    p.append(rec("late", log))
    await handler(REQ, ctx())
    assert log == [">a", "<a"]


async def test_hook_turns_an_async_function_into_a_middleware() -> None:
    seen: list[int] = []

    async def count_attempts(request: CompletionRequest, c: CallContext, call_next: Any) -> Reply:
        seen.append(c.attempt)
        reply = await call_next(request, c)
        assert isinstance(reply, CompletionResponse)
        return CompletionResponse(content=reply.content.upper())

    p = Pipeline([hook(count_attempts)])
    assert p.names() == ["count_attempts"]
    assert repr(p) == "Pipeline([hook(count_attempts)])"
    reply = await p.build(ScriptedHandler())(REQ, ctx())
    assert isinstance(reply, CompletionResponse)
    assert reply.content == "OK"
    assert seen == [1]


def test_hook_rejects_a_sync_function() -> None:
    def not_async(request: Any, c: Any, n: Any) -> Any:
        return None

    with pytest.raises(TypeError, match="async function"):
        hook(not_async)


def test_repr_and_describe_show_order_and_option_names_but_never_values() -> None:
    p = Pipeline([Layer(Recorder, tag="SECRET-VALUE", log=[])])
    assert "SECRET-VALUE" not in repr(p)
    assert repr(p) == "Pipeline([Recorder(tag, log)])"
    assert p.describe().splitlines() == ["caller", "  -> Recorder(tag, log)", "  -> provider"]


def test_bad_options_fail_at_build_time_not_per_call() -> None:
    p = Pipeline([Layer(Recorder, tag="a")])  # log missing
    with pytest.raises(TypeError):
        p.build(ScriptedHandler())


def test_layer_needs_a_callable() -> None:
    with pytest.raises(TypeError, match="middleware class"):
        Layer("RetryMiddleware")  # type: ignore[arg-type]


def test_contains_len_iter_and_copy_are_independent() -> None:
    p = Pipeline([rec("a", [])])
    q = p.copy().append(rec("b", []))
    assert "a" in p and "b" not in p and "b" in q
    assert len(p) == 1 and len(q) == 2
    assert [layer.name for layer in q] == ["a", "b"]
    assert 42 not in p
