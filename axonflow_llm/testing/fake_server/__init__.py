"""A fault-injecting local LLM server speaking six wire protocols, for tests and benchmarks over real sockets.

Start it (a background thread with its own event loop; works from sync and async tests)::

    from axonflow_llm.testing.fake_server import FakeLLMServer, Fault, fake_llm_server

    with FakeLLMServer() as server:          # or: async with FakeLLMServer() as server:
        base = server.url                    # "http://127.0.0.1:54321"

    @pytest.fixture
    def llm_server():
        with fake_llm_server() as server:    # FakeLLMServer(**options), started then stopped
            yield server

    # or server = FakeLLMServer(); server.start(); ...; server.stop()
    # FakeLLMServer(content="fixed answer", latency=0.0, require_auth=True, models=None, record=True,
    #               host="127.0.0.1", port=0)

Endpoints (base URL = ``server.url``; ``stream`` in the body unless the path says it; health = model list):

- OpenAI: ``POST /v1/chat/completions`` (Bearer auth), ``GET /v1/models``.
- Azure OpenAI: the v1 API ``POST /openai/v1/chat/completions`` (deployment in ``model``),
  ``GET /openai/v1/models``; the dated API ``POST /openai/deployments/{dep}/chat/completions?api-version=..``,
  ``GET /openai/models?api-version=..`` (no api-version: 404 as Azure). ``api-key`` header or Bearer.
- Anthropic: ``POST /v1/messages`` (x-api-key + anthropic-version; model, max_tokens, messages required),
  ``GET /v1/models`` (with the Anthropic headers; without them it is OpenAI's).
- Ollama: ``POST /api/chat`` (``stream`` defaults to true: NDJSON), ``GET /api/tags``. No auth.
- Gemini: ``POST /v1beta/models/{model}:generateContent``, ``:streamGenerateContent?alt=sse`` (SSE with CRLF;
  without ``alt=sse`` a streamed JSON array), ``GET /v1beta/models[/{model}]``. x-goog-api-key or ``?key=``.
- Bedrock: ``POST /model/{modelId}/converse`` and ``/converse-stream`` (AWS event stream; the id may be
  percent-encoded), ``GET /foundation-models[/{modelId}]``. Any Authorization header (SigV4 not verified).

By default every completion answers ``"echo: <last user text>"`` (or ``content``), streamed as up to 4
word-boundary chunks, with usage = one token per word, finish reason "stop" and request-id headers
(x-request-id, apim-request-id, request-id, x-amzn-RequestId). Missing credentials get the provider's own
refusal (401; Gemini and Bedrock 403; ``require_auth=False`` turns that off); a body the service would refuse
gets its 400. Every error body is in the provider's own shape.

Script faults for the next matching requests (FIFO; unmatched requests get the default). ``after_chunks``
counts text chunks; a stream's preamble (role chunk, message_start/content_block_start/ping, messageStart)
always goes first. In-stream error events: OpenAI/Azure ``data: {"error": {...}}``, Anthropic ``event: error``
``overloaded_error``, Ollama ``{"error": ...}`` line, Gemini ``{"error": {"status": "UNAVAILABLE"}}`` chunk,
Bedrock ``:message-type: exception`` ``throttlingException`` (override with ``error_type=``)::

    server.enqueue(Fault.status(429, retry_after=1))            # error body in the provider's shape
    server.enqueue(Fault.status(529, error_type="overloaded_error", retry_after_ms=200, should_retry=True))
    server.enqueue(Fault.latency(0.05))                          # before the response headers
    server.enqueue(Fault.stall(before_first=0.1, between=0.05))  # after headers / between text chunks
    server.enqueue(Fault.drop_connection())                      # abort the TCP connection, no response
    server.enqueue(Fault.drop_mid_stream(after_chunks=2))        # abort after 2 text chunks
    server.enqueue(Fault.malformed_json())                       # 200 body / stream event not JSON
    server.enqueue(Fault.error_event(after_chunks=1))            # overloaded_error, {"error":..}, exception
    server.enqueue(Fault.missing_end_marker())                   # no [DONE] / message_stop / done:true ...
    server.enqueue(Fault.answer("hi", chunks=["h", "i"], prompt_tokens=3, completion_tokens=2,
                                finish_reason="length"))
    server.enqueue(Fault.raw(b"not json", status=200, content_type="text/plain"))
    server.enqueue(Fault.latency(0.05) | Fault.status(503))      # combine with |
    server.enqueue(Fault.status(500), wire="anthropic", stream=True, times=2)  # filters
    server.enqueue(Fault.status(503), endpoint="models")         # health checks (default: completions only)
    server.set_default(Fault.answer("always this"))              # when nothing queued matches
    server.pending                                               # queued servings not yet used

What happened::

    server.requests          # [RecordedRequest]: method, path, raw_path, query, headers (lower-case),
                             # body (bytes), json, wire, endpoint, model, stream, fault, connection_id
    server.last_request
    server.open_connections  # open TCP connections now; total_connections: accepted since start
    await server.wait_for_open_connections(0, within=1.0)       # after closing a client pool (async)
    server.wait_for_open_connections_sync(0)                     # the same from sync code
    server.reset()           # clears the queue, the default fault and the records

Command line (for benchmarks): ``python -m axonflow_llm.testing.fake_server --port 8080 [--host 127.0.0.1]
[--latency 0.0] [--content TEXT] [--no-auth] [--record]`` prints the URL and serves until interrupted (it
keeps no request records unless ``--record``).

Uses aiohttp (a dependency of axonflow-llm); it is imported only when a server starts.
"""

from .faults import Endpoint, Fault, WireFormat
from .server import FakeLLMServer, fake_llm_server
from .state import RecordedRequest

__all__ = ["Endpoint", "FakeLLMServer", "Fault", "RecordedRequest", "WireFormat", "fake_llm_server"]
