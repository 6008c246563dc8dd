"""The typed shape of a configuration file (msgspec Structs) and the per-provider middleware settings."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

import msgspec

from ..pipeline.errors import ConfigError
from ..pipeline.models import ProviderConfig, ProviderType

__all__ = [
    "CREDENTIAL_KEYS",
    "MIDDLEWARE_KEYS",
    "CircuitBreakerSettings",
    "ConnectionSettings",
    "CredentialSettings",
    "Duration",
    "LLMConfig",
    "MiddlewareSettings",
    "PROVIDER_SETTINGS",
    "ModelPriceSettings",
    "ProviderEntry",
    "RateLimitSettings",
    "RetrySettings",
    "Secret",
    "TimeoutSettings",
    "convert",
    "parse_duration",
]


class Secret(str):
    """A credential: an ordinary ``str`` everywhere, except that ``repr()`` shows ``'***'``.

    Credentials other than ``api_key`` travel in ``ProviderConfig.settings``, whose ``repr`` would show
    them; wrapping them keeps them out of logs and tracebacks.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"


class Duration(float):
    """Seconds: a number (``30``, ``0.25``) or a string with a unit (``"250ms"``, ``"30s"``, ``"5m"``, ``"1h"``).

    A ``float`` subclass so that conversion can tell it apart; use it as a float.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return float.__repr__(self)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: object) -> float:
    """Seconds from a number or a ``"250ms"``/``"30s"``/``"5m"``/``"1h"`` string; ``ValueError`` otherwise."""
    if isinstance(value, bool):
        raise ValueError("expected a duration (seconds, or a string such as '30s'), got a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(
                f"expected a duration such as 30, 2.5, '250ms', '30s', '5m' or '1h', got {value!r}"
            )
        seconds = float(match.group(1)) * _UNIT[match.group(2)]
    else:
        raise ValueError(f"expected a duration (seconds), got {type(value).__name__}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"expected a finite, non-negative duration, got {value!r}")
    return seconds


def _dec_hook(tp: type, value: Any) -> Any:
    if tp is Duration:
        return Duration(parse_duration(value))
    raise NotImplementedError


def _enc_hook(value: Any) -> Any:
    if isinstance(value, float):  # Duration
        return float(value)
    if isinstance(value, str):  # Secret
        return str(value)
    raise TypeError(f"cannot represent a {type(value).__name__} in a configuration")


def convert(data: Any, tp: type[Any]) -> Any:
    """``msgspec.convert`` as configuration wants it: strings become numbers/booleans where the field
    asks for one (so an expanded ``"4096"`` is an int), durations accept units, unknown fields fail."""
    return msgspec.convert(data, tp, strict=False, dec_hook=_dec_hook)


def to_builtins(value: Any) -> Any:
    return msgspec.to_builtins(value, enc_hook=_enc_hook)


PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]
NonNegativeFloat = Annotated[float, msgspec.Meta(ge=0)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]


def _finite(**values: float | None) -> None:
    # Messages start with the field's name: the loader then reports them at that field's path.
    for name, value in values.items():
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")


class RateLimitSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``rate_limit``: a token bucket of ``requests_per_second`` refilling up to ``burst`` requests
    (default: ``requests_per_second`` rounded up), and/or a ``tokens_per_minute`` budget."""

    requests_per_second: PositiveFloat | None = None
    burst: PositiveInt | None = None
    tokens_per_minute: PositiveFloat | None = None

    def __post_init__(self) -> None:
        _finite(requests_per_second=self.requests_per_second, tokens_per_minute=self.tokens_per_minute)
        if self.burst is not None and self.requests_per_second is None:
            raise ValueError("burst needs requests_per_second as well")
        if self.requests_per_second is None and self.tokens_per_minute is None:
            raise ValueError(
                "rate_limit needs requests_per_second (with an optional burst) and/or tokens_per_minute"
            )


class RetrySettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``retry``: the fields of :class:`~axonflow_llm.middleware.retry_config.RetryConfig`; durations in
    seconds (or with a unit). Unset fields keep RetryConfig's defaults."""

    max_retries: NonNegativeInt | None = None
    initial_backoff: Duration | None = None
    max_backoff: Duration | None = None
    backoff_factor: Annotated[float, msgspec.Meta(ge=1)] | None = None
    jitter: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    max_retry_after: Duration | None = None
    deadline: Duration | None = None


class CircuitBreakerSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``circuit_breaker``: open after ``failure_threshold`` consecutive failures, probe again after
    ``reset_timeout`` with up to ``half_open_max_calls`` calls."""

    failure_threshold: PositiveInt | None = None
    reset_timeout: Duration | None = None
    half_open_max_calls: PositiveInt | None = None


class TimeoutSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``timeouts`` per attempt: the whole ``request``, a stream's ``first_chunk``, the longest ``idle``
    gap between two chunks."""

    request: Duration | None = None
    first_chunk: Duration | None = None
    idle: Duration | None = None

    def __post_init__(self) -> None:
        for name in ("request", "first_chunk", "idle"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be more than 0 seconds, got {value!r}")


class ModelPriceSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One model's price in USD per million tokens, over the shipped price table."""

    input_per_1m: NonNegativeFloat
    output_per_1m: NonNegativeFloat

    def __post_init__(self) -> None:
        _finite(input_per_1m=self.input_per_1m, output_per_1m=self.output_per_1m)


#: The keys of ``ProviderConfig.settings`` that configure a provider's middleware, not the provider.
MIDDLEWARE_KEYS = ("rate_limit", "retry", "circuit_breaker", "timeouts", "pricing")


class MiddlewareSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A provider's middleware settings: what turns into its pipeline (see ``pipeline_options``).

    ``retry``/``circuit_breaker``: settings, ``True`` (the defaults) or ``False`` (left out).
    """

    rate_limit: RateLimitSettings | None = None
    retry: RetrySettings | bool | None = None
    circuit_breaker: CircuitBreakerSettings | bool | None = None
    timeouts: TimeoutSettings | None = None
    pricing: dict[str, ModelPriceSettings] = {}

    @property
    def is_empty(self) -> bool:
        return (
            self.rate_limit is None and self.retry is None and self.circuit_breaker is None
            and self.timeouts is None and not self.pricing
        )

    @classmethod
    def of(cls, config: ProviderConfig) -> MiddlewareSettings:
        """The middleware settings in ``config.settings`` (Structs from a file, or plain dicts written in
        code), validated. ``ConfigError`` names the bad field: ``settings.retry.max_retries``."""
        picked = {k: config.settings[k] for k in MIDDLEWARE_KEYS if k in config.settings}
        if not picked:
            return _EMPTY
        raw: dict[str, Any] = {}
        for key, value in picked.items():
            try:
                raw[key] = to_builtins(value)
            except TypeError:
                raise ConfigError(
                    f"provider {config.name!r}: settings.{key} must be plain settings (a mapping such as "
                    f"{{'max_retries': 5}}, or true/false for retry and circuit_breaker), not a "
                    f"{type(value).__name__}; to use middleware objects, build them in the factory"
                ) from None
        try:
            return convert(raw, cls)  # type: ignore[no-any-return]
        except msgspec.ValidationError as exc:
            message, path = split_validation_error(exc)
            where = f"provider {config.name!r}: settings" + (f".{path}" if path else "")
            raise ConfigError(f"{where}: {message}") from None


_EMPTY = MiddlewareSettings()

#: Credential fields; their values are masked by ``dump_config`` and never shown in messages.
CREDENTIAL_KEYS = (
    "api_key", "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "azure_ad_token"
)


class CredentialSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``credentials``: ``api_key`` for most providers; the AWS keys for Bedrock (or leave them out and
    let botocore's credential chain find them); ``azure_ad_token`` for Azure OpenAI with Entra ID."""

    api_key: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_session_token: str | None = None
    azure_ad_token: str | None = None


class ConnectionSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The common part of ``config``: what to call and how. The rest of ``config`` is the provider's own
    settings (see :data:`PROVIDER_SETTINGS`)."""

    model: str | None = None
    endpoint: str | None = None
    max_tokens: PositiveInt | None = None
    timeout: Duration | None = None
    region: str | None = None


_OPENAI_SETTINGS = ("headers", "organization", "project", "max_tokens_field", "stream_usage")

#: The provider-specific keys each built-in type reads from ``config`` (into ``ProviderConfig.settings``).
#: A custom provider accepts any key: its factory reads ``config.settings``.
PROVIDER_SETTINGS: dict[ProviderType, tuple[str, ...]] = {
    ProviderType.OPENAI: _OPENAI_SETTINGS,
    ProviderType.AZURE_OPENAI: (
        "headers", "deployment", "api_version", "resource", "max_tokens_field", "stream_usage",
    ),
    ProviderType.OLLAMA: ("headers", "options", "keep_alive"),
    ProviderType.ANTHROPIC: ("headers",),
    ProviderType.GEMINI: ("headers",),
    ProviderType.BEDROCK: (
        "headers", "profile", "additional_model_request_fields", "health_check", "control_endpoint",
    ),
}


class ProviderEntry(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One entry of ``llm_providers`` as written in the file."""

    enabled: bool = True
    display_name: str | None = None
    type: str | None = None
    config: dict[str, Any] = {}
    credentials: CredentialSettings = CredentialSettings()
    priority: int = 0
    weight: NonNegativeFloat = 1.0
    rate_limit: RateLimitSettings | None = None
    retry: RetrySettings | bool | None = None
    circuit_breaker: CircuitBreakerSettings | bool | None = None
    timeouts: TimeoutSettings | None = None
    pricing: dict[str, ModelPriceSettings] = {}

    def __post_init__(self) -> None:
        _finite(weight=self.weight)


class LLMConfig(msgspec.Struct, frozen=True, kw_only=True):
    """A loaded configuration: every provider's :class:`ProviderConfig`, enabled or not, by name.

    Each config's ``settings`` holds its provider options (``deployment``, ``api_version``, ...), its
    credentials other than ``api_key`` (as :class:`Secret`) and its middleware settings under
    ``rate_limit``, ``retry``, ``circuit_breaker``, ``timeouts`` and ``pricing`` (typed Structs).
    ``source`` is the file it came from, ``locations`` where each provider is in it.
    """

    version: str = "1.0"
    providers: dict[str, ProviderConfig] = {}
    source: str | None = None
    #: ``"file:line: llm_providers.<name>"`` for each provider, for messages about it later.
    locations: dict[str, str] = {}

    @property
    def enabled(self) -> list[ProviderConfig]:
        """The enabled providers, in file order."""
        return [c for c in self.providers.values() if c.enabled]

    def __repr__(self) -> str:
        return f"LLMConfig(version={self.version!r}, providers={list(self.providers)!r}, source={self.source!r})"


_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)


def split_validation_error(exc: msgspec.ValidationError) -> tuple[str, str]:
    """msgspec's ``"Expected `int`, got `str` - at `$.a.b`"`` as ``("Expected `int`, got `str`", "a.b")``."""
    match = _AT.match(str(exc))
    assert match is not None
    path = (match.group("path") or "").lstrip(".")
    return match.group("msg"), path

