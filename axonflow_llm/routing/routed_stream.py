"""RoutedStream: what ``router.stream(request)`` returns, a stream that carries its routing decision."""

from __future__ import annotations

from typing import Any

from ..pipeline.context import CallContext
from ..pipeline.provider import StreamResponse
from ..pipeline.stream import ChunkStream

__all__ = ["RoutedStream"]


class RoutedStream(StreamResponse):
    """What ``router.stream(request)`` returns: a :class:`StreamResponse` whose ``route`` is the routing
    decision (``None`` until the first chunk has been fetched, i.e. until the decision is final)."""

    __slots__ = ("_ctx",)

    def __init__(self, gen: ChunkStream, ctx: CallContext) -> None:
        super().__init__(gen)
        self._ctx = ctx

    @property
    def route(self) -> dict[str, Any] | None:
        route: dict[str, Any] | None = self._ctx.state.get("route")
        return route
