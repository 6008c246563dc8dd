"""The wire-neutral data model: requests, responses, stream chunks, health, cost and provider configuration."""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from typing import Any

import msgspec

__all__ = [
    "Capability",
    "CompletionRequest",
    "CompletionResponse",
    "CostEstimate",
    "FinishReason",
    "HealthCheckResult",
    "HealthStatus",
    "Message",
    "ProviderConfig",
    "ProviderType",
    "StreamChunk",
    "UsageStats",
]


class ProviderType(enum.StrEnum):
    """Which wire protocol a provider speaks (the seed's ``llm.ProviderType``)."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    OLLAMA = "ollama"
    BEDROCK = "bedrock"
    GEMINI = "gemini"
    AZURE_OPENAI = "azure-openai"
    CUSTOM = "custom"


class Capability(enum.StrEnum):
    """What a provider can do; returned by ``Provider.capabilities()``."""

    CHAT = "chat"
    COMPLETION = "completion"
    STREAMING = "streaming"
    VISION = "vision"
    FUNCTION_CALLING = "function_calling"
    EMBEDDINGS = "embeddings"
    CODE_GENERATION = "code_generation"
    LONG_CONTEXT = "long_context"


class FinishReason(enum.StrEnum):
    """Why generation stopped, normalised across providers."""

    STOP = "stop"
    LENGTH = "length"
    CONTENT_FILTER = "content_filter"
    TOOL_CALLS = "tool_calls"


class HealthStatus(enum.StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"
    UNKNOWN = "unknown"


_ROLES = frozenset({"system", "user", "assistant", "tool"})


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """One chat turn. ``role`` is ``system``, ``user``, ``assistant`` or ``tool``."""

    role: str
    content: str

    def __post_init__(self) -> None:
        if self.role not in _ROLES:
            raise ValueError(
                f"Message.role must be one of {sorted(_ROLES)}, got {self.role!r}"
            )


class CompletionRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What to generate: either ``prompt`` or ``messages`` (or both: the prompt is appended as a user turn).

    Validated on construction, so a bad request fails before anything is sent.
    """

    prompt: str | None = None
    messages: Sequence[Message] | None = None
    system_prompt: str | None = None
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop_sequences: Sequence[str] | None = None
    metadata: dict[str, Any] = {}

    def __post_init__(self) -> None:
        if self.messages is not None and not isinstance(self.messages, tuple):
            # Accept any sequence from callers; store an immutable tuple.
            msgspec.structs.force_setattr(self, "messages", tuple(self.messages))
        if self.stop_sequences is not None and not isinstance(self.stop_sequences, tuple):
            if isinstance(self.stop_sequences, str):
                raise TypeError("stop_sequences must be a list of strings, not a single string")
            msgspec.structs.force_setattr(self, "stop_sequences", tuple(self.stop_sequences))
        if not self.prompt and not self.messages:
            raise ValueError(
                "CompletionRequest needs a prompt= or a non-empty messages= list; both are empty"
            )
        if self.messages:
            for m in self.messages:
                if not isinstance(m, Message):
                    raise TypeError(
                        f"messages must hold Message objects, got {type(m).__name__}; "
                        "write Message(role='user', content='...')"
                    )
        if self.max_tokens is not None and (
            not isinstance(self.max_tokens, int) or isinstance(self.max_tokens, bool) or self.max_tokens < 0
        ):
            raise ValueError(f"max_tokens must be a non-negative integer, got {self.max_tokens!r}")
        if self.temperature is not None and not (
            isinstance(self.temperature, int | float) and math.isfinite(self.temperature) and self.temperature >= 0
        ):
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if self.top_p is not None and not (
            isinstance(self.top_p, int | float) and 0 <= self.top_p <= 1
        ):
            raise ValueError(f"top_p must be between 0 and 1, got {self.top_p!r}")
        if self.top_k is not None and (
            not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 1
        ):
            raise ValueError(f"top_k must be a positive integer, got {self.top_k!r}")

    def chat_messages(self) -> list[Message]:
        """The conversation as a list of messages, the prompt appended as a final user turn.

        The system prompt is not included: each provider places it where its API wants it.
        """
        out = list(self.messages) if self.messages else []
        if self.prompt:
            out.append(Message(role="user", content=self.prompt))
        return out


class UsageStats(msgspec.Struct, frozen=True, kw_only=True):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class CompletionResponse(msgspec.Struct, frozen=True, kw_only=True):
    """A finished completion. ``latency`` is in seconds; ``cost`` in USD where the model's price is known."""

    content: str
    model: str = ""
    usage: UsageStats = UsageStats()
    finish_reason: FinishReason | None = None
    latency: float = 0.0
    provider: str = ""
    request_id: str | None = None
    cost: float | None = None
    metadata: dict[str, Any] = {}


class StreamChunk(msgspec.Struct, frozen=True, kw_only=True):
    """A piece of a streamed completion. The last chunk has ``done=True`` and carries usage where reported."""

    content: str = ""
    done: bool = False
    finish_reason: FinishReason | None = None
    usage: UsageStats | None = None


class HealthCheckResult(msgspec.Struct, frozen=True, kw_only=True):
    """Outcome of ``Provider.health_check()``. ``latency`` in seconds; ``checked_at`` is wall-clock epoch seconds."""

    status: HealthStatus
    latency: float = 0.0
    message: str = ""
    checked_at: float = 0.0
    consecutive_failures: int = 0


class CostEstimate(msgspec.Struct, frozen=True, kw_only=True):
    input_cost_per_1k: float
    output_cost_per_1k: float
    estimated_input_tokens: int
    estimated_output_tokens: int
    total_estimate: float
    currency: str = "USD"


_SECRET_WORDS = ("key", "secret", "token", "password", "credential", "auth")


def _secret_key(name: object) -> bool:
    low = str(name).lower()
    return any(word in low for word in _SECRET_WORDS)


class ProviderConfig(msgspec.Struct, kw_only=True):
    """How to build one provider (the seed's ``llm.ProviderConfig``). ``timeout`` is in seconds.

    ``settings`` carries provider-specific options (``deployment``/``api_version`` for Azure) and the
    middleware settings read from YAML. ``repr()`` never shows ``api_key``, nor a setting whose name
    says it is a credential (``*key*``, ``*secret*``, ``*token*``, ``*password*``, ``*credential*``, ``*auth*``).
    """

    name: str
    type: ProviderType
    api_key: str | None = None
    endpoint: str | None = None
    model: str | None = None
    region: str | None = None
    enabled: bool = True
    priority: int = 0
    weight: float = 1.0
    max_tokens: int | None = None
    timeout: float | None = None
    display_name: str | None = None
    settings: dict[str, Any] = {}

    def __repr__(self) -> str:
        fields = []
        for f in self.__struct_fields__:
            v = getattr(self, f)
            if f == "api_key":
                v = "***" if v else None
            elif f == "settings" and v:
                v = {k: "***" if _secret_key(k) and val else val for k, val in v.items()}
            fields.append(f"{f}={v!r}")
        return f"ProviderConfig({', '.join(fields)})"

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field when the configuration cannot work."""
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError("ProviderConfig.name must be a non-empty string")
        if not isinstance(self.type, ProviderType):
            try:
                self.type = ProviderType(self.type)
            except ValueError:
                allowed = ", ".join(t.value for t in ProviderType)
                raise ValueError(
                    f"ProviderConfig.type {self.type!r} is not a provider type; use one of: {allowed}"
                ) from None
        if not (isinstance(self.weight, int | float) and math.isfinite(self.weight) and self.weight >= 0):
            raise ValueError(f"ProviderConfig.weight must be a finite number >= 0, got {self.weight!r}")
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise ValueError(f"ProviderConfig.priority must be an integer, got {self.priority!r}")
        if self.max_tokens is not None and (isinstance(self.max_tokens, bool) or self.max_tokens < 1):
            raise ValueError(f"ProviderConfig.max_tokens must be a positive integer, got {self.max_tokens!r}")
        if self.timeout is not None and not (
            isinstance(self.timeout, int | float) and math.isfinite(self.timeout) and self.timeout > 0
        ):
            raise ValueError(f"ProviderConfig.timeout must be a positive number of seconds, got {self.timeout!r}")
        if self.endpoint is not None and not str(self.endpoint).startswith(("http://", "https://")):
            raise ValueError(
                f"ProviderConfig.endpoint must be an http:// or https:// URL, got {self.endpoint!r}"
            )
