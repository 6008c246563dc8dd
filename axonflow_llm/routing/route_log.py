"""The routing logger, bound once per structlog configuration so a filtered-out event costs next to nothing."""

from __future__ import annotations

from typing import Any

import structlog

__all__ = ["RouteLog", "log", "route_log"]

log = structlog.get_logger("axonflow_llm.routing")
# structlog's global configuration, watched so a reconfiguration is noticed with three identity checks.
_STRUCTLOG_CONFIG: Any = getattr(getattr(structlog, "_config", None), "_CONFIG", None)
_DEBUG = 10


class RouteLog:
    """The routing logger bound once per structlog configuration, so that a filtered-out ``route.chosen``
    debug event costs a few attribute reads per call instead of a logger bind."""

    __slots__ = ("_bound", "_check", "_debug_on", "_seen")

    def __init__(self) -> None:
        self._seen: tuple[Any, Any, Any] | None = None
        self._bound: Any = None
        self._check: Any = None
        self._debug_on = True

    def bound(self) -> Any:
        cfg = _STRUCTLOG_CONFIG
        seen = self._seen
        if cfg is None:
            return log
        if (
            seen is None
            or cfg.default_wrapper_class is not seen[0]
            or cfg.default_processors is not seen[1]
            or cfg.logger_factory is not seen[2]
        ):
            self._seen = (cfg.default_wrapper_class, cfg.default_processors, cfg.logger_factory)
            try:
                bound = log.bind()
            except Exception:  # a broken configuration: let structlog complain on use
                bound = log
            self._bound = bound
            check = getattr(bound, "is_enabled_for", None) or getattr(bound, "isEnabledFor", None)
            filtering = getattr(structlog, "make_filtering_bound_logger", None)
            static = filtering is not None and type(bound).__name__.startswith("BoundLoggerFilteringAt")
            self._check = None if (check is None or static) else check
            self._debug_on = bool(check(_DEBUG)) if (check is not None and static) else True
        return self._bound

    def debug_enabled(self) -> bool:
        self.bound()
        check = self._check
        return self._debug_on if check is None else bool(check(_DEBUG))


route_log = RouteLog()
