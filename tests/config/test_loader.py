"""Loading the YAML configuration: the seed's example, every setting, and one clear error per bad file."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from axonflow_llm.config import (
    CircuitBreakerSettings,
    LLMConfig,
    MiddlewareSettings,
    MissingVariable,
    ModelPriceSettings,
    RateLimitSettings,
    RetrySettings,
    Secret,
    TimeoutSettings,
    dump_config,
    infer_type,
    load_config,
    parse_config,
    parse_duration,
)
from axonflow_llm.pipeline.errors import ConfigError
from axonflow_llm.pipeline.models import ProviderConfig, ProviderType

FIXTURES = Path(__file__).parent / "fixtures"
SEED = FIXTURES / "axonflow.yaml"
FULL = FIXTURES / "full.yaml"
SEED_ENV = {"MY_PROVIDER_API_KEY": "sk-test-0123456789abcdef"}


def parse(text: str, env: dict[str, str] | None = None) -> LLMConfig:
    return parse_config(textwrap.dedent(text), source="test.yaml", env=env or {})


def error_of(text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text, env)
    return str(info.value)


# -- the seed's example -------------------------------------------------------------------------------


def test_seed_example_loads_with_its_variables_set() -> None:
    config = load_config(SEED, env={**SEED_ENV, "OLLAMA_ENDPOINT": "http://gpu-box:11434", "OLLAMA_MODEL": "qwen2"})
    assert config.version == "1.0"
    assert list(config.providers) == ["my_custom_provider", "ollama_local"]
    custom = config.providers["my_custom_provider"]
    assert custom == ProviderConfig(
        name="my_custom_provider",
        type=ProviderType.CUSTOM,
        api_key="sk-test-0123456789abcdef",
        endpoint="https://api.myprovider.com/v1",
        model="my-model-v1",
        max_tokens=4096,
        priority=10,
        weight=0.5,
        display_name="My Custom LLM",
    )
    ollama = config.providers["ollama_local"]
    assert ollama.type is ProviderType.OLLAMA
    assert (ollama.endpoint, ollama.model) == ("http://gpu-box:11434", "qwen2")
    assert (ollama.priority, ollama.weight) == (5, 0.3)
    assert config.source == str(SEED)


@pytest.mark.parametrize("ollama_env", [{}, {"OLLAMA_ENDPOINT": "", "OLLAMA_MODEL": ""}])
def test_seed_example_ollama_defaults_apply_when_unset_or_empty(ollama_env: dict[str, str]) -> None:
    config = load_config(SEED, env={**SEED_ENV, **ollama_env})
    ollama = config.providers["ollama_local"]
    assert ollama.endpoint == "http://localhost:11434"
    assert ollama.model == "llama3.1:70b"


def test_seed_example_without_the_api_key_names_the_variable_file_and_line() -> None:
    with pytest.raises(MissingVariable) as info:
        load_config(SEED, env={})
    message = str(info.value)
    assert info.value.variable == "MY_PROVIDER_API_KEY"
    assert message.startswith(f"{SEED}:13: llm_providers.my_custom_provider.credentials.api_key: ")
    assert "MY_PROVIDER_API_KEY is not set" in message


def test_load_config_reads_the_real_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_PROVIDER_API_KEY", "from-environ")
    monkeypatch.delenv("OLLAMA_MODEL", raising=False)
    config = load_config(SEED)
    assert config.providers["my_custom_provider"].api_key == "from-environ"


def test_the_api_key_never_shows_in_reprs_or_dumps() -> None:
    config = load_config(SEED, env=SEED_ENV)
    secret = SEED_ENV["MY_PROVIDER_API_KEY"]
    assert secret not in repr(config)
    assert secret not in repr(config.providers)
    dumped = dump_config(config)
    assert secret not in dumped
    assert "api_key: '***'" in dumped


# -- every setting ------------------------------------------------------------------------------------

FULL_ENV = {"OPENAI_API_KEY": "sk-openai-0123456789", "OPENAI_MAX_TOKENS": "2048"}


def test_full_example_reads_every_setting_typed() -> None:
    config = load_config(FULL, env=FULL_ENV)
    openai = config.providers["openai_main"]
    assert openai.type is ProviderType.OPENAI
    assert openai.max_tokens == 2048  # an expanded "2048" becomes an int where an int is wanted
    assert openai.timeout == 60.0
    assert openai.weight == 2.0
    assert openai.settings["rate_limit"] == RateLimitSettings(
        requests_per_second=5, burst=10, tokens_per_minute=90000
    )
    assert openai.settings["retry"] == RetrySettings(
        max_retries=4, initial_backoff=0.25, max_backoff=20.0, backoff_factor=2.0, jitter=0.1,
        max_retry_after=60.0, deadline=90.0,
    )
    assert openai.settings["circuit_breaker"] == CircuitBreakerSettings(
        failure_threshold=3, reset_timeout=30.0, half_open_max_calls=1
    )
    assert openai.settings["timeouts"] == TimeoutSettings(request=120.0, first_chunk=15.0, idle=30.0)
    assert openai.settings["pricing"] == {"gpt-4o-mini": ModelPriceSettings(input_per_1m=0.15, output_per_1m=0.6)}

    azure = config.providers["azure_eu"]
    assert azure.type is ProviderType.AZURE_OPENAI
    assert azure.settings == {"deployment": "gpt-4o-eu", "api_version": "2024-10-21", "retry": False}
    assert azure.api_key == ""

    bedrock = config.providers["bedrock_us"]
    assert bedrock.type is ProviderType.BEDROCK
    assert bedrock.region == "us-east-1"
    assert isinstance(bedrock.settings["aws_secret_access_key"], Secret)
    assert "wJalrXUtnFEMI" not in repr(bedrock)


def test_a_disabled_provider_needs_no_variables_and_is_kept_disabled() -> None:
    config = load_config(FULL, env=FULL_ENV)  # ANTHROPIC_API_KEY is unset; claude is disabled
    claude = config.providers["claude"]
    assert claude.enabled is False
    assert claude.api_key is None
    assert [c.name for c in config.enabled] == ["openai_main", "azure_eu", "bedrock_us"]


def test_enabled_can_come_from_a_variable() -> None:
    with pytest.raises(MissingVariable, match="ANTHROPIC_API_KEY"):
        load_config(FULL, env={**FULL_ENV, "CLAUDE_ENABLED": "true"})
    config = load_config(FULL, env={**FULL_ENV, "CLAUDE_ENABLED": "true", "ANTHROPIC_API_KEY": "k"})
    assert config.providers["claude"].enabled is True


def test_middleware_settings_read_back_as_one_struct() -> None:
    config = load_config(FULL, env=FULL_ENV)
    settings = MiddlewareSettings.of(config.providers["openai_main"])
    assert not settings.is_empty
    assert settings.retry == config.providers["openai_main"].settings["retry"]
    assert MiddlewareSettings.of(config.providers["bedrock_us"]).is_empty


def test_dump_config_masks_every_credential_and_loads_back() -> None:
    config = load_config(FULL, env=FULL_ENV)
    dumped = dump_config(config)
    for secret in ("sk-openai-0123456789", "AKIDEXAMPLE", "wJalrXUtnFEMI"):
        assert secret not in dumped
    data = yaml.safe_load(dumped)
    assert data["llm_providers"]["bedrock_us"]["credentials"] == {
        "aws_access_key_id": "***", "aws_secret_access_key": "***"
    }
    assert data["llm_providers"]["openai_main"]["retry"]["initial_backoff"] == 0.25
    assert data["llm_providers"]["azure_eu"]["type"] == "azure-openai"
    again = parse_config(dumped, source="dumped.yaml", env={})
    assert again.providers["openai_main"].settings == config.providers["openai_main"].settings
    assert again.providers["openai_main"].api_key == "***"


def test_expanded_values_stay_strings_where_strings_are_wanted() -> None:
    config = parse(
        """
        llm_providers:
          openai:
            config: {model: "${MODEL}"}
            credentials: {api_key: "${KEY}"}
        """,
        env={"MODEL": "4", "KEY": "12345"},
    )
    assert config.providers["openai"].model == "4"
    assert config.providers["openai"].api_key == "12345"


def test_literal_dollars_and_keys_are_not_expanded() -> None:
    config = parse(
        """
        llm_providers:
          # ${NOT_A_VARIABLE} in a comment is ignored
          custom:
            config:
              model: "m$$1"
              "${KEY}": "$$5"
              price: cost $5
        """,
    )
    settings = config.providers["custom"].settings
    assert config.providers["custom"].model == "m$1"
    assert settings == {"${KEY}": "$5", "price": "cost $5"}


def test_provider_settings_go_into_settings_and_custom_takes_any() -> None:
    config = parse(
        """
        llm_providers:
          ollama:
            config: {model: llama3, keep_alive: 5m, options: {num_ctx: 8192}}
          custom:
            config: {anything: [1, 2], nested: {a: b}}
        """,
    )
    assert config.providers["ollama"].settings == {"keep_alive": "5m", "options": {"num_ctx": 8192}}
    assert config.providers["custom"].settings == {"anything": [1, 2], "nested": {"a": "b"}}


def test_dump_masks_secret_looking_settings() -> None:
    config = parse(
        """
        llm_providers:
          anthropic:
            config: {headers: {x-api-key: sk-ant-hidden-123456, anthropic-beta: tools}}
          custom:
            config: {auth_token: hidden-abc, max_tokens_field: max_tokens}
        """,
    )
    dumped = dump_config(config)
    assert "hidden" not in dumped
    data = yaml.safe_load(dumped)["llm_providers"]
    assert data["anthropic"]["config"]["headers"] == {"x-api-key": "***", "anthropic-beta": "tools"}
    assert data["custom"]["config"] == {"auth_token": "***", "max_tokens_field": "max_tokens"}


def test_version_is_optional_and_may_be_unquoted() -> None:
    assert parse("llm_providers: {ollama: {}}").version == "1.0"
    assert parse("version: 1.0\nllm_providers: {ollama: {}}").version == "1.0"


def test_x_keys_hold_anchors_for_merge_keys() -> None:
    config = parse(
        """
        x-common: &common
          priority: 3
          weight: 0.2
        llm_providers:
          ollama_a:
            <<: *common
            weight: 0.7
        """,
    )
    provider = config.providers["ollama_a"]
    assert (provider.priority, provider.weight) == (3, 0.7)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ollama_local", ProviderType.OLLAMA),
        ("my_custom_provider", ProviderType.CUSTOM),
        ("azure_openai_eu", ProviderType.AZURE_OPENAI),
        ("azure-gpt4", ProviderType.AZURE_OPENAI),
        ("OpenAI", ProviderType.OPENAI),
        ("bedrock", ProviderType.BEDROCK),
        ("gemini_pro", ProviderType.GEMINI),
        ("claude", None),
        ("openai_anthropic_bridge", None),
        ("ollamas", None),
    ],
)
def test_infer_type_from_the_words_of_the_name(name: str, expected: ProviderType | None) -> None:
    assert infer_type(name) is expected


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(30, 30.0), (2.5, 2.5), ("250ms", 0.25), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("10", 10.0)],
)
def test_durations_accept_units(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["soon", "-1s", "1d", True, [1]])
def test_bad_durations_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_empty_provider_entry_is_all_defaults() -> None:
    provider = parse("llm_providers:\n  ollama:\n").providers["ollama"]
    assert (provider.type, provider.enabled, provider.priority, provider.weight) == (
        ProviderType.OLLAMA, True, 0, 1.0
    )


# -- bad configurations: one clear error each -----------------------------------------------------------


def test_unknown_type_lists_the_types() -> None:
    message = error_of(
        """
        llm_providers:
          mine:
            type: gpt
        """
    )
    assert message.startswith("test.yaml:4: llm_providers.mine.type: 'gpt' is not a provider type")
    assert "openai, anthropic, ollama, bedrock, gemini, azure-openai, custom" in message


def test_missing_type_that_cannot_be_inferred_says_add_type() -> None:
    message = error_of("llm_providers:\n  claude:\n    priority: 1\n")
    assert message.startswith("test.yaml:2: llm_providers.claude: cannot tell the provider type")
    assert "add `type:`" in message


@pytest.mark.parametrize(
    ("value", "expected"),
    [("-0.5", "Expected `float` >= 0.0"), ("heavy", "Expected `float`, got `str`"),
     (".inf", "weight must be a finite number")],
)
def test_bad_weight_names_the_path_and_what_is_allowed(value: str, expected: str) -> None:
    message = error_of(f"llm_providers:\n  ollama:\n    priority: 1\n    weight: {value}\n")
    assert message.startswith("test.yaml:4: llm_providers.ollama.weight: ")
    assert expected in message


def test_wrong_field_type_names_the_path_line_and_type() -> None:
    message = error_of(
        """
        llm_providers:
          ollama:
            config:
              max_tokens: lots
        """
    )
    assert message == "test.yaml:5: llm_providers.ollama.config.max_tokens: Expected `int` (or nothing), got `str`"


def test_expanded_value_of_the_wrong_type_is_reported_at_its_line() -> None:
    message = error_of("llm_providers:\n  ollama:\n    priority: ${PRIO}\n", env={"PRIO": "high"})
    assert message.startswith("test.yaml:3: llm_providers.ollama.priority: Expected `int`, got `str`")


@pytest.mark.parametrize(
    ("text", "path", "allowed"),
    [
        ("llm_providers:\n  ollama:\n    wieght: 1\n", "test.yaml:3: llm_providers.ollama.wieght", "priority"),
        ("llm_providers:\n  ollama:\n    config:\n      modle: x\n", "test.yaml:4: llm_providers.ollama.config.modle",
         "model, endpoint, max_tokens"),
        ("llm_providers:\n  ollama:\n    timeouts:\n      first_byte: 3\n",
         "test.yaml:4: llm_providers.ollama.timeouts.first_byte", "request, first_chunk, idle"),
        ("llm_providers:\n  ollama:\n    retry:\n      retries: 3\n", "test.yaml:4: llm_providers.ollama.retry.retries",
         "max_retries"),
        ("llm_providers:\n  ollama:\n    credentials:\n      apikey: x\n",
         "test.yaml:4: llm_providers.ollama.credentials.apikey", "api_key"),
    ],
)
def test_unknown_field_names_the_path_and_the_allowed_fields(text: str, path: str, allowed: str) -> None:
    message = error_of(text)
    assert message.startswith(f"{path}: unknown field")
    assert allowed in message


def test_unknown_top_level_key_is_refused() -> None:
    message = error_of("llm_provider:\n  ollama: {}\n")
    assert message.startswith("test.yaml:1: llm_provider: unknown top-level key")


def test_missing_llm_providers_section() -> None:
    assert "no `llm_providers:` section" in error_of("version: '1.0'\n")


def test_unsupported_version() -> None:
    assert "version '2.0' is not supported" in error_of("version: '2.0'\nllm_providers: {}\n")


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("llm_providers:\n  ollama:\n    config: {model: x\n", 4),
        ("llm_providers:\n  ollama:\n    weight: 1\n   priority: 2\n", 4),
        ("llm_providers:\n\tollama: {}\n", 2),
    ],
)
def test_malformed_yaml_gives_file_and_line(text: str, line: int) -> None:
    message = error_of(text)
    assert message.startswith(f"test.yaml:{line}: malformed YAML")


def test_empty_file() -> None:
    assert "the configuration is empty" in error_of("")


def test_duplicate_provider_names_are_refused() -> None:
    message = error_of(
        """
        llm_providers:
          ollama_local:
            priority: 1
          ollama_local:
            priority: 2
        """
    )
    assert message.startswith("test.yaml:5: llm_providers.ollama_local is defined twice (first at line 3)")


def test_duplicate_keys_inside_a_provider_are_refused() -> None:
    assert "llm_providers.ollama.weight is defined twice" in error_of(
        "llm_providers:\n  ollama:\n    weight: 1\n    weight: 2\n"
    )


def test_bad_endpoint_is_reported_at_config_endpoint() -> None:
    message = error_of("llm_providers:\n  ollama:\n    config:\n      endpoint: localhost:11434\n")
    assert message.startswith("test.yaml:4: llm_providers.ollama.config.endpoint: ")
    assert "http://" in message


def test_cross_field_middleware_errors_come_from_the_middleware_with_the_path() -> None:
    message = error_of(
        "llm_providers:\n  ollama:\n    retry:\n      initial_backoff: 10s\n      max_backoff: 1s\n"
    )
    assert message.startswith("test.yaml:3: llm_providers.ollama.retry: ")
    assert "max_backoff" in message


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("rate_limit: {burst: 5}", "burst needs requests_per_second"),
        ("rate_limit: {}", "rate_limit needs requests_per_second"),
        ("rate_limit: {requests_per_second: 0}", "Expected `float` > 0.0"),
        ("retry: {jitter: 2}", "Expected `float` <= 1.0"),
        ("circuit_breaker: {failure_threshold: 0}", "Expected `int` >= 1"),
        ("timeouts: {request: 0}", "request must be more than 0 seconds"),
        ("timeouts: {request: soon}", "expected a duration"),
        ("pricing: {m: {input_per_1m: 1}}", "missing required field `output_per_1m`"),
        ("pricing: [1]", "expected a mapping of model name"),
    ],
)
def test_bad_middleware_settings(section: str, expected: str) -> None:
    message = error_of(f"llm_providers:\n  ollama:\n    {section}\n")
    assert message.startswith("test.yaml:")
    assert "llm_providers.ollama." in message
    assert expected in message


def test_errors_never_show_a_credential() -> None:
    message = error_of(
        "llm_providers:\n  openai:\n    credentials:\n      api_key: ${KEY}\n    weight: -1\n",
        env={"KEY": "sk-verysecret-0123456789"},
    )
    assert "verysecret" not in message


def test_middleware_or_credentials_inside_config_are_pointed_elsewhere() -> None:
    message = error_of("llm_providers:\n  custom:\n    config:\n      retry: {max_retries: 1}\n")
    assert message.startswith("test.yaml:4: llm_providers.custom.config.retry: 'retry' does not belong in config")
    assert "`credentials:`" in error_of("llm_providers:\n  openai:\n    config:\n      api_key: x\n")


def test_unknown_provider_setting_lists_that_types_settings() -> None:
    message = error_of("llm_providers:\n  ollama:\n    config:\n      keepalive: 5m\n")
    assert message.startswith("test.yaml:4: llm_providers.ollama.config.keepalive: unknown field 'keepalive' "
                              "for provider type 'ollama'")
    assert "model, endpoint, max_tokens, timeout, region, headers, options, keep_alive" in message


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the configuration file"):
        load_config(tmp_path / "missing.yaml")
