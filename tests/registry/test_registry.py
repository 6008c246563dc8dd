"""The registry: the seed's factory example, building from YAML all-or-nothing, lookups, health, closing."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from axonflow_llm.config import load_config
from axonflow_llm.middleware.rate_limiter import RateLimiter
from axonflow_llm.middleware.retry_config import default_retry_config
from axonflow_llm.pipeline.context import CallContext
from axonflow_llm.pipeline.errors import ConfigError
from axonflow_llm.pipeline.middleware import Reply
from axonflow_llm.pipeline.models import (
    CompletionRequest,
    CompletionResponse,
    HealthCheckResult,
    HealthStatus,
    ProviderConfig,
    ProviderType,
    UsageStats,
)
from axonflow_llm.pipeline.provider import BaseProvider, Provider
from axonflow_llm.providers.auth import APIKeyAuth
from axonflow_llm.providers.builder import ProviderBuilder
from axonflow_llm.registry import (
    ProviderDisabledError,
    Registry,
    UnknownProviderError,
    get_factory,
    register_factory,
    unregister_factory,
)
from axonflow_llm.testing import FakeClock, response

SEED_YAML = Path(__file__).parents[1] / "config" / "fixtures" / "axonflow.yaml"


class Fake(BaseProvider):
    """A provider that answers ``ok``, with a scriptable health check, and knows whether it was closed."""

    def __init__(self, name: str, *, health: Any = None) -> None:
        super().__init__(name=name, type=ProviderType.CUSTOM)
        self.health = health
        self.closed = False

    async def send(self, request: CompletionRequest, ctx: CallContext) -> Reply:
        return response(f"{self.name} says ok")

    async def health_check(self) -> HealthCheckResult:
        if callable(self.health):
            return await self.health()  # type: ignore[no-any-return]
        return HealthCheckResult(status=HealthStatus.HEALTHY, message="fine")

    async def aclose(self) -> None:
        self.closed = True
        await super().aclose()


class Recorder:
    """A factory that records what it built."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.built: list[Fake] = []
        self.fail_on = fail_on

    def __call__(self, config: ProviderConfig) -> Provider:
        if config.name == self.fail_on:
            raise ValueError(f"cannot build {config.name}")
        provider = Fake(config.name)
        self.built.append(provider)
        return provider


@pytest.fixture
def restore_custom() -> Iterator[None]:
    before = get_factory(ProviderType.CUSTOM)
    yield
    if get_factory(ProviderType.CUSTOM) is not None:
        unregister_factory(ProviderType.CUSTOM)
    if before is not None:
        register_factory(ProviderType.CUSTOM, before)


# -- the seed's "Registering with the Factory", in Python ---------------------------------------------------


async def my_handler(request: CompletionRequest, ctx: CallContext) -> CompletionResponse:
    return CompletionResponse(
        content="Response from custom provider",
        model=request.model or ctx.model or "",
        usage=UsageStats(prompt_tokens=10, completion_tokens=20, total_tokens=30),
    )


def seed_factory(config: ProviderConfig) -> Provider:
    return (
        ProviderBuilder(config.name, ProviderType.CUSTOM)
        .with_model(config.model or "")
        .with_endpoint(config.endpoint or "")
        .with_auth(APIKeyAuth(config.api_key or ""))
        .with_rate_limiter(RateLimiter(100, 100))
        .with_retry(default_retry_config())
        .with_complete_func(my_handler)
        .build()
    )


@pytest.mark.usefixtures("restore_custom")
async def test_seed_registering_with_the_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_API_KEY", "sk-seed-0123456789")
    import os

    register_factory(ProviderType.CUSTOM, seed_factory)

    registry = Registry()
    await registry.register(ProviderConfig(
        name="my-custom-llm",
        type=ProviderType.CUSTOM,
        api_key=os.environ["MY_API_KEY"],
        model="my-model-v1",
        endpoint="https://api.myprovider.com",
        enabled=True,
    ))

    provider = await registry.get("my-custom-llm")
    resp = await provider.complete(CompletionRequest(prompt="Hello, world!", max_tokens=100))
    assert resp.content == "Response from custom provider"
    assert resp.model == "my-model-v1"
    await registry.aclose()


@pytest.mark.usefixtures("restore_custom")
async def test_seed_yaml_builds_a_working_registry_once_custom_has_a_factory() -> None:
    register_factory(ProviderType.CUSTOM, seed_factory)
    async with await Registry.from_config(SEED_YAML, env={"MY_PROVIDER_API_KEY": "sk-yaml-0123456789"}) as registry:
        assert registry.list() == ["my_custom_provider", "ollama_local"]
        custom = await registry.get("my_custom_provider")
        assert (await custom.complete(CompletionRequest(prompt="hi"))).content == "Response from custom provider"
        ollama = await registry.get("ollama_local")
        assert type(ollama).__name__ == "OllamaProvider"
        assert ollama.endpoint == "http://localhost:11434"  # type: ignore[attr-defined]
        assert (registry.config("my_custom_provider").priority, registry.config("my_custom_provider").weight) == (
            10, 0.5)
        assert (registry.config("ollama_local").priority, registry.config("ollama_local").weight) == (5, 0.3)


async def test_seed_yaml_without_a_custom_factory_names_the_provider_and_builds_nothing() -> None:
    ollama = Recorder()
    with pytest.raises(ConfigError) as info:
        await Registry.from_config(SEED_YAML, factories={ProviderType.OLLAMA: ollama},
                                   env={"MY_PROVIDER_API_KEY": "k"})
    message = str(info.value)
    assert message.startswith(f"{SEED_YAML}:5: llm_providers.my_custom_provider: ")
    assert "no provider factory is registered for type 'custom'" in message
    assert "register_factory(ProviderType.CUSTOM, factory)" in message
    assert ollama.built == []


async def test_seed_yaml_without_the_key_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"axonflow.yaml:13: .*MY_PROVIDER_API_KEY is not set"):
        await Registry.from_config(SEED_YAML, factories={"custom": Recorder(), "ollama": Recorder()}, env={})


async def test_from_config_takes_a_loaded_config_too() -> None:
    config = load_config(SEED_YAML, env={"MY_PROVIDER_API_KEY": "k"})
    factory = Recorder()
    registry = await Registry.from_config(config, factories={"custom": factory, "ollama": factory})
    assert [p.name for p in factory.built] == ["my_custom_provider", "ollama_local"]
    await registry.aclose()


async def test_a_factory_failing_midway_closes_what_was_built(tmp_path: Path) -> None:
    path = tmp_path / "axonflow.yaml"
    shutil.copy(SEED_YAML, path)
    factory = Recorder(fail_on="ollama_local")
    with pytest.raises(ConfigError, match="provider 'ollama_local' could not be built: cannot build ollama_local"):
        await Registry.from_config(path, factories={"custom": factory, "ollama": factory},
                                   env={"MY_PROVIDER_API_KEY": "k"})
    assert [p.name for p in factory.built] == ["my_custom_provider"]
    assert factory.built[0].closed


# -- registering ----------------------------------------------------------------------------------------


async def test_duplicate_names_are_refused_and_the_first_stays() -> None:
    factory = Recorder()
    registry = Registry(factories={ProviderType.CUSTOM: factory})
    first = await registry.register(ProviderConfig(name="a", type=ProviderType.CUSTOM))
    with pytest.raises(ConfigError, match="a provider named 'a' is already registered"):
        await registry.register(ProviderConfig(name="a", type=ProviderType.CUSTOM))
    assert len(factory.built) == 1
    assert await registry.get("a") is first
    await registry.aclose()


async def test_invalid_config_names_the_field_and_builds_nothing() -> None:
    factory = Recorder()
    registry = Registry(factories={ProviderType.CUSTOM: factory})
    with pytest.raises(ConfigError, match=r"provider 'a': ProviderConfig.weight must be a finite number >= 0"):
        await registry.register(ProviderConfig(name="a", type=ProviderType.CUSTOM, weight=float("nan")))
    with pytest.raises(ConfigError, match="endpoint must be an http"):
        await registry.register(ProviderConfig(name="a", type=ProviderType.CUSTOM, endpoint="ftp://x"))
    with pytest.raises(TypeError, match="needs a ProviderConfig"):
        await registry.register({"name": "a"})  # type: ignore[arg-type]
    assert factory.built == []
    assert registry.list(include_disabled=True) == []


async def test_own_factories_are_apart_from_the_global_ones() -> None:
    registry = Registry(factories={ProviderType.CUSTOM: Recorder()})
    with pytest.raises(ConfigError, match="no provider factory is registered for type 'openai'"):
        await registry.register(ProviderConfig(name="o", type=ProviderType.OPENAI, api_key="k"))


async def test_disabled_configs_are_recorded_not_built() -> None:
    factory = Recorder()
    registry = Registry(factories={ProviderType.CUSTOM: factory})
    assert await registry.register(ProviderConfig(name="off", type=ProviderType.CUSTOM, enabled=False)) is None
    await registry.register(ProviderConfig(name="on", type=ProviderType.CUSTOM))
    assert factory.built[0].name == "on" and len(factory.built) == 1
    assert registry.list() == ["on"]
    assert registry.list(include_disabled=True) == ["off", "on"]
    assert registry.config("off").enabled is False
    assert "off" in registry
    with pytest.raises(ProviderDisabledError, match="disabled in its configuration"):
        await registry.get("off")
    await registry.aclose()


async def test_unknown_name_is_a_key_error_listing_the_names() -> None:
    registry = Registry(factories={ProviderType.CUSTOM: Recorder()})
    await registry.register(ProviderConfig(name="a", type=ProviderType.CUSTOM))
    await registry.register(ProviderConfig(name="b", type=ProviderType.CUSTOM))
    with pytest.raises(KeyError) as info:
        await registry.get("c")
    assert isinstance(info.value, UnknownProviderError)
    assert str(info.value) == "no provider named 'c' is registered; known: 'a', 'b'"
    with pytest.raises(KeyError, match="known"):
        registry.config("c")
    await registry.aclose()


async def test_unregister_closes_the_provider() -> None:
    factory = Recorder()
    registry = Registry(factories={ProviderType.CUSTOM: factory})
    await registry.register(ProviderConfig(name="a", type=ProviderType.CUSTOM))
    await registry.unregister("a")
    assert factory.built[0].closed
    assert registry.list() == []
    with pytest.raises(KeyError):
        await registry.unregister("a")


async def test_aclose_closes_every_provider_even_if_one_fails() -> None:
    class Stubborn(Fake):
        async def aclose(self) -> None:
            raise RuntimeError("will not close")

    built: list[Fake] = []

    def factory(config: ProviderConfig) -> Provider:
        p = Stubborn(config.name) if config.name == "bad" else Fake(config.name)
        built.append(p)
        return p

    async with Registry(factories={"custom": factory}) as registry:
        for name in ("a", "bad", "c"):
            await registry.register(ProviderConfig(name=name, type=ProviderType.CUSTOM))
    assert [p.closed for p in built if p.name != "bad"] == [True, True]
    assert registry.list() == []


# -- health ---------------------------------------------------------------------------------------------


async def test_health_check_all_is_concurrent_bounded_and_never_raises() -> None:
    clock = FakeClock()

    async def slow_ok() -> HealthCheckResult:
        await clock.sleep(3)
        return HealthCheckResult(status=HealthStatus.HEALTHY)

    async def broken() -> HealthCheckResult:
        raise ConnectionError("refused by sk-leaky-0123456789abcdef")

    async def hangs() -> HealthCheckResult:
        await asyncio.Event().wait()
        raise AssertionError

    healths = {"slow": slow_ok, "broken": broken, "hangs": hangs, "fine": None}

    def factory(config: ProviderConfig) -> Provider:
        return Fake(config.name, health=healths[config.name])

    async with Registry(factories={"custom": factory}, clock=clock, health_check_timeout=5) as registry:
        for name in healths:
            await registry.register(ProviderConfig(name=name, type=ProviderType.CUSTOM))
        started = clock.now()
        results = await registry.health_check_all()
        assert clock.now() - started == 5  # all at once: the slowest bound, not the sum
    assert list(results) == ["slow", "broken", "hangs", "fine"]
    assert results["slow"].status is HealthStatus.HEALTHY
    assert results["fine"].status is HealthStatus.HEALTHY
    assert results["broken"].status is HealthStatus.UNHEALTHY
    assert results["broken"].message.startswith("health check failed: ConnectionError: refused by ***")
    assert results["hangs"].status is HealthStatus.UNHEALTHY
    assert results["hangs"].message == "health check timed out after 5s"


async def test_health_check_all_takes_a_per_call_bound() -> None:
    clock = FakeClock()

    async def slow() -> HealthCheckResult:
        await clock.sleep(2)
        return HealthCheckResult(status=HealthStatus.HEALTHY)

    registry = Registry(factories={"custom": lambda c: Fake(c.name, health=slow)}, clock=clock)
    await registry.register(ProviderConfig(name="s", type=ProviderType.CUSTOM))
    assert (await registry.health_check_all(check_timeout=1))["s"].status is HealthStatus.UNHEALTHY
    assert (await registry.health_check_all())["s"].status is HealthStatus.HEALTHY
    await registry.aclose()


def test_registry_options_are_checked() -> None:
    with pytest.raises(ValueError, match="health_check_timeout"):
        Registry(health_check_timeout=0)
    for bad in (True, float("inf"), float("nan"), "10"):
        with pytest.raises(ValueError, match="health_check_timeout must be a finite number"):
            Registry(health_check_timeout=bad)  # type: ignore[arg-type]


async def test_health_check_all_refuses_a_timeout_of_zero_rather_than_report_all_unhealthy() -> None:
    registry = Registry()
    with pytest.raises(ValueError, match="check_timeout must be a finite number of seconds > 0"):
        await registry.health_check_all(check_timeout=0)


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("  good_custom: {}\n  bad_custom:\n    type: gpt\n", "'gpt' is not a provider type"),
        ("  good_custom: {}\n  bad_custom:\n    weight: -2\n", "bad_custom.weight"),
        ("  good_custom: {}\n  bad_custom:\n    credentials:\n      api_key: ${UNSET_KEY}\n", "UNSET_KEY is not set"),
        ("  good_custom: {}\n  bad_custom:\n    priority: high\n", "bad_custom.priority: Expected `int`"),
        ("  good_custom: {}\n  bad_custom:\n    colour: blue\n", "unknown field 'colour'"),
        ("  good_custom: {}\n  bad_custom: {priority: 1\n", "malformed YAML"),
        ("  good_custom: {}\n  good_custom: {}\n", "is defined twice"),
        ("  good_custom: {}\n  bad_custom:\n    retry: {initial_backoff: 9, max_backoff: 1}\n", "max_backoff"),
        ("  good_custom: {}\n  bad_ollama: {}\n", "no provider factory is registered for type 'ollama'"),
    ],
)
async def test_a_bad_file_gives_one_error_and_builds_nothing(tmp_path: Path, yaml_text: str, expected: str) -> None:
    path = tmp_path / "axonflow.yaml"
    path.write_text("llm_providers:\n" + yaml_text)
    factory = Recorder()
    with pytest.raises(ConfigError, match=expected) as info:
        await Registry.from_config(path, factories={"custom": factory}, env={})
    assert str(info.value).startswith(str(path))
    assert factory.built == []


# --- pricing from the file reaches the provider's estimates and its cost layer ------------------------------

PRICED_YAML = """\
version: "1.0"
llm_providers:
  openai:
    config:
      model: house-model
      endpoint: ${BASE}/v1
      max_tokens: 100
    credentials:
      api_key: sk-test-0123456789abcdef
    retry: false
    pricing:
      house-model: {input_per_1m: 1000, output_per_1m: 2000}
  ollama:
    config:
      model: llama3.1
      endpoint: ${BASE}
    pricing:
      llama3.1: {input_per_1m: 10, output_per_1m: 20}
"""


async def test_yaml_pricing_reaches_estimate_cost_and_the_cost_of_each_call(tmp_path: Path) -> None:
    from axonflow_llm.testing.fake_server import fake_llm_server

    path = tmp_path / "priced.yaml"
    path.write_text(PRICED_YAML, encoding="utf-8")
    with fake_llm_server() as server:
        config = load_config(path, env={"BASE": server.url})
        async with asyncio.timeout(10), await Registry.from_config(config) as registry:
            openai = registry.provider("openai")
            estimate = openai.estimate_cost(CompletionRequest(prompt="hi"))
            assert estimate is not None
            assert (estimate.input_cost_per_1k, estimate.output_cost_per_1k) == (1.0, 2.0)
            assert estimate.estimated_output_tokens == 100  # the provider's max_tokens
            reply = await openai.complete(CompletionRequest(prompt="two words"))
            usage = reply.usage
            assert reply.cost == pytest.approx((usage.prompt_tokens * 1000 + usage.completion_tokens * 2000) / 1e6)
            # Ollama is free by default; the file's price wins there too.
            ollama = registry.provider("ollama")
            local = ollama.estimate_cost(CompletionRequest(prompt="hi", max_tokens=10))
            assert local is not None and local.output_cost_per_1k == pytest.approx(0.02)
            reply = await ollama.complete(CompletionRequest(prompt="x y"))
            usage = reply.usage
            assert usage.completion_tokens > 0
            assert reply.cost == pytest.approx((usage.prompt_tokens * 10 + usage.completion_tokens * 20) / 1e6)
