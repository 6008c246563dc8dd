from __future__ import annotations

import msgspec
import pytest

from axonflow_llm import (
    Capability,
    CompletionRequest,
    CompletionResponse,
    FinishReason,
    Message,
    ProviderConfig,
    ProviderType,
    StreamChunk,
    UsageStats,
)


def test_provider_type_values_match_the_seed() -> None:
    assert [t.value for t in ProviderType] == [
        "openai", "anthropic", "ollama", "bedrock", "gemini", "azure-openai", "custom",
    ]
    assert ProviderType("custom") is ProviderType.CUSTOM


def test_capabilities() -> None:
    assert {c.value for c in Capability} == {
        "chat", "completion", "streaming", "vision", "function_calling", "embeddings",
        "code_generation", "long_context",
    }


def test_request_needs_prompt_or_messages() -> None:
    with pytest.raises(ValueError, match="prompt= or a non-empty messages="):
        CompletionRequest()
    with pytest.raises(ValueError, match="prompt= or a non-empty messages="):
        CompletionRequest(messages=[])


def test_request_rejects_negative_max_tokens_and_bad_sampling() -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        CompletionRequest(prompt="x", max_tokens=-1)
    with pytest.raises(ValueError, match="temperature"):
        CompletionRequest(prompt="x", temperature=float("nan"))
    with pytest.raises(ValueError, match="top_p"):
        CompletionRequest(prompt="x", top_p=1.5)
    with pytest.raises(ValueError, match="top_k"):
        CompletionRequest(prompt="x", top_k=0)
    with pytest.raises(TypeError, match="list of strings"):
        CompletionRequest(prompt="x", stop_sequences="END")


def test_request_accepts_lists_and_stores_tuples() -> None:
    r = CompletionRequest(messages=[Message(role="user", content="a")], stop_sequences=["x"])
    assert isinstance(r.messages, tuple)
    assert r.stop_sequences == ("x",)
    assert r.chat_messages() == [Message(role="user", content="a")]


def test_chat_messages_appends_the_prompt_as_a_user_turn() -> None:
    r = CompletionRequest(messages=[Message(role="assistant", content="a")], prompt="b", system_prompt="s")
    assert [m.role for m in r.chat_messages()] == ["assistant", "user"]


def test_message_role_is_checked() -> None:
    with pytest.raises(ValueError, match="role"):
        Message(role="robot", content="x")


def test_messages_must_be_message_objects() -> None:
    with pytest.raises(TypeError, match="Message"):
        CompletionRequest(messages=[{"role": "user", "content": "x"}])  # type: ignore[list-item]


def test_temperature_zero_is_kept() -> None:
    assert CompletionRequest(prompt="x", temperature=0).temperature == 0


def test_structs_are_frozen_and_round_trip_json() -> None:
    resp = CompletionResponse(
        content="hi", usage=UsageStats(prompt_tokens=1, completion_tokens=2, total_tokens=3),
        finish_reason=FinishReason.STOP,
    )
    with pytest.raises(AttributeError):
        resp.content = "x"  # type: ignore[misc]
    again = msgspec.json.decode(msgspec.json.encode(resp), type=CompletionResponse)
    assert again == resp
    assert StreamChunk().done is False


def test_provider_config_repr_masks_the_key_and_validate_names_the_field() -> None:
    cfg = ProviderConfig(name="x", type=ProviderType.OPENAI, api_key="sk-secret-123456789")
    assert "sk-secret" not in repr(cfg)
    assert "api_key='***'" in repr(cfg)
    with_settings = ProviderConfig(
        name="x", type=ProviderType.BEDROCK,
        settings={"aws_secret_access_key": "wJalrXUtnFEMI-SECRET", "azure_ad_token": "eyJ-TOKEN", "region": "eu"},
    )
    text = repr(with_settings)
    assert "SECRET" not in text and "eyJ-TOKEN" not in text
    assert "'region': 'eu'" in text
    cfg.validate()
    bad = ProviderConfig(name="x", type=ProviderType.OPENAI, weight=-1)
    with pytest.raises(ValueError, match="weight"):
        bad.validate()
    with pytest.raises(ValueError, match="endpoint"):
        ProviderConfig(name="x", type=ProviderType.OPENAI, endpoint="ftp://x").validate()
    with pytest.raises(ValueError, match="one of"):
        ProviderConfig(name="x", type="nope").validate()  # type: ignore[arg-type]
