"""Environment variable expansion: the four forms, errors naming the variable, no value ever shown."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from axonflow_llm.config.expand import MissingVariable, expand_env
from axonflow_llm.pipeline.errors import ConfigError

ENV = {"SET": "value", "EMPTY": "", "PORT": "8080"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "plain"),
        ("${SET}", "value"),
        ("${EMPTY}", ""),
        ("http://host:${PORT}/v1", "http://host:8080/v1"),
        ("${UNSET:-fallback}", "fallback"),
        ("${EMPTY:-fallback}", "fallback"),
        ("${SET:-fallback}", "value"),
        ("${UNSET-fallback}", "fallback"),
        ("${EMPTY-fallback}", ""),
        ("${SET-fallback}", "value"),
        ("${UNSET:-llama3.1:70b}", "llama3.1:70b"),
        ("${UNSET:-}", ""),
        ("$$", "$"),
        ("$${SET}", "${SET}"),
        ("pa$word", "pa$word"),
        ("cost: $5", "cost: $5"),
        ("${SET}${PORT}", "value8080"),
    ],
)
def test_expands_each_form(text: str, expected: str) -> None:
    assert expand_env(text, ENV) == expected


def test_unset_variable_without_default_names_it_and_where() -> None:
    with pytest.raises(MissingVariable) as info:
        expand_env("key ${MY_PROVIDER_API_KEY}", ENV, where="axonflow.yaml:14: llm_providers.x.credentials.api_key")
    message = str(info.value)
    assert info.value.variable == "MY_PROVIDER_API_KEY"
    assert message.startswith("axonflow.yaml:14: llm_providers.x.credentials.api_key: ")
    assert "MY_PROVIDER_API_KEY is not set" in message
    assert "${MY_PROVIDER_API_KEY:-default}" in message
    assert isinstance(info.value, ConfigError)


@pytest.mark.parametrize("text", ["${1ABC}", "${}", "${SET", "${SE T}", "${sk live-abcdefgh}"])
def test_malformed_reference_is_an_error_that_does_not_echo_the_text(text: str) -> None:
    with pytest.raises(ConfigError, match="malformed variable reference") as info:
        expand_env(text, ENV, where="f.yaml:3: a.b")
    assert "sk-live" not in str(info.value)


@pytest.mark.parametrize("text", ["${SET:-${PORT}}", "${UNSET:-${PORT}}", "${UNSET-a${PORT}}"])
def test_a_nested_default_is_an_error_not_a_stray_brace(text: str) -> None:
    with pytest.raises(ConfigError, match="defaults cannot nest"):
        expand_env(text, ENV, where="f.yaml:3: a.b")


def test_values_are_not_expanded_twice() -> None:
    assert expand_env("${NESTED}", {"NESTED": "${SET}"}) == "${SET}"
    assert expand_env("${UNSET:-$$}", ENV) == "$$"


@settings(deadline=None, max_examples=200)
@given(st.text())
def test_escaping_every_dollar_gives_back_the_text(text: str) -> None:
    assert expand_env(text.replace("$", "$$"), {}) == text


@settings(deadline=None, max_examples=200)
@given(st.text(alphabet=st.characters(blacklist_characters="$")))
def test_text_without_a_dollar_is_unchanged(text: str) -> None:
    assert expand_env(text, ENV) is text
