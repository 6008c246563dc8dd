"""FakeLLMServer: a real local HTTP server speaking six LLM wire protocols, with scripted faults."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .faults import Endpoint, Fault, WireFormat
from .state import RecordedRequest, ServerState

if TYPE_CHECKING:
    from .app import Running

__all__ = ["FakeLLMServer", "fake_llm_server"]

_START_TIMEOUT = 10.0


def _load_app() -> Any:
    try:
        from . import app
    except ImportError as exc:
        if (exc.name or "").startswith("aiohttp"):
            raise ImportError(
                "FakeLLMServer needs aiohttp, a dependency of axonflow-llm that is missing here: "
                "pip install aiohttp"
            ) from exc
        raise
    return app


class FakeLLMServer:
    """A fault-injecting LLM server on ``127.0.0.1``, in a background thread with its own event loop.

    It answers OpenAI, Azure OpenAI, Anthropic, Ollama, Gemini and Bedrock requests (plain and streamed)
    with a deterministic echo (``"echo: <last user text>"``) or ``content``, and serves scripted
    ``Fault`` objects to the next matching requests. Works from sync and async tests alike; see the
    package docstring for the full usage.

    Args:
        host / port: where to listen (port 0: a free port; read ``url`` after ``start()``).
        content: the default answer text instead of the echo.
        latency: seconds added before every response's headers.
        require_auth: refuse requests without the provider's credentials/version headers, as the real
            services do (the values are never checked).
        models: the model ids every model list answers with (in each format's shape; Ollama adds
            ``:latest``), and then the only ids a one-model lookup (Gemini, Bedrock) finds. By default each
            format lists a few well-known ids, including the SDK providers' default models, and a one-model
            lookup finds any id.
        record: keep every request in ``requests`` (False for long benchmark runs: memory stays flat).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        content: str | None = None,
        latency: float = 0.0,
        require_auth: bool = True,
        models: Sequence[str] | None = None,
        record: bool = True,
    ) -> None:
        if not latency >= 0:
            raise ValueError(f"latency must be >= 0 seconds, got {latency!r}")
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be 0..65535 (0 picks a free port), got {port}")
        self.host = host
        self._port = port
        if isinstance(models, str):
            raise TypeError('models must be a list of model ids, not one string: models=["gpt-4o-mini"]')
        self._state = ServerState(
            content=content,
            latency=latency,
            require_auth=require_auth,
            models=tuple(models) if models is not None else None,
            record=record,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._running: Running | None = None

    # --- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> FakeLLMServer:
        """Start serving in a background thread; returns once the port is bound."""
        if self._thread is not None:
            raise RuntimeError("FakeLLMServer is already started; call stop() first")
        app = _load_app()
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                running = loop.run_until_complete(app.start_server(self._state, self.host, self._port))
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            self._running = running
            ready.set()
            try:
                loop.run_forever()
            finally:
                _shut_down(loop, running)

        thread = threading.Thread(target=run, name="FakeLLMServer", daemon=True)
        thread.start()
        if not ready.wait(_START_TIMEOUT):
            raise RuntimeError(f"FakeLLMServer did not start within {_START_TIMEOUT} s")
        if failure:
            thread.join()
            raise RuntimeError(f"FakeLLMServer could not listen on {self.host}:{self._port}") from failure[0]
        self._loop, self._thread = loop, thread
        return self

    def stop(self) -> None:
        """Close every connection and stop the server (idempotent)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(_START_TIMEOUT)
        self._loop = self._thread = None
        self._running = None

    async def serve_forever(self, on_ready: Callable[[str], None] | None = None) -> None:
        """Serve in the running event loop (no thread) until cancelled; ``on_ready(url)`` once bound."""
        app = _load_app()
        self._running = await app.start_server(self._state, self.host, self._port)
        try:
            if on_ready is not None:
                on_ready(self.url)
            await asyncio.Event().wait()
        finally:
            running, self._running = self._running, None
            if running is not None:
                await running.stop()

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> FakeLLMServer:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)

    # --- where -----------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._running is None:
            raise RuntimeError("FakeLLMServer is not started: call start() or use it as a context manager")
        return self._running.port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``, no trailing slash."""
        return f"http://{self.host}:{self.port}"

    # --- scripting ---------------------------------------------------------------------------------

    def enqueue(
        self,
        *faults: Fault,
        wire: WireFormat | str | None = None,
        endpoint: Endpoint | str | None = Endpoint.CHAT,
        path: str | None = None,
        stream: bool | None = None,
        times: int = 1,
    ) -> None:
        """Queue ``faults`` (FIFO) for the next requests that match every filter given.

        ``wire``: only requests of this format; ``endpoint``: "chat" (default: completions, plain or
        streamed), "models" (model list / health checks) or None (any); ``path``: only paths containing
        this text; ``stream``: only streamed (True) or only plain (False) requests; ``times``: serve each
        fault to this many matching requests.
        """
        if not faults:
            raise TypeError("enqueue() needs at least one Fault, e.g. enqueue(Fault.status(429))")
        for fault in faults:
            if not isinstance(fault, Fault):
                raise TypeError(f"enqueue() takes Fault objects, got {type(fault).__name__}")
        if times < 1:
            raise ValueError(f"times must be >= 1, got {times}")
        wire_format = _coerce(WireFormat, wire, "wire")
        ep = _coerce(Endpoint, endpoint, "endpoint")
        for fault in faults:
            self._state.enqueue(fault, wire=wire_format, endpoint=ep, path=path, stream=stream, times=times)

    def set_default(self, fault: Fault | None) -> None:
        """The behaviour of every completion request no queued fault matches (None: the normal echo)."""
        if fault is not None and not isinstance(fault, Fault):
            raise TypeError(f"set_default() takes a Fault or None, got {type(fault).__name__}")
        self._state.default = fault

    @property
    def pending(self) -> int:
        """How many queued fault servings are still waiting for a matching request."""
        return self._state.pending

    def reset(self) -> None:
        """Forget queued faults, the default fault and recorded requests (connections stay as they are)."""
        self._state.reset()

    # --- what happened -----------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received since start (or ``reset()``), oldest first (a copy)."""
        return list(self._state.records)

    @property
    def last_request(self) -> RecordedRequest:
        records = self._state.records
        if not records:
            raise LookupError("FakeLLMServer has received no request yet")
        return records[-1]

    @property
    def open_connections(self) -> int:
        """TCP connections open right now (a client pool that leaks keeps this above zero)."""
        return self._state.open_connections

    @property
    def total_connections(self) -> int:
        """TCP connections accepted since start (keep-alive reuse keeps this low)."""
        return self._state.total_connections

    async def wait_for_open_connections(self, count: int = 0, *, within: float = 1.0) -> int:
        """Wait (without blocking the loop) up to ``within`` seconds until ``open_connections <= count``.

        Returns the final count (the client side closes asynchronously, so check after a pool closes).
        """
        deadline = time.monotonic() + within
        for _ in range(1_000_000):
            if self._state.open_connections <= count or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.005)
        return self._state.open_connections

    def wait_for_open_connections_sync(self, count: int = 0, *, within: float = 1.0) -> int:
        """Blocking form of ``wait_for_open_connections`` for sync tests."""
        deadline = time.monotonic() + within
        while self._state.open_connections > count and time.monotonic() < deadline:
            time.sleep(0.005)
        return self._state.open_connections

    def __repr__(self) -> str:
        where = self.url if self._running is not None else "not started"
        return f"FakeLLMServer({where}, requests={len(self._state.records)}, pending={self.pending})"


def _shut_down(loop: asyncio.AbstractEventLoop, running: Running) -> None:
    """Close the server, cancel whatever still runs (stalled handlers), and close the loop, like asyncio.run.

    Errors while tearing down are dropped: the server is going away and the test has its answer already.
    """
    with contextlib.suppress(Exception):
        loop.run_until_complete(running.stop())
    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        with contextlib.suppress(Exception):
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    with contextlib.suppress(Exception):
        loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


def _coerce(enum_cls: Any, value: Any, name: str) -> Any:
    if value is None or isinstance(value, enum_cls):
        return value
    try:
        return enum_cls(value)
    except ValueError:
        choices = ", ".join(repr(m.value) for m in enum_cls)
        raise ValueError(f"{name} must be one of {choices} or None, got {value!r}") from None


@contextlib.contextmanager
def fake_llm_server(**options: Any) -> Iterator[FakeLLMServer]:
    """A started ``FakeLLMServer(**options)``, stopped afterwards. For a pytest fixture::

    @pytest.fixture
    def llm_server():
        with fake_llm_server() as server:
            yield server
    """
    server = FakeLLMServer(**options)
    server.start()
    try:
        yield server
    finally:
        server.stop()
