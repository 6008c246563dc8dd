"""Prices: the shipped table, lookup rules, overrides, token and cost estimates, validation."""

from __future__ import annotations

import json
import math
from importlib import resources

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from axonflow_llm.middleware.pricing import (
    DEFAULT_OUTPUT_TOKENS,
    ModelPrice,
    PriceTable,
    as_price_table,
    cost_of,
    estimate_cost,
    estimate_tokens,
)
from axonflow_llm.pipeline.models import CompletionRequest, CostEstimate, Message, UsageStats

GPT4O = ModelPrice(input_per_1m=2.5, output_per_1m=10.0)


# -- the shipped table --------------------------------------------------------------------------------


def test_the_shipped_prices_are_packaged_data_with_a_checked_date_and_a_list_price_note() -> None:
    raw = json.loads(resources.files("axonflow_llm.middleware").joinpath("prices.json").read_text())
    assert raw["checked"] and "list price" in raw["note"].lower()
    table = PriceTable.default()
    assert table.checked == raw["checked"]
    assert len(table) == len(raw["models"]) > 50


def test_the_default_table_is_loaded_once_and_shared() -> None:
    assert PriceTable.default() is PriceTable.default()


@pytest.mark.parametrize(
    "model",
    [
        "gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o1", "o3", "o3-mini", "o4-mini",
        "claude-3-5-sonnet-20241022", "claude-3-5-haiku-20241022", "claude-3-7-sonnet-20250219",
        "claude-sonnet-4-20250514", "claude-opus-4-20250514", "claude-3-opus-20240229",
        "claude-3-haiku-20240307", "gemini-1.5-pro", "gemini-1.5-flash", "gemini-2.0-flash",
        "gemini-2.5-pro", "gemini-2.5-flash", "anthropic.claude-3-5-sonnet-20240620-v1:0",
        "meta.llama3-70b-instruct-v1:0", "amazon.titan-text-express-v1",
    ],
)
def test_every_current_model_of_the_built_in_providers_has_a_price(model: str) -> None:
    price = PriceTable.default().get(model)
    assert price is not None and price.output_per_1m >= price.input_per_1m > 0


def test_ollama_models_are_free_whatever_their_name() -> None:
    table = PriceTable.default()
    assert table.get("llama3.1:8b") is None
    assert table.get("llama3.1:8b", provider_type="ollama") == ModelPrice(input_per_1m=0, output_per_1m=0)
    assert table.get("mistral:latest", provider_type="ollama") == ModelPrice(input_per_1m=0, output_per_1m=0)


# -- lookup rules -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-4o", (2.5, 10.0)),
        ("gpt-4o-2024-08-06", (2.5, 10.0)),  # a snapshot date
        ("gpt-4o-2024-05-13", (5.0, 15.0)),  # an exact entry beats the prefix
        ("gpt-4o-mini-2024-07-18", (0.15, 0.6)),  # the longest known prefix wins
        ("GPT-4o", (2.5, 10.0)),  # case does not matter
        ("gpt-4-0613", (30.0, 60.0)),  # a 4-digit snapshot
        ("claude-3-5-sonnet-latest", (3.0, 15.0)),
        ("claude-3-5-sonnet-v2@20241022", (3.0, 15.0)),  # Vertex AI spelling
        ("claude-opus-4-1-20250805", (15.0, 75.0)),
        ("models/gemini-1.5-pro-002", (1.25, 5.0)),  # Gemini's models/ prefix and a 3-digit version
        ("gemini-2.5-pro-preview-05-06", (1.25, 10.0)),
        ("gemini-2.0-flash-lite-001", (0.075, 0.3)),
        ("anthropic.claude-3-5-sonnet-20241022-v2:0", (3.0, 15.0)),
        ("us.anthropic.claude-3-5-sonnet-20241022-v2:0", (3.0, 15.0)),  # cross-region profile
        ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", (3.0, 15.0)),
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", (3.3, 16.5)),
        ("openai/gpt-4o", (2.5, 10.0)),  # a router's vendor/model spelling
    ],
)
def test_lookup_is_exact_then_version_suffix_tolerant(model: str, expected: tuple[float, float]) -> None:
    price = PriceTable.default().get(model)
    assert price is not None
    assert (price.input_per_1m, price.output_per_1m) == expected


@pytest.mark.parametrize(
    "model",
    [
        "claude-opus-4-7",  # a minor version is a different model, not a suffix of claude-opus-4
        "gpt-4o-realtime-preview",  # a variant, not a version
        "gpt-4o-audio",
        "gpt-4-32", "gpt-5.2",
        "my-model-v1",
        "",
        "gpt",  # shorter than any entry
    ],
)
def test_names_that_only_resemble_a_known_model_have_no_price(model: str) -> None:
    assert PriceTable.default().get(model) is None


def test_get_of_none_is_none() -> None:
    assert PriceTable.default().get(None) is None


def test_lookups_are_remembered_but_the_memory_is_bounded() -> None:
    table = PriceTable({"m": GPT4O})
    for i in range(10_000):
        table.get(f"unknown-{i}")
    assert len(table._cache) <= 4096
    assert table.get("m-20240101") == GPT4O


# -- overrides ----------------------------------------------------------------------------------------


def test_overrides_add_models_and_replace_prices_without_touching_the_original() -> None:
    base = PriceTable.default()
    mine = ModelPrice(input_per_1m=1.0, output_per_1m=2.0)
    table = base.with_overrides({"my-model-v1": mine, "gpt-4o": mine})
    assert table.get("my-model-v1") == mine
    assert table.get("My-Model-V1") == mine
    assert table.get("gpt-4o") == mine
    assert table.get("gpt-4o-2024-08-06") == mine  # the same rules apply to an override
    assert table.get("gpt-4o-2024-05-13") == ModelPrice(input_per_1m=5, output_per_1m=15)  # exact entry kept
    assert base.get("gpt-4o") == GPT4O
    assert base.get("my-model-v1") is None
    assert table.checked == base.checked


def test_as_price_table_accepts_none_a_table_or_a_mapping_of_overrides() -> None:
    assert as_price_table(None) is PriceTable.default()
    table = PriceTable({"x": GPT4O})
    assert as_price_table(table) is table
    merged = as_price_table({"x": GPT4O})
    assert merged.get("x") == GPT4O and merged.get("claude-3-opus") is not None
    with pytest.raises(TypeError, match="PriceTable or a mapping"):
        as_price_table([("x", GPT4O)])  # type: ignore[arg-type]


def test_bad_overrides_are_rejected_with_the_fix() -> None:
    base = PriceTable.default()
    with pytest.raises(TypeError, match=r"ModelPrice\(input_per_1m=..., output_per_1m=...\)"):
        base.with_overrides({"m": (1.0, 2.0)})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="non-empty strings"):
        base.with_overrides({"  ": GPT4O})
    with pytest.raises(TypeError, match="mapping of model name to ModelPrice"):
        PriceTable(["m"])  # type: ignore[arg-type]


# -- ModelPrice ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, -math.inf, "1.0", True, None])
def test_a_model_price_must_be_a_finite_non_negative_number(bad: object) -> None:
    with pytest.raises(ValueError, match="input_per_1m"):
        ModelPrice(input_per_1m=bad, output_per_1m=1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="output_per_1m"):
        ModelPrice(input_per_1m=1.0, output_per_1m=bad)  # type: ignore[arg-type]


def test_a_model_price_is_frozen_keyword_only_and_stores_floats() -> None:
    price = ModelPrice(input_per_1m=3, output_per_1m=15)
    assert type(price.input_per_1m) is float and price.output_per_1m == 15.0
    with pytest.raises(AttributeError):
        price.input_per_1m = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        ModelPrice(3.0, 15.0)  # type: ignore[call-arg]


def test_a_bad_price_in_a_price_file_fails_to_decode() -> None:
    with pytest.raises(msgspec.ValidationError, match="output_per_1m"):
        msgspec.json.decode(b'{"input_per_1m": 1, "output_per_1m": -2}', type=ModelPrice)


# -- arithmetic ---------------------------------------------------------------------------------------


def test_cost_of_usage_is_prompt_and_completion_tokens_at_their_rates() -> None:
    usage = UsageStats(prompt_tokens=1_000, completion_tokens=500, total_tokens=1_500)
    assert cost_of(usage, GPT4O) == pytest.approx(1_000 * 2.5e-6 + 500 * 10e-6)
    assert cost_of(UsageStats(), GPT4O) == 0.0


def test_a_total_without_a_split_is_charged_at_the_higher_rate() -> None:
    assert cost_of(UsageStats(total_tokens=1_000_000), GPT4O) == pytest.approx(10.0)


@settings(deadline=None)
@given(
    st.integers(0, 10**7),
    st.integers(0, 10**7),
    st.floats(0, 1000, allow_nan=False),
    st.floats(0, 1000, allow_nan=False),
)
def test_cost_is_linear_non_negative_and_finite(p: int, c: int, rate_in: float, rate_out: float) -> None:
    price = ModelPrice(input_per_1m=rate_in, output_per_1m=rate_out)
    cost = cost_of(UsageStats(prompt_tokens=p, completion_tokens=c, total_tokens=p + c), price)
    assert math.isfinite(cost) and cost >= 0
    assert cost == pytest.approx(price.cost(p, 0) + price.cost(0, c))


def test_the_default_token_counter_is_about_four_characters_a_token_plus_per_turn_overhead() -> None:
    request = CompletionRequest(
        system_prompt="s" * 40,
        messages=[Message(role="user", content="u" * 400), Message(role="assistant", content="a" * 80)],
        prompt="p" * 4,
    )
    assert estimate_tokens(request) == (40 + 400 + 80 + 4) // 4 + 4 * 4 + 3
    assert estimate_tokens(CompletionRequest(prompt="x")) == 1 + 4 + 3


def test_estimate_uses_max_tokens_for_the_output_and_per_1k_prices() -> None:
    request = CompletionRequest(prompt="p" * 400, model="gpt-4o", max_tokens=200)
    est = estimate_cost(request, prices=PriceTable.default())
    assert isinstance(est, CostEstimate)
    assert est.estimated_input_tokens == 100 + 4 + 3
    assert est.estimated_output_tokens == 200
    assert est.input_cost_per_1k == pytest.approx(0.0025)
    assert est.output_cost_per_1k == pytest.approx(0.01)
    assert est.total_estimate == pytest.approx(107 * 2.5e-6 + 200 * 10e-6)
    assert est.currency == "USD"


def test_estimate_without_max_tokens_assumes_the_documented_default_output() -> None:
    est = estimate_cost(CompletionRequest(prompt="hi"), model="gpt-4o")
    assert est is not None and est.estimated_output_tokens == DEFAULT_OUTPUT_TOKENS == 1024
    est = estimate_cost(CompletionRequest(prompt="hi"), model="gpt-4o", default_output_tokens=10)
    assert est is not None and est.estimated_output_tokens == 10


def test_estimate_takes_a_pluggable_counter_and_overrides() -> None:
    request = CompletionRequest(prompt="whatever", max_tokens=0)
    est = estimate_cost(
        request,
        model="my-model-v1",
        prices={"my-model-v1": ModelPrice(input_per_1m=1.0, output_per_1m=0.0)},
        counter=lambda r: 1_000_000,
    )
    assert est is not None and est.total_estimate == pytest.approx(1.0)


def test_estimate_of_an_unknown_model_is_none() -> None:
    assert estimate_cost(CompletionRequest(prompt="hi", model="mystery-1")) is None
    assert estimate_cost(CompletionRequest(prompt="hi")) is None


def test_a_counter_returning_garbage_is_rejected() -> None:
    with pytest.raises(ValueError, match="non-negative int"):
        estimate_cost(CompletionRequest(prompt="hi"), model="gpt-4o", counter=lambda r: -1)
    with pytest.raises(ValueError, match="non-negative int"):
        estimate_cost(CompletionRequest(prompt="hi"), model="gpt-4o", counter=lambda r: 1.5)  # type: ignore[arg-type,return-value]
