"""Model prices, token estimates and cost arithmetic: plain synchronous code, no I/O after the first load."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from importlib import resources
from typing import TypeAlias

import msgspec

from ..pipeline.models import CompletionRequest, CostEstimate, UsageStats

__all__ = [
    "DEFAULT_OUTPUT_TOKENS",
    "ModelPrice",
    "PriceTable",
    "TokenCounter",
    "as_price_table",
    "cost_of",
    "estimate_cost",
    "estimate_tokens",
]

#: Output tokens assumed by :func:`estimate_cost` when the request sets no ``max_tokens``.
DEFAULT_OUTPUT_TOKENS = 1024

#: ``counter(request) -> int``: how many prompt tokens a request will use.
TokenCounter: TypeAlias = Callable[[CompletionRequest], int]

_PER_TURN_TOKENS = 4  # role markers and separators around each message
_REPLY_PRIMING_TOKENS = 3  # the tokens that open the assistant's reply
_CACHE_LIMIT = 4096  # distinct model names remembered by one table
_MISSING = object()

# What may follow a known model name and still be "the same model": snapshot dates (20241022,
# 2024-08-06), 3-4 digit snapshot numbers (0613, 002), latest/preview/exp tags (Gemini previews carry
# a -MM-DD date) and Bedrock/Vertex versions (-v1:0, -v2:0:200k, @20240620). A bare one- or two-digit
# segment is *not* a version: "claude-opus-4-7" is a different model from "claude-opus-4".
_VERSION_SUFFIX = re.compile(
    r"(?:[-@](?:\d{8}|\d{4}-\d{2}-\d{2}|\d{3,4}|latest|(?:preview|exp)(?:-\d{2}-\d{2})?|v\d+(?::\d+k?)*))+"
)
# Bedrock cross-region inference profiles: "us.anthropic.claude-..." is priced as "anthropic.claude-...".
_GEO_PREFIX = re.compile(r"(?:us|us-gov|eu|apac|au|ca|jp|global)\.")


class ModelPrice(msgspec.Struct, frozen=True, kw_only=True):
    """A model's list price in USD per one million tokens, for prompt (input) and completion (output)."""

    input_per_1m: float
    output_per_1m: float

    def __post_init__(self) -> None:
        for name in ("input_per_1m", "output_per_1m"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(
                    f"ModelPrice.{name} must be a finite number of USD per 1M tokens, got {value!r}"
                )
            if value < 0:
                raise ValueError(f"ModelPrice.{name} must be >= 0 USD per 1M tokens, got {value!r}")
            if isinstance(value, int):
                msgspec.structs.force_setattr(self, name, float(value))

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """USD for this many prompt and completion tokens."""
        return (prompt_tokens * self.input_per_1m + completion_tokens * self.output_per_1m) / 1_000_000


_FREE = ModelPrice(input_per_1m=0.0, output_per_1m=0.0)
_DEFAULT_TABLE: PriceTable | None = None


class _PriceFile(msgspec.Struct, frozen=True, kw_only=True):
    checked: str
    models: dict[str, ModelPrice]
    currency: str = "USD"
    unit: str = "per 1M tokens"
    note: str = ""
    free_provider_types: list[str] = []


class PriceTable:
    """Prices by model name, with the lookup rules that make provider model ids find their price.

    ``get(model)`` tries, on the lower-cased name: an exact entry; then the longest entry that the name
    extends by a *version suffix* only (``gpt-4o-2024-08-06`` -> ``gpt-4o``, ``claude-3-5-sonnet-latest``
    -> ``claude-3-5-sonnet``, ``anthropic.claude-3-5-sonnet-20240620-v1:0`` ->
    ``anthropic.claude-3-5-sonnet``; a suffix is a date, a 3-4 digit snapshot, ``latest``/``preview``/
    ``exp``, or a ``-v1:0``/``@date`` version, never a bare ``-7`` or ``-mini``); then the same without a
    ``models/`` prefix, without a Bedrock region prefix (``us.``, ``eu.``, ``global.``...), and after the
    last ``/`` (``openai/gpt-4o``). With ``provider_type`` given, a provider type the table lists as free
    (``ollama``) prices every model it does not list at 0. Anything else is ``None``: unknown, not free.

    Tables are immutable; :meth:`default` is the shipped ``prices.json`` (list prices, see its ``checked``
    date), loaded once on first use; :meth:`with_overrides` returns a new table. Lookups are memoised
    per table (bounded), so the per-call cost is one dictionary hit.
    """

    __slots__ = ("_by_length", "_cache", "_free", "_prices", "checked")

    def __init__(
        self,
        prices: Mapping[str, ModelPrice] | None = None,
        *,
        free_provider_types: tuple[str, ...] | list[str] = (),
        checked: str | None = None,
    ) -> None:
        self._prices: dict[str, ModelPrice] = _validated(prices or {}, "PriceTable")
        self._by_length = sorted(self._prices, key=len, reverse=True)
        self._free = frozenset(str(t).lower() for t in free_provider_types)
        self._cache: dict[str, ModelPrice | None] = {}
        #: When the shipped prices were checked (``None`` for a hand-made table).
        self.checked = checked

    @classmethod
    def default(cls) -> PriceTable:
        """The shipped list prices (``axonflow_llm/middleware/prices.json``), read once and shared."""
        global _DEFAULT_TABLE
        table = _DEFAULT_TABLE
        if table is None:
            raw = resources.files(__package__ or "axonflow_llm.middleware").joinpath("prices.json").read_bytes()
            data = msgspec.json.decode(raw, type=_PriceFile)
            table = cls(data.models, free_provider_types=data.free_provider_types, checked=data.checked)
            _DEFAULT_TABLE = table
        return table

    def with_overrides(self, overrides: Mapping[str, ModelPrice]) -> PriceTable:
        """A new table: this one's prices, with ``overrides`` added or replacing entries (same lookup rules)."""
        merged = dict(self._prices)
        merged.update(_validated(overrides, "with_overrides"))
        return PriceTable(merged, free_provider_types=tuple(self._free), checked=self.checked)

    def get(self, model: str | None, *, provider_type: str | None = None) -> ModelPrice | None:
        """The price of ``model`` by the rules in the class docstring, or ``None`` if unknown."""
        if model:
            price = self._cache.get(model, _MISSING)
            if price is _MISSING:
                price = self._resolve(model)
                if len(self._cache) < _CACHE_LIMIT:
                    self._cache[model] = price
            if price is not None:
                return price  # type: ignore[return-value]
        if provider_type is not None and provider_type in self._free:
            return _FREE
        return None

    def _resolve(self, model: str) -> ModelPrice | None:
        for name in _candidates(model.strip().lower()):
            price = self._match(name)
            if price is not None:
                return price
        return None

    def _match(self, name: str) -> ModelPrice | None:
        exact = self._prices.get(name)
        if exact is not None:
            return exact
        size = len(name)
        fullmatch = _VERSION_SUFFIX.fullmatch
        for key in self._by_length:
            if len(key) < size and name.startswith(key) and fullmatch(name, len(key)) is not None:
                return self._prices[key]
        return None

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and self.get(model) is not None

    def __len__(self) -> int:
        return len(self._prices)

    def models(self) -> list[str]:
        """The model names with an entry, sorted."""
        return sorted(self._prices)

    def __repr__(self) -> str:
        checked = f", checked={self.checked!r}" if self.checked else ""
        return f"PriceTable({len(self._prices)} models{checked})"


def _candidates(name: str) -> Iterator[str]:
    yield name
    if name.startswith("models/"):
        name = name[len("models/"):]
        yield name
    geo = _GEO_PREFIX.match(name)
    if geo is not None:
        yield name[geo.end():]
    if "/" in name:
        yield name.rsplit("/", 1)[1]


def _validated(prices: Mapping[str, ModelPrice], where: str) -> dict[str, ModelPrice]:
    if not isinstance(prices, Mapping):
        raise TypeError(
            f"{where} needs a mapping of model name to ModelPrice, got {type(prices).__name__}; "
            "write {'my-model': ModelPrice(input_per_1m=1.0, output_per_1m=2.0)}"
        )
    out: dict[str, ModelPrice] = {}
    for model, price in prices.items():
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"{where}: model names must be non-empty strings, got {model!r}")
        if not isinstance(price, ModelPrice):
            raise TypeError(
                f"{where}: the price of {model!r} must be a ModelPrice, got {type(price).__name__}; "
                "write ModelPrice(input_per_1m=..., output_per_1m=...) in USD per 1M tokens"
            )
        out[model.strip().lower()] = price
    return out


def as_price_table(prices: PriceTable | Mapping[str, ModelPrice] | None) -> PriceTable:
    """``None`` -> the default table; a mapping -> the default table with those overrides; a table as is."""
    if prices is None:
        return PriceTable.default()
    if isinstance(prices, PriceTable):
        return prices
    if isinstance(prices, Mapping):
        return PriceTable.default().with_overrides(prices)
    raise TypeError(
        f"prices must be a PriceTable or a mapping of model name to ModelPrice, got {type(prices).__name__}"
    )


def estimate_tokens(request: CompletionRequest) -> int:
    """A cheap prompt-token estimate: about four characters a token over the system prompt, messages and
    prompt, plus 4 tokens per turn and 3 to open the reply. Close for English prose; it undercounts
    text in scripts such as Chinese or Japanese, where a character is often a token or more; pass your
    own ``counter`` (a real tokenizer) where that matters."""
    chars = 0
    turns = 0
    if request.system_prompt:
        chars += len(request.system_prompt)
        turns += 1
    if request.messages:
        for message in request.messages:
            chars += len(message.content)
        turns += len(request.messages)
    if request.prompt:
        chars += len(request.prompt)
        turns += 1
    return (chars + 3) // 4 + _PER_TURN_TOKENS * turns + _REPLY_PRIMING_TOKENS


def estimate_cost(
    request: CompletionRequest,
    *,
    model: str | None = None,
    prices: PriceTable | Mapping[str, ModelPrice] | None = None,
    counter: TokenCounter | None = None,
    provider_type: str | None = None,
    default_output_tokens: int = DEFAULT_OUTPUT_TOKENS,
) -> CostEstimate | None:
    """The cost of ``request`` before sending it, or ``None`` when the model's price is unknown.

    ``model`` defaults to ``request.model``. Prompt tokens come from ``counter(request)`` (default
    :func:`estimate_tokens`); output tokens are ``request.max_tokens``, or ``default_output_tokens``
    (1024) when the request sets none. The estimate is an upper bound only as good as those two guesses.
    """
    name = model or request.model
    price = as_price_table(prices).get(name, provider_type=provider_type)
    if price is None:
        return None
    prompt_tokens = (counter or estimate_tokens)(request)
    if isinstance(prompt_tokens, bool) or not isinstance(prompt_tokens, int) or prompt_tokens < 0:
        raise ValueError(f"the token counter must return a non-negative int, got {prompt_tokens!r}")
    output_tokens = request.max_tokens if request.max_tokens is not None else default_output_tokens
    return CostEstimate(
        input_cost_per_1k=price.input_per_1m / 1000,
        output_cost_per_1k=price.output_per_1m / 1000,
        estimated_input_tokens=prompt_tokens,
        estimated_output_tokens=output_tokens,
        total_estimate=price.cost(prompt_tokens, output_tokens),
    )


def cost_of(usage: UsageStats, price: ModelPrice) -> float:
    """USD for the tokens ``usage`` reports. A provider that reports only a total is charged the total at
    the higher of the two rates (an upper bound)."""
    prompt, completion = usage.prompt_tokens, usage.completion_tokens
    if prompt or completion:
        return price.cost(prompt, completion)
    return usage.total_tokens * max(price.input_per_1m, price.output_per_1m) / 1_000_000


def usage_known(usage: UsageStats | None) -> bool:
    """Whether the provider reported any token counts at all."""
    return usage is not None and bool(usage.prompt_tokens or usage.completion_tokens or usage.total_tokens)
