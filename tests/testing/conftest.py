"""Fixtures for the fake server tests: a started server and an httpx client bound to it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from axonflow_llm.testing.fake_server import FakeLLMServer, fake_llm_server


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with fake_llm_server() as started:
        yield started


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """A sync httpx client (no TLS context to build: fast)."""
    with httpx.Client(timeout=5.0, verify=False) as sync_client:
        yield sync_client


@pytest.fixture
async def client(server: FakeLLMServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=5.0, verify=False) as http:
        yield http


def _sse_events(text: str) -> list[tuple[str | None, str]]:
    events: list[tuple[str | None, str]] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        name: str | None = None
        data: list[str] = []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
        events.append((name, "\n".join(data)))
    return events


def _sse_json(text: str) -> list[Any]:
    return [json.loads(data) for _, data in _sse_events(text) if data != "[DONE]"]


@pytest.fixture
def sse_events() -> Callable[[str], list[tuple[str | None, str]]]:
    """Parse an SSE body into (event name, data) pairs, as a client would."""
    return _sse_events


@pytest.fixture
def sse_json() -> Callable[[str], list[Any]]:
    """The JSON data of every event of an SSE body (``[DONE]`` excluded)."""
    return _sse_json
