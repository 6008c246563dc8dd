"""The fake server's aiohttp side: routing, recording, fault injection and writing answers on the wire."""

from __future__ import annotations

import asyncio
import time
from typing import NoReturn
from urllib.parse import unquote

import msgspec
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from .faults import Endpoint, Fault
from .router import Router
from .state import RecordedRequest, ServerState
from .wire import Answer, Call, ErrorReply, Wire, estimate_tokens, split_chunks

__all__ = ["Running", "start_server"]

_NO_FAULT = Fault()
_MAX_BODY = 64 * 1024 * 1024
_decode = msgspec.json.decode


def all_wires(require_auth: bool, models: tuple[str, ...] | None) -> list[Wire]:
    from .anthropic import AnthropicWire
    from .bedrock import BedrockWire
    from .gemini import GeminiWire
    from .ollama import OllamaWire
    from .openai import AzureOpenAIWire, OpenAIWire

    classes: list[type[Wire]] = [
        OpenAIWire,
        AnthropicWire,
        AzureOpenAIWire,
        OllamaWire,
        GeminiWire,
        BedrockWire,
    ]
    return [cls(require_auth=require_auth, models=models) for cls in classes]


class _TrackingServer(web.Server):
    """aiohttp's low-level server, counting open connections and numbering them in accept order."""

    def __init__(self, engine: _Engine) -> None:
        super().__init__(engine.handle, request_factory=self._request, handler_cancellation=True, access_log=None)
        self._state = engine.state
        self.ids: dict[RequestHandler, int] = {}

    def _request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        # Bodies up to 64 MiB (aiohttp's default limit is 1 MiB; Anthropic accepts 32 MB).
        return web.BaseRequest(message, payload, protocol, writer, task, self._loop, client_max_size=_MAX_BODY)

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        state = self._state
        state.total_connections += 1
        state.open_connections += 1
        self.ids[handler] = state.total_connections

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        if self.ids.pop(handler, None) is not None:
            self._state.open_connections -= 1


class _Engine:
    __slots__ = ("router", "server", "state")

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.router = Router(all_wires(state.require_auth, state.models))
        self.server: _TrackingServer | None = None

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        state = self.state
        state.seq += 1
        seq = state.seq
        received = time.monotonic()
        body = await request.read()
        raw_path = request.raw_path.partition("?")[0]
        query = dict(request.query)
        headers = {k.lower(): v for k, v in request.headers.items()}
        conn = self.server.ids.get(request.protocol, 0) if self.server is not None else 0
        route = self.router.resolve(request.method, raw_path, headers)
        record = RecordedRequest(
            seq=seq,
            method=request.method,
            path=unquote(raw_path),
            raw_path=raw_path,
            query=query,
            headers=headers,
            body=body,
            received_at=received,
            connection_id=conn,
        )
        if state.record:
            state.records.append(record)
        if body:
            try:
                record.json = _decode(body)
            except msgspec.DecodeError:
                record.json = None
        if route is None:
            message = f"fake LLM server: no route for {request.method} {raw_path}"
            return web.json_response({"error": {"message": message, "type": "not_found"}}, status=404)
        wire = route.wire
        record.wire = wire.format
        record.endpoint = route.endpoint
        call = Call(endpoint=route.endpoint, seq=seq, params=route.params, query=query)
        refusal = wire.check(call, headers, query)
        if refusal is None and route.endpoint is Endpoint.CHAT:
            if record.json is None:
                refusal = ErrorReply(400, None, "The request body is not valid JSON.")
            else:
                refusal = wire.parse(call, record.json)
        record.model = call.model
        record.stream = call.stream
        if refusal is not None:
            err_body, err_headers = wire.error(call, refusal.status, refusal.error_type, refusal.message)
            err_headers.update(wire.response_headers(call))
            err_headers["Content-Type"] = "application/json"
            return web.Response(status=refusal.status, body=err_body, headers=err_headers)
        fault = state.take(wire.format, route.endpoint, raw_path, call.stream)
        record.fault = fault
        return await self._respond(request, wire, call, fault or _NO_FAULT)

    async def _respond(self, request: web.BaseRequest, wire: Wire, call: Call, fault: Fault) -> web.StreamResponse:
        delay = self.state.latency + fault.headers_delay
        if delay:
            await asyncio.sleep(delay)
        if fault.drop_before_response:
            return _abort(request)
        headers = wire.response_headers(call)
        _fault_headers(fault, headers)
        if fault.raw_body is not None:
            headers["Content-Type"] = fault.raw_content_type
            return await _send(request, fault.status_code or 200, fault.raw_body, headers, fault)
        if fault.is_error_status:
            status = fault.status_code or 500
            body, extra = wire.error(call, status, fault.error_type, fault.error_message)
            headers.update(extra)
            headers["Content-Type"] = "application/json"
            return await _send(request, status, body, headers, fault)
        if call.endpoint is Endpoint.MODELS:
            listed = wire.models(call)
            status = fault.status_code or 200
            if isinstance(listed, ErrorReply):
                status = listed.status
                listed, extra = wire.error(call, status, listed.error_type, listed.message)
                headers.update(extra)
            headers["Content-Type"] = "application/json"
            return await _send(request, status, listed, headers, fault)
        answer = self._answer(call, fault)
        if call.stream:
            return await _stream(request, wire, call, answer, headers, fault)
        body = wire.malformed_body(call) if fault.malformed_after_chunks is not None else wire.plain(call, answer)
        headers["Content-Type"] = "application/json"
        return await _send(request, fault.status_code or 200, body, headers, fault)

    def _answer(self, call: Call, fault: Fault) -> Answer:
        if fault.chunks is not None:
            chunks = fault.chunks
        else:
            content = fault.content
            if content is None:
                content = self.state.content if self.state.content is not None else f"echo: {call.prompt}"
            chunks = split_chunks(content)
        text = "".join(chunks)
        prompt_tokens = fault.prompt_tokens if fault.prompt_tokens is not None else estimate_tokens(call.prompt)
        completion = fault.completion_tokens if fault.completion_tokens is not None else estimate_tokens(text)
        return Answer(chunks, prompt_tokens, completion, fault.finish_reason or "stop")


def _fault_headers(fault: Fault, headers: dict[str, str]) -> None:
    if fault.retry_after is not None:
        value = fault.retry_after
        headers["Retry-After"] = value if isinstance(value, str) else f"{value:g}"
    if fault.retry_after_ms is not None:
        headers["retry-after-ms"] = str(fault.retry_after_ms)
    if fault.should_retry is not None:
        headers["x-should-retry"] = "true" if fault.should_retry else "false"
    for name, value in fault.headers:
        headers[name] = value


def _abort(request: web.BaseRequest) -> NoReturn:
    transport = request.transport
    if transport is not None:
        transport.abort()
    raise asyncio.CancelledError  # aiohttp's quiet path for a handler whose client went away


async def _send(
    request: web.BaseRequest, status: int, body: bytes, headers: dict[str, str], fault: Fault
) -> web.StreamResponse:
    if not fault.first_chunk_delay and fault.drop_after_chunks is None:
        return web.Response(status=status, body=body, headers=headers)
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = len(body)
    await response.prepare(request)
    if fault.first_chunk_delay:
        await asyncio.sleep(fault.first_chunk_delay)
    if fault.drop_after_chunks is not None:
        await response.write(body[: len(body) // 2])
        return _abort(request)
    await response.write(body)
    await response.write_eof()
    return response


async def _stream(
    request: web.BaseRequest, wire: Wire, call: Call, answer: Answer, headers: dict[str, str], fault: Fault
) -> web.StreamResponse:
    headers["Content-Type"] = wire.stream_media_type(call)
    headers["Cache-Control"] = "no-cache"
    response = web.StreamResponse(status=fault.status_code or 200, headers=headers)
    await response.prepare(request)
    drop_at, error_at, bad_at = fault.drop_after_chunks, fault.error_event_after_chunks, fault.malformed_after_chunks
    end_marker = fault.end_marker and drop_at is None and error_at is None
    frames = wire.stream(call, answer, end_marker=end_marker)
    if fault.first_chunk_delay:
        await asyncio.sleep(fault.first_chunk_delay)
    if not fault.chunk_delay and drop_at is None and error_at is None and bad_at is None:
        await response.write(b"".join(frames.preamble) + b"".join(frames.content) + b"".join(frames.tail))
        await response.write_eof()
        return response
    if frames.preamble:
        await response.write(b"".join(frames.preamble))
    count = len(frames.content)
    for i in range(count + 1):
        if i == bad_at:
            await response.write(wire.malformed_event(call, index=i))
        if i == drop_at:
            return _abort(request)
        if i == error_at:
            await response.write(wire.error_event(call, fault.error_type, fault.error_message, index=i))
            await response.write_eof()
            return response
        if i < count:
            if i and fault.chunk_delay:
                await asyncio.sleep(fault.chunk_delay)
            await response.write(frames.content[i])
    if frames.tail:
        await response.write(b"".join(frames.tail))
    await response.write_eof()
    return response


class Running:
    """A started server: its runner (to clean up) and the port it listens on."""

    __slots__ = ("engine", "port", "runner")

    def __init__(self, runner: web.BaseRunner, engine: _Engine, port: int) -> None:
        self.runner = runner
        self.engine = engine
        self.port = port

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_server(state: ServerState, host: str, port: int) -> Running:
    """Start serving ``state`` on ``host:port`` (0: a free port) in the running loop."""
    engine = _Engine(state)
    server = _TrackingServer(engine)
    engine.server = server
    runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=0.25)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    return Running(runner, engine, int(bound))
