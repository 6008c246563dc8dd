"""From settings and configuration to a provider's constructor arguments: checked, with errors that name the fix."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from axonflow_llm.pipeline.errors import ConfigError
from axonflow_llm.pipeline.models import ProviderConfig

from .wire import type_name

if TYPE_CHECKING:
    import httpx

    from axonflow_llm.middleware.pricing import ModelPrice
    from axonflow_llm.pipeline.clock import Clock
    from axonflow_llm.pipeline.pipeline import Pipeline

__all__ = [
    "MIDDLEWARE_SETTINGS",
    "check_settings",
    "config_prices",
    "from_config_kwargs",
    "init_keywords",
    "settings_headers",
]

#: The ``settings`` keys that configure the pipeline (the registry builds it from them), not the provider.
MIDDLEWARE_SETTINGS = frozenset({"rate_limit", "retry", "circuit_breaker", "timeouts", "pricing"})
_CONFIG_FIELDS = ("endpoint", "model", "region", "max_tokens", "timeout")


def init_keywords(cls: type) -> frozenset[str]:
    """The keyword arguments ``cls(...)`` takes: its ``__init__``'s, and, while an ``__init__`` passes
    ``**kwargs`` on, those of the next one up the MRO."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):  # pragma: no cover - a C-level __init__
            break
        forwards = False
        for p in params:
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
                names.add(p.name)
            elif p.kind is p.VAR_KEYWORD:
                forwards = True
        if not forwards:
            break
    names.discard("self")
    return frozenset(names)


def check_settings(cls: Any, name: str, settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """``settings`` as a new dict for provider class ``cls``: ``TypeError`` if it is not a mapping,
    ``ValueError`` naming every key ``cls.settings_keys`` does not list (see
    ``HTTPProvider.checked_settings``)."""
    if settings is None:
        return {}
    if not isinstance(settings, Mapping):
        raise TypeError(f"{name}: settings must be a mapping of option names to values, "
                        f"got {type_name(settings)}")
    unknown = sorted(str(k) for k in settings if k not in cls.settings_keys)
    if unknown:
        middleware = [k for k in unknown if k in MIDDLEWARE_SETTINGS]
        hint = (
            f"; {', '.join(middleware)} configure the pipeline, which a configuration file builds: in "
            "code pass pipeline=default_pipeline(...) or a Pipeline of your own"
            if middleware else ""
        )
        raise ValueError(
            f"{name}: {cls.__name__} does not read settings {', '.join(map(repr, unknown))}; it reads "
            f"{', '.join(map(repr, sorted(cls.settings_keys)))}{hint}"
        )
    return dict(settings)


def settings_headers(name: str, settings: Mapping[str, Any] | None) -> dict[str, str]:
    """``settings["headers"]`` as a dict of lower-cased names to str values (see
    ``HTTPProvider.settings_headers``)."""
    extra = settings.get("headers") if settings else None
    if extra is None:
        return {}
    if not isinstance(extra, Mapping):
        raise TypeError(
            f"{name}: settings['headers'] must be a mapping of header names to values, "
            f"got {type_name(extra)}"
        )
    return {str(k).lower(): str(v) for k, v in extra.items()}


def from_config_kwargs(
    cls: Any,
    config: ProviderConfig,
    *,
    http_client: httpx.AsyncClient | None,
    pipeline: Pipeline | None,
    clock: Clock | None,
) -> dict[str, Any]:
    """The keyword arguments ``cls(...)`` gets from ``config`` (the contract is
    ``HTTPProvider.from_config``'s); ``ConfigError`` naming what ``cls`` does not take."""
    takes = init_keywords(cls)
    where = f"provider {config.name!r} ({cls.__name__})"
    kwargs: dict[str, Any] = {"name": config.name, "http_client": http_client, "pipeline": pipeline,
                              "clock": clock}
    if "type" in takes:
        kwargs["type"] = config.type
    refused: list[str] = []
    if config.api_key:
        if "api_key" in takes:
            kwargs["api_key"] = config.api_key
        elif "auth" in takes:
            from .auth import APIKeyAuth

            kwargs["auth"] = APIKeyAuth(config.api_key)
        else:
            refused.append("api_key")
    for field in _CONFIG_FIELDS:
        value = getattr(config, field)
        if value is not None:
            if field in takes:
                kwargs[field] = value
            else:
                refused.append(field)
    settings = dict(config.settings)
    if "settings" in takes:  # the middleware settings are the registry's: it builds the pipeline
        kwargs["settings"] = {k: v for k, v in settings.items() if k not in MIDDLEWARE_SETTINGS}
    else:
        for key in settings:
            if key == "headers" and "headers" in takes:
                kwargs["headers"] = cls.settings_headers(config.name, settings)  # a subclass may override it
            elif key not in MIDDLEWARE_SETTINGS:
                refused.append(f"settings[{key!r}]")
    if "pricing" in settings and "prices" in takes:
        kwargs["prices"] = config_prices(config)
    if refused:
        raise ConfigError(
            f"{where}: the configuration sets {', '.join(refused)}, which {cls.__name__}() does not "
            "take; accept the keyword in its constructor, or override from_config()"
        )
    return kwargs


def config_prices(config: ProviderConfig) -> dict[str, ModelPrice]:
    """``config.settings["pricing"]`` (Structs from a file, or plain mappings) as ``{model: ModelPrice}``;
    ``ConfigError`` naming the field if it is not valid."""
    from axonflow_llm.config.schema import MiddlewareSettings
    from axonflow_llm.middleware.pricing import ModelPrice

    pricing = MiddlewareSettings.of(config).pricing
    return {
        model: ModelPrice(input_per_1m=p.input_per_1m, output_per_1m=p.output_per_1m)
        for model, p in pricing.items()
    }
