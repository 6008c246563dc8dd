"""``httpx.Request``/``httpx.Response`` built from parts that are already normal, for the default send path.

httpx's constructors re-parse the URL and re-normalise every header on every call, and
``httpx.Request(headers=h)`` copies ``h`` again even when it is already ``httpx.Headers``. Building them
from ready parts (with one coroutine fewer on the way) took a small LLM call over the pooled aiohttp
transport from 143 to 122 us of client CPU at 64 in flight (docs/benchmarks.md). A provider
parses each URL once and normalises its common headers once (:func:`header_items`); :func:`build_request`
and :func:`build_response` then fill in the same attributes httpx's ``__init__`` would, from those parts.

The result must be indistinguishable from httpx's own objects. That is checked once per process, the
first time either is used, by building one object both ways and comparing every attribute; on any
difference (a future httpx that keeps other state) both functions fall back to httpx's public
constructors for the life of the process. ``tests/providers/test_httpx_objects.py`` checks the same
against the installed httpx.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import httpx

__all__ = [
    "HeaderItem",
    "build_request",
    "build_response",
    "fast_path_enabled",
    "header_item",
    "header_items",
    "items_of",
    "set_header",
]

#: One header as httpx keeps it: ``(raw name, lower-cased name, value)``, all bytes.
HeaderItem = tuple[bytes, bytes, bytes]

_new = object.__new__
_FAST: bool | None = None  # None: not checked yet


def header_items(headers: Mapping[str, str]) -> list[HeaderItem]:
    """Normalise ``headers`` once, exactly as ``httpx.Headers`` does (ASCII; ``UnicodeEncodeError``
    otherwise, as httpx raises)."""
    return list(httpx.Headers(headers)._list)


def header_item(name: str, value: str) -> HeaderItem:
    """One header as ``headers[name] = value`` stores it in ``httpx.Headers`` that have no fixed encoding
    (UTF-8), for :func:`set_header`."""
    raw = name.encode()
    return (raw, raw.lower(), value.encode())


def _headers(items: list[HeaderItem]) -> httpx.Headers:
    h: httpx.Headers = _new(httpx.Headers)
    h._list = items
    h._encoding = None
    return h


def build_request(
    method: str,
    url: httpx.URL,
    items: list[HeaderItem],
    content: bytes,
    extensions: dict[str, Any],
) -> httpx.Request:
    """The request ``httpx.Request(method, url, headers=items, stream=httpx.ByteStream(content),
    extensions=extensions)`` followed by ``read()`` would be. ``method`` is upper-case; ``items`` becomes
    the request's own header list (pass a fresh list) and holds ``Host`` and ``Content-Length`` already;
    ``extensions`` becomes the request's own dict (pass a fresh one)."""
    if not (_FAST or (_FAST is None and _check())):
        slow = httpx.Request(method, url, headers=[(k, v) for k, _, v in items],
                             stream=httpx.ByteStream(content), extensions=extensions)
        slow.read()
        return slow
    req: httpx.Request = _new(httpx.Request)
    req.method = method
    req.url = url
    req.headers = _headers(items)
    req.extensions = extensions
    req.stream = httpx.ByteStream(content)
    req._content = content
    return req


def build_response(
    status_code: int,
    raw_headers: Iterable[tuple[bytes, bytes]],
    request: httpx.Request,
    extensions: dict[str, Any],
    *,
    content: bytes | None = None,
    stream: httpx.AsyncByteStream | None = None,
) -> httpx.Response:
    """The response a transport returns, with ``request`` set. With ``content`` it is already read and
    closed (what ``await response.aread()`` leaves, for a body without ``Content-Encoding``); with
    ``stream`` it is unread, as ``httpx.Response(status_code, headers=, stream=)`` is."""
    if not (_FAST or (_FAST is None and _check())):
        return _public_response(status_code, raw_headers, request, extensions, content=content, stream=stream)
    r: httpx.Response = _new(httpx.Response)
    r.status_code = status_code
    r.headers = _headers([(k, k.lower(), v) for k, v in raw_headers])
    r._request = request
    r.next_request = None
    r.extensions = extensions
    r.history = []
    r.default_encoding = "utf-8"
    if content is None:
        assert stream is not None
        r._num_bytes_downloaded = 0
        r.stream = stream
        r.is_closed = False
        r.is_stream_consumed = False
    else:
        r._num_bytes_downloaded = len(content)
        r.stream = httpx.ByteStream(content)
        r._content = content
        r.is_closed = True
        r.is_stream_consumed = True
    return r


def _public_response(
    status_code: int,
    raw_headers: Iterable[tuple[bytes, bytes]],
    request: httpx.Request,
    extensions: dict[str, Any],
    *,
    content: bytes | None,
    stream: httpx.AsyncByteStream | None,
) -> httpx.Response:
    r = httpx.Response(status_code, headers=list(raw_headers), request=request, extensions=extensions,
                       stream=stream if content is None else httpx.ByteStream(content))
    if content is not None:
        r.read()
        r.is_closed = True
    return r


def set_header(headers: httpx.Headers, item: HeaderItem) -> None:
    """``headers[name] = value`` for an ``item`` made by :func:`header_item`: the same result, without
    re-encoding the name and value on every call (an auth applies one header to every request)."""
    if not (_FAST or (_FAST is None and _check())):
        headers[item[0].decode()] = item[2].decode()
        return
    items = headers._list
    key = item[1]
    for _, k, _ in items:
        if k == key:  # replace it, dropping duplicates: httpx's own way
            headers[item[0].decode()] = item[2].decode()
            return
    items.append(item)


def items_of(headers: httpx.Headers) -> list[HeaderItem]:
    """``headers`` as ``(raw name, lower-cased name, value)`` bytes, without copying on the fast path."""
    if _FAST or (_FAST is None and _check()):
        return headers._list
    return [(k, k.lower(), v) for k, v in headers.raw]


def fast_path_enabled() -> bool:
    """Whether :func:`build_request`/:func:`build_response` take the fast path with the installed httpx."""
    return bool(_FAST or (_FAST is None and _check()))


def _check() -> bool:
    """Build one request and two responses both ways; the fast path only if every attribute agrees."""
    global _FAST
    _FAST = True
    try:
        ok = _same_objects()
    except Exception:  # an httpx whose objects differ enough to fail outright
        ok = False
    _FAST = ok
    return ok


def _same_objects() -> bool:
    url = httpx.URL("https://example.test/v1/chat?x=1")
    headers = {"host": "example.test", "content-type": "application/json", "content-length": "2"}
    ext = {"timeout": {"connect": 1.0, "read": 2.0, "write": 3.0, "pool": 4.0}}
    fast_req = build_request("POST", url, header_items(headers), b"{}", dict(ext))
    slow_req = httpx.Request("POST", url, headers=headers, stream=httpx.ByteStream(b"{}"), extensions=dict(ext))
    slow_req.read()
    if not _same(fast_req, slow_req):
        return False
    raw = [(b"Content-Type", b"application/json"), (b"X-Request-Id", b"req_1")]
    resp_ext = {"http_version": b"HTTP/1.1", "reason_phrase": b"OK"}
    fast_read = build_response(200, raw, slow_req, dict(resp_ext), content=b"{}")
    slow_read = _public_response(200, raw, slow_req, dict(resp_ext), content=b"{}", stream=None)
    stream = httpx.ByteStream(b"{}")
    fast_open = build_response(200, raw, slow_req, dict(resp_ext), stream=stream)
    slow_open = _public_response(200, raw, slow_req, dict(resp_ext), content=None, stream=stream)
    return _same(fast_read, slow_read) and _same(fast_open, slow_open)


#: Made on first use by httpx itself (the content decoder of ``read()``), so it may be missing on one side.
_LAZY = frozenset({"_decoder"})


def _same(a: object, b: object) -> bool:
    va = {k: v for k, v in vars(a).items() if k not in _LAZY}
    vb = {k: v for k, v in vars(b).items() if k not in _LAZY}
    if va.keys() != vb.keys():
        return False
    for key, x in va.items():
        y = vb[key]
        if isinstance(x, httpx.Headers):
            # ``_encoding`` is a cache httpx fills on first use (``read()`` has used it on one side).
            if not isinstance(y, httpx.Headers) or x._list != y._list or x.encoding != y.encoding:
                return False
        elif isinstance(x, httpx.ByteStream):
            if type(y) is not type(x) or x._stream != y._stream:
                return False
        elif x != y and x is not y:
            return False
    return True
