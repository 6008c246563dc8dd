"""Loopback HTTP benchmark: a provider with its full default pipeline beside raw httpx, raw aiohttp and openai.

Usage::

    .venv/bin/python benchmarks/http_loopback.py [--requests 3000] [--sequential 1000] [--concurrency 64]
                                                 [--rounds 3] [--server fake|minimal]

The server runs in a separate process (``python -m axonflow_llm.testing.fake_server``; ``--server minimal``
uses a bare aiohttp handler in this file instead, to take the server's own cost out of the wall-clock
numbers). Every client sends the same OpenAI chat-completion request and decodes the answer. For each
client it measures, on a warm pool:

* one request at a time: wall-clock microseconds per request;
* ``--concurrency`` requests in flight: requests per second and the *client process's* CPU time per
  request (``time.process_time``; the server's CPU is not counted), which is what this SDK controls.

Each figure is the best of ``--rounds`` rounds; the clients take turns in every round. The SDK's
pipeline logs every call at info level through structlog; the benchmark configures structlog to drop
info (level warning), so the filtered-out event costs what it costs users who do the same.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

API_KEY = "sk-benchmark-not-a-real-key"
MODEL = "gpt-4o-mini"
PAYLOAD = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello"}], "max_completion_tokens": 16}
HEADERS = {"authorization": f"Bearer {API_KEY}", "content-type": "application/json", "accept": "application/json"}

# --- servers ---------------------------------------------------------------------------------------

MINIMAL_ANSWER = json.dumps({
    "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": MODEL,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "echo: Say hello"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5},
}).encode()


def serve_minimal(port: int) -> None:
    """A bare aiohttp server answering every POST with one fixed chat completion."""
    from aiohttp import web

    async def chat(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=MINIMAL_ANSWER, content_type="application/json",
                            headers={"x-request-id": "req_1"})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    web.run_app(app, host="127.0.0.1", port=port, print=lambda *_: print(f"http://127.0.0.1:{port}", flush=True),
                access_log=None)


def start_server(kind: str) -> tuple[subprocess.Popen[str], str]:
    if kind == "fake":
        cmd = [sys.executable, "-m", "axonflow_llm.testing.fake_server", "--port", "0", "--no-auth"]
    else:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [sys.executable, __file__, "--serve-minimal", str(port)]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("http"):
        proc.kill()
        raise RuntimeError(f"the server did not start: {line!r}")
    return proc, line.split()[-1].rstrip("/")


# --- clients ---------------------------------------------------------------------------------------


@dataclass
class Client:
    name: str
    call: Callable[[], Awaitable[Any]]
    close: Callable[[], Awaitable[Any]]


@dataclass
class Result:
    name: str
    seq_us: list[float] = field(default_factory=list)
    conc_rps: list[float] = field(default_factory=list)
    conc_cpu_us: list[float] = field(default_factory=list)


async def make_clients(base: str, which: set[str]) -> list[Client]:
    import aiohttp
    import httpx

    from axonflow_llm.pipeline.models import CompletionRequest
    from axonflow_llm.providers.openai import OpenAIProvider
    from axonflow_llm.providers.transport import default_http_client

    url = base + "/v1/chat/completions"
    body = msgspec.json.encode(PAYLOAD)
    clients: list[Client] = []

    if "aiohttp" in which:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000))

        async def aio_call() -> Any:
            async with session.post(url, data=body, headers=HEADERS) as r:
                data = await r.read()
                if r.status != 200:
                    raise RuntimeError(r.status)
                return msgspec.json.decode(data)

        clients.append(Client("raw aiohttp", aio_call, session.close))

    if "httpx" in which:
        hx = httpx.AsyncClient(limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100))

        async def hx_call() -> Any:
            r = await hx.post(url, content=body, headers=HEADERS)
            r.raise_for_status()
            return msgspec.json.decode(r.content)

        clients.append(Client("raw httpx", hx_call, hx.aclose))

    request = CompletionRequest(prompt="Say hello", max_tokens=16)
    if "sdk" in which:
        sdk = OpenAIProvider(api_key=API_KEY, endpoint=base + "/v1", model=MODEL)

        async def sdk_call() -> Any:
            return await sdk.complete(request)

        clients.append(Client("axonflow-llm (default: aiohttp transport)", sdk_call, sdk.aclose))

    if "sdk-httpx" in which:
        sdk2 = OpenAIProvider(api_key=API_KEY, endpoint=base + "/v1", model=MODEL,
                              http_client=default_http_client(transport="httpx"))
        client2 = sdk2.client

        async def sdk2_call() -> Any:
            return await sdk2.complete(request)

        async def sdk2_close() -> None:
            await sdk2.aclose()
            await client2.aclose()

        clients.append(Client("axonflow-llm (httpx pool)", sdk2_call, sdk2_close))

    if "openai" in which:
        try:
            import openai
        except ImportError:
            print("(openai is not installed: pip install openai to compare with the official client)")
        else:
            oa = openai.AsyncOpenAI(api_key=API_KEY, base_url=base + "/v1", max_retries=0)
            messages: Any = [{"role": "user", "content": "Say hello"}]

            async def oa_call() -> Any:
                return await oa.chat.completions.create(model=MODEL, messages=messages, max_completion_tokens=16)

            clients.append(Client(f"openai {openai.__version__} (AsyncOpenAI)", oa_call, oa.close))
    return clients


# --- measuring -------------------------------------------------------------------------------------


async def sequential(call: Callable[[], Awaitable[Any]], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        await call()
    return (time.perf_counter() - start) / n * 1e6


async def concurrent(call: Callable[[], Awaitable[Any]], n: int, width: int) -> tuple[float, float]:
    per_worker, extra = divmod(n, width)

    async def worker(k: int) -> None:
        for _ in range(k):
            await call()

    gc.collect()
    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(per_worker + (i < extra)) for i in range(width)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return n / wall, cpu / n * 1e6


async def bench(args: argparse.Namespace, base: str) -> list[Result]:
    clients = await make_clients(base, set(args.clients.split(",")))
    results = {c.name: Result(c.name) for c in clients}
    try:
        for c in clients:  # warm every pool to the concurrency we measure
            await concurrent(c.call, args.concurrency * 4, args.concurrency)
        for r in range(args.rounds):
            for c in clients:
                res = results[c.name]
                res.seq_us.append(await sequential(c.call, args.sequential))
                rps, cpu = await concurrent(c.call, args.requests, args.concurrency)
                res.conc_rps.append(rps)
                res.conc_cpu_us.append(cpu)
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    finally:
        for c in clients:
            await c.close()
    return list(results.values())


def table(results: list[Result], concurrency: int) -> str:
    def best(r: Result) -> tuple[float, float, float]:
        return min(r.seq_us), max(r.conc_rps), min(r.conc_cpu_us)

    ref = next((r for r in results if r.name == "raw aiohttp"), None)
    oa = next((r for r in results if r.name.startswith("openai")), None)
    lines = [
        f"| client | 1 at a time: µs/req | 1 at a time: req/s | {concurrency} at a time: req/s "
        f"| {concurrency} at a time: client CPU µs/req | req/s vs raw aiohttp | req/s vs openai |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        seq, rps, cpu = best(r)
        vs_aio = f"{rps / max(ref.conc_rps):.2f}x" if ref else "-"
        vs_oa = f"{rps / max(oa.conc_rps):.2f}x" if oa else "-"
        lines.append(f"| {r.name} | {seq:,.0f} | {1e6 / seq:,.0f} | {rps:,.0f} | {cpu:,.0f} | {vs_aio} | {vs_oa} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per concurrent run")
    parser.add_argument("--sequential", type=int, default=1000, help="requests per one-at-a-time run")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--server", choices=("fake", "minimal"), default="fake")
    parser.add_argument("--clients", default="aiohttp,httpx,sdk,sdk-httpx,openai",
                        help="comma-separated subset of: aiohttp,httpx,sdk,sdk-httpx,openai")
    parser.add_argument("--serve-minimal", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_minimal:
        serve_minimal(args.serve_minimal)
        return

    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    proc, base = start_server(args.server)
    try:
        results = asyncio.run(bench(args, base))
    finally:
        proc.terminate()
        proc.wait(5)
    print(f"\nServer: {args.server} ({base}), separate process. Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs. Best of {args.rounds} rounds; {args.sequential} sequential and "
          f"{args.requests} concurrent requests per round.\n")
    print(table(results, args.concurrency))


if __name__ == "__main__":
    main()
