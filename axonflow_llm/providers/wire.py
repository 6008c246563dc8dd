"""Wire helpers every HTTP provider shares: tool turns, the raw finish reason key, header checks, error excerpts."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from axonflow_llm.pipeline.errors import MalformedResponseError, redact, request_secrets
from axonflow_llm.pipeline.models import Message

__all__ = [
    "RAW_FINISH_REASON",
    "TOOL_RESULT_PREFIX",
    "excerpt",
    "malformed_payload",
    "scrub_error",
    "tool_as_user",
    "type_name",
]

_EXCERPT = 200
#: The ``CompletionResponse.metadata`` key under which every built-in provider keeps the finish reason
#: exactly as the service sent it (``"end_turn"``, ``"MAX_TOKENS"``, ``"length"``...).
RAW_FINISH_REASON = "raw_finish_reason"
#: A ``tool`` message is sent as a ``user`` turn whose text starts with this line (see :func:`tool_as_user`).
TOOL_RESULT_PREFIX = "Tool result:\n"
#: Headers that ``headers=`` / ``settings["headers"]`` may not set: credentials belong to the auth object
#: (applied per attempt, refreshed, scrubbed from errors), framing to the transport.
_RESERVED_HEADERS = frozenset({
    "authorization", "proxy-authorization", "x-api-key", "api-key", "x-goog-api-key", "x-amz-security-token",
    "x-amz-date", "host", "content-length", "transfer-encoding",
})


def excerpt(data: bytes | str, request: httpx.Request | None = None) -> str:
    """A short, redacted excerpt of a body, for error messages."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes | bytearray) else data
    return redact(text[:_EXCERPT], request_secrets(request) if request is not None else ())


def malformed_payload(
    api: str, provider: str, what: str, data: bytes | str, exc: Exception | None = None
) -> MalformedResponseError:
    """``what`` is not the shape ``api`` documents: the error, with a redacted excerpt (500 characters) of
    ``data`` and the decoder's complaint ``exc``. The ``*_wire`` modules bind ``api`` with ``partial``."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    detail = f": {exc}" if exc is not None else ""
    return MalformedResponseError(
        f"{what} is not the shape {api} documents{detail}", provider=provider, body=redact(text[:500])
    )


def scrub_error(exc: BaseException, response: httpx.Response) -> None:
    """Replace the credentials ``response``'s request carried with ``***`` in ``exc``'s message, body and
    args: an error the service reports inside a 2xx answer (a stream's error event) may echo them, and a
    key of no known shape (an Azure ``api-key``) is not caught by :func:`redact`'s patterns."""
    try:
        secrets = request_secrets(response.request)
    except RuntimeError:  # a response built by hand, without its request
        return
    if not secrets:
        return
    for attr in ("message", "body"):
        text = getattr(exc, attr, None)
        if isinstance(text, str) and text:
            setattr(exc, attr, redact(text, secrets))
    exc.args = tuple(redact(a, secrets) if isinstance(a, str) else a for a in exc.args)


def tool_as_user(message: Message) -> Message:
    """A ``tool`` message as every built-in provider sends it: a ``user`` turn whose text starts with
    :data:`TOOL_RESULT_PREFIX`; other roles are returned unchanged.

    ``Message`` carries no ``tool_call_id``, which OpenAI requires of a ``tool`` turn (a 400 without it)
    and which Anthropic, Gemini and Bedrock need for their tool-result blocks; so a tool's output travels
    as labelled user text, which every API accepts and every model reads.
    """
    if message.role != "tool":
        return message
    return Message(role="user", content=TOOL_RESULT_PREFIX + message.content)


def _checked_headers(name: str, headers: Mapping[str, str] | None) -> dict[str, str]:
    if not headers:
        return {}
    if not isinstance(headers, Mapping):
        raise TypeError(f"{name}: headers must be a mapping of header names to values, got {type_name(headers)}")
    out: dict[str, str] = {}
    for key, value in headers.items():
        low = str(key).lower()
        if low in _RESERVED_HEADERS:
            what = "the transport sets it" if low in ("host", "content-length", "transfer-encoding") else (
                "credentials go in api_key= (or auth=), which is applied to every attempt and scrubbed from "
                "errors"
            )
            raise ValueError(f"{name}: extra headers may not set {key!r}: {what}")
        out[low] = str(value)
    return out


def type_name(x: object) -> str:
    return type(x).__name__
