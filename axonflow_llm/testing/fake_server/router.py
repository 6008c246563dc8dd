"""Which wire format and endpoint a method and path belong to, for every service the fake server speaks."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import unquote

from .faults import Endpoint
from .wire import Wire

__all__ = ["Route", "Router"]


class Route:
    """A resolved request: the wire format, the endpoint and the path parameters (percent-decoded)."""

    __slots__ = ("endpoint", "params", "wire")

    def __init__(self, wire: Wire, endpoint: Endpoint, params: dict[str, str]) -> None:
        self.wire = wire
        self.endpoint = endpoint
        self.params = params


class Router:
    """Fixed paths by dictionary, parametrised ones (``(?P<name>...)``) by regex over the raw path.

    Each wire declares its ``routes``. Two wires may share a fixed path (``GET /v1/models`` for OpenAI and
    Anthropic): the first whose ``claims(headers)`` is true gets the request, else the first declared.
    """

    def __init__(self, wires: Iterable[Wire]) -> None:
        self._fixed: dict[tuple[str, str], list[tuple[Wire, Endpoint]]] = {}
        self._patterns: list[tuple[str, re.Pattern[str], Wire, Endpoint]] = []
        for wire in wires:
            for method, path, endpoint in wire.routes:
                if "(?P" in path:
                    self._patterns.append((method, re.compile(path), wire, endpoint))
                else:
                    self._fixed.setdefault((method, path), []).append((wire, endpoint))

    def resolve(self, method: str, raw_path: str, headers: Mapping[str, str]) -> Route | None:
        found = self._fixed.get((method, raw_path))
        if found is not None:
            wire, endpoint = found[0]
            if len(found) > 1:
                for candidate, candidate_endpoint in found:
                    if candidate.claims(headers):
                        wire, endpoint = candidate, candidate_endpoint
                        break
            return Route(wire, endpoint, {})
        for want, pattern, wire, endpoint in self._patterns:
            if method == want:
                match = pattern.fullmatch(raw_path)
                if match is not None:
                    return Route(wire, endpoint, {k: unquote(v) for k, v in match.groupdict().items()})
        return None
