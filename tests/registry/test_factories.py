"""Provider factories: the global table, built-ins loaded lazily, and validation before anything is built."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from axonflow_llm.middleware.retry_config import RetryConfig
from axonflow_llm.pipeline.clock import Clock
from axonflow_llm.pipeline.errors import ConfigError
from axonflow_llm.pipeline.models import CompletionRequest, ProviderConfig, ProviderType
from axonflow_llm.pipeline.provider import Provider
from axonflow_llm.providers.builder import ProviderBuilder
from axonflow_llm.registry import (
    FactoryTable,
    create_provider,
    get_factory,
    list_factories,
    register_factory,
    unregister_factory,
)
from axonflow_llm.testing import FakeClock, response


async def answer(request: Any, ctx: Any) -> Any:
    return response(f"from {ctx.provider}")


def custom_factory(config: ProviderConfig) -> Provider:
    return ProviderBuilder(config.name, ProviderType.CUSTOM).with_model(config.model or "m").with_complete_func(
        answer
    ).build()


@pytest.fixture
def restore_custom() -> Iterator[None]:
    before = get_factory(ProviderType.CUSTOM)
    yield
    if get_factory(ProviderType.CUSTOM) is not None:
        unregister_factory(ProviderType.CUSTOM)
    if before is not None:
        register_factory(ProviderType.CUSTOM, before)


def test_every_built_in_type_has_a_factory_out_of_the_box() -> None:
    assert set(list_factories()) >= {
        ProviderType.OPENAI, ProviderType.AZURE_OPENAI, ProviderType.ANTHROPIC, ProviderType.OLLAMA,
        ProviderType.GEMINI, ProviderType.BEDROCK,
    }


def test_importing_the_package_and_its_factories_does_not_import_botocore() -> None:
    code = (
        "import sys, axonflow_llm, axonflow_llm.registry, axonflow_llm.routing, axonflow_llm.config\n"
        "print('botocore' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.usefixtures("restore_custom")
async def test_register_get_create_unregister() -> None:
    register_factory(ProviderType.CUSTOM, custom_factory)
    assert get_factory("custom") is custom_factory
    assert ProviderType.CUSTOM in list_factories()
    provider = create_provider(ProviderConfig(name="mine", type=ProviderType.CUSTOM, model="m1"))
    assert (await provider.complete(CompletionRequest(prompt="hi"))).content == "from mine"
    assert unregister_factory(ProviderType.CUSTOM) is custom_factory
    assert get_factory(ProviderType.CUSTOM) is None
    with pytest.raises(LookupError, match="no factory is registered for 'custom'"):
        unregister_factory(ProviderType.CUSTOM)
    await provider.aclose()


@pytest.mark.usefixtures("restore_custom")
def test_create_without_a_factory_says_how_to_register_one() -> None:
    if get_factory(ProviderType.CUSTOM) is not None:
        unregister_factory(ProviderType.CUSTOM)
    with pytest.raises(ConfigError, match=r"register_factory\(ProviderType.CUSTOM, factory\)"):
        create_provider(ProviderConfig(name="mine", type=ProviderType.CUSTOM))


def test_bad_factories_are_refused_when_registered() -> None:
    table = FactoryTable()

    async def async_factory(config: ProviderConfig) -> Provider:
        raise AssertionError

    with pytest.raises(TypeError, match="synchronous"):
        table.register(ProviderType.CUSTOM, async_factory)
    with pytest.raises(TypeError, match="callable"):
        table.register(ProviderType.CUSTOM, "not a factory")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="'gpt' is not a provider type"):
        table.register("gpt", custom_factory)


def test_invalid_config_fails_before_the_factory_runs() -> None:
    calls: list[str] = []

    def factory(config: ProviderConfig) -> Provider:
        calls.append(config.name)
        return custom_factory(config)

    table = FactoryTable({ProviderType.CUSTOM: factory})
    with pytest.raises(ConfigError, match="weight must be a finite number >= 0"):
        table.create(ProviderConfig(name="x", type=ProviderType.CUSTOM, weight=-1))
    with pytest.raises(ConfigError, match=r"settings\.retry\.max_retries"):
        table.create(ProviderConfig(name="x", type=ProviderType.CUSTOM, settings={"retry": {"max_retries": -1}}))
    with pytest.raises(ConfigError, match=r"settings\.retry: RetryConfig.max_backoff"):
        table.create(ProviderConfig(name="x", type=ProviderType.CUSTOM,
                                    settings={"retry": {"initial_backoff": 5, "max_backoff": 1}}))
    with pytest.raises(ConfigError, match=r"settings\.retry must be plain settings .* not a RetryConfig"):
        table.create(ProviderConfig(name="x", type=ProviderType.CUSTOM, settings={"retry": RetryConfig()}))
    assert calls == []


def test_a_factory_that_returns_something_else_is_reported() -> None:
    table = FactoryTable({ProviderType.CUSTOM: lambda config: object()})
    with pytest.raises(TypeError, match="not a Provider"):
        table.create(ProviderConfig(name="x", type=ProviderType.CUSTOM))


def test_the_clock_reaches_factories_that_take_it() -> None:
    seen: list[Clock | None] = []

    def factory(config: ProviderConfig, *, clock: Clock | None = None) -> Provider:
        seen.append(clock)
        return custom_factory(config)

    clock = FakeClock()
    table = FactoryTable({ProviderType.CUSTOM: factory})
    table.create(ProviderConfig(name="x", type=ProviderType.CUSTOM), clock=clock)
    table.create(ProviderConfig(name="y", type=ProviderType.CUSTOM))
    assert seen == [clock, None]


async def test_middleware_settings_become_the_providers_pipeline() -> None:
    table = FactoryTable({ProviderType.CUSTOM: custom_factory})
    provider = table.create(ProviderConfig(
        name="x", type=ProviderType.CUSTOM, timeout=12,
        settings={"retry": {"max_retries": 7}, "rate_limit": {"requests_per_second": 2.5},
                  "circuit_breaker": False, "timeouts": {"first_chunk": 3}},
    ), clock=FakeClock())
    pipeline = provider.pipeline  # type: ignore[attr-defined]
    assert pipeline.names() == ["LoggingMiddleware", "CostMiddleware", "RetryMiddleware", "RateLimitMiddleware",
                                "TimeoutMiddleware"]
    retry = pipeline[pipeline.index("RetryMiddleware")]
    assert retry.options["config"].max_retries == 7
    limiter = pipeline[pipeline.index("RateLimitMiddleware")].options["limiter"]
    assert (limiter.rate, limiter.burst) == (2.5, 3)
    timeouts = pipeline[pipeline.index("TimeoutMiddleware")].options
    assert (timeouts["timeout"], timeouts["first_chunk_timeout"]) == (12, 3.0)
    await provider.aclose()


async def test_builtin_factories_build_the_builtin_providers() -> None:
    provider = create_provider(ProviderConfig(name="oa", type=ProviderType.OPENAI, api_key="sk-test-0123456789",
                                              model="gpt-4o-mini"))
    assert type(provider).__name__ == "OpenAIProvider"
    assert provider.name == "oa"
    assert "sk-test" not in repr(provider)
    await provider.aclose()
