"""Command line: ``python -m axonflow_llm.testing.fake_server --port 8080`` serves until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

from .server import FakeLLMServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m axonflow_llm.testing.fake_server",
        description="A local fake LLM server (OpenAI, Azure OpenAI, Anthropic, Ollama, Gemini, Bedrock).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to bind (0: a free port; default 8080)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before every response")
    parser.add_argument("--content", default=None, help="fixed answer text instead of the echo")
    parser.add_argument("--no-auth", action="store_true", help="accept requests without credentials")
    parser.add_argument(
        "--record", action="store_true", help="keep every request in memory (off: memory stays flat under load)"
    )
    args = parser.parse_args(argv)
    try:
        server = FakeLLMServer(
            host=args.host,
            port=args.port,
            latency=args.latency,
            content=args.content,
            require_auth=not args.no_auth,
            record=args.record,
        )
    except ValueError as exc:
        parser.error(str(exc))

    def ready(url: str) -> None:
        print(url, flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(server.serve_forever(ready))
    return 0


if __name__ == "__main__":
    sys.exit(main())
