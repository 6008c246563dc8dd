"""Provider factories by type (the seed's ``llm.RegisterFactory``): how a ``ProviderConfig`` becomes a provider."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeAlias

from ..config.pipeline_options import pipeline_options
from ..config.schema import MiddlewareSettings
from ..pipeline.clock import Clock
from ..pipeline.errors import ConfigError
from ..pipeline.models import ProviderConfig, ProviderType
from ..pipeline.provider import BaseProvider, Provider

__all__ = [
    "FactoryTable",
    "ProviderPlan",
    "ProviderFactory",
    "create_provider",
    "get_factory",
    "list_factories",
    "register_factory",
    "unregister_factory",
]

#: ``factory(config) -> Provider``, synchronous. It may also take a keyword-only ``clock=`` argument,
#: which the registry then passes (``Registry(clock=...)``, ``Registry.from_config(..., clock=...)``).
ProviderFactory: TypeAlias = Callable[..., Provider]

# type -> (module under axonflow_llm.providers, class, pip extra that provides its dependencies)
_BUILTIN: dict[ProviderType, tuple[str, str, str | None]] = {
    ProviderType.OPENAI: ("openai", "OpenAIProvider", None),
    ProviderType.AZURE_OPENAI: ("azure_openai", "AzureOpenAIProvider", None),
    ProviderType.ANTHROPIC: ("anthropic", "AnthropicProvider", None),
    ProviderType.OLLAMA: ("ollama", "OllamaProvider", None),
    ProviderType.GEMINI: ("gemini", "GeminiProvider", None),
    ProviderType.BEDROCK: ("bedrock", "BedrockProvider", "bedrock"),
}


class BuiltinFactory:
    """The factory of a built-in provider: imports its module on first use (so ``import axonflow_llm`` stays
    fast and botocore stays optional) and calls ``ProviderClass.from_config(config, clock=clock)``."""

    __slots__ = ("_class", "_extra", "_module", "type")

    def __init__(self, type: ProviderType, module: str, cls: str, extra: str | None) -> None:
        self.type = type
        self._module = module
        self._class = cls
        self._extra = extra

    def provider_class(self) -> Any:
        try:
            module = importlib.import_module(f"axonflow_llm.providers.{self._module}")
        except ImportError as exc:
            hint = (
                f"; install it with: pip install 'axonflow-llm[{self._extra}]'" if self._extra else ""
            )
            raise ConfigError(
                f"the {self.type.value} provider cannot be loaded ({exc}){hint}"
            ) from exc
        return getattr(module, self._class)

    def __call__(self, config: ProviderConfig, *, clock: Clock | None = None) -> Provider:
        provider: Provider = self.provider_class().from_config(config, clock=clock)
        return provider

    def __repr__(self) -> str:
        return f"BuiltinFactory({self.type.value!r} -> providers.{self._module}.{self._class})"


def _as_type(type: ProviderType | str) -> ProviderType:
    try:
        return ProviderType(type)
    except ValueError:
        allowed = ", ".join(t.value for t in ProviderType)
        raise ConfigError(f"{type!r} is not a provider type; use one of: {allowed}") from None


def takes_clock(factory: Callable[..., Any]) -> bool:
    """Whether ``factory`` accepts a ``clock=`` keyword (decided once, when it is registered)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        p.kind is inspect.Parameter.VAR_KEYWORD
        or (p.name == "clock" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
        for p in params
    )


class FactoryTable:
    """Factories by provider type. The module-level functions use the global table; a ``Registry`` can
    hold its own (``Registry(factories={...})``), apart from the global one, for tests."""

    __slots__ = ("_clock_aware", "_factories")

    def __init__(self, factories: Mapping[ProviderType | str, ProviderFactory] | None = None) -> None:
        self._factories: dict[ProviderType, ProviderFactory] = {}
        self._clock_aware: dict[ProviderType, bool] = {}
        for type, factory in (factories or {}).items():
            self.register(type, factory)

    @classmethod
    def with_builtins(cls) -> FactoryTable:
        table = cls()
        for type, (module, name, extra) in _BUILTIN.items():
            table.register(type, BuiltinFactory(type, module, name, extra))
        return table

    def register(self, type: ProviderType | str, factory: ProviderFactory) -> None:
        if not callable(factory):
            raise TypeError(
                f"a provider factory must be callable as factory(config) -> Provider, got {factory!r}"
            )
        if inspect.iscoroutinefunction(factory):
            raise TypeError(
                "provider factories are synchronous: write `def factory(config): return provider`, "
                "not `async def`; do slow setup on first use or in health_check()"
            )
        t = _as_type(type)
        self._factories[t] = factory
        self._clock_aware[t] = takes_clock(factory)

    def unregister(self, type: ProviderType | str) -> ProviderFactory:
        t = _as_type(type)
        try:
            self._clock_aware.pop(t, None)
            return self._factories.pop(t)
        except KeyError:
            raise LookupError(f"no factory is registered for {t.value!r}") from None

    def get(self, type: ProviderType | str) -> ProviderFactory | None:
        return self._factories.get(_as_type(type))

    def types(self) -> list[ProviderType]:
        return list(self._factories)

    def require(self, type: ProviderType) -> ProviderFactory:
        """The factory for ``type``, or a ``ConfigError`` saying how to register one."""
        factory = self._factories.get(type)
        if factory is None:
            have = ", ".join(t.value for t in self._factories) or "none"
            raise ConfigError(
                f"no provider factory is registered for type {type.value!r} (registered: {have}); "
                f"register one first: register_factory(ProviderType.{type.name}, factory), "
                "where factory(config) returns the provider"
            )
        return factory

    def plan(self, config: ProviderConfig, *, clock: Clock | None = None) -> ProviderPlan:
        """Check everything about ``config`` that can be checked without building it: the config itself,
        its factory, its middleware settings. ``ConfigError`` naming the field if something is wrong."""
        if not isinstance(config, ProviderConfig):
            raise TypeError(f"expected a ProviderConfig, got {type(config).__name__}")
        try:
            config.validate()
        except ValueError as exc:
            raise ConfigError(f"provider {config.name!r}: {exc}") from None
        factory = self.require(config.type)
        settings = MiddlewareSettings.of(config)
        options = None
        if not settings.is_empty:
            options = pipeline_options(settings, clock=clock, where=f"provider {config.name!r}: settings")
            if "timeout" not in options and config.timeout is not None:
                options["timeout"] = config.timeout
        return ProviderPlan(config, factory, self._clock_aware.get(config.type, False), options, clock)

    def create(self, config: ProviderConfig, *, clock: Clock | None = None) -> Provider:
        """Validate ``config`` and build its provider with the registered factory and its middleware."""
        return self.plan(config, clock=clock).build()

    def __iter__(self) -> Any:
        return iter(self._factories.items())

    def update(self, items: Iterable[tuple[ProviderType, ProviderFactory]]) -> None:
        for t, f in items:
            self.register(t, f)


class ProviderPlan:
    """A validated configuration with its factory and middleware options, ready to :meth:`build`.

    When the configuration has middleware settings (``rate_limit``, ``retry``, ``circuit_breaker``,
    ``timeouts``, ``pricing``), they define the provider's pipeline: ``default_pipeline`` with those
    settings, the provider's own auth and the clock replaces whatever pipeline the factory gave it.
    """

    __slots__ = ("_clock_aware", "clock", "config", "factory", "options")

    def __init__(
        self,
        config: ProviderConfig,
        factory: ProviderFactory,
        clock_aware: bool,
        options: dict[str, Any] | None,
        clock: Clock | None,
    ) -> None:
        self.config = config
        self.factory = factory
        self.options = options
        self.clock = clock
        self._clock_aware = clock_aware

    def build(self) -> Provider:
        config, factory = self.config, self.factory
        if self.clock is not None and self._clock_aware:
            provider = factory(config, clock=self.clock)
        else:
            provider = factory(config)
        check_provider(provider, config, factory)
        if self.options is not None:
            if not isinstance(provider, BaseProvider):
                raise ConfigError(
                    f"provider {config.name!r}: its middleware settings ({', '.join(self.options)}) cannot "
                    f"be applied: the factory returned {type(provider).__name__}, not a BaseProvider; "
                    "build the middleware in the factory and leave them out of the configuration"
                )
            from ..middleware.defaults import default_pipeline

            provider.use_pipeline(default_pipeline(auth=provider.info.auth, clock=self.clock, **self.options))
        return provider


def check_provider(provider: object, config: ProviderConfig, factory: object) -> None:
    missing = [m for m in ("name", "complete", "stream", "health_check", "aclose") if not hasattr(provider, m)]
    if missing:
        raise TypeError(
            f"the factory {factory!r} for {config.name!r} returned {type(provider).__name__}, which is not a "
            f"Provider (it lacks {', '.join(missing)}); return a BaseProvider subclass, e.g. from "
            "ProviderBuilder(...).build()"
        )


_global = FactoryTable.with_builtins()


def global_factories() -> FactoryTable:
    return _global


def register_factory(type: ProviderType | str, factory: ProviderFactory) -> None:
    """Use ``factory(config) -> Provider`` to build providers of ``type`` (replacing any factory before,
    built-in ones included). Synchronous; it may take a keyword-only ``clock=``."""
    _global.register(type, factory)


def unregister_factory(type: ProviderType | str) -> ProviderFactory:
    """Remove and return the factory for ``type``; ``LookupError`` if there is none."""
    return _global.unregister(type)


def get_factory(type: ProviderType | str) -> ProviderFactory | None:
    """The factory for ``type``, or ``None``."""
    return _global.get(type)


def list_factories() -> list[ProviderType]:
    """The provider types that have a factory."""
    return _global.types()


def create_provider(config: ProviderConfig, *, clock: Clock | None = None) -> Provider:
    """Validate ``config`` and build its provider with the registered factory; middleware settings in
    ``config.settings`` (``retry``, ``rate_limit``, ...) become its pipeline (see :class:`ProviderPlan`)."""
    return _global.create(config, clock=clock)
