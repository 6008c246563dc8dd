"""Read YAML into plain Python values, expanding environment variables in scalar values and noting lines."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from ..pipeline.errors import ConfigError
from .expand import MissingVariable, expand_env

__all__ = ["OMIT", "YamlTree", "compose"]

_MERGE_TAG = "tag:yaml.org,2002:merge"
_MAX_DEPTH = 64


class _Omit:
    def __repr__(self) -> str:
        return "OMIT"


#: A value left out because it names an unset variable in a lenient (disabled) part of the file.
OMIT: Any = _Omit()


def compose(text: str, source: str) -> tuple[yaml.SafeLoader, yaml.Node | None]:
    """Parse ``text`` into a node tree (with line marks); malformed YAML raises ``ConfigError`` at file:line."""
    loader = yaml.SafeLoader(text)
    try:
        return loader, loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f"{mark.line + 1}" if mark is not None else "?"
        what = exc.problem or "cannot be parsed"
        context = f" ({exc.context})" if exc.context else ""
        raise ConfigError(f"{source}:{line}: malformed YAML: {what}{context}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: malformed YAML: {type(exc).__name__}") from None


class YamlTree:
    """Turns composed nodes into dicts, lists and scalars.

    Environment variables are expanded in scalar *values* only (never in keys; comments are gone by
    now). An expanded value is always a string, so ``api_key: ${KEY}`` stays a string whatever KEY
    holds; the schema converts it (``"4096"`` becomes an int where an int is wanted). Duplicate keys
    are an error (YAML would silently keep the last). ``lines`` maps each dotted path to its line.
    """

    __slots__ = ("_flattened", "env", "lines", "loader", "source")

    def __init__(self, loader: yaml.SafeLoader, source: str, env: Mapping[str, str]) -> None:
        self.loader = loader
        self.source = source
        self.env = env
        self.lines: dict[str, int] = {}
        self._flattened: set[int] = set()

    def where(self, path: str, line: int | None = None) -> str:
        if line is None:
            line = self.line_of(path)
        loc = f"{self.source}:{line}" if line else self.source
        return f"{loc}: {path}" if path else loc

    def line_of(self, path: str) -> int | None:
        """The line of ``path``, or of its nearest parent that has one."""
        while True:
            if path in self.lines:
                return self.lines[path]
            if not path:
                return None
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""

    def pairs(self, node: yaml.Node, path: str) -> list[tuple[str, yaml.Node]]:
        """A mapping node's (key, value node) pairs, merge keys resolved, duplicates refused."""
        if not isinstance(node, yaml.MappingNode):
            raise ConfigError(f"{self.where(path, node.start_mark.line + 1)}: expected a mapping "
                              f"(key: value lines), got {_kind(node)}")
        if id(node) not in self._flattened:
            self._check_keys(node, path)
            self.loader.flatten_mapping(node)  # resolve '<<: *anchor' merge keys, explicit keys win
            self._flattened.add(id(node))
        out: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            out[key] = value_node
            self.lines[_join(path, key)] = key_node.start_mark.line + 1  # explicit keys come last: win
        return list(out.items())

    def _check_keys(self, node: yaml.MappingNode, path: str) -> None:
        seen: dict[str, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise ConfigError(f"{self.where(path, key_node.start_mark.line + 1)}: "
                                  "keys must be plain names, not lists or mappings")
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                full = _join(path, key)
                raise ConfigError(
                    f"{self.source}:{line}: {full} is defined twice (first at line {seen[key]}); "
                    "names must be unique: remove or rename one"
                )
            seen[key] = line

    def value(self, node: yaml.Node, path: str, *, lenient: bool = False, depth: int = 0) -> Any:
        """The Python value of ``node``; in ``lenient`` mode an unset variable gives :data:`OMIT`."""
        if depth > _MAX_DEPTH:
            raise ConfigError(f"{self.where(path)}: nested too deeply (a recursive alias?)")
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, path, lenient=lenient)
        if isinstance(node, yaml.SequenceNode):
            items = []
            for i, item in enumerate(node.value):
                v = self.value(item, f"{path}[{i}]", lenient=lenient, depth=depth + 1)
                if v is not OMIT:
                    items.append(v)
            return items
        out: dict[str, Any] = {}
        for key, child in self.pairs(node, path):
            v = self.value(child, _join(path, key), lenient=lenient, depth=depth + 1)
            if v is not OMIT:
                out[key] = v
        return out

    def scalar(self, node: yaml.ScalarNode, path: str, *, lenient: bool = False) -> Any:
        text = node.value
        if "$" in text and node.tag == "tag:yaml.org,2002:str":
            try:
                return expand_env(text, self.env, where=self.where(path, node.start_mark.line + 1))
            except MissingVariable:
                if lenient:
                    return OMIT
                raise
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or type(exc).__name__
            raise ConfigError(f"{self.where(path, node.start_mark.line + 1)}: {problem}") from None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if isinstance(node, yaml.ScalarNode):
        return "an empty value" if node.value == "" else "a single value"
    return "something else"
