"""Run the async pipeline from synchronous code, even where an event loop is already running."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

__all__ = ["iterate_sync", "run_sync"]

T = TypeVar("T")


class _LoopThread:
    """One daemon thread running one event loop, started on first use and shared by every sync call.

    Always using the same loop keeps a provider's pooled ``httpx.AsyncClient`` on one loop across sync
    calls. (A provider should be used either from sync code or from one event loop of your own, not both.)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                thread = threading.Thread(target=run, name="axonflow-llm-sync", daemon=True)
                thread.start()
                ready.wait()
                self._loop, self._thread = loop, thread
            return self._loop

    def in_loop_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread


_runner = _LoopThread()


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on the shared background loop and return its result (or raise)."""
    if _runner.in_loop_thread():
        coro.close()
        raise RuntimeError(
            "a *_sync method was called from inside the async pipeline; await the async method instead"
        )
    future = asyncio.run_coroutine_threadsafe(coro, _runner.loop())
    try:
        return future.result()
    except BaseException:
        # KeyboardInterrupt while waiting: do not leave the call running behind the caller's back.
        future.cancel()
        raise


def iterate_sync(stream: AsyncIterator[T]) -> Iterator[T]:
    """Iterate an async iterator from sync code on the shared loop; closing the generator closes it."""

    async def next_item() -> tuple[bool, T | None]:
        try:
            return True, await stream.__anext__()
        except StopAsyncIteration:
            return False, None

    async def close() -> None:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()

    try:
        while True:
            more, item = run_sync(next_item())
            if not more:
                return
            yield item  # type: ignore[misc]
    finally:
        run_sync(close())
