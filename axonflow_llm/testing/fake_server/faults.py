"""Scripted behaviours for the fake LLM server: what the next matching request gets instead of the default."""

from __future__ import annotations

import datetime
import email.utils
import enum
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

__all__ = ["Endpoint", "Fault", "WireFormat"]


class WireFormat(enum.StrEnum):
    """The wire protocol a request spoke (values match ``ProviderType``)."""

    OPENAI = "openai"
    AZURE_OPENAI = "azure-openai"
    ANTHROPIC = "anthropic"
    OLLAMA = "ollama"
    GEMINI = "gemini"
    BEDROCK = "bedrock"

    def __str__(self) -> str:
        return self.value


class Endpoint(enum.StrEnum):
    """What a request asked for: a completion (plain or streamed) or the model list (health checks)."""

    CHAT = "chat"
    MODELS = "models"

    def __str__(self) -> str:
        return self.value


class Fault(msgspec.Struct, frozen=True, kw_only=True):
    """One scripted behaviour for one request. Build it with the class methods and combine with ``|``::

        Fault.status(429, retry_after=1)
        Fault.latency(0.05) | Fault.drop_mid_stream(after_chunks=2)

    Every field left at its default means "behave normally". Chunk counts (``after_chunks``) count the
    chunks that carry answer text; the stream's preamble (OpenAI's role chunk, Azure's prompt-filter chunk,
    Anthropic's message_start/content_block_start/ping, Bedrock's messageStart) always goes before them.
    Delays are real seconds.

    Fields:
        status_code: answer with this HTTP status; >= 400 sends an error body in the provider's own shape.
        error_type / error_message: the provider error type (``rate_limit_error``, ``RESOURCE_EXHAUSTED``,
            ``ThrottlingException``...) and message for an error status or an in-stream error event.
        headers: extra response headers (name, value) pairs.
        retry_after: a ``Retry-After`` header: seconds (number) or any string (an HTTP-date).
        retry_after_ms / should_retry: ``retry-after-ms`` and ``x-should-retry`` headers.
        headers_delay: seconds before the response headers are sent.
        first_chunk_delay: seconds after the headers before anything of the body (streamed or plain).
        chunk_delay: seconds before each text chunk after the first.
        drop_before_response: abort the TCP connection without answering.
        drop_after_chunks: abort the connection after this many text chunks (plain answers: mid-body).
        malformed_after_chunks: send a body (plain) or a stream event that is not valid JSON; for streams,
            after this many text chunks (the stream then continues normally).
        error_event_after_chunks: after this many text chunks send the provider's in-stream error event,
            then end the stream (without its end marker).
        end_marker: False ends the stream cleanly but without its end marker ([DONE], message_stop,
            "done": true, finishReason, messageStop/metadata).
        content / chunks: the answer text, or its exact chunks (their concatenation is the content).
        prompt_tokens / completion_tokens: the usage reported.
        finish_reason: "stop", "length", "content_filter" or "tool_calls" (mapped to the provider's
            own value), or any other string, sent verbatim.
        raw_body / raw_content_type: send exactly these bytes as the body (with ``status_code`` or 200).
    """

    status_code: int | None = None
    error_type: str | None = None
    error_message: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    retry_after: float | str | None = None
    retry_after_ms: int | None = None
    should_retry: bool | None = None
    headers_delay: float = 0.0
    first_chunk_delay: float = 0.0
    chunk_delay: float = 0.0
    drop_before_response: bool = False
    drop_after_chunks: int | None = None
    malformed_after_chunks: int | None = None
    error_event_after_chunks: int | None = None
    end_marker: bool = True
    content: str | None = None
    chunks: tuple[str, ...] | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    raw_body: bytes | None = None
    raw_content_type: str = "application/json"

    def __post_init__(self) -> None:
        if self.status_code is not None and not 100 <= self.status_code <= 599:
            raise ValueError(f"status_code must be an HTTP status (100..599), got {self.status_code}")
        for name in ("headers_delay", "first_chunk_delay", "chunk_delay"):
            value = getattr(self, name)
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0 seconds, got {value!r}")
        for name in ("drop_after_chunks", "malformed_after_chunks", "error_event_after_chunks"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0 (a number of text chunks), got {value}")
        if self.chunks is not None and self.content is not None and "".join(self.chunks) != self.content:
            raise ValueError("content and chunks disagree: give one, or make content == ''.join(chunks)")

    def __or__(self, other: Fault) -> Fault:
        """Combine two faults: every field ``other`` sets (away from its default) wins."""
        if not isinstance(other, Fault):
            return NotImplemented
        changes: dict[str, Any] = {}
        for name, default in _DEFAULTS.items():
            value = getattr(other, name)
            if value != default:
                changes[name] = value
        return msgspec.structs.replace(self, **changes)

    @property
    def is_error_status(self) -> bool:
        return self.status_code is not None and self.status_code >= 400

    # --- constructors -----------------------------------------------------------------------------

    @classmethod
    def status(
        cls,
        code: int,
        *,
        retry_after: float | str | datetime.datetime | None = None,
        retry_after_ms: int | None = None,
        should_retry: bool | None = None,
        error_type: str | None = None,
        message: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Fault:
        """Answer ``code`` with the provider's error body (its own shape) and the given headers.

        ``retry_after``: seconds, a string sent as is, or an aware datetime (sent as an HTTP-date).
        """
        if isinstance(retry_after, datetime.datetime):
            if retry_after.tzinfo is None:
                raise ValueError("retry_after datetime must be timezone-aware, e.g. datetime.now(timezone.utc)")
            retry_after = email.utils.format_datetime(retry_after.astimezone(datetime.UTC), usegmt=True)
        return cls(
            status_code=code,
            retry_after=retry_after,
            retry_after_ms=retry_after_ms,
            should_retry=should_retry,
            error_type=error_type,
            error_message=message,
            headers=_pairs(headers),
        )

    @classmethod
    def latency(cls, seconds: float) -> Fault:
        """Wait ``seconds`` before sending the response headers."""
        return cls(headers_delay=seconds)

    @classmethod
    def stall(cls, *, before_first: float = 0.0, between: float = 0.0) -> Fault:
        """Stall after the headers before the first byte of the body, and/or between text chunks."""
        return cls(first_chunk_delay=before_first, chunk_delay=between)

    @classmethod
    def drop_connection(cls) -> Fault:
        """Abort the TCP connection after reading the request, before any response."""
        return cls(drop_before_response=True)

    @classmethod
    def drop_mid_stream(cls, *, after_chunks: int = 1) -> Fault:
        """Abort the connection after ``after_chunks`` text chunks (a plain answer: after half its body)."""
        return cls(drop_after_chunks=after_chunks)

    @classmethod
    def malformed_json(cls, *, after_chunks: int = 0) -> Fault:
        """A 200 whose body (plain) or one stream event (after ``after_chunks`` chunks) is not JSON."""
        return cls(malformed_after_chunks=after_chunks)

    @classmethod
    def error_event(cls, *, after_chunks: int = 1, error_type: str | None = None, message: str | None = None) -> Fault:
        """Inside a 200 stream, send the provider's error event after ``after_chunks`` text chunks."""
        return cls(error_event_after_chunks=after_chunks, error_type=error_type, error_message=message)

    @classmethod
    def missing_end_marker(cls) -> Fault:
        """End the stream cleanly but without the provider's end marker."""
        return cls(end_marker=False)

    @classmethod
    def answer(
        cls,
        content: str | None = None,
        *,
        chunks: Sequence[str] | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        finish_reason: str | None = None,
    ) -> Fault:
        """A normal answer with this content (or these exact chunks), usage and finish reason."""
        return cls(
            content=content,
            chunks=tuple(chunks) if chunks is not None else None,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            finish_reason=finish_reason,
        )

    @classmethod
    def raw(
        cls,
        body: bytes | str,
        *,
        status: int = 200,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> Fault:
        """Send exactly ``body`` (any shape, valid or not) with this status and content type."""
        data = body.encode() if isinstance(body, str) else bytes(body)
        return cls(status_code=status, raw_body=data, raw_content_type=content_type, headers=_pairs(headers))


def _pairs(headers: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    return tuple((str(k), str(v)) for k, v in headers.items()) if headers else ()


_DEFAULTS: dict[str, Any] = {name: getattr(Fault(), name) for name in Fault.__struct_fields__}
