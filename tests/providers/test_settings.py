"""settings= in code: every built-in provider refuses a key it does not read, naming it and what it reads."""

from __future__ import annotations

from typing import Any

import pytest

from axonflow_llm.config.schema import PROVIDER_SETTINGS
from axonflow_llm.pipeline.models import ProviderConfig, ProviderType
from axonflow_llm.providers.anthropic import AnthropicProvider
from axonflow_llm.providers.azure_openai import AzureOpenAIProvider
from axonflow_llm.providers.bedrock import BedrockProvider
from axonflow_llm.providers.gemini import GeminiProvider
from axonflow_llm.providers.http_provider import HTTPProvider
from axonflow_llm.providers.ollama import OllamaProvider
from axonflow_llm.providers.openai import OpenAIProvider

#: Each built-in provider with the arguments it needs besides settings.
BUILT_IN: dict[ProviderType, tuple[type[HTTPProvider], dict[str, Any]]] = {
    ProviderType.OPENAI: (OpenAIProvider, {"api_key": "sk-test"}),
    ProviderType.AZURE_OPENAI: (AzureOpenAIProvider, {"api_key": "az-test", "endpoint": "https://r.openai.azure.com"}),
    ProviderType.ANTHROPIC: (AnthropicProvider, {"api_key": "sk-ant-test"}),
    ProviderType.OLLAMA: (OllamaProvider, {}),
    ProviderType.GEMINI: (GeminiProvider, {"api_key": "g-test"}),
    ProviderType.BEDROCK: (BedrockProvider, {"region": "us-east-1"}),
}
BEDROCK_KEYS = {"aws_access_key_id": "AKIDTEST", "aws_secret_access_key": "secret-test"}


def build(ptype: ProviderType, settings: Any) -> HTTPProvider:
    cls, kwargs = BUILT_IN[ptype]
    if ptype is ProviderType.BEDROCK and isinstance(settings, dict):
        settings = {**BEDROCK_KEYS, **settings}
    return cls(settings=settings, **kwargs)  # type: ignore[call-arg]


@pytest.mark.parametrize("ptype", list(BUILT_IN))
def test_a_misspelt_setting_is_refused_naming_it_and_what_is_read(ptype: ProviderType) -> None:
    cls = BUILT_IN[ptype][0]
    with pytest.raises(ValueError, match="'hedaers'") as info:
        build(ptype, {"hedaers": {"x-a": "1"}})
    message = str(info.value)
    assert cls.__name__ in message and "'headers'" in message  # what it does read
    assert "secret-test" not in message


@pytest.mark.parametrize("ptype", list(BUILT_IN))
def test_middleware_settings_in_code_point_to_the_pipeline(ptype: ProviderType) -> None:
    with pytest.raises(ValueError, match=r"'retry'.*pipeline=default_pipeline"):
        build(ptype, {"retry": {"max_retries": 2}})


@pytest.mark.parametrize("ptype", list(BUILT_IN))
def test_settings_must_be_a_mapping(ptype: ProviderType) -> None:
    with pytest.raises(TypeError, match="settings must be a mapping"):
        build(ptype, ["headers"])


@pytest.mark.parametrize("ptype", list(BUILT_IN))
def test_every_key_a_configuration_file_may_set_is_read(ptype: ProviderType) -> None:
    cls = BUILT_IN[ptype][0]
    assert set(PROVIDER_SETTINGS[ptype]) <= cls.settings_keys
    provider = build(ptype, {"headers": {"x-team": "a"}})
    assert provider.name


def test_from_config_leaves_the_middleware_settings_to_the_registry() -> None:
    config = ProviderConfig(name="oa", type=ProviderType.OPENAI, api_key="sk-test",
                            settings={"retry": {"max_retries": 1}, "organization": "org-1"})
    provider = OpenAIProvider.from_config(config)
    assert provider._headers["openai-organization"] == "org-1"
