"""The fast httpx objects are the objects httpx itself would build, or the public constructors are used."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from axonflow_llm.pipeline.errors import request_id_from_header_items, request_id_from_headers
from axonflow_llm.pipeline.models import CompletionRequest
from axonflow_llm.pipeline.pipeline import Pipeline
from axonflow_llm.providers import httpx_objects
from axonflow_llm.providers.httpx_objects import (
    build_request,
    build_response,
    fast_path_enabled,
    header_item,
    header_items,
    items_of,
    set_header,
)
from axonflow_llm.providers.openai import OpenAIProvider
from axonflow_llm.testing import FakeLLMServer


def state(obj: object) -> dict[str, Any]:
    """Every attribute, with headers as their item list and byte streams as their bytes."""
    out: dict[str, Any] = {}
    for key, value in vars(obj).items():
        if key == "_decoder":  # made lazily by httpx's read()
            continue
        if isinstance(value, httpx.Headers):
            value = (value.raw, value.encoding)
        elif isinstance(value, httpx.ByteStream):
            value = ("ByteStream", b"".join(value))
        out[key] = value
    return out


@pytest.fixture
def slow_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(httpx_objects, "_FAST", False)


def test_the_installed_httpx_takes_the_fast_path() -> None:
    assert fast_path_enabled()


@pytest.mark.parametrize(("method", "content"), [("POST", b'{"a": 1}'), ("GET", b"")])
def test_a_request_is_the_one_httpx_builds(method: str, content: bytes) -> None:
    url = httpx.URL("https://api.example.test/v1/chat/completions?api-version=1")
    common = {"host": "api.example.test", "user-agent": "axonflow-llm/1", "content-type": "application/json"}
    if content:
        common["content-length"] = str(len(content))
    ext = {"timeout": {"connect": 5.0, "read": 600.0, "write": 600.0, "pool": 600.0}}
    fast = build_request(method, url, header_items(common), content, dict(ext))
    slow = httpx.Request(method, url, headers=common, stream=httpx.ByteStream(content), extensions=dict(ext))
    slow.read()
    assert state(fast) == state(slow)
    assert fast.content == content and fast.headers["Host"] == "api.example.test"
    fast.headers["x-extra"] = "1"  # the fast object is a working httpx.Request
    assert fast.headers.raw[-1] == (b"x-extra", b"1")


def test_a_read_response_is_what_httpx_leaves_after_aread() -> None:
    request = httpx.Request("POST", "https://api.example.test/v1")
    raw = [(b"Content-Type", b"application/json"), (b"X-Request-Id", b"req_1"), (b"Set-Cookie", b"a"),
           (b"Set-Cookie", b"b")]
    ext = {"http_version": b"HTTP/1.1", "reason_phrase": b"OK"}
    fast = build_response(200, raw, request, dict(ext), content=b'{"ok": true}')
    slow = httpx.Response(200, headers=raw, request=request, extensions=dict(ext),
                          stream=httpx.ByteStream(b'{"ok": true}'))
    slow.read()
    assert state(fast) == state(slow)
    assert fast.json() == {"ok": True} and fast.text == '{"ok": true}'
    assert fast.headers.get_list("set-cookie") == ["a", "b"] and fast.request is request
    assert fast.is_success and fast.is_closed and fast.is_stream_consumed


async def test_an_unread_response_streams_as_httpx_does() -> None:
    request = httpx.Request("GET", "https://api.example.test/v1")
    raw = [(b"Content-Type", b"text/event-stream")]
    fast = build_response(200, raw, request, {}, stream=httpx.ByteStream(b"data: 1\n\n"))
    slow = httpx.Response(200, headers=raw, request=request, stream=httpx.ByteStream(b"data: 1\n\n"))
    assert state(fast) == state(slow)
    assert [line async for line in fast.aiter_lines()] == ["data: 1", ""]
    assert fast.is_stream_consumed


def test_set_header_matches_httpx_setitem() -> None:
    for existing in ([], [("Authorization", "old")], [("authorization", "a"), ("Accept", "x"), ("AUTHORIZATION", "b")]):
        fast = httpx.Headers(existing)
        slow = httpx.Headers(existing)
        set_header(fast, header_item("Authorization", "Bearer k"))
        slow["Authorization"] = "Bearer k"
        assert fast.raw == slow.raw, existing


def test_items_of_gives_the_lowered_names() -> None:
    h = httpx.Headers({"X-Request-Id": "r1", "Accept": "a"})
    assert [(k, v) for _, k, v in items_of(h)] == [(b"x-request-id", b"r1"), (b"accept", b"a")]


def test_request_id_reads_header_items_as_headers() -> None:
    h = httpx.Headers([("Request-Id", "second"), ("X-Request-Id", "first"), ("apim-request-id", "third")])
    assert request_id_from_header_items(items_of(h)) == request_id_from_headers(h) == "first"
    assert request_id_from_header_items(items_of(httpx.Headers({"a": "b"}))) is None


@pytest.mark.usefixtures("slow_path")
def test_without_the_fast_path_the_public_constructors_build_the_same() -> None:
    url = httpx.URL("https://api.example.test/v1")
    items = header_items({"host": "api.example.test", "content-length": "2"})
    req = build_request("POST", url, items, b"{}", {})
    assert type(req) is httpx.Request and req.content == b"{}" and req.headers["content-length"] == "2"
    resp = build_response(200, [(b"X-Request-Id", b"r")], req, {}, content=b"{}")
    assert resp.json() == {} and resp.is_closed and resp.request is req
    h = httpx.Headers({"a": "b"})
    set_header(h, header_item("Authorization", "Bearer k"))
    assert h["authorization"] == "Bearer k"
    assert [(k, v) for _, k, v in items_of(h)] == [(b"a", b"b"), (b"authorization", b"Bearer k")]


def test_an_httpx_with_other_object_state_turns_the_fast_path_off(monkeypatch: pytest.MonkeyPatch) -> None:
    original = httpx.Response.__init__

    def init(self: httpx.Response, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.new_state = 1  # type: ignore[attr-defined]  # what a future httpx might keep

    monkeypatch.setattr(httpx.Response, "__init__", init)
    monkeypatch.setattr(httpx_objects, "_FAST", None)
    assert not fast_path_enabled()
    resp = build_response(200, [], httpx.Request("GET", "https://x.test"), {}, content=b"")
    assert resp.new_state == 1  # type: ignore[attr-defined]  # built by httpx's own constructor


async def test_a_provider_on_its_own_pool_works_on_the_public_constructors(
    slow_path: None, fake_server: FakeLLMServer
) -> None:
    p = OpenAIProvider(api_key="sk-test", endpoint=fake_server.url + "/v1", pipeline=Pipeline())
    async with asyncio.timeout(10):
        result = await p.complete(CompletionRequest(prompt="hello"))
        chunks = [c async for c in p.stream(CompletionRequest(prompt="hi there"))]
        await p.aclose()
    assert result.content == "echo: hello" and result.request_id
    assert "".join(c.content for c in chunks) == "echo: hi there"
    sent = fake_server.requests[0]
    assert sent.headers["authorization"] == "Bearer sk-test"
    assert int(sent.headers["content-length"]) == len(sent.body)
