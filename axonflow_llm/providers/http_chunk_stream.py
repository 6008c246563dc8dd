"""HTTPChunkStream: one streamed HTTP answer made safe (errors mapped, end marker checked, response closed)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import httpx

from axonflow_llm.pipeline.errors import AxonFlowError, StreamInterruptedError, redact
from axonflow_llm.pipeline.models import StreamChunk

from .wire import scrub_error

if TYPE_CHECKING:
    from .http_provider import HTTPProvider

__all__ = ["HTTPChunkStream"]

#: How long to keep reading after the end marker so the connection goes back to the pool warm. The tail
#: (the chunked body's terminator) normally follows the marker at once; a proxy that holds the body open
#: delays the last chunk by at most this, and its connection is closed instead of pooled.
_DRAIN_SECONDS = 0.25


class HTTPChunkStream:
    """The :class:`ChunkStream` of one streamed HTTP answer: the provider's ``parse_stream`` generator, made
    safe. It maps transport errors (before the first chunk: ``APIConnectionError``/``APITimeoutError``;
    after: ``StreamInterruptedError`` with the cause chained), raises ``StreamInterruptedError`` if the body
    ends without a ``done`` chunk, reads the few bytes after the end marker so the connection is reused,
    and closes the HTTP response however the stream ends.
    """

    __slots__ = ("_chunks", "_closed", "_gen", "_provider", "_response")

    def __init__(
        self, provider: HTTPProvider, response: httpx.Response, gen: AsyncIterator[StreamChunk]
    ) -> None:
        self._provider = provider
        self._response = response
        self._gen = gen
        self._chunks = 0
        self._closed = False

    @property
    def response(self) -> httpx.Response:
        return self._response

    @property
    def chunks_received(self) -> int:
        return self._chunks

    def __aiter__(self) -> HTTPChunkStream:
        return self

    async def __anext__(self) -> StreamChunk:
        if self._closed:
            raise StopAsyncIteration
        provider = self._provider
        try:
            chunk = await self._gen.__anext__()
        except StopAsyncIteration:
            await self.aclose()
            raise StreamInterruptedError(
                f"the stream ended without the end marker after {self._chunks} chunks",
                provider=provider.name, chunks_received=self._chunks,
            ) from None
        except provider._transport_errors as exc:
            await self.aclose()
            if self._chunks == 0:
                raise provider._connection_error(exc, after=" before the first chunk") from exc
            raise StreamInterruptedError(
                f"the stream broke after {self._chunks} chunks ({type(exc).__name__}: {redact(str(exc))})",
                provider=provider.name, chunks_received=self._chunks,
            ) from exc
        except AxonFlowError as exc:  # an error event in the stream: it may echo the credentials
            await self.aclose()
            scrub_error(exc, self._response)
            raise
        except BaseException:
            await self.aclose()
            raise
        self._chunks += 1
        if chunk.done:
            await self._drain()
        return chunk

    async def _drain(self) -> None:
        """After the end marker: read to the end of the body (bounded) so the connection stays pooled."""
        try:
            # The answer is complete: a broken or stalled tail only costs the connection.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_DRAIN_SECONDS):
                    async for _ in self._gen:
                        pass
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            aclose = getattr(self._gen, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):  # closing must not mask the real outcome
                    await aclose()
        finally:
            with contextlib.suppress(Exception):
                await self._response.aclose()

    def __repr__(self) -> str:
        return (
            f"HTTPChunkStream(provider={self._provider.name!r}, chunks={self._chunks}, closed={self._closed})"
        )
