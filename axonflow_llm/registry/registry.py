"""The registry of named providers (the seed's ``llm.NewRegistry``): build, look up, health-check, close."""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import structlog

from ..pipeline.clock import Clock, system_clock
from ..pipeline.errors import AxonFlowError, ConfigError, redact
from ..pipeline.models import HealthCheckResult, HealthStatus, ProviderConfig, ProviderType
from ..pipeline.provider import Provider
from .factories import FactoryTable, ProviderFactory, ProviderPlan, global_factories

if TYPE_CHECKING:
    from ..config.schema import LLMConfig

__all__ = ["Registry"]

_log = structlog.get_logger("axonflow_llm.registry")


class Registry:
    """Named providers built from :class:`ProviderConfig`\\ s by the provider factories.

    ``await register(config)`` validates the config (``ConfigError`` naming the field), refuses a name
    already taken, builds the provider with the factory for its type and applies its middleware
    settings. A *disabled* config (``enabled=False``) is recorded but not built: :meth:`config` returns
    it, :meth:`get` says it is disabled, :meth:`list` leaves it out (``include_disabled=True`` shows it).

    The registry owns what it built: :meth:`unregister` and :meth:`aclose` close providers. Use it as an
    ``async with`` block. ``factories`` gives this registry its own factory table (types not in it have
    no factory); by default it uses the global one (``register_factory``). ``clock`` is passed to
    factories that take ``clock=`` and to the middleware built from settings, and times health checks.
    ``health_check_timeout`` (seconds) bounds each provider's check in :meth:`health_check_all`.
    """

    __slots__ = ("_clock", "_configs", "_factories", "_health_timeout", "_lock", "_providers")

    def __init__(
        self,
        *,
        factories: Mapping[ProviderType | str, ProviderFactory] | None = None,
        clock: Clock | None = None,
        health_check_timeout: float = 10.0,
    ) -> None:
        _check_timeout("health_check_timeout", health_check_timeout)
        self._factories = FactoryTable(factories) if factories is not None else global_factories()
        self._clock = clock
        self._health_timeout = float(health_check_timeout)
        self._configs: dict[str, ProviderConfig] = {}
        self._providers: dict[str, Provider] = {}
        self._lock = asyncio.Lock()

    # -- building -------------------------------------------------------------------------------------

    @classmethod
    async def from_config(
        cls,
        source: str | os.PathLike[str] | LLMConfig,
        *,
        factories: Mapping[ProviderType | str, ProviderFactory] | None = None,
        clock: Clock | None = None,
        env: Mapping[str, str] | None = None,
        health_check_timeout: float = 10.0,
    ) -> Registry:
        """A registry with every provider of a configuration file (or a loaded :class:`LLMConfig`).

        Everything is validated before anything is built; if building one provider fails, those already
        built are closed and the error (``ConfigError`` naming the provider) is raised: all or nothing.
        """
        from ..config.loader import load_config
        from ..config.schema import LLMConfig

        config = source if isinstance(source, LLMConfig) else load_config(source, env=env)
        registry = cls(factories=factories, clock=clock, health_check_timeout=health_check_timeout)
        plans = [
            registry._plan(pc, where=config.locations.get(name, config.source))
            for name, pc in config.providers.items()
        ]
        await registry._build_all(plans)
        return registry

    def _plan(self, config: ProviderConfig, *, where: str | None = None) -> ProviderPlan | ProviderConfig:
        if not isinstance(config, ProviderConfig):
            raise TypeError(f"register() needs a ProviderConfig, got {type(config).__name__}")
        if config.name in self._configs:
            raise ConfigError(
                f"a provider named {config.name!r} is already registered; unregister it first or "
                "choose another name"
            )
        if not config.enabled:
            try:
                config.validate()
            except ValueError as exc:
                raise ConfigError(f"provider {config.name!r}: {exc}") from None
            return config
        try:
            return self._factories.plan(config, clock=self._clock)
        except ConfigError as exc:
            if where:
                raise ConfigError(f"{where}: {exc}") from exc
            raise

    async def _build_all(self, plans: list[ProviderPlan | ProviderConfig]) -> None:
        names = [p.name if isinstance(p, ProviderConfig) else p.config.name for p in plans]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ConfigError(f"provider names must be unique; given more than once: {', '.join(sorted(dupes))}")
        async with self._lock:
            built: list[tuple[ProviderConfig, Provider | None]] = []
            try:
                for plan in plans:
                    if isinstance(plan, ProviderConfig):
                        built.append((plan, None))
                    else:
                        built.append((plan.config, _build(plan)))
            except BaseException:
                await _close_all([p for _, p in built if p is not None])
                raise
            for config, _ in built:
                if config.name in self._configs:  # registered concurrently meanwhile
                    await _close_all([p for _, p in built if p is not None])
                    raise ConfigError(f"a provider named {config.name!r} is already registered")
            for config, provider in built:
                self._configs[config.name] = config
                if provider is not None:
                    self._providers[config.name] = provider
                _log.debug("registry.registered", provider=config.name, type=str(config.type),
                           enabled=config.enabled)

    async def register(self, config: ProviderConfig) -> Provider | None:
        """Validate ``config``, build its provider and keep it under ``config.name``; return it (``None``
        for a disabled config, which is recorded but not built)."""
        await self._build_all([self._plan(config)])
        return self._providers.get(config.name)

    async def unregister(self, name: str) -> None:
        """Forget ``name`` and close its provider's connections."""
        async with self._lock:
            self._require_known(name)
            del self._configs[name]
            provider = self._providers.pop(name, None)
        if provider is not None:
            await provider.aclose()

    # -- looking up -----------------------------------------------------------------------------------

    async def get(self, name: str) -> Provider:
        """The provider registered as ``name``; ``KeyError`` listing the known names if there is none."""
        return self.provider(name)

    def provider(self, name: str) -> Provider:
        """:meth:`get` without ``await``."""
        provider = self._providers.get(name)
        if provider is not None:
            return provider
        config = self._require_known(name)
        raise ProviderDisabledError(
            f"provider {name!r} is disabled in its configuration (enabled: false); enable it to use it"
            if not config.enabled else f"provider {name!r} is not built"
        )

    def config(self, name: str) -> ProviderConfig:
        """The configuration ``name`` was registered with (priority and weight for routing, settings)."""
        return self._require_known(name)

    def list(self, *, include_disabled: bool = False) -> list[str]:
        """The registered names, in registration order; disabled ones only with ``include_disabled``."""
        if include_disabled:
            return list(self._configs)
        return list(self._providers)

    def providers(self) -> dict[str, Provider]:
        """The built (enabled) providers by name, in registration order."""
        return dict(self._providers)

    @property
    def clock(self) -> Clock | None:
        """The clock given to this registry (``None``: the system clock)."""
        return self._clock

    def __contains__(self, name: object) -> bool:
        return name in self._configs

    def __len__(self) -> int:
        return len(self._configs)

    def __repr__(self) -> str:
        return f"Registry(providers={list(self._providers)!r})"

    def _require_known(self, name: str) -> ProviderConfig:
        config = self._configs.get(name)
        if config is None:
            known = ", ".join(repr(n) for n in self._configs) or "none"
            raise UnknownProviderError(f"no provider named {name!r} is registered; known: {known}")
        return config

    # -- health and lifetime --------------------------------------------------------------------------

    async def health_check_all(self, *, check_timeout: float | None = None) -> dict[str, HealthCheckResult]:
        """Every built provider's health, checked concurrently, each within ``check_timeout`` seconds (default:
        the registry's ``health_check_timeout``). Never raises for one bad provider: a check that fails
        or times out is reported ``UNHEALTHY`` with the reason."""
        limit = self._health_timeout if check_timeout is None else _check_timeout("check_timeout", check_timeout)
        clock = self._clock or system_clock
        names = list(self._providers)
        results = await asyncio.gather(
            *(checked_health(self._providers[n], limit, clock) for n in names)
        )
        return dict(zip(names, results, strict=True))

    async def aclose(self) -> None:
        """Close every provider's connections (all of them, even if one fails) and forget them."""
        async with self._lock:
            providers = list(self._providers.values())
            self._providers.clear()
            self._configs.clear()
        await _close_all(providers)

    async def __aenter__(self) -> Registry:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class UnknownProviderError(KeyError, AxonFlowError):
    """No provider has that name: a ``KeyError`` whose message lists the names that are known."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ProviderDisabledError(UnknownProviderError):
    """The provider is registered but disabled in its configuration."""


def _check_timeout(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
    return float(value)


def _build(plan: ProviderPlan) -> Provider:
    try:
        return plan.build()
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"provider {plan.config.name!r} could not be built: {redact(str(exc))}") from exc


async def _close_all(providers: list[Provider]) -> None:
    results = await asyncio.gather(*(p.aclose() for p in providers), return_exceptions=True)
    for provider, result in zip(providers, results, strict=True):
        if isinstance(result, BaseException):
            _log.warning("registry.close_failed", provider=provider.name, error=type(result).__name__)


async def checked_health(provider: Provider, limit: float, clock: Clock) -> HealthCheckResult:
    """``provider.health_check()`` within ``limit`` seconds on ``clock``; a failure or timeout becomes an
    ``UNHEALTHY`` result (never an exception, except cancellation)."""
    started = clock.now()
    check = asyncio.ensure_future(provider.health_check())
    timer = asyncio.ensure_future(clock.sleep(limit))
    try:
        await asyncio.wait((check, timer), return_when=asyncio.FIRST_COMPLETED)
    finally:
        timer.cancel()
        if not check.done():
            check.cancel()
            await asyncio.gather(check, return_exceptions=True)
        await asyncio.gather(timer, return_exceptions=True)
    latency = clock.now() - started
    if check.cancelled():
        return HealthCheckResult(
            status=HealthStatus.UNHEALTHY, latency=latency, checked_at=time.time(),
            message=f"health check timed out after {limit:g}s",
        )
    exc = check.exception()
    if exc is not None:
        return HealthCheckResult(
            status=HealthStatus.UNHEALTHY, latency=latency, checked_at=time.time(),
            message=f"health check failed: {type(exc).__name__}: {redact(str(exc))[:300]}",
        )
    result = check.result()
    if not isinstance(result, HealthCheckResult):
        return HealthCheckResult(
            status=HealthStatus.UNKNOWN, latency=latency, checked_at=time.time(),
            message=f"health_check() returned {type(result).__name__}, not a HealthCheckResult",
        )
    return result

