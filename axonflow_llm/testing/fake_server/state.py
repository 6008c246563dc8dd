"""What the fake server remembers: the fault queue, the default behaviour, recorded requests, connections."""

from __future__ import annotations

import threading
from typing import Any

from .faults import Endpoint, Fault, WireFormat

__all__ = ["RecordedRequest", "ServerState"]


class RecordedRequest:
    """One request the fake server received, exactly as it came.

    ``path`` is percent-decoded, ``raw_path`` as sent (both without the query); ``query`` maps each
    parameter to its (last) value; ``headers`` maps lower-cased names to values; ``body`` is the raw bytes
    and ``json`` the parsed body (None if absent or not JSON). ``wire`` / ``endpoint`` say how it was routed
    (None: no route), ``model`` and ``stream`` what was understood, ``fault`` the scripted behaviour it got
    (None: the default), ``connection_id`` which TCP connection it came on (1, 2, ... in accept order),
    ``received_at`` the server's ``time.monotonic()`` when it arrived.
    """

    __slots__ = (
        "body",
        "connection_id",
        "endpoint",
        "fault",
        "headers",
        "json",
        "method",
        "model",
        "path",
        "query",
        "raw_path",
        "received_at",
        "seq",
        "stream",
        "wire",
    )

    def __init__(
        self,
        *,
        seq: int,
        method: str,
        path: str,
        raw_path: str,
        query: dict[str, str],
        headers: dict[str, str],
        body: bytes,
        received_at: float,
        connection_id: int,
        json: Any = None,
        wire: WireFormat | None = None,
        endpoint: Endpoint | None = None,
        model: str | None = None,
        stream: bool = False,
        fault: Fault | None = None,
    ) -> None:
        self.seq = seq
        self.method = method
        self.path = path
        self.raw_path = raw_path
        self.query = query
        self.headers = headers
        self.body = body
        self.received_at = received_at
        self.connection_id = connection_id
        self.json = json
        self.wire = wire
        self.endpoint = endpoint
        self.model = model
        self.stream = stream
        self.fault = fault

    def __repr__(self) -> str:  # no headers: they carry (fake) credentials
        wire = self.wire.value if self.wire else None
        return (
            f"RecordedRequest(#{self.seq} {self.method} {self.path} wire={wire} model={self.model!r} "
            f"stream={self.stream})"
        )


class _Scripted:
    __slots__ = ("endpoint", "fault", "path", "remaining", "stream", "wire")

    def __init__(
        self,
        fault: Fault,
        wire: WireFormat | None,
        endpoint: Endpoint | None,
        path: str | None,
        stream: bool | None,
        times: int,
    ) -> None:
        self.fault = fault
        self.wire = wire
        self.endpoint = endpoint
        self.path = path
        self.stream = stream
        self.remaining = times

    def matches(self, wire: WireFormat, endpoint: Endpoint, path: str, stream: bool) -> bool:
        return (
            (self.wire is None or self.wire is wire)
            and (self.endpoint is None or self.endpoint is endpoint)
            and (self.path is None or self.path in path)
            and (self.stream is None or self.stream is stream)
        )


class ServerState:
    """Shared between the test's thread and the server's loop: guarded by a lock where it mutates."""

    def __init__(
        self,
        *,
        content: str | None,
        latency: float,
        require_auth: bool,
        models: tuple[str, ...] | None,
        record: bool = True,
    ) -> None:
        self.content = content
        self.record = record
        self.models = models
        self.latency = latency
        self.require_auth = require_auth
        self.default: Fault | None = None
        self.records: list[RecordedRequest] = []
        self.open_connections = 0
        self.total_connections = 0
        self.seq = 0
        self._queue: list[_Scripted] = []
        self._lock = threading.Lock()

    def enqueue(
        self,
        fault: Fault,
        *,
        wire: WireFormat | None,
        endpoint: Endpoint | None,
        path: str | None,
        stream: bool | None,
        times: int,
    ) -> None:
        with self._lock:
            self._queue.append(_Scripted(fault, wire, endpoint, path, stream, times))

    def take(self, wire: WireFormat, endpoint: Endpoint, path: str, stream: bool) -> Fault | None:
        """The first queued fault matching this request (consumed), else the default for completions."""
        if self._queue:
            with self._lock:
                for i, item in enumerate(self._queue):
                    if item.matches(wire, endpoint, path, stream):
                        item.remaining -= 1
                        if item.remaining <= 0:
                            del self._queue[i]
                        return item.fault
        return self.default if endpoint is Endpoint.CHAT else None

    @property
    def pending(self) -> int:
        with self._lock:
            return sum(item.remaining for item in self._queue)

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self.records.clear()
            self.default = None
