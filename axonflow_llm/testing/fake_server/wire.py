"""The contract each wire format implements for the fake server, and the helpers they share."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import msgspec

from .faults import Endpoint, WireFormat

__all__ = [
    "Answer",
    "Call",
    "ErrorReply",
    "Frames",
    "Wire",
    "encode",
    "estimate_tokens",
    "message_text",
    "sse",
    "split_chunks",
]

encode = msgspec.json.Encoder().encode

_WORDS = re.compile(r"\S+\s*|\s+")


def estimate_tokens(text: str) -> int:
    """A plausible token count: one per word, at least one."""
    return max(1, len(text.split()))


def split_chunks(content: str, max_chunks: int = 4) -> tuple[str, ...]:
    """Split ``content`` at word boundaries into at most ``max_chunks`` pieces that concatenate back to it."""
    words = _WORDS.findall(content)
    if not words:
        return (content,)
    if len(words) <= max_chunks:
        return tuple(words)
    size = -(-len(words) // max_chunks)
    return tuple("".join(words[i : i + size]) for i in range(0, len(words), size))


def message_text(content: Any) -> str:
    """The text of a message's content: a string, or a list of parts/blocks with a ``text``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str))
    return ""


def sse(data: bytes, event: str | None = None, *, crlf: bool = False) -> bytes:
    """One server-sent event (``crlf``: lines end with CRLF, as Google's servers send them)."""
    if crlf:
        return b"data: " + data + b"\r\n\r\n"
    if event is None:
        return b"data: " + data + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


class ErrorReply:
    """A request the real service would refuse (no credentials, missing field): status, type, message."""

    __slots__ = ("error_type", "message", "status")

    def __init__(self, status: int, error_type: str | None, message: str) -> None:
        self.status = status
        self.error_type = error_type
        self.message = message

    def __repr__(self) -> str:
        return f"ErrorReply({self.status}, {self.error_type!r}, {self.message!r})"


class Call:
    """What the server understood of one request: model, streamed or not, the prompt, and its number."""

    __slots__ = ("endpoint", "include_usage", "model", "params", "prompt", "query", "seq", "stream")

    def __init__(
        self,
        *,
        endpoint: Endpoint,
        seq: int,
        model: str | None = None,
        stream: bool = False,
        prompt: str = "",
        include_usage: bool = False,
        params: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.seq = seq
        self.model = model
        self.stream = stream
        self.prompt = prompt
        self.include_usage = include_usage
        self.params = params or {}
        self.query = query or {}


class Answer:
    """What the fake says: the chunks (their join is the content), usage and the neutral finish reason."""

    __slots__ = ("chunks", "completion_tokens", "content", "created", "finish_reason", "prompt_tokens")

    def __init__(self, chunks: tuple[str, ...], prompt_tokens: int, completion_tokens: int, finish_reason: str) -> None:
        self.chunks = chunks
        self.content = "".join(chunks)
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.finish_reason = finish_reason
        self.created = int(time.time())

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Frames:
    """A streamed answer on the wire: preamble events, one event per text chunk, and the tail."""

    __slots__ = ("content", "preamble", "tail")

    def __init__(self, preamble: list[bytes], content: list[bytes], tail: list[bytes]) -> None:
        self.preamble = preamble
        self.content = content
        self.tail = tail


class Wire:
    """One wire format: parses its requests and renders its answers, errors and stream events."""

    format: ClassVar[WireFormat]
    #: (method, path, endpoint); a path with ``(?P<name>...)`` groups is a regex over the raw path.
    routes: ClassVar[tuple[tuple[str, str, Endpoint], ...]] = ()
    stream_content_type: ClassVar[str] = "text/event-stream; charset=utf-8"
    #: Neutral finish reason -> this provider's value.
    finish_reasons: ClassVar[Mapping[str, str]] = {}

    #: The model ids this format lists by default (``FakeLLMServer(models=...)`` replaces them).
    default_models: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, require_auth: bool = True, models: tuple[str, ...] | None = None) -> None:
        self.require_auth = require_auth
        self.model_ids = models if models is not None else self.default_models
        #: With an explicit list, asking for one model that is not in it gets the provider's 404.
        self.strict_models = models is not None

    def claims(self, headers: Mapping[str, str]) -> bool:
        """Whether a request on a path this wire shares with another one is this wire's."""
        return False

    def stream_media_type(self, call: Call) -> str:
        """The Content-Type of a streamed answer."""
        return self.stream_content_type

    def finish(self, reason: str) -> str:
        return self.finish_reasons.get(reason, reason)

    def check(self, call: Call, headers: Mapping[str, str], query: Mapping[str, str]) -> ErrorReply | None:
        """Refuse the request as the real service would (missing credentials or version), else None."""
        return None

    def parse(self, call: Call, body: Any) -> ErrorReply | None:
        """Fill ``call`` from the JSON body; return an ErrorReply for a body the service would refuse."""
        return None

    def response_headers(self, call: Call) -> dict[str, str]:
        """Headers on every answer (request ids)."""
        return {}

    def plain(self, call: Call, answer: Answer) -> bytes:
        raise NotImplementedError

    def stream(self, call: Call, answer: Answer, *, end_marker: bool) -> Frames:
        raise NotImplementedError

    def models(self, call: Call) -> bytes | ErrorReply:
        """The model list (or one model); an ErrorReply for an unknown model."""
        raise NotImplementedError

    def error(
        self, call: Call, status: int, error_type: str | None, message: str | None
    ) -> tuple[bytes, dict[str, str]]:
        """An error response body in the provider's shape, and any headers it carries."""
        raise NotImplementedError

    def error_event(self, call: Call, error_type: str | None, message: str | None, *, index: int = 0) -> bytes:
        """The provider's error event inside a 200 stream, after ``index`` text chunks."""
        raise NotImplementedError

    def malformed_event(self, call: Call, *, index: int = 0) -> bytes:
        """A stream event whose data is not valid JSON, after ``index`` text chunks."""
        return sse(b'{"id": "broken", "choices": [')

    def malformed_body(self, call: Call) -> bytes:
        """A 200 body that is not valid JSON."""
        return b'{"id": "broken", "object": "truncated", "choices": [{"index": 0,'
