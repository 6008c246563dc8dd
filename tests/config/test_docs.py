"""The examples in docs/architecture.md, configuration.md, routing.md and providers.md run as written.

Each guide's ``python`` blocks run in order in one namespace, in a temporary directory where every
``yaml`` block that starts with ``# <name>.yaml`` has been written as that file.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from axonflow_llm.pipeline.models import ProviderType
from axonflow_llm.registry import get_factory, register_factory, unregister_factory

DOCS = Path(__file__).parents[2] / "docs"
_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def blocks(doc: Path) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in _BLOCK.finditer(doc.read_text(encoding="utf-8"))]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def restore_custom() -> Iterator[None]:
    before = get_factory(ProviderType.CUSTOM)
    yield
    if get_factory(ProviderType.CUSTOM) is not None:
        unregister_factory(ProviderType.CUSTOM)
    if before is not None:
        register_factory(ProviderType.CUSTOM, before)


@pytest.mark.usefixtures("restore_custom")
@pytest.mark.parametrize(
    "name", ["architecture.md", "writing-middleware.md", "configuration.md", "routing.md", "providers.md"]
)
def test_doc_examples_run(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                          capsys: pytest.CaptureFixture[str]) -> None:
    doc = DOCS / name
    found = blocks(doc)
    assert any(lang == "python" for lang, _ in found)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MY_PROVIDER_API_KEY", "sk-docs-0123456789abcdef")
    # Nothing may reach a real service: a local Ollama, if any, is not asked.
    monkeypatch.setenv("OLLAMA_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    for var in ("OLLAMA_MODEL", "OPENAI_API_KEY", "OPENAI_MAX_TOKENS"):
        monkeypatch.delenv(var, raising=False)
    namespace: dict[str, object] = {"__name__": f"docs_{name.removesuffix('.md')}"}
    for i, (lang, text) in enumerate(found):
        if lang == "yaml":
            first = text.splitlines()[0] if text else ""
            m = re.match(r"#\s*([\w.-]+\.yaml)\s*$", first)
            if m:
                (tmp_path / m.group(1)).write_text(text, encoding="utf-8")
        elif lang == "python":
            code = compile(text, f"{doc}#block{i}", "exec")
            exec(code, namespace)
    out = capsys.readouterr().out
    assert "Traceback" not in out
